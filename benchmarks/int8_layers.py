"""Per-layer error of one backend's net against float32 of the same weights, on natural frames.

Run by hand:

    .venv/bin/python benchmarks/int8_layers.py --models DIR [--backend int8-static] \\
        [--net content|distortion] [--frames 4] [--worst 12] [--json FILE]

For every op output that both files have (ai-edge-quantizer keeps the float tensor names),
it pools over the frames the SNR in dB (10·log10 Σa²/Σ(a−b)², a the float32 tensor) and
the cosine, and the SNR lost at that op (the worst of its inputs' SNR minus its own). Two
more columns say where a loss comes from: the op's own rounding (the float32 tensor
rounded to the candidate's int8 scale) and, for 1x1 convolutions, the float32 weights
applied to the candidate's input. A loss with high own-rounding SNR and a float-weights
SNR near the op's own is the op amplifying its input's error. The
frames are the promise holdout (natural clips of photographs no build split uses). The
table lists every op in graph order; ``--worst N`` then lists the N ops that lose most.
DistortionNet keeps every tensor of both files alive (~4.5 GB).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from uvq_int8.backends import get_backend
from uvq_int8.convert import natural
from uvq_int8.convert import tensor_stats as T
from uvq_int8.runtime import frames as F
from uvq_int8.util import atomic_write_text, machine_info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--backend", default="int8-static")
    p.add_argument("--net", default="content", choices=("content", "distortion"))
    p.add_argument("--candidate", type=Path, metavar="FILE",
                   help="measure this .tflite of --net instead of the backend's file (e.g. one "
                        "that int8_accuracy.py --save wrote)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--worst", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    paths = get_backend(args.backend).model_paths(args.models)
    float_paths = get_backend("float32").model_paths(args.models)
    held = natural.make_set("holdout", args.frames)
    frames = [[F.net_inputs(f)[0 if args.net == "content" else 1]] for f in held.frames]
    candidate = args.candidate or paths[args.net]
    rows = T.layer_report(float_paths[args.net].read_bytes(), candidate.read_bytes(),
                          frames, args.threads)
    print("| op | kind | group | SNR dB | cosine | SNR lost here | own rounding dB "
          "| float weights on its input dB |\n|---|---|---|---|---|---|---|---|")

    def cell(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}"

    for r in rows:
        print(f"| {r.op_index} | {r.op} | {r.group} | {r.snr_db:.2f} | {r.cosine:.4f} "
              f"| {cell(r.snr_drop_db)} | {cell(r.rounding_snr_db)} "
              f"| {cell(r.float_weights_snr_db)} |")
    worst = sorted((r for r in rows if r.snr_drop_db is not None),
                   key=lambda r: -r.snr_drop_db)[:args.worst]
    print(f"\nthe {len(worst)} ops that lose most:")
    for r in worst:
        why = ""
        if r.rounding_snr_db is not None:
            why = f"; its own rounding alone {r.rounding_snr_db:.2f} dB"
        if r.float_weights_snr_db is not None:
            why += f"; float32 weights on its int8 input {r.float_weights_snr_db:.2f} dB"
        print(f"  op {r.op_index} {r.op} ({r.group}): {r.snr_drop_db:.2f} dB lost, "
              f"{r.snr_db:.2f} dB after{why}")
    if args.json:
        atomic_write_text(args.json, json.dumps({
            "models": str(args.models), "backend": args.backend, "net": args.net,
            "candidate": str(candidate),
            "frames": len(frames), "holdout_sha256": held.sha256, "machine": machine_info(),
            "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
