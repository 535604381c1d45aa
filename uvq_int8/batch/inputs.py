"""The videos of a batch: a ``.txt`` list, a directory (searched recursively) or stdin."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable, TextIO

from uvq_int8.batch import is_video_name
from uvq_int8.batch.rows import BatchError

log = logging.getLogger(__name__)


def _read_list(lines: Iterable[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def scan_directory(root: str | Path) -> list[str]:
    """Video files under ``root``, recursively, sorted; each real file once, loops ended."""
    root = Path(root)
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    found: list[str] = []

    def walk(directory: Path) -> None:
        real = os.path.realpath(directory)
        if real in seen_dirs:
            return  # a symlink loop, or a second link to a directory already walked
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.warning("%s: cannot list (%s); skipped", directory, exc.strerror)
            return
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                continue
            if is_dir:
                walk(path)
            elif is_video_name(entry.name):
                real_file = os.path.realpath(path)
                if real_file not in seen_files:
                    seen_files.add(real_file)
                    found.append(str(path))

    if not root.is_dir():
        raise BatchError(f"{root}: not a directory")
    walk(root)
    return found


def collect_inputs(spec: str, stdin: TextIO | None = None) -> list[str]:
    """The videos named by ``spec``: a ``.txt`` list, a directory, or ``-`` (a list on stdin)."""
    if spec == "-":
        return _read_list((stdin or sys.stdin).read().splitlines())
    path = Path(spec)
    if path.is_dir():
        return scan_directory(path)
    if spec.endswith(".txt"):
        if not path.is_file():
            raise BatchError(f"video list {path} not found")
        return _read_list(path.read_text().splitlines())
    raise BatchError(f"{spec}: give a .txt list of videos, a directory, or - for a list on stdin")
