"""The command-line decoder: upstream's ffmpeg command, or the "split" pair.

Upstream UVQ 1.5 runs ``ffmpeg -i F -vf [transpose=2,]scale=w=1920:h=1080:flags=bicubic,
format=rgb24 -r FPS -f rawvideo`` through a shell into a temp file, then truncates or
zero-pads the bytes to ``video_length * fps`` frames. Here the same frames arrive from a
pipe, one at a time, through a small bounded queue filled by a reader thread, so decoding
overlaps with inference and memory does not grow with the video's length. No shell, no
temp file; file names are passed as ``file:`` URLs of absolute paths.

It has two decode methods that give the same bytes:

- ``"upstream"``: upstream's single ffmpeg command, its output sent to a pipe.
- ``"split"``: ffmpeg #1 decodes and lets ``-r FPS`` pick frames exactly as in upstream's
  command, but writes them in the decoder's own pixel format; ffmpeg #2 runs upstream's
  transpose/scale/format chain on those frames only. Upstream scales every source frame
  before ``-r`` drops most of them; this scales only the frames that are kept (the
  saving is largest for small sources; at 1080p the scale is only a colour conversion;
  benchmarks/breakdown.py times decoding). ``-r``'s choice depends on timestamps and
  the stream's frame rate, which the filters do not change, and the colour tags that the
  raw pipe loses are restored with ``setparams``. It is used only where it was checked
  bit-exact against the upstream command (see ``_split_supported``), and if its ffmpeg #1
  stops with an error (a frame size change mid-stream, say) decoding carries on with
  upstream's command after the frames already delivered.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.decode import verified
from uvq_int8.runtime.decode.pipe import END_OF_FRAMES, Pipeline
from uvq_int8.runtime.decode.probe import (FRAME_BYTES, FRAME_SHAPE, DecodeStats, SamplePlan,
                                           VideoInfo, ffmpeg_url, find_tool)

log = logging.getLogger(__name__)


_QUIET = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "error"]


METHODS = ("auto", "upstream", "split")


# The split pipeline's raw outputs. ffmpeg's rawvideo encoder is frame-threaded by
# default, and each extra thread holds a frame back: at fps=1 the first frame reached us
# only after ffmpeg #1 had decoded two sampled seconds, and the last only at the end of
# the file. One thread (which also runs the small filter graph on one thread) delivers
# each frame as soon as it is decoded; the bytes are the same (tests compare them).
_RAW_OUT = ["-threads", "1", "-f", "rawvideo"]


# Colour tags that setparams accepts under the names ffprobe prints.
_SETPARAMS_VALUES = {
    "range": {"tv", "pc"},
    "colorspace": {"gbr", "bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "ycgco",
                   "bt2020nc", "bt2020c", "smpte2085", "chroma-derived-nc",
                   "chroma-derived-c", "ictcp"},
    "color_primaries": {"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film",
                        "bt2020", "smpte428", "smpte431", "smpte432", "jedec-p22"},
    "color_trc": {"bt709", "gamma22", "gamma28", "smpte170m", "smpte240m", "linear", "log100",
                  "log316", "iec61966-2-4", "bt1361e", "iec61966-2-1", "bt2020-10",
                  "bt2020-12", "smpte2084", "smpte428", "arib-std-b67"},
}


# ffmpeg #1 converts frames to its first size and pixel format if they change mid-stream.
# A size change is caught (see split_commands); a pixel-format change is not, so the
# split path is kept to ``verified.CONTAINERS``.


def _split_geometry(info: VideoInfo) -> tuple[int, int] | None:
    """Size of ffmpeg #1's frames after its automatic rotation, or None when unsure."""
    if info.frame_size is None:
        return None
    angle = info.rotation % 360
    quarter = round(angle / 90)
    if abs(angle - 90 * quarter) > 0.5:
        return None  # ffmpeg's 'rotate' filter path: not verified, use upstream's command
    w, h = info.frame_size
    return (h, w) if quarter % 2 else (w, h)


def _setparams(info: VideoInfo) -> str | None:
    """setparams restoring the frame's colour tags, '' if none, None if one is unsupported."""
    parts = []
    for key, value in (("range", info.color_range), ("colorspace", info.color_space),
                       ("color_primaries", info.color_primaries),
                       ("color_trc", info.color_transfer)):
        if value is None:
            continue
        if value not in _SETPARAMS_VALUES[key]:
            return None
        parts.append(f"{key}={value}")
    return ("setparams=" + ":".join(parts)) if parts else ""


def _split_supported(info: VideoInfo, plan: SamplePlan, ffmpeg: str) -> bool:
    if plan.orig_fps and plan.fps >= plan.orig_fps:
        return False  # (nearly) every frame is kept: nothing to save
    return (info.num_video_streams == 1 and info.pix_fmt is not None
            and verified.verified_container(info.format_name)
            and _split_geometry(info) is not None and _setparams(info) is not None
            and verified.is_verified_ffmpeg(ffmpeg))


def rate_arg(rate: Fraction) -> str:
    """``-r``'s argument: "2", or "1/4" for a fraction. ffmpeg evaluates "N/D" and keeps
    it as the rational N/D (``av_parse_video_rate``, terms up to 1001000: see
    ``probe.parse_fps``), so the encoder time base is exactly D/N."""
    rate = Fraction(rate)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def _upstream_command(url: str, plan: SamplePlan, transpose: bool, ffmpeg: str) -> list[str]:
    # Upstream's command; only the log flags and the output (a pipe, not a temp file) differ.
    return [ffmpeg, *_QUIET, "-i", url, "-vf", verified.upstream_filter(transpose), "-r", rate_arg(plan.fps),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def split_commands(url: str, info: VideoInfo, plan: SamplePlan, transpose: bool,
                   ffmpeg: str) -> list[list[str]]:
    """The "split" pair: ffmpeg #1 decodes and picks frames at ``plan.fps`` without scaling;
    ffmpeg #2 reads its raw frames and applies upstream's scale and format chain."""
    geometry = _split_geometry(info)
    params = _setparams(info)
    if geometry is None or params is None or info.pix_fmt is None:
        raise VideoError(f"{info.path}: the split decode does not support this video "
                         "(rotation, pixel format or colour tags); use method='upstream'")
    w, h = geometry
    # A size change mid-stream would make ffmpeg #1 rescale to its first size; this
    # pass-through crop fails instead, before any frame of the new size is written, and the
    # decode continues with upstream's command. It also catches a wrong geometry guess.
    # Like upstream's -vf it keeps ffmpeg on the filtered-stream path, so -r picks the
    # same frames (compared byte for byte in the tests).
    guard = f"crop=w='if(eq(iw,{w})*eq(ih,{h}),iw,0)':h=ih:x=0:y=0"
    first = [ffmpeg, *_QUIET, "-i", url, "-an", "-sn", "-dn", "-vf", guard,
             "-r", rate_arg(plan.fps), *_RAW_OUT, "pipe:1"]
    chain = ",".join(p for p in (params, verified.upstream_filter(transpose)) if p)
    second = [ffmpeg, *_QUIET[1:], "-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-s", f"{w}x{h}",
              "-i", "pipe:0", "-vf", chain, *_RAW_OUT, "-pix_fmt", "rgb24", "pipe:1"]
    return [first, second]


def _decoder_threads(argv: list[str], threads: int | None) -> list[str]:
    # An input option: the threads of the decoder reading the file. Decoded pictures are
    # the same with any number of threads.
    if not threads:
        return argv
    i = argv.index("-i")
    return [*argv[:i], "-threads", str(int(threads)), *argv[i:]]


def decode_commands(path: str | Path, info: VideoInfo, plan: SamplePlan, transpose: bool,
                    ffmpeg: str = "ffmpeg", method: str = "auto",
                    decode_threads: int | None = None) -> list[tuple[str, list[list[str]]]]:
    """Decode attempts in order, each (method, argv list of piped processes).

    "split" is followed by "upstream": if the split pipeline stops with an error, decoding
    resumes with upstream's command after the frames already delivered.
    ``decode_threads`` sets the video decoder's threads (None: ffmpeg's default).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "split" if _split_supported(info, plan, ffmpeg) else "upstream"
    url = ffmpeg_url(path)
    upstream = ("upstream", [_decoder_threads(_upstream_command(url, plan, transpose, ffmpeg),
                                              decode_threads)])
    if method == "upstream":
        return [upstream]
    first, *rest = split_commands(url, info, plan, transpose, ffmpeg)
    return [("split", [_decoder_threads(first, decode_threads), *rest]), upstream]


def iter_frames(path: str | Path, fps: Fraction | int = 1, transpose: bool = False,
                ffmpeg: str = "ffmpeg", info: VideoInfo | None = None,
                ffprobe: str = "ffprobe", method: str = "auto", queue_frames: int = 2,
                stats: DecodeStats | None = None,
                decode_threads: int | None = None,
                plan: SamplePlan | None = None) -> Iterator[np.ndarray]:
    """Yield upstream's frames for ``path``: uint8 [1080,1920,3] RGB, exactly
    ``video_length * fps`` of them (black frames pad a short decode, as upstream pads).

    Probing (unless ``info`` is given), the frame plan (unless ``plan`` is given) and the
    ffmpeg check happen now (errors raise here); ffmpeg starts on the first ``next()``.
    Closing the iterator early stops ffmpeg.
    """
    info, plan = probing.prepare(path, fps, ffprobe, info, plan)
    binary = find_tool(ffmpeg, "--ffmpeg_path")
    attempts = decode_commands(path, info, plan, transpose, binary, method, decode_threads)
    stats = stats if stats is not None else DecodeStats()
    stats.decoder = stats.decoder or "ffmpeg"
    stats.method = attempts[0][0]
    stats.commands = [argv for _, cmds in attempts for argv in cmds]
    stats.frames_expected = plan.num_frames
    return _generate(str(path), attempts, plan, max(1, int(queue_frames)), stats)


def _generate(name: str, attempts: list[tuple[str, list[list[str]]]], plan: SamplePlan,
              queue_frames: int, stats: DecodeStats) -> Iterator[np.ndarray]:
    started = time.perf_counter()
    delivered = 0
    try:
        for number, (method, commands) in enumerate(attempts):
            last_attempt = number == len(attempts) - 1
            pipeline = Pipeline(commands, FRAME_BYTES, plan.num_frames, queue_frames, stats)
            try:
                produced = 0
                while delivered < plan.num_frames:
                    item = pipeline.get()
                    if item is END_OF_FRAMES:
                        break
                    if isinstance(item, BaseException):
                        raise VideoError(f"{name}: reading frames from ffmpeg failed "
                                         f"({item})") from item
                    produced += 1
                    if produced <= delivered:
                        continue  # already delivered by the previous attempt
                    delivered += 1
                    stats.real_frames = delivered
                    yield item.reshape(FRAME_SHAPE)
                if delivered == plan.num_frames:
                    return
                codes = pipeline.wait()
                failed = [code for code in codes if code != 0]
                if failed and not last_attempt:
                    stats.fallback = f"{method} stopped: {pipeline.last_error_line()}"
                    stats.method = f"{method}+{attempts[number + 1][0]}"
                    log.info("%s: %s; continuing with upstream's command", name, stats.fallback)
                    continue
                why = pipeline.last_error_line()
                if failed:
                    why = f"exit code {failed[0]}: {why}"
                if delivered == 0:
                    raise VideoError(f"{name}: ffmpeg decoded no frames ({why}); the file may "
                                     "be truncated or corrupt")
                if failed:  # upstream's check_output raises here too
                    raise VideoError(f"{name}: ffmpeg failed after {delivered} frames ({why}); "
                                     "check the file")
                break
            finally:
                pipeline.close()
        log.warning("%s: decoding may be truncated: %d bytes (%d frames) < %d bytes (%d frames), "
                    "or video length (%ds) may be incorrect; padding with black frames as "
                    "upstream does", name, delivered * FRAME_BYTES, delivered,
                    plan.num_frames * FRAME_BYTES, plan.num_frames, plan.video_length)
        for _ in range(plan.num_frames - delivered):
            stats.padded_frames += 1
            yield np.zeros(FRAME_SHAPE, np.uint8)
    finally:
        stats.seconds = time.perf_counter() - started
