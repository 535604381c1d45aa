"""``--jobs`` workers: each video of a batch to one row (``batch.rows``).

Each video gives one row; a video that cannot be scored gives a row with its ``error``,
never only a stderr line. Rows are written by one writer, the calling process, as each
video finishes, so a killed run keeps every finished row.

Workers (``score_paths``) each load the models once. In each worker a decode thread works
one video ahead of the nets: it probes, decodes (``runtime.decode.uvq_frames``, the one
source of decoded frames) and queues upstream's frames in a queue bounded in frames, so the
next video's decoding overlaps with this one's scoring while a worker holds at most
``buffer_frames`` decoded frames beyond those in the decoder's own small pipe queue.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from uvq_int8 import runtime
from uvq_int8.runtime import decode, scoring
from uvq_int8.runtime.decode import pipe
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.batch.rows import BatchError, error_row, failure_message, file_identity, result_row
from uvq_int8.util import usable_cores

log = logging.getLogger(__name__)

BUFFER_FRAMES = 4  # decoded 1080p frames a worker queues ahead of the nets (~6 MB each)

# --------------------------------------------------------------------------- one worker

@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to load the models and score (plain values: it is pickled)."""

    backend: str
    model_dir: str
    threads: int
    options: scoring.ScoreOptions
    buffer_frames: int = BUFFER_FRAMES
    decode_threads: int | None = None  # ffmpeg threads; None: the cores the nets leave free
    audit: float = 0.0  # fraction of frames also scored with float32 (runtime/audit.py)
    audit_budget: float | None = None


_DONE = object()


class _Start:
    def __init__(self, path, identity, info, plan, stats):
        self.path, self.identity, self.info, self.plan, self.stats = (
            path, identity, info, plan, stats)
        self.frames_expected = plan.num_frames


class _Finish:
    def __init__(self, stats: probing.DecodeStats, times):
        # times: the exact source timestamps of the decoded frames (probe.source_instants)
        self.stats, self.times = stats, times


class _Failed:
    def __init__(self, path, identity, exc, started):
        self.path, self.identity, self.exc, self.started = path, identity, exc, started


class Prefetcher(threading.Thread):
    """Decodes the worker's videos in turn into one queue bounded in frames."""

    def __init__(self, next_path: Callable[[], str | None], spec: WorkerSpec,
                 decode_threads: int):
        super().__init__(name="uvq-batch-decode", daemon=True)
        self.next_path = next_path
        self.spec = spec
        self.decode_threads = decode_threads
        self.queue = pipe.BoundedQueue(spec.buffer_frames)

    def _put(self, item) -> bool:
        return self.queue.put(item)

    def run(self) -> None:
        try:
            while not self.queue.stopped:
                path = self.next_path()
                if path is None:
                    break
                self._one(path)
        except BaseException as exc:  # pragma: no cover - reported by the consumer
            self._put(_Failed(None, None, exc, time.perf_counter()))
        finally:
            self._put(_DONE)

    def _one(self, path: str) -> None:
        options = self.spec.options
        started = time.perf_counter()
        identity = file_identity(path)
        frames = None
        try:
            info = scoring.probe(path, options)
            plan = probing.sample_plan(info, options.fps)
            stats = probing.DecodeStats()
            frames = decode.uvq_frames(path, fps=options.fps, transpose=options.transpose,
                                      ffmpeg=options.ffmpeg, ffprobe=options.ffprobe, info=info,
                                      stats=stats, decode_threads=self.decode_threads,
                                      decoder=options.decoder, plan=plan)
            if not self._put(_Start(path, identity, info, plan, stats)):
                return
            for frame in frames:
                if not self._put(frame):
                    return
            times = probing.source_instants(path, plan.fps, stats.real_frames, options.ffprobe)
            self._put(_Finish(stats, times))
        except Exception as exc:
            self._put(_Failed(path, identity, exc, started))
        finally:
            if frames is not None:
                frames.close()  # stops ffmpeg if decoding ended early

    def close(self) -> None:
        self.queue.stop()
        while self.is_alive():
            self.queue.drain()  # unblocks a put; the thread then sees the stop
            self.join(timeout=0.05)


class _VideoFailed(Exception):
    def __init__(self, failed: _Failed):
        super().__init__(str(failed.exc))
        self.failed = failed


def _frames_of(prefetch: Prefetcher, finish: list) -> Iterator[np.ndarray]:
    while True:
        item = prefetch.queue.get()
        if isinstance(item, np.ndarray):
            yield item
        elif isinstance(item, _Finish):
            finish.append(item)
            return
        elif isinstance(item, _Failed):
            raise _VideoFailed(item)
        else:  # pragma: no cover - the decode thread keeps the order
            raise RuntimeError(f"unexpected item in the frame queue: {item!r}")


def _skip_rest(prefetch: Prefetcher, finish: list) -> None:
    """Drop what is left of the current video's frames after scoring it stopped early."""
    if finish:
        return
    while not isinstance(prefetch.queue.get(), (_Finish, _Failed)):
        pass


def run_worker(spec: WorkerSpec, next_path: Callable[[], str | None],
               emit: Callable[[dict], None], models: runtime.Models | None = None) -> None:
    """Score videos from ``next_path()`` until it returns None; ``emit`` each row."""
    models = models or runtime.load_models(spec.backend, spec.model_dir, spec.threads)
    prefetch = Prefetcher(next_path, spec,
                          spec.decode_threads or scoring.decode_threads(models.threads))
    prefetch.start()
    try:
        while True:
            item = prefetch.queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                if item.path is None:
                    raise item.exc
                emit(error_row(item.path, failure_message(item.exc), item.identity,
                               time.perf_counter() - item.started))
                continue
            assert isinstance(item, _Start)
            finish: list[_Finish] = []
            try:
                results = scoring.score_video(item.path, models, spec.options, info=item.info,
                                              plan=item.plan, frames=_frames_of(prefetch, finish),
                                              stats=item.stats, audit=spec.audit,
                                              audit_budget=spec.audit_budget,
                                              source_times=lambda: (finish[0].times if finish
                                                                    else None))
            except _VideoFailed as exc:
                failed = exc.failed
                emit(error_row(item.path, failure_message(failed.exc), item.identity,
                               time.perf_counter() - failed.started))
                continue
            except Exception as exc:  # a net failing on this video: its row, then go on
                emit(error_row(item.path, failure_message(exc), item.identity))
                _skip_rest(prefetch, finish)
                continue
            done = finish[0] if finish else _Finish(probing.DecodeStats(), None)
            emit(result_row(item.path, item.identity, results, results["frame_times"],
                            scoring.decode_warnings(done.stats, item.frames_expected)
                            + results["warnings"]))
    finally:
        prefetch.close()


# --------------------------------------------------------------------------- worker processes

def _process_main(spec: WorkerSpec, wid: int, tasks, results) -> None:
    # A terminate from the parent unwinds like Ctrl-C: the decode thread stops its ffmpeg.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        models = runtime.load_models(spec.backend, spec.model_dir, spec.threads)

        def next_path():
            path = tasks.get()
            if path is not None:
                results.put(("take", wid, path))
            return path

        run_worker(spec, next_path, lambda row: results.put(("row", wid, row)), models)
        results.put(("exit", wid, None))
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        results.put(("fatal", wid, failure_message(exc)))


def default_threads_per_worker(jobs: int) -> int:
    return max(1, usable_cores() // max(1, jobs))


def decode_threads_per_worker(jobs: int, threads: int) -> int | None:
    """ffmpeg threads per worker: one worker takes what its nets leave (None), several
    share the cores, so each gets its share less its interpreter threads, at least one."""
    if jobs <= 1:
        return None
    return max(1, usable_cores() // jobs - threads)


def score_paths(paths: list[str], spec: WorkerSpec, jobs: int = 1,
                on_row: Callable[[dict], None] = lambda row: None) -> None:
    """Score ``paths`` on ``jobs`` workers; ``on_row`` (called here, one writer) gets each row.

    ``jobs=1`` scores in this process. On KeyboardInterrupt the workers are stopped (their
    ffmpeg processes with them) and the interrupt is raised again; rows already handed to
    ``on_row`` stay handed.
    """
    if not paths:
        return
    if jobs <= 1:
        pending = iter(paths)
        run_worker(spec, lambda: next(pending, None), on_row)
        return
    ctx = multiprocessing.get_context("spawn")
    tasks = ctx.Queue()
    results = ctx.Queue()
    for path in paths:
        tasks.put(path)
    jobs = min(jobs, len(paths))
    for _ in range(jobs):
        tasks.put(None)
    workers = {wid: ctx.Process(target=_process_main, args=(spec, wid, tasks, results),
                                name=f"uvq-worker-{wid}", daemon=True)
               for wid in range(jobs)}
    taken: dict[int, list[str]] = {wid: [] for wid in workers}
    running = set(workers)
    fatal: list[str] = []
    for process in workers.values():
        process.start()
    try:
        while running:
            try:
                kind, wid, value = results.get(timeout=0.5)
            except queue.Empty:
                for wid in list(running):
                    if not workers[wid].is_alive():  # died without saying goodbye
                        with contextlib.suppress(queue.Empty):
                            while True:  # its last messages may still be in the pipe
                                _handle(results.get(timeout=0.2), taken, running, fatal, on_row)
                        if wid in running:
                            running.discard(wid)
                            code = workers[wid].exitcode
                            for path in taken.pop(wid, []):
                                on_row(error_row(path, f"worker process died (exit code {code}) "
                                                       "while scoring this video",
                                                 file_identity(path)))
                continue
            _handle((kind, wid, value), taken, running, fatal, on_row)
        if fatal:
            raise BatchError(f"a worker could not start: {fatal[0]}")
    finally:
        for process in workers.values():
            if process.is_alive():
                process.terminate()
        for process in workers.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
        tasks.cancel_join_thread()
        results.cancel_join_thread()


def _handle(message, taken, running, fatal, on_row) -> None:
    kind, wid, value = message
    if kind == "take":
        taken[wid].append(value)
    elif kind == "row":
        with contextlib.suppress(ValueError):
            taken[wid].remove(value["path"])
        on_row(value)
    elif kind == "exit":
        running.discard(wid)
    elif kind == "fatal":
        running.discard(wid)
        fatal.append(value)
        for path in taken.pop(wid, []):
            on_row(error_row(path, value, file_identity(path)))
