"""The registry: entry points, per-net mixes, broken plugins, unknown names."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from uvq_int8 import backends as B
from uvq_int8.errors import UserError

BUILTINS = ["float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static", "auto"]


def test_builtins_come_from_entry_points_in_order():
    found = B.discover()
    assert list(found)[:len(BUILTINS)] == BUILTINS
    assert found["int8"] is B.INT8


def test_fork_compatible_file_names():
    assert B.FLOAT32.filenames() == {"content": "content_net.tflite",
                                     "distortion": "distortion_net.tflite",
                                     "aggregation": "aggregation_net.tflite"}
    assert B.INT8.model_paths("/m")["distortion"] == Path("/m/distortion_net_int8.tflite")


def test_every_builtin_has_a_distinct_suffix_and_known_recipes():
    suffixes = [B.discover()[n].suffix for n in BUILTINS]
    assert len(set(suffixes)) == len(suffixes)
    for name in BUILTINS:
        assert set(B.discover()[name].recipes.values()) <= set(B.RECIPES)


def test_int8_static_keeps_the_aggregation_head_float():
    assert B.INT8_STATIC.recipes["aggregation"] == "float32"
    assert B.INT8_STATIC.recipes["distortion"] == "static_wi8_ai8"


def test_backend_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        B.INT8.name = "x"
    with pytest.raises(TypeError):
        B.INT8.recipes["content"] = "float32"


def test_per_net_mix_takes_each_file_from_its_backend():
    mix = B.get_backend("content=fp16, distortion=int8-static, aggregation=float32")
    paths = mix.model_paths("/m")
    assert paths == {"content": Path("/m/content_net_fp16.tflite"),
                     "distortion": Path("/m/distortion_net_int8_static.tflite"),
                     "aggregation": Path("/m/aggregation_net.tflite")}
    assert mix.name == "content=fp16,distortion=int8-static,aggregation=float32"


@pytest.mark.parametrize("spec,needle", [
    ("int9", "did you mean 'int8'"),
    ("content=fp16,distortion=int8", "aggregation"),
    ("colour=fp16,distortion=int8,aggregation=float32", "unknown net 'colour'"),
    ("content=fp17,distortion=int8,aggregation=float32", "unknown backend 'fp17'"),
])
def test_bad_backend_specs_say_what_is_wrong(spec, needle):
    with pytest.raises(UserError, match=needle) as err:
        B.get_backend(spec)
    if "unknown backend" in str(err.value):
        assert "float32, fp16, int8" in str(err.value)


def _cli(args, env_path: Path, **kw):
    import os

    env = dict(os.environ, PYTHONPATH=str(env_path))
    return subprocess.run([sys.executable, "-m", "uvq_int8", *args],
                          capture_output=True, text=True, env=env, **kw)


def test_third_party_backend_is_listed_and_a_broken_one_only_warns(tmp_path, make_plugin):
    plugin = make_plugin(tmp_path / "site")
    result = _cli(["backends", "--json", "--model-dir", str(tmp_path)], plugin)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    names = [b["name"] for b in data["backends"]]
    assert names[:len(BUILTINS)] == BUILTINS and "extra" in names and "broken" not in names
    assert any("broken" in w and "skipped" in w for w in data["warnings"])
    extra = next(b for b in data["backends"] if b["name"] == "extra")
    assert extra["files"]["content"].endswith("content_net_extra.tflite")


def test_broken_plugin_warning_in_table_mode(tmp_path, make_plugin):
    plugin = make_plugin(tmp_path / "site", good=False)
    result = _cli(["backends", "--model-dir", str(tmp_path)], plugin)
    assert result.returncode == 0
    assert "broken" in result.stderr and "float32" in result.stdout
