"""The one backend table, setup.cfg's entry points, and the one backend-spec parser.

The patched upstream host keeps its own standard-library parser (it cannot import
uvq_int8); both are checked here against one table of cases.
"""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest

from uvq_int8 import backends as B

ROOT = Path(__file__).resolve().parents[1]

MIX = {"content": "fp16", "distortion": "int8-static", "aggregation": "float32"}
# spec -> per-net backend names, or the text the package's error must contain.
SPEC_CASES = [
    ("int8", dict.fromkeys(B.NETS, "int8")),
    ("int8-static", dict.fromkeys(B.NETS, "int8-static")),
    ("content=fp16,distortion=int8-static,aggregation=float32", MIX),
    (" content = fp16 , distortion=int8-static, aggregation=float32 ", MIX),
    ("aggregation=float32,distortion=int8-static,content=fp16", MIX),
    ("content=fp16,distortion=int8-static", "does not say which backend to use for aggregation"),
    ("video=int8,content=fp16,distortion=int8,aggregation=float32", "unknown net 'video'"),
    ("int8,content=fp16,distortion=int8,aggregation=float32", "mixes a list of backends"),
    ("content=fp16,distortion=int8,aggregation=float32,int8", "mixes a list of backends"),
    ("int9", "unknown backend 'int9'"),
    ("content=fp16,distortion=int9,aggregation=float32", "unknown backend 'int9'"),
]


def _expected_paths(names: dict[str, str], model_dir: str) -> dict[str, str]:
    return {net: str(B.builtin(names[net]).model_paths(model_dir)[net]) for net in B.NETS}


def test_setup_cfg_registers_exactly_the_table_in_its_order():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in cfg["options.entry_points"]["uvq.backends"].splitlines()
             if line.strip()]
    registered = dict(line.split(" = ", 1) for line in lines)
    assert list(registered) == list(B.BUILTIN_BACKENDS)
    for name, target in registered.items():
        module, _, attr = target.partition(":")
        assert getattr(importlib.import_module(module), attr) == B.builtin(name), name


def test_every_row_names_known_recipes_and_unique_suffixes():
    suffixes = [row["suffix"] for row in B.BUILTIN_BACKENDS.values()]
    assert len(set(suffixes)) == len(suffixes)
    for name, row in B.BUILTIN_BACKENDS.items():
        backend = B.builtin(name)
        assert set(backend.recipes.values()) <= set(B.RECIPES), name
        assert row["in_all"] in (B.IN_ALL_ALWAYS, B.IN_ALL_WITH_BUDGET), name
        assert (row["verify"] is None) == (name == "auto"), name


def test_calibration_follows_the_recipes():
    calibrated = {name for name in B.BUILTIN_BACKENDS if B.builtin(name).calibrated}
    assert calibrated == {"int8-static", "auto"}


def test_buildable_backends_written_out():
    names = [b.name for b in B.buildable_backends(include_auto=False)]
    assert names == ["float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static"]
    assert [b.name for b in B.buildable_backends(include_auto=True)] == names + ["auto"]


def test_backends_with_files_lists_backends_with_any_file(tmp_path):
    assert B.backends_with_files(tmp_path) == []
    (tmp_path / "content_net_int4.tflite").write_bytes(b"x")
    (tmp_path / "aggregation_net.tflite").write_bytes(b"x")
    assert [b.name for b in B.backends_with_files(tmp_path)] == ["float32", "int4"]


def test_spec_lists_and_all():
    assert B.parse_spec("fp16, int8,fp16").names == ("fp16", "int8")
    assert B.parse_spec(["all", "int8"]).names == ("all", "int8")
    with pytest.raises(B.UnknownBackendError, match="no backend given"):
        B.parse_spec(" , ")
    with pytest.raises(B.UnknownBackendError, match="one is needed"):
        B.get_backend("int8,fp16")


@pytest.mark.parametrize("spec,expected", SPEC_CASES)
def test_package_parser(spec, expected):
    if isinstance(expected, str):
        with pytest.raises(B.UnknownBackendError, match=expected):
            B.get_backend(spec).model_paths("/m")
        return
    got = {net: str(p) for net, p in B.get_backend(spec).model_paths("/m").items()}
    assert got == _expected_paths(expected, "/m")


@pytest.mark.parametrize("spec,expected", SPEC_CASES)
def test_patched_host_parser_agrees(host, clean_env, spec, expected):
    env = {"XDG_CONFIG_HOME": str(clean_env / "xdg-config"),
           "XDG_DATA_HOME": str(clean_env / "xdg-data"), "UVQ_MODEL_DIR": "/m"}
    if isinstance(expected, str):
        with pytest.raises(host.BackendError):
            host.select(spec, environ=env)
        return
    assert host.select(spec, environ=env).paths == _expected_paths(expected, "/m")
