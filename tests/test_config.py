"""One precedence chain: flag > environment > config file > default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from uvq_int8 import config as C
from uvq_int8.errors import UserError


def write_cfg(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(clean_env):
    cfg = C.resolve()
    assert (cfg.backend.value, cfg.backend.source) == ("float32", "default")
    assert cfg.model_dir.value == clean_env / "xdg-data" / "uvq" / "models"
    assert cfg.threads.source == "default" and cfg.threads.value >= 1


def test_user_config_file_is_read(clean_env):
    path = write_cfg(clean_env / "xdg-config" / "uvq" / "config.toml",
                     'backend = "int4"\nthreads = 3\nmodel_dir = "models"\n')
    cfg = C.resolve()
    assert cfg.backend.value == "int4" and cfg.backend.source == f"config {path}"
    assert cfg.threads.value == 3
    assert cfg.model_dir.value == path.parent / "models"  # relative to the file


def test_env_beats_file_and_flag_beats_env(clean_env, monkeypatch):
    path = write_cfg(clean_env / "c.toml", '[uvq]\nbackend = "fp16"\n')
    monkeypatch.setenv("UVQ_CONFIG", str(path))
    assert C.resolve().backend.value == "fp16"
    monkeypatch.setenv("UVQ_BACKEND", "int8")
    assert (C.resolve().backend.value, C.resolve().backend.source) == ("int8", "env UVQ_BACKEND")
    flagged = C.resolve(backend="int8-static")
    assert (flagged.backend.value, flagged.backend.source) == ("int8-static", "flag")


def test_env_sets_model_dir_and_threads(clean_env, monkeypatch):
    monkeypatch.setenv("UVQ_MODEL_DIR", str(clean_env / "m"))
    monkeypatch.setenv("UVQ_THREADS", "1")
    cfg = C.resolve()
    assert cfg.model_dir.value == clean_env / "m" and cfg.threads.value == 1


@pytest.mark.parametrize("text,needle", [
    ('backend = "int8"\ncolour = 1\n', "unknown key(s) colour"),
    ("backend = \n", "not valid TOML"),
    ("threads = 0\n", "at least 1"),
    ('threads = "many"\n', "whole number"),
])
def test_bad_config_files_are_clear_errors(clean_env, monkeypatch, text, needle):
    monkeypatch.setenv("UVQ_CONFIG", str(write_cfg(clean_env / "bad.toml", text)))
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        C.resolve()


def test_missing_explicit_config_file_is_an_error(clean_env, monkeypatch):
    monkeypatch.setenv("UVQ_CONFIG", str(clean_env / "absent.toml"))
    with pytest.raises(UserError, match="absent.toml"):
        C.resolve()


def test_config_command_reports_sources_as_json(clean_env, monkeypatch):
    path = write_cfg(clean_env / "c.toml", 'backend = "fp16"\nthreads = 2\n')
    env = {k: v for k, v in __import__("os").environ.items()}
    env.update(UVQ_CONFIG=str(path), UVQ_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "uvq_int8", "config", "--json",
                          "--model-dir", "/srv/m"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["backend"] == {"value": "fp16", "source": f"config {path}"}
    assert data["threads"] == {"value": 1, "source": "env UVQ_THREADS"}
    assert data["model_dir"] == {"value": "/srv/m", "source": "flag"}
    assert data["config_file"] == {"path": str(path), "exists": True}


def test_config_command_bad_file_exits_nonzero_with_one_line(clean_env):
    path = write_cfg(clean_env / "c.toml", "nonsense = 1\n")
    env = dict(__import__("os").environ, UVQ_CONFIG=str(path))
    out = subprocess.run([sys.executable, "-m", "uvq_int8", "config"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 1
    assert out.stderr.startswith("uvq-int8: error:") and "Traceback" not in out.stderr


def test_decoder_follows_the_chain(clean_env, monkeypatch):
    assert (C.resolve().decoder.value, C.resolve().decoder.source) == ("pyav", "default")
    path = write_cfg(clean_env / "c.toml", 'decoder = "ffmpeg"\n')
    monkeypatch.setenv("UVQ_CONFIG", str(path))
    assert C.resolve().decoder == C.Setting("ffmpeg", f"config {path}")
    monkeypatch.setenv("UVQ_DECODER", "pyav")
    assert C.resolve().decoder == C.Setting("pyav", "env UVQ_DECODER")
    assert C.resolve(decoder="ffmpeg").decoder == C.Setting("ffmpeg", "flag")
    assert ("decoder", "pyav", "env UVQ_DECODER") in C.resolve().as_rows()


def test_unknown_decoder_is_a_clear_error(clean_env, monkeypatch):
    monkeypatch.setenv("UVQ_DECODER", "gstreamer")
    with pytest.raises(UserError, match="decoder from env UVQ_DECODER must be one of pyav, ffmpeg"):
        C.resolve()
