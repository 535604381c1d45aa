"""Memory against video length: peak memory of ``uvq --fps 0.2`` on a 1-minute clip and on a
1-hour clip made from it by stream copy. Run by hand (not a test; it takes a while):

    .venv/bin/pip install -e '.[bench]'     # scikit-image, for the photographs
    .venv/bin/python benchmarks/bench_long.py --model-dir DIR --work DIR [--json OUT]

It makes once, in ``--work``, a 1-minute natural-content 1080p30 clip: twelve photographs
bundled with scikit-image, each zoomed and panned for 5 s by ffmpeg's zoompan (on a 4K
upscale) with light temporal grain, encoded by x264 (preset medium, 3 B-frames, B-pyramid)
at 10 Mb/s; then a 1-hour clip, that clip joined 60 times by ffmpeg's concat demuxer with
``-c copy`` (no re-encoding; ffprobe must give ~3600 s). Both are reused on later runs.

Each backend of ``--backends`` then scores each clip with the real command line, ``uvq
CLIP --fps 0.2 --backend B --model-dir M``, in a fresh process (12 frames for the minute,
720 for the hour). Memory is sampled from /proc every 50 ms over that process and all its
descendants (ffmpeg and ffprobe children included): the largest summed RSS, the
largest summed PSS (``/proc/PID/smaps_rollup``, which splits shared pages between
processes) and the largest summed anonymous memory (heap, stacks, buffers). It reports
frames scored, wall seconds, the three peaks, and hour / minute for each; the hour
passes when its RSS and PSS peaks are within ``--tolerance`` (10 %) of the minute's.

PSS moves with other processes: a shared library page that another process on the
machine also maps (the same virtualenv's libraries in another job) counts half, and
counts whole once that process ends, so on a busy machine PSS can rise during a run that
allocates nothing. Anonymous memory does not depend on other processes: it is what
grows if something is kept per frame. A timeline (one sample per ``--every`` seconds)
shows whether memory grows during a run; the JSON keeps it, and the table shows the
anonymous memory at a quarter, half and the end of each run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

import common  # this folder is on sys.path when a benchmark runs as a script
from uvq_int8.util import atomic_write_text, machine_info

# Twelve photographs bundled with scikit-image (no download), 5 s each: one minute.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
          "hubble_deep_field", "retina", "camera", "grass", "gravel", "brick", "coins")
SECONDS_PER_PHOTO = 5
# 10 Mb/s asked so that the average stays above 8 Mb/s; medium keeps B-pyramid on.
ENCODER = ["-c:v", "libx264", "-preset", "medium", "-bf", "3", "-b:v", "10M", "-maxrate", "12M",
           "-bufsize", "20M"]
COPIES = 60


def make_clips(work: Path) -> dict[str, Path]:
    """The minute and the hour (``COPIES`` stream copies of it), made once in ``work``."""
    minute = common.natural_clip(work / "natural_1080p30_60s.mp4", PHOTOS, SECONDS_PER_PHOTO,
                                 ENCODER)
    hour = common.joined_clip(minute, COPIES)
    return {"minute": minute, "hour": hour}


def run_uvq(clip: Path, backend: str, model_dir: Path, fps: str, threads: int | None,
            every: float, work: Path) -> dict:
    """One ``uvq CLIP --fps F`` in a fresh process: wall seconds, frames scored, peak
    RSS and PSS of its process tree, the peak PSS sample by kind of process, a timeline."""
    stats = work / f"{clip.stem}.{backend}.json"
    stats.unlink(missing_ok=True)
    argv = [sys.executable, "-c", "from uvq_int8.cli import uvq_main; raise SystemExit(uvq_main())",
            str(clip), "--fps", fps, "--backend", backend, "--model-dir", str(model_dir),
            "--output", str(stats), "--quiet"]
    if threads:
        argv += ["--threads", str(threads)]
    seconds, sampler = common.run_sampled(argv, f"uvq on {clip}", every=every)
    peak = sampler.peak
    result = json.loads(stats.read_text())
    return {"command": shlex.join(["uvq", *argv[3:]]), "frames": len(result["per_frame_scores"]),
            "score": result["uvq1p5_score"], "decoder": result["decoder"],
            "fallback": result["fallback"], "skipped_packets": result["skipped_packets"],
            "warnings": result["warnings"], "seconds": round(seconds, 2),
            "scoring_seconds": result["seconds"],
            **{f"peak_{k}_mb": round(v / 1024, 1) for k, v in peak.items()},
            "peak_pss_parts": sampler.peak_parts,
            "timeline_columns": ["seconds", "rss_mb", "pss_mb", "anon_mb"],
            "timeline": [(t, *(round(kb / 1024, 1) for kb in values))
                         for t, *values in sampler.timeline]}


def _anon_at(timeline: list, fraction: float) -> float:
    """Anonymous memory (MB) of the timeline sample nearest ``fraction`` of the run (NaN
    for a file written before the script sampled it)."""
    if not timeline or len(timeline[0]) < 4:
        return float("nan")
    end = timeline[-1][0]
    return min(timeline, key=lambda s: abs(s[0] - fraction * end))[3]


def report(saved: dict) -> None:
    m = saved["machine"]
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores, isa {m['isa']}; --fps {saved['fps']}")
    for name, facts in saved["clips"].items():
        print(f"{name}: {facts['size']}, {facts['seconds']:.1f} s, {facts['mbps']} Mb/s, "
              f"B-frames {facts['b_frames']}, {facts['path']}")
    print("\n| backend | clip | frames | wall s | peak RSS MB | peak PSS MB | peak anon MB | "
          "anon at 1/4, 1/2, end MB | decoder |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for backend, runs in saved["runs"].items():
        for name, r in runs.items():
            marks = ", ".join(f"{_anon_at(r['timeline'], f):.0f}" for f in (0.25, 0.5, 1.0))
            decoder = r["decoder"] + (f" ({r['fallback']})" if r["fallback"] else "")
            anon = r.get("peak_anon_mb", float("nan"))
            print(f"| {backend} | {name} | {r['frames']} | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | {anon:.0f} | "
                  f"{marks} | {decoder} |")
    if not saved["ratios"]:
        return
    print("\n| backend | hour / minute: peak RSS | peak PSS | peak anon | RSS and PSS within "
          f"{saved['tolerance']:.0%} |")
    print("| --- | --- | --- | --- | --- |")
    for backend, ratio in saved["ratios"].items():
        anon = ratio.get("anon", float("nan"))
        print(f"| {backend} | {ratio['rss']:.3f} | {ratio['pss']:.3f} | {anon:.3f} | "
              f"{'yes' if ratio['flat'] else 'NO'} |")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The clips (about 75 MB and 4.5 GB) stay in --work and are reused. The exit "
               "status is 1 when an hour's peak is not within --tolerance of its minute's.")
    ap.add_argument("--model-dir", type=Path, help="a model directory with the backends built")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "uvq-bench-long",
                    help="folder for the clips and uvq's outputs (default: %(default)s)")
    ap.add_argument("--backends", default="float32",
                    help="comma list of backends to run (default: %(default)s)")
    ap.add_argument("--fps", default="0.2", help="uvq's --fps (default: %(default)s)")
    ap.add_argument("--threads", type=int, help="uvq's --threads (default: uvq's own)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="largest hour / minute - 1 that counts as flat (default: %(default)s)")
    ap.add_argument("--every", type=float, default=5.0,
                    help="seconds between timeline samples (default: %(default)s)")
    ap.add_argument("--only", default="minute,hour",
                    help="clips to score, a comma list of minute and hour (default: %(default)s;"
                         " minute alone is a quick check of the set-up, with no ratio)")
    ap.add_argument("--clips-only", action="store_true",
                    help="make the clips, print what ffprobe says of them, and stop")
    ap.add_argument("--json", type=Path,
                    help="write the measurements here (rewritten after every run)")
    ap.add_argument("--report", type=Path, help="only print the tables of a --json file")
    args = ap.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return 0

    clips = make_clips(args.work)
    facts = {name: dict(common.clip_facts(path), path=str(path)) for name, path in clips.items()}
    for name, f in facts.items():
        print(f"{name}: {f['size']}, {f['seconds']:.1f} s, {f['mbps']} Mb/s, "
              f"B-frames {f['b_frames']}", flush=True)
    if abs(facts["hour"]["seconds"] - COPIES * facts["minute"]["seconds"]) > 1:
        raise SystemExit(f"the joined clip is {facts['hour']['seconds']:.1f} s, not "
                         f"{COPIES} x {facts['minute']['seconds']:.1f} s")
    if args.clips_only:
        return 0
    if args.model_dir is None:
        ap.error("--model-dir is required (unless --report or --clips-only)")
    saved: dict = {"machine": machine_info(), "fps": args.fps, "threads": args.threads,
                   "tolerance": args.tolerance, "clips": facts, "runs": {}, "ratios": {}}
    for backend in args.backends.split(","):
        runs = saved["runs"][backend] = {}
        for name in args.only.split(","):
            path = clips[name]
            runs[name] = run_uvq(path, backend, args.model_dir, args.fps, args.threads,
                                 args.every, args.work)
            r = runs[name]
            print(f"{backend} {name}: {r['frames']} frames, {r['seconds']:.1f} s, peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB, PSS {r['peak_pss_mb']:.0f} MB, anon "
                  f"{r['peak_anon_mb']:.0f} MB", flush=True)
            if args.json:  # after every run: an hour's run stopped later keeps this one
                atomic_write_text(args.json, json.dumps(saved, indent=2))
        if not {"minute", "hour"} <= set(runs):
            continue
        ratio = {k: runs["hour"][f"peak_{k}_mb"] / runs["minute"][f"peak_{k}_mb"]
                 for k in ("rss", "pss", "anon")}
        ratio["flat"] = ratio["rss"] <= 1 + args.tolerance and ratio["pss"] <= 1 + args.tolerance
        saved["ratios"][backend] = ratio
    report(saved)
    if args.json:
        atomic_write_text(args.json, json.dumps(saved, indent=2))
    return 0 if all(r["flat"] for r in saved["ratios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
