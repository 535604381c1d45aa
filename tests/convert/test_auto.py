"""The auto backend's search and the per-op-group sensitivity analysis.

Fast tests check the pieces on hand-made inputs (no models); the slow ones run the search
on the shared build from the reference checkpoints with a few frames.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from uvq_int8.convert import auto
from uvq_int8.convert import sensitivity as S

# Tensor names as litert-torch writes them (DistortionNet, current and earlier convert.py).
STEM = ("uvq_int8.convert.nets.DistortionNetExport/uvq_int8.convert.nets.DistortionNetCore_core/"
        "torch.nn.modules.container.Sequential_features/uvq_int8.convert.nets.ConvBNAct_0/"
        "torch.nn.modules.activation.SiLU_2;1")
BLOCK12_SE = ("uvq_int8.convert.nets.DistortionNetExport/uvq_int8.convert.nets.DistortionNetCore_core/"
              "torch.nn.modules.container.Sequential_features/uvq_int8.convert.nets.MBConv_12/"
              "torch.nn.modules.container.Sequential_block/"
              "__main__._two_step_mean_se.<locals>.TwoStepMeanSqueezeExcite_2;")
BLOCK3_ADD = ("uvq_int8.convert.nets.ContentNetExport/torch.nn.modules.container.Sequential_features/"
              "uvq_int8.convert.nets.MBConv_3;")
HEAD = ("uvq_int8.convert.nets.DistortionNetExport/uvq_int8.convert.nets.DistortionNetCore_core/"
        "torch.nn.modules.container.Sequential_features/uvq_int8.convert.nets.SameConv_17/"
        "torch.nn.modules.conv.Conv2d_conv;")
TILE = "uvq_int8.convert.nets.DistortionNetExport;14"


def test_op_groups_come_from_the_module_path():
    assert S.group_of(STEM) == "stem"
    assert S.group_of(BLOCK12_SE) == "block12"
    assert S.group_of(BLOCK3_ADD) == "block3"
    assert S.group_of(HEAD) == "head"
    assert S.group_of(TILE) == "tail"
    assert S.group_of("serving_default_output_0_output") == "tail"


def _ops() -> list[S.OpInfo]:
    return [S.OpInfo(0, "CONV_2D", STEM, "stem", 1_000_000, 1000),
            S.OpInfo(1, "MUL", BLOCK12_SE, "block12", 0, 4000),
            S.OpInfo(2, "ADD", BLOCK3_ADD, "block3", 0, 2000),
            S.OpInfo(3, "SLICE", TILE, "tail", 0, 10)]


def test_group_regex_matches_the_quantizers_scope_of_exactly_those_ops():
    regex = S.group_regex(_ops(), ["block12", "tail"])
    # ai-edge-quantizer's scope: the output names joined by ";" with a trailing ";".
    assert re.search(regex, BLOCK12_SE + ";")
    assert re.search(regex, TILE + ";")
    assert not re.search(regex, STEM + ";")
    assert not re.search(regex, BLOCK3_ADD + ";")
    assert not re.search(regex, "uvq_int8.convert.nets.DistortionNetExport;1;")  # a prefix of TILE
    assert S.group_regex(_ops(), []) is None


def test_group_regex_writes_shared_prefixes_once_and_still_matches_exactly():
    names = ["a/b;1", "a/b;14", "a/c;1", "a/b;2x", "b"]
    ops = [S.OpInfo(i, "ADD", n, "g", 0, 1) for i, n in enumerate(names)]
    regex = S.group_regex(ops, ["g"])
    for scope in names:
        assert re.search(regex, scope + ";"), scope
    for other in ("a/b;", "a/b;14x", "a/b;2", "a/c;14", "a/", "bb", "a/b;1;a/c;1"):
        assert not re.search(regex, other + ";"), other
    # Module paths share most of their length: the pattern holds it once.
    long = [f"{'m/' * 100}{k}" for k in range(50)]
    regex = S.group_regex([S.OpInfo(i, "ADD", n, "g", 0, 1) for i, n in enumerate(long)], ["g"])
    assert len(regex) < 2 * len(long[0])
    assert re.search(regex, long[7] + ";") and not re.search(regex, long[7] + "0;")


def test_cost_model_scales_int8_groups_and_keeps_the_order_of_groups():
    costs = S.cost_model(_ops())
    assert list(costs.float_ms) == ["stem", "block12", "block3", "tail"]
    full = costs.ms(["stem", "block12", "block3", "tail"])
    assert full == pytest.approx(S.INT8_TIME_RATIO * costs.float32_ms)
    assert costs.ms([]) == pytest.approx(costs.float32_ms)
    assert costs.ms(["stem"]) < costs.ms([]) and costs.ms(["stem", "block12"]) < costs.ms(["stem"])
    assert sum(costs.share(g) for g in costs.float_ms) == pytest.approx(1.0)


def test_range_merges_are_what_their_names_say():
    ranges = auto.FrameRanges(("a", "b"), np.array([[-1.0, 0.0], [-3.0, 0.5], [-2.0, 1.0]]),
                              np.array([[1.0, 2.0], [5.0, 4.0], [3.0, 9.0]]))
    assert ranges.frames == 3
    mean = ranges.merged("mean")
    assert mean["a"]["min"][0] == pytest.approx(-2.0) and mean["a"]["max"][0] == pytest.approx(3.0)
    union = ranges.merged("union")
    assert union["b"]["min"][0] == 0.0 and union["b"]["max"][0] == 9.0
    median = ranges.merged("median")
    assert median["a"]["min"][0] == -2.0 and median["b"]["max"][0] == 4.0
    assert union["a"]["min"].dtype == np.float32
    with pytest.raises(ValueError, match="unknown range merge 'max'"):
        ranges.merged("max")


def test_net_choice_labels_and_round_trip():
    choice = auto.NetChoice("static_wi8_ai8", "union", ("stem", "block1"))
    assert choice.label == "int8(union; float: stem,block1)"
    assert auto.NetChoice.from_dict(json.loads(json.dumps(choice.as_dict()))) == choice
    assert auto.NetChoice("fp16_weights").label == "fp16"
    with pytest.raises(ValueError):
        auto.NetChoice("static_wi8_ai8")  # int8 needs a range merge
    with pytest.raises(ValueError):
        auto.NetChoice("float32", "mean")
    with pytest.raises(ValueError):
        auto.NetChoice("dynamic_wi8_afp32")


class FakeHeldOut:
    """Joint logit changes from a table keyed by the candidates' feature markers."""

    def __init__(self, joint: dict[tuple[str, str], float]) -> None:
        self.joint = joint
        self.reference = {"content": np.array(["content:float32"]),
                          "distortion": np.array(["distortion:float32"])}
        self.frames = [None, None]

    def measure_features(self, content, distortion) -> S.Measurement:
        c, d = str(content[0]).split(":")[1], str(distortion[0]).split(":")[1]
        delta = self.joint.get((c, d), 0.0 if (c, d) == ("float32", "float32") else 99.0)
        return S.Measurement(delta, delta / 2, {"content": 0.0, "distortion": 0.0})


def _cand(net: str, choice: auto.NetChoice, ms: float, delta: float) -> auto.Candidate:
    feats = None if choice.recipe == "float32" else np.array([f"{net}:{choice.label}"])
    return auto.Candidate(net, choice, ms, S.Measurement(delta, delta / 2, {net: 0.0}), feats)


F32, FP16 = auto.NetChoice("float32"), auto.NetChoice("fp16_weights")
INT8 = auto.NetChoice("static_wi8_ai8", "mean")
INT8_U = auto.NetChoice("static_wi8_ai8", "union")


def _candidates(content_int8=0.5, distortion_int8=0.9):
    return [_cand("content", F32, 30, 0.0), _cand("content", FP16, 30, 0.004),
            _cand("content", INT8, 9, content_int8),
            _cand("distortion", F32, 950, 0.0), _cand("distortion", FP16, 950, 0.002),
            _cand("distortion", INT8, 286, distortion_int8),
            _cand("distortion", INT8_U, 286, distortion_int8 + 0.1)]


def test_choose_takes_the_fastest_joint_configuration_within_the_budget():
    held = FakeHeldOut({("int8(mean)", "int8(mean)"): 1.2, ("float32", "int8(mean)"): 0.95,
                        ("int8(mean)", "float32"): 0.5})
    (c, d), m, trials = auto.choose(_candidates(), held, 3.0)
    assert (c.choice, d.choice) == (INT8, INT8) and m.logit_delta_max == 1.2
    (c, d), m, trials = auto.choose(_candidates(), held, 1.0)
    # int8/int8 measured 1.2 > 1.0: the next cheapest, content float32 + distortion int8.
    assert [t.within_budget for t in trials] == [False, False, True]
    assert (c.choice, d.choice) == (F32, INT8) and m.logit_delta_max == 0.95


def test_choose_falls_back_to_float32_and_prefers_it_to_fp16_at_equal_time():
    held = FakeHeldOut({})
    (c, d), m, trials = auto.choose(_candidates(), held, 0.02)
    assert (c.choice, d.choice) == (F32, F32) and m.logit_delta_max == 0.0
    assert len(trials) == 1  # int8 candidates over budget on their own are not tried jointly


def test_choose_is_deterministic_whatever_the_candidate_order():
    held = FakeHeldOut({("int8(mean)", "int8(mean)"): 0.7, ("int8(mean)", "int8(union)"): 0.6})
    first = auto.choose(_candidates(), held, 3.0)[0]
    second = auto.choose(list(reversed(_candidates())), held, 3.0)[0]
    assert [x.choice for x in first] == [x.choice for x in second]
    # Equal modelled time: the int8 merge that measured lower on its own goes first.
    assert first[1].choice == INT8


def test_result_record_is_plain_json_and_says_how_to_make_each_file():
    table = S.SensitivityTable("distortion", 2,
                               [S.GroupSensitivity("stem", 3, 0.05, 0.6, 0.2, 0.1)],
                               S.GroupSensitivity("all groups", 250, 1.0, 0.9, 0.3, 0.4))
    result = auto.AutoResult(3.0, 2, INT8, INT8_U, S.Measurement(0.7, 0.3, {"content": 0.8,
                                                                          "distortion": 0.3}),
                             {"chosen": 505.0, "float32": 1194.0}, _candidates(), [],
                             {"distortion": table}, 12.0)
    record = json.loads(json.dumps(result.as_dict()))
    assert record["choices"]["distortion"] == {"recipe": "static_wi8_ai8", "range_merge": "union",
                                               "float_groups": []}
    assert record["modelled_speedup"] == pytest.approx(1194 / 505, abs=1e-3)
    assert result.recipe_options("content")["range_merge"] == "mean"
    again = S.SensitivityTable.from_dict(record["sensitivity"]["distortion"])
    assert again == table
    text = again.to_markdown()
    assert "| stem | 3 | 5.0% | 0.6000 |" in text and "| all groups |" in text
    assert "content int8(mean), distortion int8(union)" in result.summary()


def test_auto_backend_keeps_the_aggregation_head_float32():
    assert auto.AUTO_BACKEND.recipes["aggregation"] == "float32"
    assert auto.AUTO_BACKEND.filenames()["distortion"] == "distortion_net_auto.tflite"


# --------------------------------------------------------------------------- on real models


@pytest.fixture(scope="module")
def search_inputs(built_models):
    pytest.importorskip("ai_edge_quantizer")
    from uvq_int8.runtime import frames as F
    from uvq_int8 import synthetic

    paths = {net: built_models / f"{net}_net.tflite" for net in ("content", "distortion",
                                                                  "aggregation")}
    models = {net: paths[net].read_bytes() for net in S.BACKBONES}
    calib = synthetic.calibration_frames(4)
    ranges = {net: auto.calibrate_per_frame(
        models[net], ({"args_0": F.net_inputs(f)[0 if net == "content" else 1]} for f in calib))
        for net in S.BACKBONES}
    held = S.HeldOut(paths, synthetic.validation_frames(2), threads=2)
    return models, ranges, held


@pytest.mark.slow
def test_a_loose_budget_takes_full_integer_int8_on_both_nets(search_inputs):
    models, ranges, held = search_inputs
    result = auto.search(models, ranges, held, 3.0, mixed=False)
    assert result.content.recipe == result.distortion.recipe == "static_wi8_ai8"
    assert not result.content.float_groups and not result.distortion.float_groups
    assert result.measurement.logit_delta_max <= 3.0
    assert result.modelled_speedup > 2.0


@pytest.mark.slow
def test_a_tight_budget_is_met_and_the_same_inputs_give_the_same_choice(search_inputs):
    models, ranges, held = search_inputs
    first = auto.search(models, ranges, held, 0.02, mixed=False)
    second = auto.search(models, ranges, held, 0.02, mixed=False)
    assert first.measurement.logit_delta_max <= 0.02
    assert "static_wi8_ai8" not in (first.content.recipe, first.distortion.recipe)
    assert first.choices == second.choices
    assert first.as_dict()["candidates"] == second.as_dict()["candidates"]


@pytest.mark.slow
def test_made_files_are_reproducible_and_float_groups_stay_float(search_inputs):
    from uvq_int8.runtime.tflite_info import read_model_info

    models, ranges, _ = search_inputs
    choice = auto.NetChoice("static_wi8_ai8", "mean", ("block16", "head", "tail"))
    a = auto.make_model(choice, models["distortion"], ranges["distortion"])
    b = auto.make_model(choice, models["distortion"], ranges["distortion"])
    assert a == b
    full = read_model_info(auto.make_model(auto.NetChoice("static_wi8_ai8", "mean"),
                                           models["distortion"], ranges["distortion"]))
    mixed = read_model_info(a)
    assert mixed.ops_by_name.get("DEQUANTIZE", 0) >= 1  # int8 -> float at block16
    assert mixed.quantized_tensors_by_dtype["int8"] < full.quantized_tensors_by_dtype["int8"]
    assert mixed.outputs[0].dtype == "float32" and full.outputs[0].dtype == "int8"


@pytest.mark.slow
def test_sensitivity_table_rows_and_the_whole_net(search_inputs):
    models, ranges, held = search_inputs
    table = S.sensitivity_table("content", models["content"], ranges["content"].merged("mean"),
                                held, groups=["stem", "block16"])
    assert [r.group for r in table.rows] == ["stem", "block16"]
    assert all(r.logit_delta_max >= r.logit_delta_mean >= 0 for r in table.rows)
    assert all(0 < r.time_share < 0.2 for r in table.rows)
    assert table.all_int8.time_share == pytest.approx(1.0)
    # The whole net in int8 is the full-integer candidate: same file, same measurement.
    whole = held.measure(content=auto.make_model(auto.NetChoice("static_wi8_ai8", "mean"),
                                                 models["content"], ranges["content"]))
    assert table.all_int8.logit_delta_max == pytest.approx(whole.logit_delta_max)


def test_the_int8_time_ratio_comes_from_the_table_or_is_timed_on_this_machine():
    timed = []

    def measure():
        timed.append(1)
        return 0.77

    for isa in ("avx512_vnni", "avx2"):  # measured with benchmarks/breakdown.py
        known = S.cost_constants(isa, measure)
        assert known["int8_time_ratio"] == S.INT8_TIME_RATIOS[isa] and not timed
    assert S.INT8_TIME_RATIOS["avx2"] > 2 * S.INT8_TIME_RATIOS["avx512_vnni"]
    other = S.cost_constants("arm_neon", measure)
    assert other == {"isa": "arm_neon", "int8_time_ratio": 0.77,
                     "source": "timed on the build machine (DistortionNet, float32 vs full int8)"}
    # A slower int8 makes int8 groups cost more in the model, so the ranking can change.
    costs = S.cost_model(_ops(), 0.77)
    groups = S.group_names(_ops())
    assert costs.ms(groups) == pytest.approx(0.77 * costs.float32_ms)


def test_the_isa_tier_follows_the_int8_features():
    from uvq_int8.util import isa_name

    assert isa_name(["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]) == "avx512_vnni"
    assert isa_name(["avx2", "fma"]) == "avx2"
    assert isa_name(["avx2", "avx512f"]) == "avx2"  # no bw/vl: XNNPACK's AVX-512 int8 path is off
    assert isa_name(["asimd", "asimddp"]) == "arm_dotprod"
    assert isa_name([]) == "generic"


def test_each_rejected_look_is_recorded_with_its_own_choice():
    from uvq_int8.runtime import promise as P

    m = S.Measurement(0.05, 0.01, {"content": 0.0, "distortion": 0.1})
    result = auto.AutoResult(0.1, 12, auto.NetChoice("float32"),
                             auto.NetChoice("static_wi8_ai8", "mean"), m,
                             {"chosen": 300.0, "float32": 700.0}, [], [])
    first = P.confirm([0.3] * 60, 0.1, 5, "natural", looks=3, look=1)
    second = P.confirm([0.2] * 60, 0.1, 5, "natural", looks=3, look=2)
    result.reject(first)
    mixed = auto.NetChoice("static_wi8_ai8", "mean", ("block1",))
    result.reject(second, auto.NetChoice("float32"), mixed, m)
    looks = result.as_dict()["rejected_looks"]
    assert [r["labels"]["distortion"] for r in looks] == ["int8(mean)", "int8(mean; float: block1)"]
    assert [r["confirmation"]["look"] for r in looks] == [1, 2]
    assert result.as_dict()["rejected"] == looks[0]
    result.take(auto.NetChoice("fp16_weights"), auto.NetChoice("float32"), m, 650.0)
    assert result.content.recipe == "fp16_weights" and result.modelled_ms["chosen"] == 650.0


@pytest.fixture
def early_error_net(monkeypatch):
    """A hand-made net: each group in int8 adds its own logit error, and the stem and
    block 1 (high resolution) carry most of it. Returns (held-out, ranges)."""
    groups = ["stem", "block1", "block2", "block3", "block4", "head"]
    error = {"stem": 0.06, "block1": 0.05, "block2": 0.012, "block3": 0.012, "block4": 0.012,
             "head": 0.012}
    ops = [S.OpInfo(i, "CONV_2D", g, g, 10_000_000, 1000) for i, g in enumerate(groups)]
    monkeypatch.setattr(S, "graph_ops", lambda model: ops)

    def make_model(choice, float_model, ranges=None, ops=None):
        floats = set(groups) if choice.recipe != "static_wi8_ai8" else set(choice.float_groups)
        return ",".join(g for g in groups if g not in floats).encode()

    monkeypatch.setattr(auto, "make_model", make_model)

    class Held:
        frames = [0]
        reference = {"content": np.zeros(1), "distortion": np.zeros(1)}

        def features(self, net, model):
            int8 = model.decode().split(",") if model else []
            return np.array([sum(error[g] for g in int8 if g)])

        def measure_features(self, content, distortion):
            d = float(content[0] + distortion[0])
            return S.Measurement(d, d)

    def table(net, float_model, qsvs, held_out, progress=None, int8_ratio=0.3, finish=None):
        cost = S.cost_model(ops, int8_ratio)
        return S.SensitivityTable(net, 1, [S.GroupSensitivity(g, 1, cost.share(g), error[g],
                                                              error[g], 0.0) for g in groups])

    monkeypatch.setattr(S, "sensitivity_table", table)

    class Ranges:
        def merged(self, how):
            return {}

    return Held(), Ranges()


def _int8_errors(cands) -> dict:
    return {c.choice.float_groups: c.measurement.logit_delta_max for c in cands
            if c.choice.recipe == "static_wi8_ai8"}


def test_a_float_prefix_is_tried_when_the_early_groups_carry_the_error(early_error_net):
    # Growing an int8 set from single groups stops early, while "all int8 but the stem
    # and block 1" is within budget and much faster.
    held, ranges = early_error_net
    cands, _ = auto.net_candidates("distortion", b"", ranges, held, 0.06, merges=("mean",))
    errors = _int8_errors(cands)
    assert errors[("stem",)] == pytest.approx(0.098)  # one group float: still over 0.06
    assert errors[("stem", "block1")] == pytest.approx(0.048)  # within: the walk stops here
    assert ("stem", "block1", "block2") not in errors
    best = min((c for c in cands if c.measurement.logit_delta_max <= 0.06),
               key=lambda c: c.modelled_ms)
    assert best.choice.float_groups == ("stem", "block1")
