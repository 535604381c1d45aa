"""What the benchmarks share: model folders seeded with float32 files, and the test clip.

Benchmarks are scripts run from the repository (``.venv/bin/python benchmarks/X.py``), so
Python puts this folder on ``sys.path`` itself and they import this module directly. Clips
from photographs come from the library's own ``uvq_int8.convert.natural``.
"""

from __future__ import annotations

import shutil
import subprocess
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
