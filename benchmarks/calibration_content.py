"""int8-static calibrated on synthetic frames or on the natural calibration clips: which is
closer to float32 on held-out natural clips?

Run by hand (two int8-static builds, then measurement):

    .venv/bin/python benchmarks/calibration_content.py --models DIR --work DIR \\
        [--frames 16] [--holdout-frames 24] [--json FILE]

DIR is a model directory with the float32 files (and manifest.json). WORK/synthetic and
WORK/natural each get an int8-static set from those float32 files, calibrated on
``--frames`` frames of the synthetic patterns (``--calibration-content synthetic``) or of
the natural ``calibration`` split (the default since this measurement). Both are measured
against float32 on the ``holdout`` and ``confirmation`` splits (photographs the calibration
never saw): per-frame logit change, max and mean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import common
from uvq_int8.backends import NETS
from uvq_int8 import convert, runtime
from uvq_int8.util import atomic_write_text, machine_info
from uvq_int8.convert import natural
from uvq_int8.runtime import manifest as mf



def deltas(model_dir: Path, frames: list[np.ndarray], threads: int) -> np.ndarray:
    static = runtime.load_models("int8-static", model_dir, threads)
    f32 = runtime.load_models("float32", model_dir, threads)
    return np.array([abs(static.aggregate(*static.features(f))[0]
                         - f32.aggregate(*f32.features(f))[0]) for f in frames])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--holdout-frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    entries = mf.load(args.models).files
    checkpoints = {net: Path(entries[f"{net}_net.tflite"]["checkpoint"]["path"]) for net in NETS}
    sets = {}
    for content in ("synthetic", "natural"):
        out = sets[content] = args.work / content
        if (out / "distortion_net_int8_static.tflite").is_file():
            continue
        common.seed_models(args.models, out)
        convert.build(convert.BuildOptions(
            checkpoints=checkpoints, out_dir=out, backends="int8-static",
            calibration_frames=args.frames, threads=args.threads,
            calibration_content=content))
    rows = {}
    for split in ("holdout", "confirmation"):
        made = natural.make_set(split, args.holdout_frames)
        for name, directory in sets.items():
            d = deltas(directory, made.frames, args.threads)
            rows[f"{name} calibration, {split}"] = {
                "frames": int(d.size), "images": made.images, "logit_delta_max": float(d.max()),
                "logit_delta_mean": float(d.mean()), "decoded_sha256": made.sha256}
            print(json.dumps({"row": f"{name} calibration, {split}",
                              **rows[f"{name} calibration, {split}"]}), flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": machine_info(), "rows": rows},
                                                indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
