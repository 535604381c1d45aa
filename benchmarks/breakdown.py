"""Where one scored frame's time goes: nets at 1 and 2 threads, preprocessing, decoding.

Run by hand (not a test; shared machines are noisy):

    .venv/bin/python benchmarks/breakdown.py --model-dir MODELS [--backends float32,int8-static]

It makes (or reuses) bench_e2e's 20 s 1080p30 clip and prints, per backend, the median
invoke time of ContentNet and DistortionNet at 1 and 2 interpreter threads and the
preprocessing of one frame; then the decoding cost per scored frame (wall and ffmpeg CPU,
through ``uvq_int8.runtime.decode.uvq_frames``) and ffmpeg's decode-only CPU for the whole clip with
and without ``-skip_frame noref``. These are the figures behind docs/benchmarks.md's
"where an int8 frame's time goes". Last, the ratio of int8-static's to float32's
DistortionNet time, as the build measures it (``sensitivity.measure_int8_ratio``), with
more rounds: the figure ``sensitivity.INT8_TIME_RATIOS`` holds for this machine's ISA.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # the same clip as the end-to-end benchmark (this folder is on sys.path)


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def nets(backend: str, model_dir: Path, frame: np.ndarray, runs: int) -> dict:
    from uvq_int8 import runtime

    out = {}
    for threads in (1, 2):
        models = runtime.load_models(backend, model_dir, threads)
        # The inputs exactly as Models.features makes them (pixel table for int8 patches).
        c_in, patches = models.inputs_for(frame)
        out["preprocess_ms"] = median_ms(lambda: models.inputs_for(frame), runs)
        out[f"content_ms_{threads}t"] = median_ms(lambda: models.run_net("content", c_in), runs)
        out[f"distortion_ms_{threads}t"] = median_ms(
            lambda: models.run_net("distortion", patches), runs)
    return out


def decoding(clip: Path) -> dict:
    from uvq_int8.runtime import decode

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    n = sum(1 for _ in decode.uvq_frames(clip, fps=1, decode_threads=1))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"frames": n, "wall_ms_per_frame": wall / n * 1000, "cpu_ms_per_frame": cpu / n * 1000}


def decode_only_cpu(clip: Path, extra: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", "1", *extra, "-i",
                    str(clip), "-an", "-f", "null", "-"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="built model files")
    parser.add_argument("--backends", default="float32,int8-static",
                        help="comma list of backends (default: float32,int8-static)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "uvq-bench",
                        help="where the 20 s clip is made or reused")
    parser.add_argument("--ratio-rounds", type=int, default=9,
                        help="rounds of interleaved calls for the int8 time ratio of auto's "
                             "cost model (0: skip it)")
    parser.add_argument("--json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()

    from uvq_int8.runtime import decode

    clip = common.make_test_clip(args.clips / "testsrc2_1080p30_20s.mp4", 20)
    frame = next(decode.uvq_frames(clip, fps=1))
    from uvq_int8.util import machine_info

    m = machine_info()
    results: dict = {"machine": m, "nets": {}}
    print(f"machine: {m['cpu']}, {m['cores']} cores, isa {m['isa']}\n")
    print("| backend | content 1t / 2t ms | distortion 1t / 2t ms | preprocessing ms |")
    print("|---|---|---|---|")
    for backend in args.backends.split(","):
        r = results["nets"][backend.strip()] = nets(backend.strip(), args.model_dir, frame,
                                                    args.runs)
        print(f"| {backend} | {r['content_ms_1t']:.1f} / {r['content_ms_2t']:.1f} | "
              f"{r['distortion_ms_1t']:.0f} / {r['distortion_ms_2t']:.0f} | "
              f"{r['preprocess_ms']:.1f} |")
    d = results["decoding"] = decoding(clip)
    print(f"\ndecoding ({d['frames']} scored frames): {d['wall_ms_per_frame']:.0f} ms wall, "
          f"{d['cpu_ms_per_frame']:.0f} ms ffmpeg CPU per scored frame")
    full, skipped = decode_only_cpu(clip, []), decode_only_cpu(clip, ["-skip_frame", "noref"])
    results["decode_only_cpu_s"] = {"full": full, "skip_noref": skipped}
    print(f"ffmpeg decode only, whole clip: {full:.2f} s CPU; with -skip_frame noref "
          f"{skipped:.2f} s (not usable: it changes which frames are scored)")
    if args.ratio_rounds > 0:
        results["int8_time_ratio"] = int8_ratio(args.model_dir, clip, args.ratio_rounds)
        r = results["int8_time_ratio"]
        print(f"\nauto's cost model, isa {m['isa']}: int8-static / float32 DistortionNet time "
              f"{r['ratio']:.3f} (median of {r['calls']} interleaved calls, 2 threads; "
              f"sensitivity.INT8_TIME_RATIOS holds one per ISA)")
    if args.json:
        from uvq_int8.util import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


def int8_ratio(model_dir: Path, clip: Path, rounds: int) -> dict:
    """What the build times on a machine whose ISA has no cost constants
    (``sensitivity.measure_int8_ratio``), with more rounds, on the clip's first 3 frames."""
    from uvq_int8.convert import sensitivity as S
    from uvq_int8.runtime import decode
    from uvq_int8.runtime import frames as F

    files = [model_dir / f"distortion_net{tag}.tflite" for tag in ("", "_int8_static")]
    patches = [F.net_inputs(f)[1] for f, _ in zip(decode.uvq_frames(clip, fps=1), range(3))]
    ratio = S.measure_int8_ratio("distortion", files[0].read_bytes(), files[1].read_bytes(),
                                 patches, threads=2, rounds=rounds)
    return {"ratio": ratio, "calls": rounds * len(patches), "threads": 2,
            "files": [f.name for f in files]}


if __name__ == "__main__":
    raise SystemExit(main())
