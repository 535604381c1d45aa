"""Probing and streaming decode with ffmpeg, frames chosen exactly as upstream chooses them.

Upstream UVQ 1.5 runs ``ffmpeg -i F -vf [transpose=2,]scale=w=1920:h=1080:flags=bicubic,
format=rgb24 -r FPS -f rawvideo`` through a shell into a temp file, then truncates or
zero-pads the bytes to ``video_length * fps`` frames. Here the same frames arrive from a
pipe, one at a time, through a small bounded queue filled by a reader thread, so decoding
overlaps with inference and memory does not grow with the video's length. No shell, no
temp file; file names are passed as ``file:`` URLs of absolute paths.

Two decode methods give the same bytes:

- ``"upstream"``: upstream's single ffmpeg command, its output sent to a pipe.
- ``"split"``: ffmpeg #1 decodes and lets ``-r FPS`` pick frames exactly as in upstream's
  command, but writes them in the decoder's own pixel format; ffmpeg #2 runs upstream's
  transpose/scale/format chain on those frames only. Upstream scales every source frame
  before ``-r`` drops most of them; this scales only the frames that are kept (on a
  20 s clip at fps=1: ~9x faster from a 360p source, 5-30 % from 1080p, where the scale
  is only a colour conversion). ``-r``'s choice depends on timestamps and
  the stream's frame rate, which the filters do not change, and the colour tags that the
  raw pipe loses are restored with ``setparams``. It is used only where it was checked
  bit-exact against the upstream command (see ``_split_supported``), and if its ffmpeg #1
  stops with an error (a frame size change mid-stream, say) decoding carries on with
  upstream's command after the frames already delivered.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from uvq_int8.errors import VideoError

log = logging.getLogger(__name__)

FRAME_HEIGHT = 1080
FRAME_WIDTH = 1920
FRAME_SHAPE = (FRAME_HEIGHT, FRAME_WIDTH, 3)
FRAME_BYTES = FRAME_HEIGHT * FRAME_WIDTH * 3
SCALE_FILTER = f"scale=w={FRAME_WIDTH}:h={FRAME_HEIGHT}:flags=bicubic,format=rgb24"
TRANSPOSE_FILTER = "transpose=2,"  # upstream: rotate 90 degrees counter-clockwise
STDERR_LINES = 20
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
# ffmpeg builds on which "split" was compared byte for byte with upstream's command.
_SPLIT_VERIFIED = re.compile(r"^ffmpeg version n?5\.1(\.|\b)")
# ffmpeg #1 converts frames to its first size and pixel format if they change mid-stream.
# A size change is caught (see _split_commands); a pixel-format change is not, so the
# split path is kept to containers where a stream practically never changes format
# (broadcast MPEG-TS, for one, does).
_SPLIT_CONTAINERS = ("mov,mp4", "matroska")


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


@dataclass(frozen=True)
class SamplePlan:
    """How many frames upstream feeds the nets and which source frames it reports."""

    video_length: int  # seconds, as upstream computes it
    fps: int  # frames per second actually sampled (fps=-1 -> orig_fps)
    num_frames: int  # video_length * fps
    frame_indices: tuple[int, ...]
    orig_fps: int | None


@dataclass
class DecodeStats:
    """Filled in by ``iter_frames`` while it runs; pass one in to inspect a decode."""

    method: str = ""
    commands: list[list[str]] = field(default_factory=list)
    frames_expected: int = 0
    real_frames: int = 0
    padded_frames: int = 0
    max_queued: int = 0
    pids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    fallback: str = ""  # why the split decode handed over to upstream's command, if it did


def _ffmpeg_url(path: str | Path) -> str:
    # An absolute path behind "file:" is never read as an option ("-x.mp4"), as stdin
    # ("-"), or as another protocol ("a:b.mp4").
    return "file:" + str(Path(os.path.abspath(os.fspath(path))))


def find_tool(name: str, flag: str) -> str:
    found = shutil.which(name)
    if not found:
        raise VideoError(f"{name!r} not found or not executable; install ffmpeg or pass {flag}")
    return found


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


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{path}: no such file; check the path")
    if not p.is_file():
        raise VideoError(f"{path}: not a regular file; give a video file")
    if p.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes); give a video file")
    return p


def _rate(text: str | None) -> tuple[float | None, int | None]:
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
                        _ffmpeg_url(path)], "--ffprobe_path")
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
    _check_file(path)
    argv = [ffprobe, "-v", "error", "-select_streams", "v", "-show_format", "-show_streams",
            "-show_frames", "-read_intervals", "%+#1", "-of", "json", _ffmpeg_url(path)]
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
    rate, orig_fps = _rate(stream.get("r_frame_rate"))
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
    )


def is_portrait(info: VideoInfo) -> bool:
    """Upstream's batch-mode rule: stored width < height means transpose=True."""
    return info.width < info.height


def sample_plan(info: VideoInfo, fps: int = 1) -> SamplePlan:
    """Upstream's video_length, frame count and reported frame indices for ``fps``."""
    if fps != -1 and (not isinstance(fps, (int, np.integer)) or fps <= 0):
        raise VideoError(f"fps must be a positive whole number or -1, got {fps!r}")
    orig_fps = info.orig_fps
    if fps == -1:
        if not orig_fps:
            raise VideoError(f"{info.path}: frame rate unknown, so fps=-1 (every frame) cannot "
                             "be used; pass a positive --fps")
        used = int(orig_fps)
    else:
        used = int(fps)
    length = 0
    if fps == -1 and info.nb_frames:
        length = math.ceil(info.nb_frames / used)
    elif info.duration:
        length = math.ceil(info.duration)
    elif orig_fps and info.nb_frames:  # upstream's batch mode, when there is no duration
        length = math.ceil(info.nb_frames / orig_fps)
    if length <= 0:
        raise VideoError(f"{info.path}: video has zero length (duration "
                         f"{info.duration if info.duration is not None else 'unknown'}); "
                         "nothing to score")
    num = length * used
    if orig_fps:
        indices = tuple(int(round(i * orig_fps / used)) for i in range(num))
    else:
        indices = tuple(range(num))
    return SamplePlan(length, used, num, indices, orig_fps)


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


def upstream_filter(transpose: bool) -> str:
    return (TRANSPOSE_FILTER if transpose else "") + SCALE_FILTER


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
            and (info.format_name or "").startswith(_SPLIT_CONTAINERS)
            and _split_geometry(info) is not None and _setparams(info) is not None
            and bool(_SPLIT_VERIFIED.match(ffmpeg_version(ffmpeg))))


def _upstream_command(url: str, plan: SamplePlan, transpose: bool, ffmpeg: str) -> list[str]:
    # Upstream's command; only the log flags and the output (a pipe, not a temp file) differ.
    return [ffmpeg, *_QUIET, "-i", url, "-vf", upstream_filter(transpose), "-r", str(plan.fps),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def _split_commands(url: str, info: VideoInfo, plan: SamplePlan, transpose: bool,
                    ffmpeg: str) -> list[list[str]]:
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
             "-r", str(plan.fps), *_RAW_OUT, "pipe:1"]
    chain = ",".join(p for p in (params, upstream_filter(transpose)) if p)
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
    url = _ffmpeg_url(path)
    upstream = ("upstream", [_decoder_threads(_upstream_command(url, plan, transpose, ffmpeg),
                                              decode_threads)])
    if method == "upstream":
        return [upstream]
    first, *rest = _split_commands(url, info, plan, transpose, ffmpeg)
    return [("split", [_decoder_threads(first, decode_threads), *rest]), upstream]


class StderrTail(threading.Thread):
    """Keeps the last lines a process writes to stderr, so a full pipe never blocks it."""

    def __init__(self, stream: IO[bytes], name: str):
        super().__init__(name=name, daemon=True)
        self.stream = stream
        self.lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def run(self) -> None:
        try:
            for raw in iter(self.stream.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if line:
                    self.lines.append(line)
        except (OSError, ValueError):
            pass


_EOF = object()


class _Pipeline:
    """ffmpeg process(es) writing raw frames, a reader thread and a bounded queue."""

    def __init__(self, commands: list[list[str]], frame_bytes: int, limit: int,
                 queue_frames: int, stats: DecodeStats):
        self.frame_bytes = frame_bytes
        self.limit = limit
        self.stats = stats
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self.stop = threading.Event()
        self.procs: list[subprocess.Popen] = []
        self.tails: list[StderrTail] = []
        stdin = subprocess.DEVNULL
        try:
            for i, argv in enumerate(commands):
                proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
                if i:
                    self.procs[-1].stdout.close()  # only ffmpeg #2 reads it now
                self.procs.append(proc)
                stats.pids.append(proc.pid)
                tail = StderrTail(proc.stderr, f"uvq-ffmpeg-stderr-{proc.pid}")
                tail.start()
                self.tails.append(tail)
                stdin = proc.stdout
        except (FileNotFoundError, PermissionError, NotADirectoryError):
            self.close()
            raise VideoError(f"{commands[0][0]!r} not found or not executable; install ffmpeg "
                             "or pass --ffmpeg_path") from None
        self.reader = threading.Thread(target=self._read, name="uvq-ffmpeg-reader", daemon=True)
        self.reader.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                self.stats.max_queued = max(self.stats.max_queued, self.queue.qsize())
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        out = self.procs[-1].stdout
        try:
            for _ in range(self.limit):
                buf = np.empty(self.frame_bytes, np.uint8)
                view = memoryview(buf)
                got = 0
                while got < self.frame_bytes:
                    n = out.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got == 0 or self.stop.is_set():
                    break
                if got < self.frame_bytes:
                    # Upstream zero-pads the byte string, so a cut-off frame keeps its
                    # decoded part and is black after it.
                    buf[got:] = 0
                if not self._put(buf) or got < self.frame_bytes:
                    break
            else:
                # Every frame this decode can deliver has been read; ffmpeg would go on
                # decoding to the end of the file, taking CPU from the nets.
                self._terminate()
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            self._put(_EOF)

    def get(self):
        return self.queue.get()

    def last_error_line(self) -> str:
        for tail in self.tails:
            tail.join(timeout=2)
        lines = [tail.lines[-1] for tail in self.tails if tail.lines]
        # In a piped pair, one side's "Broken pipe" is a consequence of the other's error.
        causes = [line for line in lines if "broken pipe" not in line.lower()]
        return (causes or lines or ["no message from ffmpeg"])[0]

    def wait(self, timeout: float = 30.0) -> list[int | None]:
        """Return codes once the processes end on their own (after end of output)."""
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def _terminate(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()

    def close(self) -> None:
        self.stop.set()
        self._terminate()
        reader = getattr(self, "reader", None)
        if reader is not None:
            deadline = time.monotonic() + 5
            while reader.is_alive():
                try:  # a reader blocked on the full queue then sees the stop flag
                    self.queue.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)
                if time.monotonic() > deadline:
                    for proc in self.procs:  # its read only ends at EOF
                        proc.kill()
        # ffmpeg blocked writing into a full pipe does not act on SIGTERM; closing the
        # read end turns that write into EPIPE, and it exits.
        for proc in reversed(self.procs):
            if proc.stdout is not None:
                proc.stdout.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for tail in self.tails:
            tail.join(timeout=2)
            tail.stream.close()


def iter_frames(path: str | Path, fps: int = 1, transpose: bool = False,
                ffmpeg: str = "ffmpeg", info: VideoInfo | None = None,
                ffprobe: str = "ffprobe", method: str = "auto", queue_frames: int = 2,
                stats: DecodeStats | None = None,
                decode_threads: int | None = None) -> Iterator[np.ndarray]:
    """Yield upstream's frames for ``path``: uint8 [1080,1920,3] RGB, exactly
    ``video_length * fps`` of them (black frames pad a short decode, as upstream pads).

    Probing, the frame plan and the ffmpeg check happen now (errors raise here); ffmpeg
    starts on the first ``next()``. Closing the iterator early stops ffmpeg.
    """
    if info is None:
        info = probe(path, ffprobe=ffprobe, count_frames=(fps == -1))
    else:
        _check_file(path)
    plan = sample_plan(info, fps)
    binary = find_tool(ffmpeg, "--ffmpeg_path")
    attempts = decode_commands(path, info, plan, transpose, binary, method, decode_threads)
    stats = stats if stats is not None else DecodeStats()
    stats.method = attempts[0][0]
    stats.commands = [argv for _, cmds in attempts for argv in cmds]
    stats.frames_expected = plan.num_frames
    return _generate(str(path), attempts, plan, max(1, int(queue_frames)), stats)


def uvq_frames(path: str | Path, fps: int = 1, transpose: bool | None = None,
               ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe", info: VideoInfo | None = None,
               decode_threads: int | None = None,
               stats: DecodeStats | None = None) -> Iterator[np.ndarray]:
    """The frames ``uvq`` scores for ``path``: the one source of decoded frames.

    Probes the video (an exact frame count for ``fps=-1``), transposes portrait videos as
    upstream's batch mode does unless ``transpose`` says otherwise, then ``iter_frames``.
    Scoring, build's calibration and validation videos, verify and the benchmarks all
    decode through here, so they all see the same frames.
    """
    if info is None:
        info = probe(path, ffprobe=ffprobe, count_frames=(fps == -1))
    if transpose is None:
        transpose = is_portrait(info)
    return iter_frames(path, fps=fps, transpose=transpose, ffmpeg=ffmpeg, info=info,
                       ffprobe=ffprobe, stats=stats, decode_threads=decode_threads)


def _generate(name: str, attempts: list[tuple[str, list[list[str]]]], plan: SamplePlan,
              queue_frames: int, stats: DecodeStats) -> Iterator[np.ndarray]:
    started = time.perf_counter()
    delivered = 0
    try:
        for number, (method, commands) in enumerate(attempts):
            last_attempt = number == len(attempts) - 1
            pipeline = _Pipeline(commands, FRAME_BYTES, plan.num_frames, queue_frames, stats)
            try:
                produced = 0
                while delivered < plan.num_frames:
                    item = pipeline.get()
                    if item is _EOF:
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
