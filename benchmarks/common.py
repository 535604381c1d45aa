"""What the benchmarks share: model folders seeded with float32 files, the test clips
(synthetic, natural from photographs, joined by stream copy), and the peak memory of a
process tree (RSS and PSS).

Benchmarks are scripts run from the repository (``.venv/bin/python benchmarks/X.py``), so
Python puts this folder on ``sys.path`` itself and they import this module directly. Clips
from photographs come from the library's own ``uvq_int8.convert.natural``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

from uvq_int8.backends import NETS
from uvq_int8.util import atomic_path, sha256_file

FLOAT32_FILES = tuple(f"{net}_net.tflite" for net in NETS)


def seed_models(models: Path, dest: Path, names: Iterable[str] = FLOAT32_FILES) -> None:
    """Give ``dest`` the files ``names`` of ``models`` and their manifest entries, so a
    build there converts nothing again (copied only when different, so a reused folder
    stays up to date)."""
    from uvq_int8.runtime import manifest as mf

    dest.mkdir(parents=True, exist_ok=True)
    source = mf.load(models).files
    entries = {}
    for name in names:
        if name not in source:
            raise SystemExit(f"{models / name} is not in {models}'s manifest; build it first")
        target = dest / name
        if not target.is_file() or sha256_file(target) != source[name]["sha256"]:
            shutil.copy2(models / name, target)
        entries[name] = source[name]
    mf.update(dest, entries)


def photo_file(name: str, folder: Path) -> Path:
    """One of scikit-image's photographs as a PPM file ffmpeg can read, through the
    library's own loader (``uvq_int8.convert.natural``, the natural clips' source)."""
    from uvq_int8.convert import natural

    path = folder / f"{name}.ppm"
    natural.write_ppm(path, natural.load_photo(name))
    return path


def make_test_clip(path: Path, seconds: int, size: str = "1920x1080", fps: int = 30) -> Path:
    """A synthetic H.264 clip (testsrc2 with temporal noise, CRF 26), made once and reused:
    the end-to-end benchmarks' fixed input."""
    if path.is_file():
        return path
    with atomic_path(path, suffix=".mp4") as tmp:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate={fps}:duration={seconds}",
                        "-vf", "noise=alls=8:allf=t", "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "26", "-pix_fmt", "yuv420p", str(tmp)], check=True)
    return path


def natural_clip(out: Path, photos: Iterable[str], seconds_per_photo: int,
                 encoder: list[str]) -> Path:
    """A 1080p30 clip of natural content, made once and reused: each photograph (see
    ``photo_file``) upscaled to 4K, zoomed from 1.0 to 1.3 by ffmpeg's zoompan while
    panning right and down for ``seconds_per_photo`` s, with light temporal grain, the
    photographs one after another, encoded with ``encoder`` (ffmpeg output options)."""
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    photos = list(photos)
    frames = seconds_per_photo * 30
    inputs, chains = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(photos):
            inputs += ["-i", str(photo_file(name, Path(tmp)))]
            chains.append(
                f"[{i}:v]format=rgb24,scale=3840:2160:flags=lanczos,"
                f"zoompan=z='1+0.3*on/{frames}':x='(iw-iw/zoom)*on/{frames}':"
                f"y='(ih-ih/zoom)*on/{frames}':d={frames}:s=1920x1080:fps=30,"
                f"noise=alls=5:allf=t,setsar=1[v{i}]")
        graph = (";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(photos)))
                 + f"concat=n={len(photos)}:v=1:a=0,format=yuv420p[out]")
        with atomic_path(out, suffix=".mp4") as tmp_out:
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs,
                            "-filter_complex", graph, "-map", "[out]", *encoder,
                            str(tmp_out)], check=True)
    return out


def joined_clip(clip: Path, times: int) -> Path:
    """``clip`` joined ``times`` times without re-encoding (ffmpeg's concat demuxer,
    ``-c copy``), made once beside it as ``STEM_xTIMES.mp4``."""
    out = clip.with_name(f"{clip.stem}_x{times}.mp4")
    if not out.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "list.txt"
            listing.write_text(f"file '{clip.resolve()}'\n" * times)
            with atomic_path(out, suffix=".mp4") as tmp_out:
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat",
                                "-safe", "0", "-i", str(listing), "-c", "copy", str(tmp_out)],
                               check=True)
    return out


def clip_facts(clip: Path) -> dict:
    """What ffprobe says of a clip: size, video bit rate (Mb/s), B-frames, rate, seconds."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,bit_rate,has_b_frames,r_frame_rate:format=duration",
                          "-of", "json", str(clip)], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    s = data["streams"][0]
    return {"size": f"{s['width']}x{s['height']}", "mbps": round(int(s["bit_rate"]) / 1e6, 2),
            "b_frames": int(s["has_b_frames"]), "rate": s["r_frame_rate"],
            "seconds": float(data["format"]["duration"])}


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc; gone processes are left out)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            children = [int(c) for task in Path(f"/proc/{p}/task").iterdir()
                        for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
        found.append(p)
        todo += children
    return found


def process_kind(pid: int) -> str:
    """A short name for what a process is: ``ray::X`` for a Ray worker (its title), else
    the program, or for Python the script's last two path parts (Ray's agents are
    ``dashboard/agent.py``, ``agent/main.py``, ...) or the ``-c``/``-m`` it was given."""
    try:
        argv = [a.decode(errors="replace")
                for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):
        return argv[0].split(".")[0].strip()
    prog = Path(argv[0]).name
    if not prog.startswith("python"):
        return prog
    for i, arg in enumerate(argv[1:], 1):
        if arg.endswith(".py"):
            return "/".join(Path(arg).parts[-2:])
        if arg in ("-c", "-m"):
            return f"python {arg} " + (argv[i + 1][:40] if i + 1 < len(argv) else "")
    return prog


def tree_memory(pid: int) -> list[tuple[int, str, int, int, int]]:
    """``(pid, kind, rss, pss, anon)`` in kB for ``pid`` and each descendant
    (/proc/PID/smaps_rollup; a process gone meanwhile is left out). ``anon`` is the
    process's anonymous memory (heap, stacks, buffers): what it allocated itself, whatever
    other processes map the same files."""
    out = []
    for p in tree_pids(pid):
        values = {}
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key = line.split(":", 1)[0]
                if key in ("Rss", "Pss", "Anonymous"):
                    values[key.lower()] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if values:
            out.append((p, process_kind(p), values.get("rss", 0), values.get("pss", 0),
                        values.get("anonymous", 0)))
    return out


def tree_memory_kb(pid: int) -> dict[str, int]:
    """Summed RSS, PSS and anonymous memory (kB) of ``pid``'s process tree. RSS counts a
    page shared by several processes once per process; PSS splits it between them
    (/proc/PID/smaps_rollup), so the tree's PSS is what it really holds."""
    rows = tree_memory(pid)
    return {"rss": sum(r[2] for r in rows), "pss": sum(r[3] for r in rows),
            "anon": sum(r[4] for r in rows)}


def by_kind(rows: list[tuple[int, str, int, int, int]]) -> dict[str, dict[str, int]]:
    """``tree_memory`` rows summed per kind: ``{kind: {"count", "rss", "pss", "anon"}}``
    (kB)."""
    out: dict[str, dict[str, int]] = {}
    for _, kind, rss, pss, anon in rows:
        entry = out.setdefault(kind, {"count": 0, "rss": 0, "pss": 0, "anon": 0})
        entry["count"] += 1
        entry["rss"] += rss
        entry["pss"] += pss
        entry["anon"] += anon
    return out


class TreePeak(threading.Thread):
    """Samples a running process tree every ``interval`` seconds; ``peak`` holds the
    largest summed RSS, PSS and anonymous memory seen (kB, each its own maximum), and
    ``peak_parts`` the PSS sample's processes by kind (``by_kind``). With ``every``,
    ``timeline`` also keeps one ``(seconds since start, rss, pss, anon)`` sample per
    ``every`` seconds, to show whether memory grows during a run. ``stop()`` ends it."""

    def __init__(self, pid: int, interval: float = 0.02, every: float | None = None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.every = pid, interval, every
        self.peak = {"rss": 0, "pss": 0, "anon": 0}
        self.peak_parts: dict[str, dict[str, int]] = {}
        self.timeline: list[tuple[float, int, int, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        while not self._done.is_set():
            rows = tree_memory(self.pid)
            now = {"rss": sum(r[2] for r in rows), "pss": sum(r[3] for r in rows),
                   "anon": sum(r[4] for r in rows)}
            if now["pss"] > self.peak["pss"]:
                self.peak_parts = by_kind(rows)
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
            elapsed = time.perf_counter() - started
            if self.every and rows and (not self.timeline
                                        or elapsed - self.timeline[-1][0] >= self.every):
                self.timeline.append((round(elapsed, 2), now["rss"], now["pss"], now["anon"]))
            self._done.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peak


def run_sampled(argv: list[str], what: str, interval: float = 0.05, every: float | None = None,
                **popen) -> tuple[float, TreePeak]:
    """Run ``argv`` (stdout discarded) under a ``TreePeak`` of its process tree: the wall
    seconds and the stopped sampler. A non-zero exit stops the benchmark with ``what``
    and the end of its stderr."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)
    sampler = TreePeak(proc.pid, interval=interval, every=every)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - started
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return seconds, sampler
