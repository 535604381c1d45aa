"""Scoring many videos: whether an input is a batch, and the documented entry points.

This module decides "batch or single" without importing the batch machinery, so ``uvq
VIDEO`` never loads it. The parts, each imported where it is used:

- ``inputs``: the videos named by a ``.txt`` list, a directory or ``-`` (stdin);
- ``workers``: ``--jobs`` worker processes, a decode thread a video ahead of the nets;
- ``rows``: one row per video, and the JSON lines, CSV, Parquet and legacy row files.

The Ray Data engine is ``uvq_int8.distributed`` (the optional ``ray`` extra).
"""

from __future__ import annotations

from pathlib import Path

FORMATS = ("jsonl", "csv", "parquet")  # row files (``rows``)
# Matched case-insensitively when a directory is given.
VIDEO_EXTENSIONS = ("3gp", "avi", "flv", "m2ts", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg",
                    "mts", "mxf", "ogv", "ts", "webm", "wmv", "y4m")


def is_video_name(path: str | Path) -> bool:
    return Path(path).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def is_batch_input(spec: str) -> bool:
    """A ``.txt`` list, a directory, or ``-``: anything but one video file."""
    return spec == "-" or spec.endswith(".txt") or Path(spec).is_dir()


def wants_batch(spec: str, fmt: str | None = None, jobs: int | None = None) -> bool:
    """Whether ``uvq`` scores ``spec`` as a batch: a batch input, or ``--format``/``--jobs``."""
    return bool(fmt or jobs) or is_batch_input(spec)


def read_rows(path: str | Path, fmt: str | None = None) -> list[dict]:
    """The rows of a results file in any of the row formats (``rows.read_rows``)."""
    from uvq_int8.batch import rows

    return rows.read_rows(path, fmt)
