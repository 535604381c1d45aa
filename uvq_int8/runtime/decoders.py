"""The ffmpeg commands that decode a video as upstream does, and the pipes that run them.

``decode_commands`` chooses between upstream's single command and the "split" pair
(see ``uvq_int8.runtime.video``); ``StderrTail`` keeps the last lines a child writes to
stderr, and ``Pipeline`` streams fixed-size frames from the last command of a chain.
``uvq_int8.runtime.video.iter_frames`` is the public entry point.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.runtime.frames import FRAME_HEIGHT, FRAME_WIDTH

if TYPE_CHECKING:
    from uvq_int8.runtime.video import DecodeStats, SamplePlan, VideoInfo

log = logging.getLogger(__name__)


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
# A size change is caught (see split_commands); a pixel-format change is not, so the
# split path is kept to containers where a stream practically never changes format
# (broadcast MPEG-TS, for one, does).
_SPLIT_CONTAINERS = ("mov,mp4", "matroska")


def ffmpeg_url(path: str | Path) -> str:
    """The URL ffmpeg and ffprobe are given for a local file."""
    # An absolute path behind "file:" is never read as an option ("-x.mp4"), as stdin
    # ("-"), or as another protocol ("a:b.mp4").
    return "file:" + str(Path(os.path.abspath(os.fspath(path))))


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
    url = ffmpeg_url(path)
    upstream = ("upstream", [_decoder_threads(_upstream_command(url, plan, transpose, ffmpeg),
                                              decode_threads)])
    if method == "upstream":
        return [upstream]
    first, *rest = split_commands(url, info, plan, transpose, ffmpeg)
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


END_OF_FRAMES = object()


class Pipeline:
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
            self._put(END_OF_FRAMES)

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
