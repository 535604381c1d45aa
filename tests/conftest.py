"""Shared fixtures. Golden data is used in place from ../shared/uvq_reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    env = os.environ.get("UVQ_REFERENCE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "uvq_reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if not (path / "golden_frames.npz").is_file():
        pytest.skip(f"reference data not found at {path} (set UVQ_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def golden_frames(reference_dir):
    import numpy as np

    return dict(np.load(reference_dir / "golden_frames.npz"))


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    """No UVQ_* variables and an empty per-user config/data home."""
    for key in list(os.environ):
        if key.startswith("UVQ_") and key != "UVQ_REFERENCE_DIR":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path
