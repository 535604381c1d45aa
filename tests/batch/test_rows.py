"""Batch rows and row files: pooled statistics, resume, the Parquet journal (``uvq_int8.batch.rows``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uvq_int8 import batch
from uvq_int8.batch import rows as R


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pooled_statistics():
    stats = R.pooled([1.0, 2.0, 4.0])
    assert stats["score_min"] == 1.0
    assert stats["score_harmonic_mean"] == pytest.approx(3 / (1 + 0.5 + 0.25))
    assert stats["score_p05"] == pytest.approx(float(np.percentile([1, 2, 4], 5)))
    assert R.pooled([])["score_min"] is None


def _fake_row(path: Path, score: float | None, error: str | None = None) -> dict:
    ident = R.file_identity(path)
    if error:
        return R.error_row(str(path), error, ident)
    row = R.empty_row(str(path), ident)
    row.update(score=score, per_frame_scores=[score], per_frame_logits=[0.5],
               frame_indices=[0], frame_times=[0.0], backend="float32",
               model_sha256={"content": "a", "distortion": "b", "aggregation": "c"},
               fps=1, transpose=False, seconds=0.1, **R.pooled([score]))
    return row


@pytest.mark.parametrize("fmt", batch.FORMATS)
def test_resume_keeps_good_rows_of_unchanged_files_and_retries_the_rest(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    files = {name: tmp_path / f"{name}.mp4" for name in ("good", "failed", "changed", "cut")}
    for name, path in files.items():
        path.write_bytes(name.encode() * 100)
    out = tmp_path / f"rows.{fmt}"
    paths = [str(p) for p in files.values()]
    writer = R.RowWriter(out, fmt, paths)
    assert writer.done == set()
    writer.write(_fake_row(files["good"], 3.5))
    writer.write(_fake_row(files["failed"], None, "not a readable video"))
    writer.write(_fake_row(files["changed"], 2.0))
    writer.close()
    rows = batch.read_rows(out, fmt)
    assert [r["path"] for r in rows] == paths[:3]
    assert rows[0]["per_frame_scores"] == [3.5] and rows[1]["error"] == "not a readable video"
    assert rows[0]["model_sha256"]["distortion"] == "b"
    if fmt != "parquet":  # a kill mid-write leaves half a line: resume must cope
        with open(out, "a") as fh:
            fh.write('{"path": "' if fmt == "jsonl" else '"cut')
    files["changed"].write_bytes(b"new content")
    writer = R.RowWriter(out, fmt, paths, resume=True)
    assert writer.done == {str(files["good"])}
    writer.write(_fake_row(files["failed"], 4.0))
    writer.close()
    rows = batch.read_rows(out, fmt)
    assert [(r["path"], r["score"]) for r in rows] == [(paths[0], 3.5), (paths[1], 4.0)]


def test_parquet_journal_keeps_rows_of_a_killed_run(tmp_path):
    pytest.importorskip("pyarrow")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"v" * 10)
    out = tmp_path / "rows.parquet"
    writer = R.RowWriter(out, "parquet", [str(video)])
    writer.write(_fake_row(video, 3.0))
    # no close(): the process was killed; the journal is readable JSONL
    journal = out.with_name("rows.parquet.journal.jsonl")
    assert jsonl(journal)[0]["score"] == 3.0 and not out.exists()
    writer = R.RowWriter(out, "parquet", [str(video)], resume=True)
    assert writer.done == {str(video)}
    writer.close()
    assert [r["score"] for r in batch.read_rows(out)] == [3.0] and not journal.exists()


