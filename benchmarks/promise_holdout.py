"""Does an auto build keep its promise on natural clips from images in no split?

Run by hand (each auto build takes minutes):

    .venv/bin/python benchmarks/promise_holdout.py --checkpoints-from DIR --work DIR \\
        [--budgets 0.1,0.3,1.0] [--holdout-frames 24] [--json FILE]

DIR is a model directory holding the float32 files (and manifest.json) built from the
checkpoints to use; each budget B gets WORK/auto-B seeded with those float32 files (no
conversion), built with the default validation content (natural search and confirmation
clips). Then, on ``--holdout-frames`` frames of natural clips made from the ``holdout``
photographs (uvq_int8.convert.natural.SPLIT_IMAGES["holdout"], used by no build split), it reports
per budget: the choice, the promise the build stated, the fraction of holdout frames within
B, the largest holdout change, and the time per frame of the chosen nets against float32
(frames in memory, preprocessing + three nets, median of interleaved runs, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import common
from uvq_int8.backends import NETS
from uvq_int8 import convert, runtime
from uvq_int8.util import atomic_write_text, machine_info
from uvq_int8.convert import natural
from uvq_int8.runtime import manifest as mf



def per_frame_ms(models: runtime.Models, frames: list[np.ndarray]) -> list[float]:
    out = []
    for frame in frames:
        started = time.perf_counter()
        models.aggregate(*models.features(frame))
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints-from", required=True, type=Path,
                   help="model dir with the float32 files; its manifest names the checkpoints")
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--budgets", default="0.1,0.3,1.0")
    p.add_argument("--holdout-frames", type=int, default=24)
    p.add_argument("--speed-frames", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-mixed", action="store_true",
                   help="whole-net candidates only (as 'build --no-mixed'; much faster)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    entries = mf.load(args.checkpoints_from).files
    checkpoints = {net: Path(entries[f"{net}_net.tflite"]["checkpoint"]["path"]) for net in NETS}
    held = natural.make_set("holdout", args.holdout_frames)
    print(f"holdout: {len(held.frames)} frames from {held.images} "
          f"(decoded sha256 {held.sha256[:16]})", file=sys.stderr)
    rows = []
    for budget in [float(b) for b in args.budgets.split(",")]:
        out = args.work / f"auto-{budget:g}"
        if not (out / "content_net_auto.tflite").is_file():
            common.seed_models(args.checkpoints_from, out)
            started = time.perf_counter()
            # The sensitivity tables only when the mixed search needs them (same choice).
            summary = convert.build(convert.BuildOptions(checkpoints=checkpoints, out_dir=out,
                                                     backends="auto", max_logit_delta=budget,
                                                     threads=args.threads, sensitivity=False,
                                                     auto_mixed=not args.no_mixed))
            record = summary.auto
            print(f"budget {budget:g}: built in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
        else:
            record = mf.auto_record(mf.load(out), "content_net_auto.tflite")
        auto = runtime.load_models("auto", out, args.threads)
        f32 = runtime.load_models("float32", out, args.threads)
        deltas = np.array([abs(auto.aggregate(*auto.features(f))[0]
                               - f32.aggregate(*f32.features(f))[0]) for f in held.frames])
        speed = held.frames[:args.speed_frames]
        per_frame_ms(auto, speed[:1])
        per_frame_ms(f32, speed[:1])
        ratios = []
        for _ in range(2):  # interleaved rounds: load changes hit both alike
            a, b = per_frame_ms(auto, speed), per_frame_ms(f32, speed)
            ratios += [y / x for x, y in zip(a, b)]
        promise = record.get("promise") or {}
        row = {"budget": budget, "mixed": not args.no_mixed, "labels": record["labels"],
               "rejected": (record.get("rejected") or {}).get("labels"),
               "promise": {k: promise.get(k) for k in ("fraction", "frames", "images", "rank",
                                                        "bound", "max_logit_delta", "holds",
                                                        "fallback")},
               "holdout_frames": int(deltas.size), "holdout_images": held.images,
               "holdout_fraction_within": float((deltas <= budget).mean()),
               "holdout_max": float(deltas.max()), "holdout_mean": float(deltas.mean()),
               "speed_vs_float32_median": float(np.median(ratios)),
               "modelled_speedup": record.get("modelled_speedup")}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after every budget: a long run that stops keeps what it measured
            atomic_write_text(args.json, json.dumps({"machine": machine_info(),
                                                     "holdout_sha256": held.sha256,
                                                     "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
