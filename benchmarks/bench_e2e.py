"""End-to-end speed of every backend against a PyTorch-eager reference, in one run.

Run by hand (not a test; shared machines are noisy):

    .venv/bin/python benchmarks/bench_e2e.py --model-dir DIR --checkpoints DIR [--seconds 20]

It makes (or reuses) a 1080p30 H.264 clip, scores it once per backend with `uvq`'s
streaming pipeline, and once with an upstream-style reference: ffmpeg through a temp
file, the whole video held as float64, PyTorch eager nets in batches of 24. Every
backend is reported as a ratio to that reference and to float32 from the same run.
A second part measures peak RSS of `uvq` on a long and a short clip, each in a fresh
process, to show memory does not grow with video length.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # this folder is on sys.path when a benchmark runs as a script
from uvq_int8.convert import CHECKPOINT_NAMES
from uvq_int8.util import machine_info

HERE = Path(__file__).resolve().parent


def upstream_style_reference(clip: Path, checkpoints: dict[str, Path], threads: int) -> dict:
    """Decode like upstream (temp file, float64 video), run the PyTorch nets eagerly."""
    import torch

    from uvq_int8.convert import nets
    from uvq_int8.runtime.decode import probe as probing
    from uvq_int8.runtime.decode import verified

    torch.set_num_threads(threads)
    info = probing.probe(str(clip))
    length = math.ceil(info.duration)
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".rgb") as tmp:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vf",
                        verified.upstream_filter(False), "-r", "1", "-f",
                        "rawvideo", "-pix_fmt", "rgb24", "-y", tmp.name], check=True)
        raw = bytearray(Path(tmp.name).read_bytes())
    frame_bytes = 1080 * 1920 * 3
    raw = raw[:length * frame_bytes] + bytearray(max(0, length * frame_bytes - len(raw)))
    frames = (np.frombuffer(bytes(raw), np.uint8).reshape(length, 1080, 1920, 3) / 255.0 - 0.5) * 2
    decode_s = time.perf_counter() - started
    cores = {net: nets.load_core(net, path) for net, path in checkpoints.items()}
    pipeline = nets.UVQ1p5Torch(cores["content"], cores["distortion"], cores["aggregation"])
    logits = []
    for i in range(0, length, 24):
        batch = frames[i:i + 24].astype(np.float32)
        c, d = pipeline.features(batch)
        logits += pipeline.logits(c, d).numpy().ravel().tolist()
    return {"seconds": time.perf_counter() - started, "decode_seconds": decode_s,
            "logits": logits}


def run_backend(clip: Path, backend: str, model_dir: Path, threads: int,
                audit: float = 0.0) -> dict:
    """``backend`` may end in "+audit": then ``uvq``'s runtime audit runs at fraction
    ``audit`` (the float32 files are loaded beforehand, like the backend's own)."""
    from uvq_int8 import runtime
    from uvq_int8.runtime.scoring import ScoreOptions, score_video

    backend, _, audited = backend.partition("+")
    models = runtime.load_models(backend, model_dir, threads)  # load time is not scored
    if audited:
        runtime.load_models("float32", model_dir, threads)
    started = time.perf_counter()
    result = score_video(str(clip), models, ScoreOptions(fps=1),
                         audit=audit if audited else None)
    return {"seconds": time.perf_counter() - started, "logits": result["per_frame_logits"],
            "score": result["uvq1p5_score"]}


PEAK_RSS_SCRIPT = """
import json, resource, sys
from pathlib import Path
# Linux keeps the peak RSS across fork/exec, so this process would report the
# benchmark's own peak; reset the high-water mark first, then read VmHWM.
Path("/proc/self/clear_refs").write_text("5")
from uvq_int8 import runtime
from uvq_int8.runtime.scoring import ScoreOptions, score_video
models = runtime.load_models(sys.argv[2], sys.argv[3], int(sys.argv[4]))
score_video(sys.argv[1], models, ScoreOptions(fps=1))
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"self_mb": hwm / 1024,
                  "children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def peak_rss(clip: Path, backend: str, model_dir: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(clip), backend,
                          str(model_dir), str(threads)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path,
                        help="directory with content_net.pth, distortion_net.pth, "
                             "aggregation_net.pth for the PyTorch reference (skipped if absent)")
    parser.add_argument("--backends", default="float32,fp16,int8,int8-weight-only,int4,int8-static",
                        help="comma list; NAME+audit scores with the runtime audit at --audit")
    parser.add_argument("--audit", type=float, default=0.05,
                        help="audit fraction for NAME+audit entries (default 0.05)")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs per backend (median kept)")
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "uvq-bench")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS 10 s vs 60 s")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    clip = common.make_test_clip(args.clips / f"testsrc2_1080p30_{args.seconds}s.mp4", args.seconds)
    results: dict = {"machine": machine_info(),
                     "clip": str(clip), "threads": args.threads, "backends": {}}
    if args.checkpoints:
        ckpt = {n: args.checkpoints / name for n, name in CHECKPOINT_NAMES.items()}
        results["pytorch_reference"] = upstream_style_reference(clip, ckpt, args.threads)
        print(f"pytorch-eager reference: {results['pytorch_reference']['seconds']:.2f} s",
              file=sys.stderr)
    # Rounds alternate the backend order and the median is kept, so a change in the
    # machine's load during the run does not land on one backend only.
    names = args.backends.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for backend in (names if r % 2 == 0 else names[::-1]):
            runs[backend].append(run_backend(clip, backend, args.model_dir, args.threads,
                                             args.audit))
            print(f"round {r + 1} {backend}: {runs[backend][-1]['seconds']:.2f} s",
                  file=sys.stderr)
    for backend, rs in runs.items():
        results["backends"][backend] = dict(rs[0], seconds=float(np.median(
            [x["seconds"] for x in rs])), all_seconds=[x["seconds"] for x in rs])

    base = results["backends"].get("float32")
    ref = results.get("pytorch_reference")
    print(f"\n{args.seconds} s 1080p30 H.264 clip, {args.threads} threads, "
          f"{results['machine']['cores']} cores, median of {args.rounds} alternating rounds\n")
    print("| backend | seconds | vs float32 | vs PyTorch eager | max logit delta vs float32 |")
    print("|---|---|---|---|---|")
    if ref:
        print(f"| PyTorch eager (upstream-style decode) | {ref['seconds']:.2f} | "
              f"{ref['seconds'] / base['seconds']:.2f}x | 1.00x | "
              f"{np.max(np.abs(np.subtract(ref['logits'], base['logits']))):.4f} |" if base else "")
    for name, r in results["backends"].items():
        vs32 = f"{r['seconds'] / base['seconds']:.2f}x" if base else "-"
        vsref = f"{r['seconds'] / ref['seconds']:.2f}x" if ref else "-"
        delta = (f"{np.max(np.abs(np.subtract(r['logits'], base['logits']))):.4f}"
                 if base else "-")
        print(f"| {name} | {r['seconds']:.2f} | {vs32} | {vsref} | {delta} |")
    if base:
        # float32 and each backend run back to back in every round, so the ratio of a
        # round is less exposed to the machine's load drifting between rounds.
        print("\nfloat32 seconds / backend seconds, per round (median):")
        for name, r in results["backends"].items():
            paired = [f / b for f, b in zip(base["all_seconds"], r["all_seconds"])]
            r["paired_speedups"] = paired
            print(f"  {name}: {' '.join(f'{x:.2f}' for x in paired)} "
                  f"({float(np.median(paired)):.2f})")

    audited = [n for n in names if n.endswith("+audit") and n.split("+")[0] in runs]
    if audited:
        print(f"\nthe audit's cost at F = {args.audit:g} (NAME+audit seconds / NAME seconds - 1, "
              f"per round, median):")
        for name in audited:
            plain = results["backends"][name.split("+")[0]]["all_seconds"]
            cost = [a / b - 1 for a, b in zip(results["backends"][name]["all_seconds"], plain)]
            results["backends"][name]["audit_cost"] = cost
            print(f"  {name}: {' '.join(f'{x:+.1%}' for x in cost)} "
                  f"({float(np.median(cost)):+.1%})")

    if args.memory:
        short = common.make_test_clip(args.clips / "testsrc2_1080p30_10s.mp4", 10)
        long = common.make_test_clip(args.clips / "testsrc2_1080p30_60s.mp4", 60)
        mem = {"10s": peak_rss(short, "float32", args.model_dir, args.threads),
               "60s": peak_rss(long, "float32", args.model_dir, args.threads)}
        results["peak_rss_mb"] = mem
        print("\n| clip | peak RSS, uvq process (MB) | peak RSS, ffmpeg child (MB) |")
        print("|---|---|---|")
        for k, v in mem.items():
            print(f"| {k} | {v['self_mb']:.0f} | {v['children_mb']:.0f} |")
        print(f"\ndifference (uvq process): {mem['60s']['self_mb'] - mem['10s']['self_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
