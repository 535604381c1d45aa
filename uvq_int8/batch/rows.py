"""Batch result rows: one per video (``COLUMNS``), how they are built from a score, and
the row files: JSON lines, CSV or Parquet (``RowWriter``, with ``--resume``), and upstream's
``basename,score`` lines (``LegacyWriter``). ``batch.workers`` scores the videos.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from uvq_int8.batch import FORMATS
from uvq_int8.errors import UserError
from uvq_int8.util import atomic_writer, sha256_bytes

HEAD_BYTES = 1 << 20  # the file identity hashes this much of the start of the file

# One row per video, in this order (also the column order of CSV and Parquet).
COLUMNS = ("path", "size", "head_sha256", "score", "score_min", "score_harmonic_mean",
           "score_p05", "per_frame_scores", "per_frame_logits", "frame_indices",
           "frame_times", "backend", "model_sha256", "fps", "transpose", "seconds",
           "warnings", "error", "audit", "segments")
# JSON text in CSV cells (lists, and segments: a list of objects).
_LIST_COLUMNS = ("per_frame_scores", "per_frame_logits", "frame_indices", "frame_times",
                 "warnings", "segments")
# A segment's fields (``scoring.segments``), in this order in Parquet's struct.
SEGMENT_FIELDS = ("start", "end", "frames", "mean", "min", "padded")


class BatchError(UserError):
    """A batch that cannot start (bad input list, output, or options)."""


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
        # With --segment-seconds: per-segment pooled scores; null without it.
        "segments": ([dict(s) for s in results["segments"]]
                     if results.get("segments") is not None else None),
    })
    return row


def failure_message(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


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
        # The sampling rate: 1, 0.5, 0.25 (a float since rates need not be whole).
        ("fps", pa.float64()), ("transpose", pa.bool_()), ("seconds", pa.float64()),
        ("warnings", pa.list_(pa.string())), ("error", pa.string()), ("audit", pa.string()),
        ("segments", pa.list_(pa.struct([
            ("start", pa.float64()), ("end", pa.float64()), ("frames", pa.int64()),
            ("mean", pa.float64()), ("min", pa.float64()), ("padded", pa.bool_())]))),
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
    # A file written before columns were added at the end (segments) is resumed too: its
    # rows get empty cells for them.
    if not header or header != list(COLUMNS[:len(header)]):
        return rows
    for values in reader:
        if len(values) != len(header):
            continue  # a line cut off by a kill
        values = values + [""] * (len(COLUMNS) - len(values))
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
                elif column == "size":
                    row[column] = int(cell)
                elif column == "fps":  # "1" or "0.5", as the rate was written
                    row[column] = int(cell) if cell.lstrip("-").isdigit() else float(cell)
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
