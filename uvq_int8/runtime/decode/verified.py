"""What is verified about decoding, written once: the ffmpeg build the frame choice is
checked against, the containers, pixel formats and colour spaces checked bit-exact, and
upstream's scale chain.

Both decoders read these facts: the command line's "split" pair (``ffmpeg_cli``) and the
PyAV decoder (``pyav``), which hands over to the command line outside them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import lru_cache

from uvq_int8.runtime.frames import FRAME_HEIGHT, FRAME_WIDTH

# Upstream's filter chain, [transpose=2,]scale=w=1920:h=1080:flags=bicubic,format=rgb24,
# as (filter, arguments) pairs: the command line joins them, PyAV builds a graph of them.
TRANSPOSE = ("transpose", "2")  # upstream: rotate 90 degrees counter-clockwise
SCALE_CHAIN = (("scale", f"w={FRAME_WIDTH}:h={FRAME_HEIGHT}:flags=bicubic"), ("format", "rgb24"))


def filter_text(chain) -> str:
    """(filter, arguments) pairs as an ffmpeg ``-vf`` string."""
    return ",".join(f"{name}={args}" for name, args in chain)


def upstream_chain(transpose: bool) -> tuple[tuple[str, str], ...]:
    return ((TRANSPOSE,) if transpose else ()) + SCALE_CHAIN

# The ffmpeg build whose output both the split pair and the PyAV decoder were compared with
# byte for byte: ffmpeg 5.1 (Debian 12's). Its -r frame choice is the one reproduced
# (``frame_choice``); another build may choose other frames.
FFMPEG_VERIFIED = re.compile(r"^ffmpeg version n?5\.1(\.|\b)")

# Containers where a stream practically never changes pixel format mid-stream (broadcast
# MPEG-TS, for one, does); ffprobe's format names start with these.
CONTAINERS = ("mov,mp4", "matroska")

# Source pixel formats and colour spaces whose PyAV frames equal the 5.1 CLI's pixels
# (tests/test_pyav_decoder.py).
PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuv420p10le"})
COLOR_SPACES = frozenset({None, "bt709", "smpte170m", "bt470bg"})


def upstream_filter(transpose: bool) -> str:
    """Upstream's ``-vf`` string."""
    return filter_text(upstream_chain(transpose))


@lru_cache(maxsize=8)
def _version_of(binary: str) -> str:
    try:
        result = subprocess.run([binary, "-hide_banner", "-version"], stdin=subprocess.DEVNULL,
                                capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    return lines[0].strip() if lines else ""


def ffmpeg_version(ffmpeg: str = "ffmpeg") -> str:
    """First line of ``ffmpeg -version`` ('' if it cannot be run)."""
    return _version_of(shutil.which(ffmpeg) or ffmpeg)


def is_verified_ffmpeg(ffmpeg: str = "ffmpeg") -> bool:
    """Whether ``ffmpeg`` is the build the frame choice was verified against."""
    return bool(FFMPEG_VERIFIED.match(ffmpeg_version(ffmpeg)))


def verified_container(format_name: str | None) -> bool:
    return (format_name or "").startswith(CONTAINERS)
