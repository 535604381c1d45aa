"""Batch throughput: videos per hour and peak memory of the whole process tree, per way of
running a batch of videos (int8-static by default). Run by hand (not a test):

    .venv/bin/pip install -e '.[bench,ray]'
    .venv/bin/python benchmarks/bench_batch.py --model-dir DIR [--rounds 3] [--json OUT]
    .venv/bin/python benchmarks/bench_batch.py --model-dir DIR --efficiency [--rounds 3]

It makes (or reuses) 12 natural-content 1080p30 clips of 5 s: photographs from
``skimage.data`` panned and zoomed by ffmpeg's zoompan, with film grain, encoded with
x264 (3 B-frames) at ~10 Mb/s. Each round runs every mode once over the 12 clips, in
a fresh set of processes, in a rotated order:

- ``loop``: one ``uvq VIDEO`` process per video, one after another;
- ``xargs-P2``: the same commands two at a time (``xargs -P2``);
- ``jobs1`` / ``jobs2``: ``uvq LIST --format jsonl --jobs N``;
- ``ray2``: ``uvq-int8 batch LIST --engine ray --jobs 2`` (starts a local Ray instance).

``--efficiency`` measures scaling instead: for N = 1 ... cores, N ``uvq LIST --jobs 1
--threads 1`` workers, worker i pinned to core i and given every N-th clip; it reports
videos per hour per core and the efficiency, throughput on N cores over N times one core.
On 2 cores ``--jobs 2`` against ``--jobs 1`` cannot show scaling (one worker already uses
both cores); this can.

Peak memory is the largest sum of RSS over the launched process and all its descendants,
sampled every 50 ms (``peak_mb``), and the same for PSS (``peak_pss_mb``, from
``/proc/PID/smaps_rollup``), which splits a page shared by several processes between them
instead of counting it once per process. Ray's GCS, raylet, agents and workers are
descendants of the driver that starts the local instance, so they are counted. Medians
over the rounds are reported, and ratios to ``jobs1`` and to ``loop``; for the ``jobs``
and ``ray`` modes the last round's peak PSS sample is also listed by kind of process.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # this folder is on sys.path when a benchmark runs as a script
from uvq_int8.util import atomic_path, atomic_write_text, machine_info

HERE = Path(__file__).resolve().parent
# Photographs bundled with scikit-image (no download).
IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "camera", "grass", "gravel", "brick", "coins")
CLIP_SECONDS = 5
MODES = ("loop", "xargs-P2", "jobs1", "jobs2", "ray2")


def make_clips(root: Path, count: int = 12) -> list[Path]:
    """Natural 1080p30 clips with B-frames at >= 8 Mb/s (reused when present)."""
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, name in enumerate(IMAGES[:count]):
        out = root / f"{i:02d}_{name}.mp4"
        clips.append(out)
        if out.is_file():
            continue
        still = common.photo_file(name, root)
        frames = CLIP_SECONDS * 30
        # Scale the photograph up past 1080p, then pan and zoom slowly across it.
        zoom = f"zoompan=z='1.15+0.25*on/{frames}':x='(iw-iw/zoom)*on/{frames}':" \
               f"y='(ih-ih/zoom)*(0.5+0.4*sin(on/40))':d={frames}:s=1920x1080:fps=30"
        with atomic_path(out, suffix=".mp4") as tmp:
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-i",
                            str(still), "-vf",
                            f"scale=2400:1350:force_original_aspect_ratio=increase,{zoom},"
                            "noise=alls=10:allf=t,format=yuv420p",
                            "-t", str(CLIP_SECONDS), "-c:v", "libx264", "-preset", "veryfast",
                            "-bf", "3", "-b:v", "10M", "-maxrate", "12M", "-bufsize", "20M",
                            str(tmp)], check=True)
        still.unlink()
    return clips


def run_mode(mode: str, clips: list[Path], model_dir: Path, backend: str, work: Path) -> dict:
    py = sys.executable
    uvq = [py, "-c", "from uvq_int8.cli import uvq_main; raise SystemExit(uvq_main())"]
    flags = ["--backend", backend, "--model-dir", str(model_dir), "--quiet"]
    listing = work / "clips.txt"
    listing.write_text("".join(f"{c}\n" for c in clips))
    out = work / f"{mode}.out"
    out.unlink(missing_ok=True)
    if mode == "loop":
        script = "\n".join(shlex.join(uvq + [str(c)] + flags) + " > /dev/null" for c in clips)
        argv = ["bash", "-ec", script]
    elif mode == "xargs-P2":
        argv = ["bash", "-ec", f"xargs -P2 -I{{}} {shlex.join(uvq)} {{}} "
                               f"{shlex.join(flags)} < {shlex.quote(str(listing))} > /dev/null"]
    elif mode.startswith("jobs"):
        argv = uvq + [str(listing), "--format", "jsonl", "--jobs", mode[4:], "--output",
                      str(out)] + flags
    elif mode == "ray2":
        argv = [py, "-c", "from uvq_int8.cli import main; raise SystemExit(main())", "batch",
                str(listing), "--engine", "ray", "--jobs", "2", "--format", "jsonl",
                "--output", str(out)] + flags
    else:
        raise ValueError(mode)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    seconds, mem = common.run_sampled(argv, mode, env=env, start_new_session=True)
    peak = mem.peak
    return {"seconds": seconds, "videos_per_hour": 3600 * len(clips) / seconds,
            "peak_mb": peak["rss"] / 1024, "peak_pss_mb": peak["pss"] / 1024,
            "peak_pss_parts": mem.peak_parts}


def print_parts(mode: str, result: dict) -> None:
    """Where the peak PSS sample's memory was, by kind of process (the Ray modes' GCS,
    raylet, agents, idle workers and actors each get a line)."""
    parts = sorted(result["peak_pss_parts"].items(), key=lambda kv: -kv[1]["pss"])
    print(f"\n{mode}: peak PSS {result['peak_pss_mb']:.0f} MB (one round), by process")
    print("| process | count | PSS (MB) | RSS (MB) |")
    print("| --- | --- | --- | --- |")
    for kind, v in parts:
        print(f"| `{kind}` | {v['count']} | {v['pss'] / 1024:.0f} | {v['rss'] / 1024:.0f} |")


def run_pinned(n: int, clips: list[Path], model_dir: Path, backend: str, work: Path) -> dict:
    """``n`` workers, worker i pinned to its own core (``os.sched_setaffinity``) with one
    interpreter thread and one decode thread, scoring clips i, i+n, ...: wall time of all."""
    cpus = sorted(os.sched_getaffinity(0))[:n]
    procs = []
    started = time.perf_counter()
    for i, cpu in enumerate(cpus):
        listing = work / f"pinned{n}-{i}.txt"
        listing.write_text("".join(f"{c}\n" for c in clips[i::n]))
        out = work / f"pinned{n}-{i}.jsonl"
        out.unlink(missing_ok=True)
        code = (f"import os; os.sched_setaffinity(0, {{{cpu}}}); "
                "from uvq_int8.cli import uvq_main; raise SystemExit(uvq_main())")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", code, str(listing), "--format", "jsonl", "--jobs", "1",
             "--threads", "1", "--output", str(out), "--backend", backend, "--model-dir",
             str(model_dir), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"pinned run failed ({proc.returncode}): {err.decode()[-2000:]}")
    seconds = time.perf_counter() - started
    return {"workers": n, "seconds": seconds, "videos_per_hour": 3600 * len(clips) / seconds}


def efficiency(clips: list[Path], args, machine: dict, facts: list[dict]) -> None:
    """Videos per hour per core and the efficiency, N = 1 ... cores pinned workers."""
    cores = len(os.sched_getaffinity(0))
    runs: dict[int, list[dict]] = {n: [] for n in range(1, cores + 1)}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for n in order:
                result = run_pinned(n, clips, args.model_dir, args.backend, Path(work))
                runs[n].append(result)
                print(f"round {r + 1} {n} pinned worker(s) {result['seconds']:7.1f} s "
                      f"{result['videos_per_hour']:7.0f} videos/h", flush=True)
    med = {n: statistics.median(x["videos_per_hour"] for x in runs[n]) for n in runs}
    rows = [{"cores": n, "videos_per_hour": med[n], "per_core": med[n] / n,
             "efficiency": med[n] / (n * med[1])} for n in runs]
    print(f"\nmachine: {machine['cpu']}, isa {machine['isa']}; {args.backend}, "
          f"median of {args.rounds} rounds")
    print("| cores (pinned workers) | videos/hour | videos/hour per core | efficiency |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['cores']} | {row['videos_per_hour']:.0f} | {row['per_core']:.0f} | "
              f"{row['efficiency']:.2f} |")
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": machine, "clips": facts,
                                                 "mode": "efficiency", "runs": runs,
                                                 "rows": rows}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--backend", default="int8-static")
    ap.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "uvq-bench-batch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--count", type=int, default=len(IMAGES),
                    help=f"clips to score (at most {len(IMAGES)}; fewer for a quick memory look)")
    ap.add_argument("--efficiency", action="store_true",
                    help="instead: N = 1 ... cores workers, each pinned to its own core with "
                         "one interpreter and one decode thread; videos per hour per core and "
                         "the efficiency (throughput on N cores / N x one core)")
    ap.add_argument("--json", type=Path, help="write the raw measurements here")
    args = ap.parse_args()
    modes = args.modes.split(",")
    clips = make_clips(args.clips, min(args.count, len(IMAGES)))
    facts = [common.clip_facts(c) for c in clips]
    machine = machine_info()
    print(f"{len(clips)} clips: {facts[0]['size']}, {facts[0]['seconds']:.1f} s, "
          f"{min(f['mbps'] for f in facts)}-{max(f['mbps'] for f in facts)} Mb/s, "
          f"B-frames {min(f['b_frames'] for f in facts)}; cores {machine['cores']}, "
          f"{machine['cpu']}")
    if args.efficiency:
        efficiency(clips, args, machine, facts)
        return
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            for mode in order:
                result = run_mode(mode, clips, args.model_dir, args.backend, Path(work))
                runs[mode].append(result)
                print(f"round {r + 1} {mode:9s} {result['seconds']:7.1f} s "
                      f"{result['videos_per_hour']:7.0f} videos/h {result['peak_mb']:7.0f} MB "
                      f"RSS {result['peak_pss_mb']:7.0f} MB PSS", flush=True)
    med = {m: {k: statistics.median(x[k] for x in runs[m]) for k in runs[m][0]
               if k != "peak_pss_parts"} for m in modes}
    print("\n| mode | videos/hour (median) | x jobs1 | x loop | peak memory, process tree (MB) "
          "| peak PSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m in modes:
        vph = med[m]["videos_per_hour"]
        rel1 = vph / med["jobs1"]["videos_per_hour"] if "jobs1" in med else float("nan")
        rel_loop = vph / med["loop"]["videos_per_hour"] if "loop" in med else float("nan")
        print(f"| {m} | {vph:.0f} | {rel1:.2f} | {rel_loop:.2f} | {med[m]['peak_mb']:.0f} | "
              f"{med[m]['peak_pss_mb']:.0f} |")
    for m in modes:
        if m.startswith(("jobs", "ray")):
            print_parts(m, runs[m][-1])
    if args.json:
        atomic_write_text(args.json, json.dumps({"machine": machine, "clips": facts, "runs": runs,
                                                 "medians": med}, indent=2))


if __name__ == "__main__":
    main()
