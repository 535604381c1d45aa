"""verify's two verdicts on hand-made reports (no models): accuracy against a score target or
an auto build's promise, regression against the recorded limits; old auto records labelled."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from uvq_int8.convert import auto
from uvq_int8.verify import report
from uvq_int8.verify import verdicts as VD
from uvq_int8.verify import Check


def _e2e(deltas, score_max):
    return SimpleNamespace(per_frame_logit_delta={"clip": list(deltas)}, frames=len(deltas),
                           score_delta_max=score_max, logit_delta_max=max(map(abs, deltas)))


def _backend(deltas, score_max, checks=(), auto_record=None):
    return SimpleNamespace(end_to_end={"vs_float32": _e2e(deltas, score_max)},
                           checks=list(checks), auto=auto_record, verdicts={})


def _check(passed, value=1.0, limit=2.0):
    return Check("b", "aggregation", "logit_delta_max", "float32", limit, "max", value, passed,
                 "basis")


V2 = {"auto_version": 2, "max_logit_delta": 0.1, "validation_frames": 12,
      "measured": {"logit_delta_max": 0.05, "logit_delta_mean": 0.02},
      "labels": {"content": "int8(mean)", "distortion": "float32"}, "modelled_speedup": 1.2,
      "seconds": 10, "promise": {"budget": 0.1, "fraction": 0.95, "frames": 40, "images": 5,
                                 "rank": 2, "bound": 0.08, "max_logit_delta": 0.12,
                                 "mean_logit_delta": 0.03, "holds": True,
                                 "content": "natural clips"},
      "content_basis": {"search": {"source": "natural", "frames": 12,
                                   "images": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
                        "confirmation": {"source": "natural", "frames": 40,
                                         "images": [{"name": n} for n in "defgh"]}}}
V1 = {k: v for k, v in V2.items() if k not in ("promise", "content_basis")} | {
    "auto_version": 1}


def test_accuracy_is_the_score_target_and_regression_the_recorded_limits():
    b = _backend([0.3, -0.2], 0.62, [_check(True)])
    acc, reg = VD.accuracy("int8-static", b), VD.regression("int8-static", b)
    assert acc.passed is False and "score Δ max <= 0.1" in acc.target
    assert reg.passed is True
    assert VD.accuracy("int8-static", b, max_score_delta=1.0).passed is True
    b = _backend([1e-3], 1e-3, [_check(False, 1e-3, 1e-9)])
    assert VD.accuracy("fp16", b).passed is True and VD.regression("fp16", b).passed is False
    assert "1 exceeded" in VD.regression("fp16", b).measured
    judged = VD.judge(SimpleNamespace(backends={"fp16": b}))
    assert b.verdicts["accuracy"]["passed"] is True
    assert VD.failed(judged, "regression")[0].backend == "fp16"
    assert VD.failed(judged, "accuracy") == []


def test_an_auto_build_is_held_to_its_promise_not_to_every_frame():
    ok = _backend([0.05] * 19 + [0.3], 0.5, auto_record=V2)   # 1 of 20 over: p = 0.64
    verdict = VD.accuracy("auto", ok)
    assert verdict.passed is True and "at least 95% of frames within logit Δ 0.1" in verdict.target
    assert "40 frames from 5 images" in verdict.basis
    bad = _backend([0.05] * 15 + [0.3] * 5, 0.5, auto_record=V2)  # 5 of 20: p = 0.003
    assert VD.accuracy("auto", bad).passed is False


def test_an_old_auto_build_is_read_with_its_old_meaning_labelled():
    old = _backend([0.05], 0.01, auto_record=V1)
    verdict = VD.accuracy("auto", old)
    assert verdict.passed is True and "auto version 1" in verdict.basis
    assert "no promise" in auto.describe(V1) and "rebuild" in auto.describe(V1)
    assert report.promise_paragraph(V1).startswith("**No promise**")


def test_the_promise_paragraph_says_what_it_rests_on():
    text = report.promise_paragraph(V2)
    assert "at least 95% of frames within logit Δ 0.1: holds" in text
    assert "search: 12 frames from 3 independent images" in text
    assert "confirmation: 40 frames from 5 independent images" in text
    assert "promise: at least 95%" in auto.describe(V2)


@pytest.mark.parametrize("name", ["float32"])
def test_float32_without_pytorch_is_the_reference(name):
    b = SimpleNamespace(end_to_end={}, checks=[], auto=None)
    assert VD.accuracy(name, b).passed is None
