"""The pyav decoder against the ffmpeg command line, at realistic bitrates, in one run.

Run by hand (not a test; shared machines are noisy), with float32 and int8-static built:

    .venv/bin/pip install -e '.[bench]'     # scikit-image, for the photographs
    .venv/bin/python benchmarks/bench_decoders.py --model-dir DIR [--rounds 5]

It makes (or reuses) three 1080p30 clips of natural content:

- ``h264_8M``: photographs bundled with scikit-image, each panned and zoomed for 5 s by
  ffmpeg's zoompan (on a 4K upscale) with light temporal grain, x264 preset medium
  (B-frames, B-pyramid) at 8 Mb/s;
- ``h264_25M``: that clip re-encoded the same way at 25 Mb/s, phone-like;
- ``hevc_8M``: the first 6 s of that clip re-encoded with x265 preset ultrafast at
  8 Mb/s (B-frames, B-pyramid);

and reports for each:

1. decode CPU (user + system, the Python process and its ffmpeg children) per scored
   frame, at ``--fps 1``, one decoder thread: ffmpeg CLI path, pyav path, and a full
   decode (``ffmpeg -threads 1 -i CLIP -f null -``) for scale;
2. end-to-end ``uvq`` seconds (the streaming pipeline of ``uvq_int8.runtime.scoring``) for
   int8-static and float32 with both decoders: ``--rounds`` alternating rounds, medians,
   and ratios from this one run;
3. peak memory of the whole process tree (Python plus ffmpeg children) for int8-static,
   sampled from /proc every 10 ms in a fresh process per decoder.

``--length`` also joins ``h264_8M`` three times (stream copy, 60 s) and reports decode CPU
per scored frame and peak process-tree memory for the 20 s and the 60 s clip, to show
that neither grows with the video's length.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # this folder is on sys.path when a benchmark runs as a script
from uvq_int8.util import atomic_path, atomic_write_text, machine_info

CLIPS = {
    "h264_8M": ["-c:v", "libx264", "-preset", "medium", "-b:v", "8M", "-maxrate", "12M",
                "-bufsize", "16M"],
    "h264_25M": ["-c:v", "libx264", "-preset", "medium", "-b:v", "25M", "-maxrate", "35M",
                 "-bufsize", "50M"],
    # The first 6 s only: x265 is slow to encode on a shared 2-core machine.
    "hevc_8M": ["-t", "6", "-c:v", "libx265", "-preset", "ultrafast", "-b:v", "8M",
                "-x265-params", "log-level=error"],
}
MASTER = "h264_8M"  # made from the photographs; the others re-encode it
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SECONDS_PER_PHOTO = 5


def make_clips(folder: Path, names: list[str]) -> dict[str, Path]:
    """The photograph clip at 8 Mb/s, and the other clips as re-encodings of it."""
    paths = {name: folder / f"natural_1080p30_{name}.mp4" for name in CLIPS}
    master = paths[MASTER]
    # 20 s: four photographs, 5 s each.
    common.natural_clip(master, PHOTOS, SECONDS_PER_PHOTO, CLIPS[MASTER])
    for name in names:
        if not paths[name].is_file():
            with atomic_path(paths[name], suffix=".mp4") as tmp:
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(master),
                                *CLIPS[name], str(tmp)], check=True)
    return {name: paths[name] for name in names}


def length_check(clip: Path, model_dir: Path, threads: int) -> dict:
    """Decode CPU per scored frame and peak tree memory, 20 s clip against 60 s."""
    out = {}
    for label, path in (("20 s", clip), ("60 s", common.joined_clip(clip, 3))):
        out[label] = {d: dict(decode_cpu(path, d),
                              peak_tree_mb=peak_tree_mb(path, "int8-static", model_dir,
                                                        threads, d))
                      for d in ("ffmpeg", "pyav")}
    return out


def report_length(res: dict) -> None:
    print("\n## video length: h264_8M against itself joined three times")
    print("| clip | decoder | scored frames | decode CPU per scored frame ms | "
          "peak process-tree RSS MB | path that ran | skipped packets |")
    print("|---|---|---|---|---|---|---|")
    for label, by_decoder in res.items():
        for d, r in by_decoder.items():
            path = r["decoder"] + (f" ({r['fallback']})" if r["fallback"] else "")
            print(f"| {label} | {d} | {r['frames']} | {r['per_frame_ms']:.0f} | "
                  f"{r['peak_tree_mb']:.0f} | {path} | "
                  f"{r['skipped_packets']} of {r['packets'] or '-'} |")


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def decode_cpu(clip: Path, decoder: str) -> dict:
    """CPU seconds to produce the scored frames (fps=1) with one decoder thread."""
    from uvq_int8.runtime import decode
    from uvq_int8.runtime.decode import probe as probing

    stats = probing.DecodeStats()
    before = _cpu()
    count = sum(1 for _ in decode.uvq_frames(str(clip), fps=1, decode_threads=1, stats=stats,
                                            decoder=decoder))
    cpu = _cpu() - before
    return {"cpu_s": cpu, "frames": count, "per_frame_ms": 1000 * cpu / count,
            "skipped_packets": stats.skipped_packets, "packets": stats.packets,
            "decoder": stats.decoder, "fallback": stats.fallback}


def full_decode_cpu(clip: Path) -> float:
    before = _cpu()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(clip),
                    "-f", "null", "-"], check=True)
    return _cpu() - before


def score_once(clip: Path, models, decoder: str) -> dict:
    from uvq_int8.runtime.scoring import ScoreOptions, score_video

    started, cpu = time.perf_counter(), _cpu()
    result = score_video(str(clip), models, ScoreOptions(fps=1, decoder=decoder))
    return {"seconds": time.perf_counter() - started, "cpu_s": _cpu() - cpu,
            "logits": result["per_frame_logits"],
            "decoder": result["decoder"], "skipped_packets": result["skipped_packets"]}


PEAK_SCRIPT = """
import sys
from uvq_int8 import runtime
from uvq_int8.runtime.scoring import ScoreOptions, score_video
models = runtime.load_models(sys.argv[2], sys.argv[3], int(sys.argv[4]))
score_video(sys.argv[1], models, ScoreOptions(fps=1, decoder=sys.argv[5]))
"""


def peak_tree_mb(clip: Path, backend: str, model_dir: Path, threads: int, decoder: str) -> float:
    proc = subprocess.Popen([sys.executable, "-c", PEAK_SCRIPT, str(clip), backend,
                             str(model_dir), str(threads), decoder])
    sampler = common.TreePeak(proc.pid, interval=0.01)
    sampler.start()
    proc.wait()
    peak = sampler.stop()
    if proc.returncode:
        raise SystemExit(f"peak-memory run failed ({decoder})")
    return peak["rss"] / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path,
                        help="directory with float32 and int8-static built")
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "uvq-bench")
    parser.add_argument("--only", default=",".join(CLIPS), help="comma-separated clip names")
    parser.add_argument("--rounds", type=int, default=5,
                        help="end-to-end rounds; 0 measures decode CPU only")
    parser.add_argument("--backends", default="int8-static,float32",
                        help="end-to-end backends (int8-static is also used for memory)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--length", action="store_true",
                        help="also compare h264_8M with itself joined three times (60 s)")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--report", type=Path, help="only print the tables of a --json file")
    args = parser.parse_args()
    if args.report:
        saved = json.loads(args.report.read_text())
        for name, res in saved["clips"].items():
            report(name, dict(res, cores=saved["cores"]))
        if "length" in saved:
            report_length(saved["length"])
        return 0

    if args.model_dir is None:
        parser.error("--model-dir is required (unless --report)")
    from uvq_int8 import runtime
    from uvq_int8.runtime.decode import verified
    from uvq_int8.runtime.decode import probe as probing

    backends = tuple(args.backends.split(","))
    decoders = ("ffmpeg", "pyav")
    models = {b: runtime.load_models(b, args.model_dir, args.threads) for b in backends}
    results: dict = {"cores": len(os.sched_getaffinity(0)), "threads": args.threads,
                     "ffmpeg": verified.ffmpeg_version(), "rounds": args.rounds, "clips": {}}
    clips = make_clips(args.clips, args.only.split(","))
    for name, clip in clips.items():
        info = probing.probe(str(clip))
        res: dict = {"path": str(clip), "mbit_s": os.path.getsize(clip) * 8 / info.duration / 1e6}
        res["full_decode_cpu_s"] = full_decode_cpu(clip)
        res["decode"] = {d: decode_cpu(clip, d) for d in decoders}
        runs: dict = {(b, d): [] for b in backends for d in decoders}
        order = list(runs)
        for r in range(args.rounds):
            for key in (order if r % 2 == 0 else order[::-1]):
                runs[key].append(score_once(clip, models[key[0]], key[1]))
                print(f"{name} round {r + 1} {key[0]} {key[1]}: "
                      f"{runs[key][-1]['seconds']:.2f} s", file=sys.stderr)
        if not args.rounds:
            res["codec"] = info.codec
            results["clips"][name] = res
            report(name, res)
            continue
        res["e2e"] = {f"{b}/{d}": {"median_s": float(np.median([x["seconds"] for x in rs])),
                                   "all_s": [x["seconds"] for x in rs],
                                   "median_cpu_s": float(np.median([x["cpu_s"] for x in rs])),
                                   "same_logits_as_ffmpeg": rs[0]["logits"] ==
                                   runs[(b, "ffmpeg")][0]["logits"]}
                      for (b, d), rs in runs.items()}
        res["cores"] = results["cores"]
        res["peak_tree_mb"] = {d: peak_tree_mb(clip, "int8-static", args.model_dir,
                                               args.threads, d) for d in decoders}
        res["codec"] = info.codec
        results["clips"][name] = res
        report(name, res)
    if args.length:
        results["length"] = length_check(make_clips(args.clips, [MASTER])[MASTER],
                                         args.model_dir, args.threads)
        report_length(results["length"])
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": machine_info(), **results},
                                                indent=2))
    return 0


def report(name: str, res: dict) -> None:
    frames = res["decode"]["pyav"]["frames"]
    full = res["full_decode_cpu_s"]
    e2e = res.get("e2e")
    print(f"\n## {name}: {res['mbit_s']:.1f} Mb/s, {res.get('codec', '?')}, "
          f"{frames} scored frames")
    print(f"full decode (ffmpeg -threads 1 -f null): {full:.2f} s CPU, "
          f"{1000 * full / frames:.0f} ms per scored frame")
    print("| decoder | decode CPU s | per scored frame ms | vs full decode | skipped packets |")
    print("|---|---|---|---|---|")
    for d, r in res["decode"].items():
        print(f"| {d} | {r['cpu_s']:.2f} | {r['per_frame_ms']:.0f} | {r['cpu_s'] / full:.2f}x | "
              f"{r['skipped_packets']} of {r['packets'] or '-'} |")
    if not e2e:
        return
    print("| end to end | ffmpeg s | pyav s | ffmpeg / pyav | floor ffmpeg / pyav s |")
    print("|---|---|---|---|---|")
    for b in sorted({k.split("/")[0] for k in e2e}, reverse=True):
        old, new = e2e[f"{b}/ffmpeg"]["median_s"], e2e[f"{b}/pyav"]["median_s"]
        # The floor: all CPU the run used (decoding + nets) spread over every core.
        floors = [e2e[f"{b}/{d}"]["median_cpu_s"] / res["cores"] for d in ("ffmpeg", "pyav")]
        print(f"| {b} | {old:.2f} | {new:.2f} | {old / new:.2f}x | "
              f"{floors[0]:.2f} / {floors[1]:.2f} |")
    for b in sorted({k.split("/")[0] for k in e2e}, reverse=True):
        # Both decoders run back to back in every round: the per-round ratio is less
        # exposed to the machine's load drifting between rounds.
        paired = [o / n for o, n in zip(e2e[f"{b}/ffmpeg"]["all_s"], e2e[f"{b}/pyav"]["all_s"])]
        print(f"{b} ffmpeg s / pyav s per round: {' '.join(f'{x:.2f}' for x in paired)} "
              f"(median {float(np.median(paired)):.2f})")
    for d in ("ffmpeg", "pyav"):
        if f"float32/{d}" in e2e and f"int8-static/{d}" in e2e:
            ratio = e2e[f"float32/{d}"]["median_s"] / e2e[f"int8-static/{d}"]["median_s"]
            print(f"int8-static vs float32 with {d}: {ratio:.2f}x faster")
    mem = res["peak_tree_mb"]
    print(f"peak process-tree RSS, int8-static: ffmpeg {mem['ffmpeg']:.0f} MB, "
          f"pyav {mem['pyav']:.0f} MB ({mem['pyav'] / mem['ffmpeg']:.2f}x)")
    print("same logits with both decoders: "
          f"{all(v['same_logits_as_ffmpeg'] for v in e2e.values())}")


if __name__ == "__main__":
    sys.exit(main())
