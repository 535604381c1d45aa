"""Probing: what ffprobe says about a file (``probe``, once per video), upstream's frame
plan (``sample_plan``), and the one stats type a decode fills in (``DecodeStats``).

Both decoders take the probed ``VideoInfo`` and the plan, and never probe or plan again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.runtime.frames import FRAME_HEIGHT, FRAME_WIDTH


FRAME_SHAPE = (FRAME_HEIGHT, FRAME_WIDTH, 3)
FRAME_BYTES = FRAME_HEIGHT * FRAME_WIDTH * 3


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a file, plus upstream's derived frame rate."""

    path: str
    width: int
    height: int
    duration: float | None  # format duration in seconds
    r_frame_rate: float | None
    orig_fps: int | None  # ceil(r_frame_rate), as upstream's probe returns it
    nb_frames: int | None  # container count, or decoded count when probed with count_frames
    nb_frames_counted: bool
    has_video: bool
    codec: str | None
    rotation: float = 0.0  # display-matrix rotation in degrees, 0 when absent
    pix_fmt: str | None = None
    color_range: str | None = None
    color_space: str | None = None
    color_primaries: str | None = None
    color_transfer: str | None = None
    num_video_streams: int = 0
    num_streams: int = 0
    frame_size: tuple[int, int] | None = None  # (width, height) of the first decoded frame
    format_name: str | None = None  # ffprobe's container name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    # Exact rationals, for reproducing the command line's -r frame choice (decode.pyav):
    time_base: Fraction | None = None  # the stream's time base
    exact_frame_rate: Fraction | None = None  # r_frame_rate
    avg_frame_rate: Fraction | None = None
    start_time: Fraction | None = None  # the container's start time, seconds


@dataclass(frozen=True)
class SamplePlan:
    """How many frames upstream feeds the nets and which source frames it reports."""

    video_length: int  # seconds, as upstream computes it
    fps: Fraction  # frames per second actually sampled (fps=-1 -> orig_fps), e.g. 1/2
    num_frames: int  # video_length * fps, rounded up
    frame_indices: tuple[int, ...]
    orig_fps: int | None


@dataclass
class DecodeStats:
    """What a decode did, filled in while it runs (pass one in to inspect a decode)."""

    decoder: str = ""  # "pyav" or "ffmpeg" (``uvq_frames``)
    method: str = ""  # "pyav", "upstream", "split", or one handed over to the next
    commands: list[list[str]] = field(default_factory=list)
    frames_expected: int = 0
    real_frames: int = 0
    padded_frames: int = 0
    max_queued: int = 0
    pids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    fallback: str = ""  # why a decoder handed over to upstream's command line, if it did
    # The packet-level decoder (``decode.pyav``):
    skip_mode: str = ""  # "h264 nal_ref_idc", "hevc sub-layer non-reference", or why none
    packets: int = 0  # video packets demuxed in the decoding pass
    skipped_packets: int = 0  # never sent to the decoder
    decoded_frames: int = 0
    source_positions: list[int] = field(default_factory=list)  # presentation-order index


def ffmpeg_url(path: str | Path) -> str:
    """The URL ffmpeg and ffprobe are given for a local file."""
    # An absolute path behind "file:" is never read as an option ("-x.mp4"), as stdin
    # ("-"), or as another protocol ("a:b.mp4").
    return "file:" + str(Path(os.path.abspath(os.fspath(path))))


def find_tool(name: str, flag: str) -> str:
    found = shutil.which(name)
    if not found:
        raise VideoError(f"{name!r} not found or not executable; install ffmpeg or pass {flag}")
    return found


def require_ffmpeg(tools: Sequence[str] = ("ffmpeg", "ffprobe")) -> None:
    """Fail at once, before any work, when the ffmpeg programs are not on PATH."""
    missing = [name for name in tools if not shutil.which(name)]
    if missing:
        raise VideoError(f"{' and '.join(missing)} not found on PATH; install ffmpeg "
                         f"(Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)")


def _run_tool(argv: list[str], flag: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        raise VideoError(f"{argv[0]!r} not found or not executable; install ffmpeg or pass "
                         f"{flag}") from None


def _last_line(text: bytes) -> str:
    lines = [line.strip() for line in text.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no message"


def check_file(path: str | Path) -> Path:
    """``path`` as a Path; a VideoError unless it is a non-empty regular file."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{path}: no such file; check the path")
    if not p.is_file():
        raise VideoError(f"{path}: not a regular file; give a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes); give a video file")
    return p


def parse_rate(text: str | None) -> tuple[float | None, int | None]:
    """'30000/1001' -> (29.97..., 30); upstream takes the ceiling of num/den."""
    if not text:
        return None, None
    try:
        if "/" in text:
            num, den = text.split("/")
            if float(den) == 0:
                return None, None
            value = float(num) / float(den)
        else:
            value = float(text)
    except ValueError:
        return None, None
    if not math.isfinite(value) or value <= 0:
        return None, None
    return value, int(math.ceil(value))


def _rational(text) -> Fraction | None:
    # "1/15360" or "0.033000" as an exact rational; None when absent or invalid.
    try:
        return Fraction(text) if isinstance(text, str) and text else None
    except (ValueError, ZeroDivisionError):
        return None


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _tag(value) -> str | None:
    return value if isinstance(value, str) and value not in ("unknown", "reserved", "") else None


def _count_frames(path: str | Path, ffprobe: str) -> int | None:
    # Upstream's nb_frames: decode the whole stream and count (slow, only for fps=-1).
    result = _run_tool([ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_frames", "-of", "json",
                        ffmpeg_url(path)], "--ffprobe_path")
    if result.returncode != 0:
        return None
    try:
        streams = json.loads(result.stdout or b"{}").get("streams") or []
    except ValueError:
        return None
    return _int(streams[0].get("nb_read_frames")) if streams else None


def probe(path: str | Path, ffprobe: str = "ffprobe", count_frames: bool = False,
          require_video: bool = True) -> VideoInfo:
    """ffprobe a file; raises VideoError for missing, unreadable or video-less files.

    ``count_frames=True`` decodes the stream to count frames as upstream does for fps=-1.
    """
    name = str(path)
    check_file(path)
    argv = [ffprobe, "-v", "error", "-select_streams", "v", "-show_format", "-show_streams",
            "-show_frames", "-read_intervals", "%+#1", "-of", "json", ffmpeg_url(path)]
    result = _run_tool(argv, "--ffprobe_path")
    if result.returncode != 0:
        raise VideoError(f"{name}: not a readable video ({_last_line(result.stderr)}); "
                         "check that the file is a complete video")
    try:
        data = json.loads(result.stdout or b"{}")
    except ValueError:
        raise VideoError(f"{name}: ffprobe gave unreadable output; check the file and "
                         "--ffprobe_path") from None
    fmt = data.get("format") or {}
    streams = [s for s in data.get("streams") or [] if s.get("codec_type") == "video"]
    num_streams = _int(fmt.get("nb_streams")) or 0
    if not streams:
        if require_video:
            what = "audio-only or data-only file" if num_streams else "no streams at all"
            raise VideoError(f"{name}: has no video stream ({what}); give a video file")
        return VideoInfo(name, 0, 0, _float(fmt.get("duration")), None, None, None, False,
                         False, None, num_streams=num_streams)
    stream = streams[0]
    rate, orig_fps = parse_rate(stream.get("r_frame_rate"))
    rotation = 0.0
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            rotation = _float(side["rotation"]) or 0.0
    frames = [f for f in data.get("frames") or [] if f.get("media_type") == "video"]
    first = frames[0] if frames else {}
    frame_size = None
    if _int(first.get("width")) and _int(first.get("height")):
        frame_size = (int(first["width"]), int(first["height"]))
    nb_frames = _int(stream.get("nb_frames"))
    if count_frames:
        nb_frames = _count_frames(path, ffprobe)

    def colour(key: str) -> str | None:
        # The decoded frame's tags are what ffmpeg's scaler sees; the stream's are a fallback.
        return _tag(first.get(key)) if first else _tag(stream.get(key))

    return VideoInfo(
        path=name,
        width=_int(stream.get("width")) or 0,
        height=_int(stream.get("height")) or 0,
        duration=_float(fmt.get("duration")),
        r_frame_rate=rate,
        orig_fps=orig_fps,
        nb_frames=nb_frames,
        nb_frames_counted=count_frames,
        has_video=True,
        codec=stream.get("codec_name"),
        rotation=rotation,
        pix_fmt=first.get("pix_fmt") or stream.get("pix_fmt"),
        color_range=colour("color_range"),
        color_space=colour("color_space"),
        color_primaries=colour("color_primaries"),
        color_transfer=colour("color_transfer"),
        num_video_streams=len(streams),
        num_streams=num_streams,
        frame_size=frame_size,
        format_name=fmt.get("format_name"),
        time_base=_rational(stream.get("time_base")) or None,  # "0/0": unknown
        exact_frame_rate=_rational(stream.get("r_frame_rate")) or None,
        avg_frame_rate=_rational(stream.get("avg_frame_rate")) or None,
        start_time=_rational(fmt.get("start_time")),
    )


def is_portrait(info: VideoInfo) -> bool:
    """Upstream's batch-mode rule: stored width < height means transpose=True."""
    return info.width < info.height


# ffmpeg parses ``-r`` with ``av_parse_video_rate``, which keeps a rational whose
# numerator and denominator are at most this; a rate beyond it would be approximated.
MAX_RATE_TERM = 1_001_000


def parse_fps(value) -> Fraction:
    """A sampling rate as an exact rational: 1, "2", "0.5", "1/4", Fraction(1, 3), or -1
    (every frame). Raises VideoError (one line) for 0, other negatives, NaN, infinities,
    garbage, and rates ffmpeg's ``-r`` cannot hold exactly."""
    text = str(value).strip()
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float):
            rate = Fraction(repr(value))  # 0.1 is 1/10, not the binary double's value
        elif isinstance(value, (int, np.integer, Fraction)):
            rate = Fraction(int(value)) if isinstance(value, np.integer) else Fraction(value)
        else:
            rate = Fraction(text)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise VideoError(f"fps must be a positive rate such as 1, 0.5 or 1/4, or -1 for every "
                         f"frame; got {text!r}") from None
    if rate == -1:
        return rate
    if rate <= 0:
        raise VideoError(f"fps must be a positive rate such as 1, 0.5 or 1/4, or -1 for every "
                         f"frame; got {text!r}")
    if rate.numerator > MAX_RATE_TERM or rate.denominator > MAX_RATE_TERM:
        raise VideoError(f"fps {text!r} is {rate}: ffmpeg's -r keeps a numerator and "
                         f"denominator of at most {MAX_RATE_TERM}; give a simpler rate")
    return rate


def fps_value(rate: Fraction | int) -> int | float:
    """A rate for JSON and result rows: an int when whole (1), else a float (0.5)."""
    rate = Fraction(rate)
    return rate.numerator if rate.denominator == 1 else float(rate)


def sample_plan(info: VideoInfo, fps: Fraction | int | str = 1) -> SamplePlan:
    """Upstream's video_length, frame count and reported frame indices for ``fps``.

    Upstream's rule, with any rate: ``ceil(duration)`` seconds, and that times the rate
    frames, rounded up (``-r 0.5`` on 5 s: 3 frames). The reported frame indices are
    ``round(i * orig_fps / fps)`` (Python's rounding, halves to even), as upstream's.
    """
    rate = parse_fps(fps)
    orig_fps = info.orig_fps
    if rate == -1:
        if not orig_fps:
            raise VideoError(f"{info.path}: frame rate unknown, so fps=-1 (every frame) cannot "
                             "be used; pass a positive --fps")
        used = Fraction(int(orig_fps))
    else:
        used = rate
    length = 0
    if rate == -1 and info.nb_frames:
        length = math.ceil(info.nb_frames / used)
    elif info.duration:
        length = math.ceil(info.duration)
    elif orig_fps and info.nb_frames:  # upstream's batch mode, when there is no duration
        length = math.ceil(info.nb_frames / orig_fps)
    if length <= 0:
        raise VideoError(f"{info.path}: video has zero length (duration "
                         f"{info.duration if info.duration is not None else 'unknown'}); "
                         "nothing to score")
    num = math.ceil(length * used)
    if orig_fps:
        indices = tuple(int(round(i * orig_fps / used)) for i in range(num))
    else:
        indices = tuple(range(num))
    return SamplePlan(length, used, num, indices, orig_fps)


def prepare(path: str | Path, fps: Fraction | int, ffprobe: str = "ffprobe",
            info: VideoInfo | None = None,
            plan: SamplePlan | None = None) -> tuple[VideoInfo, SamplePlan]:
    """A decoder's request: the probe (made now unless given; with ``info`` the file is
    only checked to exist) and upstream's frame plan (made now unless given)."""
    fps = parse_fps(fps)
    if info is None:
        info = probe(path, ffprobe=ffprobe, count_frames=(fps == -1))
    else:
        check_file(path)
    return info, plan if plan is not None else sample_plan(info, fps)


def _packet_listing(path: str | Path,
                    ffprobe: str) -> tuple[array, dict[str, dict[str, str]]] | None:
    """(every video packet's pts in file order, the first ``stream`` and ``format``
    sections as text) from ffprobe's compact output, read line by line.

    A packet costs 8 bytes here: a one-hour 30 fps video has 108,000 packets, and
    ffprobe's JSON parsed into a dict per packet grew with the video's length (the
    bound is tests/runtime/decode/test_probe.py's).
    Packets without a pts (``N/A``) are left out. None when ffprobe cannot run.
    """
    argv = [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
            "format=start_time,nb_streams:stream=time_base,r_frame_rate,avg_frame_rate:"
            "packet=pts", "-of", "compact", ffmpeg_url(path)]
    pts = array("q")
    sections: dict[str, dict[str, str]] = {}
    try:
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:
            for line in proc.stdout:
                kind, _, rest = line.rstrip(b"\r\n").partition(b"|")
                if kind == b"packet":
                    value = _int(rest.partition(b"=")[2])
                    if value is not None:
                        pts.append(value)
                elif kind in (b"stream", b"format") and kind.decode() not in sections:
                    fields = rest.decode("utf-8", "replace").split("|")
                    sections[kind.decode()] = dict(f.partition("=")[::2] for f in fields)
    except OSError:
        return None
    return pts, sections


def source_choice(path: str | Path, fps: Fraction | int, count: int | None,
                  ffprobe: str = "ffprobe") -> tuple[np.ndarray, list[int], Fraction,
                                                     Fraction | None] | None:
    """(packet timestamps in presentation order, the position among them of each source
    frame ``-r fps`` hands on (at most ``count``; None: all, the end-of-stream repeat
    included), the time base, the start time), from ffprobe's packet list: no decoding.

    The choice is ffmpeg 5.1's (``frame_choice``, the one model of ``-r``). None when
    ffprobe gives no timestamps, or where the choice is not reproduced.
    """
    from uvq_int8.runtime.decode import frame_choice

    listing = _packet_listing(path, ffprobe)
    if listing is None:
        return None
    pts, sections = listing
    fmt, stream = sections.get("format", {}), sections.get("stream", {})
    time_base = _rational(stream.get("time_base"))
    if not pts or not time_base:
        return None
    start = _rational(fmt.get("start_time"))
    try:
        ordered, chosen = frame_choice.source_positions(
            pts, start, time_base, _rational(stream.get("r_frame_rate")) or None,
            _rational(stream.get("avg_frame_rate")) or None, _int(fmt.get("nb_streams")) == 1,
            fps, count)
    except ValueError:
        return None
    return ordered, chosen, time_base, start


def source_instants(path: str | Path, fps: Fraction | int, count: int,
                    ffprobe: str = "ffprobe") -> list[Fraction] | None:
    """Exact timestamps (s, from the file's start) of the source frames ``-r fps`` hands
    on, at most ``count``: what segments are cut by (``scoring.segments``), so that a
    frame on a segment boundary falls on the right side of it.

    From ``source_choice``, so no decoding: at fps=1 the second output frame is the
    source's second frame, not the one at t = 1 s. None when ffprobe gives no timestamps,
    or where the choice is not reproduced.
    """
    choice = source_choice(path, fps, count, ffprobe)
    if choice is None:
        return None
    ordered, chosen, time_base, start = choice
    return [int(ordered[i]) * time_base - (start or 0) for i in chosen]


def rounded_times(instants: list[Fraction] | None) -> list[float] | None:
    """``source_instants`` as the results report them: seconds to the microsecond."""
    return None if instants is None else [round(float(t), 6) for t in instants]


def source_frame_times(path: str | Path, fps: Fraction | int, count: int,
                       ffprobe: str = "ffprobe") -> list[float] | None:
    """``source_instants`` in seconds to the microsecond (the rows' ``frame_times``)."""
    return rounded_times(source_instants(path, fps, count, ffprobe))
