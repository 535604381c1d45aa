"""Scoring many videos: inputs, result rows, row files with resume, and ``--jobs`` workers.

A batch is a list of paths (from a ``.txt`` list, a directory or stdin). Each video gives
one row (``COLUMNS``); a video that cannot be scored gives a row with its ``error``, never
only a stderr line. Rows are written by one writer, the calling process, as each video
finishes, so a killed run keeps every finished row.

Workers (``score_paths``) each load the models once. In each worker a decode thread works
one video ahead of the nets: it probes, decodes (``runtime.video.uvq_frames``, the one
source of decoded frames) and queues upstream's frames in a queue bounded in frames, so the
next video's decoding overlaps with this one's scoring while a worker holds at most
``buffer_frames`` decoded frames beyond those in the decoder's own small pipe queue.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

import numpy as np

from uvq_int8 import runtime
from uvq_int8.errors import UserError
from uvq_int8.runtime import scoring, video
from uvq_int8.runtime.pyav_decoder import PacketStats
from uvq_int8.util import atomic_writer, sha256_bytes, usable_cores

log = logging.getLogger(__name__)

# Matched case-insensitively when a directory is given.
VIDEO_EXTENSIONS = ("3gp", "avi", "flv", "m2ts", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg",
                    "mts", "mxf", "ogv", "ts", "webm", "wmv", "y4m")
FORMATS = ("jsonl", "csv", "parquet")
HEAD_BYTES = 1 << 20  # the file identity hashes this much of the start of the file
BUFFER_FRAMES = 4  # decoded 1080p frames a worker queues ahead of the nets (~6 MB each)

# One row per video, in this order (also the column order of CSV and Parquet).
COLUMNS = ("path", "size", "head_sha256", "score", "score_min", "score_harmonic_mean",
           "score_p05", "per_frame_scores", "per_frame_logits", "frame_indices",
           "frame_times", "backend", "model_sha256", "fps", "transpose", "seconds",
           "warnings", "error", "audit")
_LIST_COLUMNS = ("per_frame_scores", "per_frame_logits", "frame_indices", "frame_times",
                 "warnings")


class BatchError(UserError):
    """A batch that cannot start (bad input list, output, or options)."""


# --------------------------------------------------------------------------- inputs

def is_video_name(path: str | Path) -> bool:
    return Path(path).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


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


def is_batch_input(spec: str) -> bool:
    return spec == "-" or spec.endswith(".txt") or Path(spec).is_dir()


# --------------------------------------------------------------------------- rows

@dataclass(frozen=True)
class FileIdentity:
    size: int
    head_sha256: str


def file_identity(path: str | Path) -> FileIdentity | None:
    """Size and sha256 of the first MiB: a changed file is noticed on resume. None if unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return None
    return FileIdentity(size, sha256_bytes(head))


def pooled(scores: list[float]) -> dict[str, float | None]:
    """min, harmonic mean and 5th percentile of per-frame scores (None when there are none)."""
    if not scores:
        return {"score_min": None, "score_harmonic_mean": None, "score_p05": None}
    arr = np.asarray(scores, dtype=np.float64)
    return {"score_min": float(arr.min()),
            "score_harmonic_mean": float(len(arr) / np.sum(1.0 / arr)),
            "score_p05": float(np.percentile(arr, 5))}


def empty_row(path: str, identity: FileIdentity | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {column: None for column in COLUMNS}
    row["path"] = path
    row["warnings"] = []
    if identity is not None:
        row["size"] = identity.size
        row["head_sha256"] = identity.head_sha256
    return row


def error_row(path: str, message: str, identity: FileIdentity | None = None,
              seconds: float | None = None) -> dict[str, Any]:
    row = empty_row(path, identity)
    row["error"] = " ".join(str(message).split()) or "failed"
    row["seconds"] = None if seconds is None else round(seconds, 3)
    return row


def result_row(path: str, identity: FileIdentity | None, results: Mapping[str, Any],
               frame_times: list[float | None] | None, warnings: list[str]) -> dict[str, Any]:
    """A row from ``score_video``'s dict (the ``--output_all_stats`` keys)."""
    row = empty_row(path, identity)
    scores = list(results["per_frame_scores"])
    row.update({
        "score": float(results["uvq1p5_score"]),
        **pooled(scores),
        "per_frame_scores": scores,
        "per_frame_logits": list(results["per_frame_logits"]),
        "frame_indices": list(results["frame_indices"]),
        "frame_times": frame_times,
        "backend": results["backend"],
        "model_sha256": dict(results["model_sha256"]),
        "fps": results["fps"],
        "transpose": results["transpose"],
        "seconds": results["seconds"],
        "warnings": list(warnings),
        # The audit entry (runtime/audit.py) as JSON text, in every format; null when off.
        "audit": json.dumps(results["audit"]) if results.get("audit") else None,
    })
    return row


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


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
    def __init__(self, path, identity, info, frames_expected, stats):
        self.path, self.identity, self.info, self.frames_expected, self.stats = (
            path, identity, info, frames_expected, stats)


class _Finish:
    def __init__(self, stats: video.DecodeStats, times):
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
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, spec.buffer_frames))
        self.stop = threading.Event()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            while not self.stop.is_set():
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
            plan = video.sample_plan(info, options.fps)
            stats = PacketStats()
            frames = video.uvq_frames(path, fps=options.fps, transpose=options.transpose,
                                      ffmpeg=options.ffmpeg, ffprobe=options.ffprobe, info=info,
                                      stats=stats, decode_threads=self.decode_threads,
                                      decoder=options.decoder)
            if not self._put(_Start(path, identity, info, plan.num_frames, stats)):
                return
            for frame in frames:
                if not self._put(frame):
                    return
            times = video.source_frame_times(path, plan.fps, stats.real_frames, options.ffprobe)
            self._put(_Finish(stats, times))
        except Exception as exc:
            self._put(_Failed(path, identity, exc, started))
        finally:
            if frames is not None:
                frames.close()  # stops ffmpeg if decoding ended early

    def close(self) -> None:
        self.stop.set()
        while self.is_alive():
            with contextlib.suppress(queue.Empty):
                self.queue.get_nowait()  # unblocks a put; the thread then sees the flag
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


def _warnings(stats: video.DecodeStats, expected: int) -> list[str]:
    if stats.padded_frames:
        return [f"decoding may be truncated: {stats.real_frames} of {expected} frames decoded; "
                f"{stats.padded_frames} black frames padded as upstream does"]
    return []


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
                                              frames=_frames_of(prefetch, finish),
                                              stats=item.stats, audit=spec.audit,
                                              audit_budget=spec.audit_budget)
            except _VideoFailed as exc:
                failed = exc.failed
                emit(error_row(item.path, failure_message(failed.exc), item.identity,
                               time.perf_counter() - failed.started))
                continue
            except Exception as exc:  # a net failing on this video: its row, then go on
                emit(error_row(item.path, failure_message(exc), item.identity))
                _skip_rest(prefetch, finish)
                continue
            done = finish[0] if finish else _Finish(video.DecodeStats(), None)
            emit(result_row(item.path, item.identity, results, done.times,
                            _warnings(done.stats, item.frames_expected)))
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


# --------------------------------------------------------------------------- row files

def arrow_schema():
    """The rows' Arrow schema (Parquet files, Ray datasets)."""
    import pyarrow as pa

    from uvq_int8.backends import NETS

    return pa.schema([
        ("path", pa.string()), ("size", pa.int64()), ("head_sha256", pa.string()),
        ("score", pa.float64()), ("score_min", pa.float64()),
        ("score_harmonic_mean", pa.float64()), ("score_p05", pa.float64()),
        ("per_frame_scores", pa.list_(pa.float64())),
        ("per_frame_logits", pa.list_(pa.float64())),
        ("frame_indices", pa.list_(pa.int64())), ("frame_times", pa.list_(pa.float64())),
        ("backend", pa.string()),
        ("model_sha256", pa.struct([(net, pa.string()) for net in NETS])),
        ("fps", pa.int64()), ("transpose", pa.bool_()), ("seconds", pa.float64()),
        ("warnings", pa.list_(pa.string())), ("error", pa.string()), ("audit", pa.string()),
    ])


def rows_to_table(rows: list[dict]):
    import pyarrow as pa

    schema = arrow_schema()
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=schema)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _csv_line(row: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_csv_cell(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def _parse_csv(text: str) -> list[dict]:
    rows = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != list(COLUMNS):
        return rows
    for values in reader:
        if len(values) != len(COLUMNS):
            continue  # a line cut off by a kill
        rows.append({"_line": _csv_line_from(values), **_typed_csv(values)})
    return rows


def _csv_line_from(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _typed_csv(values: list[str]) -> dict:
    row = dict(zip(COLUMNS, values))
    return {"path": row["path"], "size": int(row["size"]) if row["size"] else None,
            "head_sha256": row["head_sha256"] or None, "error": row["error"] or None}


def _parse_jsonl(text: str) -> list[dict]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut off by a kill
        if isinstance(row, dict) and "path" in row:
            rows.append({"_line": line + "\n", **row})
    return rows


def keep_on_resume(rows: list[dict], paths: Iterable[str]) -> tuple[list[dict], set[str]]:
    """(rows to keep, paths they cover): good rows whose file is unchanged, one per path.

    Rows of failed videos and of files that changed are dropped so that the videos are
    scored again; rows of paths not in this batch are kept as they are.
    """
    wanted = set(paths)
    kept: list[dict] = []
    done: set[str] = set()
    identities: dict[str, FileIdentity | None] = {}
    for row in rows:
        path = row.get("path")
        if path not in wanted:
            kept.append(row)
            continue
        if row.get("error") is not None or path in done:
            continue
        if path not in identities:
            identities[path] = file_identity(path)
        ident = identities[path]
        if ident is not None and (row.get("size"), row.get("head_sha256")) == (
                ident.size, ident.head_sha256):
            kept.append(row)
            done.add(path)
    return kept, done


class RowWriter:
    """Appends rows to ``path`` in ``fmt``, each flushed whole as soon as it is written.

    Parquet rows go to a JSONL journal beside the file (``PATH.journal.jsonl``) and are
    converted into ``path`` by ``close()``; a killed run leaves the journal, which
    ``--resume`` reads.
    """

    def __init__(self, path: str | Path, fmt: str, paths: list[str], resume: bool = False):
        if fmt not in FORMATS:
            raise BatchError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if fmt == "parquet":
            try:
                import pyarrow.parquet  # noqa: F401
            except ImportError:
                raise BatchError("--format parquet needs pyarrow: pip install "
                                 "'uvq-int8[parquet]' (or use --format jsonl)") from None
        self.path = Path(path)
        self.fmt = fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal = self.path.with_name(self.path.name + ".journal.jsonl") \
            if fmt == "parquet" else self.path
        self.rows_written = 0
        existing = self._existing() if resume else []
        kept, self.done = keep_on_resume(existing, paths)
        if fmt == "parquet":  # the journal holds every row until close() converts it
            kept_lines = [json.dumps({c: row.get(c) for c in COLUMNS}) + "\n" for row in kept]
        else:
            kept_lines = [row["_line"] for row in kept]
        with atomic_writer(self.journal, "w") as fh:
            if fmt == "csv":
                fh.write(_csv_line(dict(zip(COLUMNS, COLUMNS))))
            fh.writelines(kept_lines)
        self._fh = open(self.journal, "a", encoding="utf-8")

    def _existing(self) -> list[dict]:
        if self.fmt == "csv":
            return _parse_csv(self.path.read_text()) if self.path.is_file() else []
        rows = []
        if self.fmt == "parquet" and self.path.is_file():
            import pyarrow.parquet as pq

            rows = pq.read_table(self.path).to_pylist()
        if self.journal.is_file():
            rows += _parse_jsonl(self.journal.read_text())
        return rows

    def write(self, row: Mapping[str, Any]) -> None:
        if self.fmt == "csv":
            line = _csv_line(row)
        else:
            line = json.dumps({c: row.get(c) for c in COLUMNS}) + "\n"
        self._fh.write(line)  # one write per row: a kill never leaves half of two rows
        self._fh.flush()
        self.rows_written += 1

    def close(self) -> None:
        self._fh.close()
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            rows = [{k: v for k, v in r.items() if k != "_line"}
                    for r in _parse_jsonl(self.journal.read_text())]
            with atomic_writer(self.path, "wb") as fh:
                pq.write_table(rows_to_table(rows), fh)
            self.journal.unlink()


def read_rows(path: str | Path, fmt: str | None = None) -> list[dict]:
    """Rows of a results file written with ``--format`` (nested values decoded)."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "jsonl":
        return [{k: v for k, v in r.items() if k != "_line"} for r in _parse_jsonl(path.read_text())]
    if fmt == "csv":
        out = []
        for values in list(csv.reader(io.StringIO(path.read_text())))[1:]:
            row = {}
            for column, cell in zip(COLUMNS, values):
                if cell == "":
                    row[column] = [] if column == "warnings" else None
                elif column in _LIST_COLUMNS or column == "model_sha256":
                    row[column] = json.loads(cell)
                elif column in ("size", "fps"):
                    row[column] = int(cell)
                elif column in ("score", "score_min", "score_harmonic_mean", "score_p05",
                                "seconds"):
                    row[column] = float(cell)
                elif column == "transpose":
                    row[column] = cell == "True"
                else:
                    row[column] = cell
            out.append(row)
        return out
    raise BatchError(f"{path}: unknown results format {fmt!r}")


class LegacyWriter:
    """Upstream's headerless ``basename,score`` lines; failures are reported on stderr."""

    def __init__(self, path: str | Path, paths: list[str], resume: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        names: set[str] = set()
        if resume and self.path.is_file():
            for line in self.path.read_text().splitlines():
                name, sep, _ = line.rpartition(",")
                if sep and name:
                    names.add(name)
        self.done = {p for p in paths if os.path.basename(p) in names}
        self.rows_written = 0
        self._fh = open(self.path, "a" if resume else "w", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        if row.get("error") is None:
            self._fh.write(f"{os.path.basename(row['path'])},{row['score']}\n")
            self._fh.flush()
            self.rows_written += 1

    def close(self) -> None:
        self._fh.close()
