"""Packet-level decoding with PyAV: upstream's frames, decoding only what they need.

``decoder="pyav"`` gives the same frames as the ffmpeg command-line path
(``decode.ffmpeg_cli``, ``decoder="ffmpeg"``), byte for byte, with less work:

- ``-r FPS``'s choice of source frames is made from packet timestamps by
  ``decode.frame_choice`` (ffmpeg 5.1's rule), after one demux-only pass over the file;
- every reference frame is decoded; a non-reference frame is sent to the decoder only if
  it is scored. H.264: a packet whose VCL NAL units all have ``nal_ref_idc == 0``. HEVC:
  a sub-layer non-reference picture (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N, ...) at the
  highest temporal sub-layer that the ``hvcC`` record declares. Other codecs (VP9, AV1,
  ...): every packet is decoded;
- only the scored frames go through a filter graph equal to upstream's ``-vf`` (with the
  CLI's automatic rotation first): ``[transpose=...,]scale=w=1920:h=1080:flags=bicubic,
  format=rgb24``;
- demuxing stops once the last scored frame has come out of the decoder;
- the decoder runs with ``decode_threads`` threads (FFmpeg's frame and slice threading);
  packets that are not sent never reach those threads.

Two fallbacks, kept apart and reported in ``DecodeStats``:

- ``skip_mode``: where skipping is not known to be safe (codec, missing ``avcC`` /
  ``hvcC``), every packet is decoded, still with PyAV;
- ``fallback``: where the frame choice or the pixels are not known to match the CLI
  (an ffmpeg other than 5.1, a container, pixel format, colour matrix or rotation not
  verified, timestamps that disagree with ffprobe, a corrupt packet), decoding hands over
  to the CLI path. A hand-over after frames were delivered continues the CLI's output
  after those frames, as the split method of ``decode.ffmpeg_cli`` does.

``decode.uvq_frames`` picks this decoder or the CLI path (``decoder``, ``UVQ_DECODER``, the
config key ``decoder``); callers do not import this module to get frames.

``ffprobe`` still does the probing (duration, frame count, colour tags): those values
come from the same ffmpeg build upstream runs, and PyAV bundles another one.
"""

from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.runtime.decode import ffmpeg_cli, frame_choice, pipe, verified
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.decode.probe import FRAME_SHAPE, DecodeStats, SamplePlan, VideoInfo

log = logging.getLogger(__name__)

# The frame choice reproduced is ffmpeg 5.1's; with another ffmpeg, upstream's command
# may choose other frames, so the CLI path is used.
# 5.1's av_guess_frame_rate may use the codec's own rate for these (ticks_per_frame > 1).
_TICKS_CODECS = frozenset({"h264", "mpeg1video", "mpeg2video"})
_HEVC_SUBLAYER_NONREF = frozenset({0, 2, 4, 6, 8, 10, 12, 14})


@dataclass(frozen=True)
class _Timing:
    time_base: Fraction
    r_frame_rate: Fraction | None
    avg_frame_rate: Fraction | None
    start_time_us: int | None
    nb_streams: int


class _HandOver(Exception):
    """The CLI path must produce the remaining frames; the message says why."""


def _timing(info: VideoInfo) -> _Timing | None:
    """The exact rationals ``probe`` read from the system ffprobe (the build whose
    command line is reproduced)."""
    if info.time_base is None:
        return None
    start_us = (round(info.start_time * frame_choice.AV_TIME_BASE)
                if info.start_time is not None else None)
    return _Timing(info.time_base, info.exact_frame_rate, info.avg_frame_rate, start_us,
                   info.num_streams)


def _rotation_filters(rotation: float) -> list[tuple[str, str]] | None:
    """The filters 5.1's CLI inserts for a display matrix (autorotate), None if unsupported."""
    theta = -round(rotation)
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "clock")]
    if abs(theta - 180) < 1:
        return [("hflip", ""), ("vflip", "")]
    if abs(theta - 270) < 1:
        return [("transpose", "cclock")]
    return [] if abs(theta) <= 1 else None


def _cli_reason(info: VideoInfo, timing: _Timing | None, ffmpeg: str) -> str:
    """Why the CLI path must decode this video ('' if PyAV reproduces it)."""
    if not verified.is_verified_ffmpeg(ffmpeg):
        version = verified.ffmpeg_version(ffmpeg)
        return f"frame choice reproduced for ffmpeg 5.1, found {version or 'no version'!r}"
    if not verified.verified_container(info.format_name):
        return f"container {info.format_name!r} not verified"
    if info.num_video_streams != 1:
        return f"{info.num_video_streams} video streams"
    if info.pix_fmt not in verified.PIX_FMTS:
        return f"pixel format {info.pix_fmt!r} not verified"
    if info.color_space not in verified.COLOR_SPACES:
        return f"colour matrix {info.color_space!r} not verified"
    if _rotation_filters(info.rotation) is None:
        return f"rotation {info.rotation:g} degrees"
    if timing is None:
        return "ffprobe gave no time base"
    if info.codec in _TICKS_CODECS and frame_choice.codec_rate_may_apply(
            timing.r_frame_rate, timing.avg_frame_rate):
        return "frame rate guess may depend on the codec's timing"
    return ""


def _nal_units(data: memoryview, length_size: int) -> Iterator[memoryview]:
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size <= 0 or pos + size > len(data):
            return
        yield data[pos:pos + size]
        pos += size


def _h264_nonref(data: memoryview, length_size: int) -> bool:
    """True when every VCL NAL unit (types 1-5) has nal_ref_idc == 0."""
    seen = False
    for nal in _nal_units(data, length_size):
        if 1 <= nal[0] & 0x1F <= 5:
            if nal[0] & 0x60:
                return False
            seen = True
    return seen


def _hevc_droppable(data: memoryview, length_size: int, top_tid: int) -> bool:
    """True when every VCL NAL unit is a sub-layer non-reference picture at ``top_tid``."""
    seen = False
    for nal in _nal_units(data, length_size):
        if len(nal) < 2:
            return False
        kind = (nal[0] >> 1) & 0x3F
        if kind < 32:
            if kind not in _HEVC_SUBLAYER_NONREF or (nal[1] & 7) - 1 != top_tid:
                return False
            seen = True
    return seen


def _skip_rule(codec: str, extradata: bytes | None):
    """(description, test(packet bytes) -> droppable) or (why not, None)."""
    extra = bytes(extradata or b"")
    if codec == "h264":
        if len(extra) < 7 or extra[0] != 1:
            return "none: no avcC record", None
        size = (extra[4] & 3) + 1
        return "h264 nal_ref_idc", lambda data: _h264_nonref(data, size)
    if codec == "hevc":
        if len(extra) < 23 or extra[0] != 1:
            return "none: no hvcC record", None
        size = (extra[21] & 3) + 1
        layers = (extra[21] >> 3) & 7
        if not layers:
            return "none: hvcC gives no temporal layer count", None
        return ("hevc sub-layer non-reference",
                lambda data: _hevc_droppable(data, size, layers - 1))
    return f"none: {codec} (every packet decoded)", None


class _Scaler:
    """Upstream's -vf chain (after the CLI's autorotation) as a PyAV filter graph."""

    def __init__(self, rotation: list[tuple[str, str]], transpose: bool):
        self.chain = [*rotation, *verified.upstream_chain(transpose)]
        self.graph = None
        self.key = None

    def __call__(self, frame, av) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if key != self.key:  # the CLI reconfigures its graph on such a change too
            graph = av.filter.Graph()
            nodes = [graph.add_buffer(width=frame.width, height=frame.height,
                                      format=frame.format.name, time_base=frame.time_base)]
            nodes += [graph.add(name, args) for name, args in self.chain]
            nodes.append(graph.add("buffersink"))
            graph.link_nodes(*nodes).configure()
            self.graph, self.key = graph, key
        self.graph.push(frame)
        out = self.graph.pull().to_ndarray()
        if out.shape != FRAME_SHAPE:
            raise _HandOver(f"filter graph gave shape {out.shape}")
        return np.ascontiguousarray(out)


def _demux_index(path: str, av) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """Pass 1, demux only: each video packet's pts and whether it may be skipped (arrays
    in decoding order, 9 bytes a packet), and the container's start time."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        _, droppable = _skip_rule(stream.codec_context.name, stream.codec_context.extradata)
        pts, flags = array("q"), bytearray()
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            flags.append(bool(droppable and droppable(memoryview(packet))))
        return (np.frombuffer(pts, np.int64), np.frombuffer(flags, np.bool_),
                container.start_time)


def _plan_choice(pts: np.ndarray, start_us: int | None, timing: _Timing, fps: Fraction,
                 limit: int) -> tuple[np.ndarray, list[int]]:
    """(presentation-order pts, position of each written frame) for the CLI's ``-r``."""
    start = Fraction(start_us, frame_choice.AV_TIME_BASE) if start_us is not None else None
    try:
        return frame_choice.source_positions(pts, start, timing.time_base, timing.r_frame_rate,
                                             timing.avg_frame_rate, timing.nb_streams == 1,
                                             fps, limit)
    except ValueError as exc:
        raise _HandOver(str(exc)) from None


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError("PyAV is not installed (pip install av); use --decoder ffmpeg") from None
    # PyAV's own default: FFmpeg's messages are dropped without Python. Any level installs a
    # callback that takes the GIL from FFmpeg's decoder threads, and freeing a frame-threaded
    # decoder (which holds the GIL and waits for those threads) then deadlocks.
    av.logging.set_level(None)
    return av


def iter_frames(path: str | Path, fps: Fraction | int = 1, transpose: bool = False,
                ffmpeg: str = "ffmpeg", info: VideoInfo | None = None,
                ffprobe: str = "ffprobe", queue_frames: int = 2,
                stats: DecodeStats | None = None,
                decode_threads: int | None = None,
                plan: SamplePlan | None = None) -> Iterator[np.ndarray]:
    """``ffmpeg_cli.iter_frames``' frames (same arguments), decoded packet by packet with PyAV."""
    info, plan = probing.prepare(path, fps, ffprobe, info, plan)
    stats = stats if stats is not None else DecodeStats()
    stats.decoder = stats.decoder or "pyav"
    stats.method = "pyav"
    stats.frames_expected = plan.num_frames
    av = _import_av()
    timing = _timing(info)
    reason = _cli_reason(info, timing, ffmpeg)
    frames = _generate(str(path), info, fps, plan, timing, transpose, ffmpeg, ffprobe,
                       queue_frames, stats, decode_threads, av, reason)
    return pipe.prefetch(frames, max(1, int(queue_frames)), "uvq-pyav-decoder")


def _generate(name, info, fps, plan, timing, transpose, ffmpeg, ffprobe, queue_frames, stats,
              decode_threads, av, reason) -> Iterator[np.ndarray]:
    started = time.perf_counter()
    delivered = 0
    try:
        try:
            if reason:
                raise _HandOver(reason)
            rotation = _rotation_filters(info.rotation) or []
            for frame in _decode(name, plan, timing, rotation, transpose, stats,
                                 decode_threads, av):
                delivered += 1
                stats.real_frames = delivered
                yield frame
        except _HandOver as exc:
            yield from _hand_over(name, info, fps, transpose, ffmpeg, ffprobe, queue_frames,
                                  stats, decode_threads, delivered, str(exc), plan)
            return
        if delivered < plan.num_frames:
            log.warning("%s: decoding gave %d of %d frames; padding with black frames as "
                        "upstream does", name, delivered, plan.num_frames)
        for _ in range(plan.num_frames - delivered):
            stats.padded_frames += 1
            yield np.zeros(FRAME_SHAPE, np.uint8)
    finally:
        stats.seconds = time.perf_counter() - started


def _hand_over(name, info, fps, transpose, ffmpeg, ffprobe, queue_frames, stats,
               decode_threads, delivered, why, plan) -> Iterator[np.ndarray]:
    stats.fallback = why
    stats.decoder = "ffmpeg" if delivered == 0 else "pyav+ffmpeg"
    log.info("%s: %s; decoding with the ffmpeg command line", name, why)
    cli_stats = DecodeStats()
    frames = ffmpeg_cli.iter_frames(name, fps=fps, transpose=transpose, ffmpeg=ffmpeg, info=info,
                               ffprobe=ffprobe, queue_frames=queue_frames, stats=cli_stats,
                               decode_threads=decode_threads, plan=plan)
    try:
        for i, frame in enumerate(frames):
            if i >= delivered:
                yield frame
    finally:
        frames.close()
        stats.method = f"pyav+{cli_stats.method}" if delivered else cli_stats.method
        stats.commands = cli_stats.commands
        stats.pids = cli_stats.pids
        stats.real_frames = cli_stats.real_frames
        stats.padded_frames = cli_stats.padded_frames


def _decode(name, plan, timing, rotation, transpose, stats, decode_threads,
            av) -> Iterator[np.ndarray]:
    """Pass 2: decode reference and scored packets, yield the scored frames in order."""
    demuxed = _demux_index(name, av)
    if demuxed is None:
        raise _HandOver("a video packet has no timestamp")
    pts, droppable, start_us = demuxed
    if start_us != timing.start_time_us:
        raise _HandOver(f"PyAV's start time {start_us} us differs from ffprobe's "
                        f"{timing.start_time_us} us")
    pts_sorted, chosen = _plan_choice(pts, start_us, timing, plan.fps, plan.num_frames)
    stats.source_positions = list(chosen)
    if not chosen:
        return
    needed = {int(pts_sorted[p]) for p in chosen}

    def position(value) -> int | None:
        i = int(np.searchsorted(pts_sorted, value)) if value is not None else len(pts_sorted)
        return i if i < len(pts_sorted) and pts_sorted[i] == value else None

    scaler = _Scaler(rotation, transpose)
    out = 0  # next written frame to yield
    expect = 0  # next presentation position the decoder may return
    with av.open(name) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_type = "AUTO"
        ctx.thread_count = int(decode_threads or 0)
        stats.skip_mode = _skip_rule(ctx.name, ctx.extradata)[0]

        def take(frame):
            nonlocal out, expect
            stats.decoded_frames += 1
            pos = position(frame.pts)
            if pos is None:
                raise _HandOver(f"decoder returned a frame with unknown timestamp {frame.pts}")
            if frame.is_corrupt:
                raise _HandOver(f"corrupt frame at timestamp {frame.pts}")
            if pos < expect:
                raise _HandOver(f"decoder returned timestamp {frame.pts} out of order")
            if chosen[out] < pos:
                raise _HandOver(f"no frame decoded at timestamp {pts_sorted[chosen[out]]}")
            expect = pos + 1
            if chosen[out] != pos:
                return
            if frame.format.name not in verified.PIX_FMTS:
                raise _HandOver(f"decoded pixel format {frame.format.name!r} not verified")
            rgb = scaler(frame, av)
            while out < len(chosen) and chosen[out] == pos:
                out += 1
                yield rgb if (out == len(chosen) or chosen[out] != pos) else rgb.copy()

        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker; flushed below
                k = stats.packets
                stats.packets += 1
                if k >= len(pts) or packet.pts != pts[k]:
                    raise _HandOver("the second demuxing pass gave other packets")
                if droppable[k] and packet.pts not in needed:
                    stats.skipped_packets += 1
                    continue
                for frame in ctx.decode(packet):
                    yield from take(frame)
                    if out == len(chosen):
                        return
            for frame in ctx.decode(None):
                yield from take(frame)
                if out == len(chosen):
                    return
        except av.error.FFmpegError as exc:
            raise _HandOver(f"decoding failed ({exc})") from None
    if out < len(chosen):
        raise _HandOver(f"no frame decoded at timestamp {pts_sorted[chosen[out]]}")

