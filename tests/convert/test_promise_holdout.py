"""The auto promise on content no build split saw (slow: one auto build per budget).

Default validation (natural search and confirmation clips), the reference checkpoints; the
check is on natural clips made from the ``holdout`` photographs, which are in no split.
benchmarks/promise_holdout.py runs the same builds and also times each choice.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.backends import NETS
from uvq_int8 import convert, runtime
from uvq_int8.convert import natural
from uvq_int8.runtime import manifest as mf

HOLDOUT_FRAMES = 24
CHECKPOINTS = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
               "aggregation": "aggregation_net.pth"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def holdout():
    made = natural.make_set("holdout", HOLDOUT_FRAMES)
    assert not set(made.images) & {n for s in ("calibration", "search", "confirmation")
                                   for n in natural.SPLIT_IMAGES[s]}
    return made


def _auto(build_all, reference_dir, tmp_path, budget: float) -> Path:
    out = tmp_path / f"auto-{budget:g}"
    out.mkdir()
    manifest = mf.load(build_all.path)
    for net in NETS:  # the float32 files only: nothing is converted again
        name = f"{net}_net.tflite"
        shutil.copy(build_all.path / name, out / name)
        mf.update(out, {name: manifest.files[name]})
    checkpoints = {net: reference_dir / name for net, name in CHECKPOINTS.items()}
    convert.build(convert.BuildOptions(checkpoints=checkpoints,
                                   out_dir=out, backends="auto", max_logit_delta=budget,
                                   sensitivity=False))
    return out


def _holdout_deltas(out: Path, frames) -> np.ndarray:
    auto = runtime.load_models("auto", out, 2)
    f32 = runtime.load_models("float32", out, 2)
    return np.array([abs(auto.aggregate(*auto.features(f))[0]
                         - f32.aggregate(*f32.features(f))[0]) for f in frames])


@pytest.mark.parametrize("budget", [0.1, 0.3, 1.0])
def test_the_stated_fraction_holds_on_images_in_no_split(build_all, reference_dir, tmp_path,
                                                         holdout, budget):
    out = _auto(build_all, reference_dir, tmp_path, budget)
    record = mf.auto_record(mf.load(out), "content_net_auto.tflite")
    promise = record["promise"]
    assert promise["holds"] and promise["images"] == 5 and promise["frames"] == 40
    deltas = _holdout_deltas(out, holdout.frames)
    assert (deltas <= budget).mean() >= promise["fraction"], (record["labels"], deltas)
    if budget >= 1.0:  # a loose budget must buy int8 somewhere
        recipes = {c["recipe"] for c in record["choices"].values()}
        assert "static_wi8_ai8" in recipes, record["labels"]
