"""The one bounded queue between a decoder and the nets (``BoundedQueue``), and what runs
on it: ``prefetch`` (any frame iterator in a thread, a few frames ahead) and ``Pipeline``
(ffmpeg processes writing raw frames to a pipe, and a reader thread).

A producer blocked on a full queue sees ``stop`` within 0.1 s, so closing never hangs, and
memory stays flat in the video's length. The batch workers' decode thread uses the same
queue (``uvq_int8.batch.workers``).
"""

from __future__ import annotations

import collections
import queue
import subprocess
import threading
import time
from typing import IO, Any, Callable, Iterator

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.runtime.decode.probe import DecodeStats

STDERR_LINES = 20  # the last lines of ffmpeg's stderr kept for an error message


class BoundedQueue:
    """A queue of at most ``size`` items whose producer gives up once ``stop()`` is called."""

    def __init__(self, size: int, on_put: Callable[[int], None] | None = None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(size)))
        self._stop = threading.Event()
        self._on_put = on_put  # called with the queue's length after each put

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def put(self, item: Any) -> bool:
        """Wait for room; False (item dropped) once stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            if self._on_put is not None:
                self._on_put(self._queue.qsize())
            return True
        return False

    def get(self) -> Any:
        return self._queue.get()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> None:
        """Take one item if any: a producer blocked on the full queue then sees ``stop``."""
        try:
            self._queue.get_nowait()
        except queue.Empty:
            pass


_END = object()


def prefetch(items: Iterator, size: int, name: str) -> Iterator:
    """Run ``items`` in a thread, up to ``size`` ahead, so producing overlaps consuming
    (PyAV and the interpreter release the GIL). An exception in the thread is raised in
    the consumer; closing the consumer stops the thread and closes ``items``."""
    box = BoundedQueue(size)

    def run() -> None:
        try:
            for item in items:
                if not box.put(item):
                    break
        except BaseException as exc:  # raised again in the consumer
            box.put(exc)
        finally:
            items.close()
            box.put(_END)

    def consume() -> Iterator:
        worker = threading.Thread(target=run, name=name, daemon=True)
        worker.start()
        try:
            while True:
                item = box.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            box.stop()
            worker.join()

    return consume()


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
        self.queue = BoundedQueue(queue_frames, self._note_queued)
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

    def _note_queued(self, length: int) -> None:
        self.stats.max_queued = max(self.stats.max_queued, length)

    def _put(self, item) -> bool:
        return self.queue.put(item)

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
                if got == 0 or self.queue.stopped:
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
        self.queue.stop()
        self._terminate()
        reader = getattr(self, "reader", None)
        if reader is not None:
            deadline = time.monotonic() + 5
            while reader.is_alive():
                self.queue.drain()  # a reader blocked on the full queue then sees the stop
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
