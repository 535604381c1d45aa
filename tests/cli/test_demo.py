"""`uvq-int8 demo`: the newcomer's first run, on seeded proxy weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")


def test_demo_builds_scores_and_labels_proxy_weights(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), UVQ_BACKEND="", UVQ_CONFIG="")
    result = subprocess.run(
        [sys.executable, "-m", "uvq_int8", "demo", "--workdir", str(tmp_path / "demo"),
         "--backend", "float32,fp16", "--seconds", "1", "--json", "--quiet"],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "NOT the official" in result.stderr
    data = json.loads(result.stdout)
    assert data["proxy_weights"] is True
    rows = {r["backend"]: r for r in data["results"]}
    assert list(rows) == ["float32", "fp16"]
    assert rows["float32"]["logit_delta_max"] == 0.0
    assert rows["fp16"]["logit_delta_max"] < 0.02
    assert rows["fp16"]["model_bytes"] < 0.55 * rows["float32"]["model_bytes"]
    for row in rows.values():
        assert 1.0 <= row["score"] <= 5.0 and row["frames"] == 1
    # everything it made stays in the work directory
    assert (tmp_path / "demo" / "models" / "manifest.json").is_file()


def test_demo_rejects_unknown_backend_before_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "uvq_int8", "demo", "--workdir",
                             str(tmp_path / "d"), "--backend", "int9"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "int9" in result.stderr
    assert not (tmp_path / "d" / "proxy_checkpoints").exists()
