"""The recipes' rules (``convert.quantize``): weight-range algorithms as per-op overrides."""

from __future__ import annotations

import pytest

from uvq_int8.convert import quantize


def test_weight_algorithms_override_the_convolutions_only():
    pytest.importorskip("ai_edge_quantizer")
    base = quantize._recipe_config("static_wi8_ai8")
    assert quantize._recipe_config("static_wi8_ai8", "minmax") == base
    octav = quantize._recipe_config("static_wi8_ai8", "OCTAV")
    added = octav[len(base):]
    assert octav[:len(base)] == base
    assert [r["operation"] for r in added] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert {r["algorithm_key"] for r in added} == {"OCTAV"}
    # Dynamic int4 has no depthwise kernel: only CONV_2D takes the override.
    int4 = quantize._recipe_config("dynamic_wi4_afp32", "MSE")
    assert [r["operation"] for r in int4[len(quantize._recipe_config("dynamic_wi4_afp32")):]] \
        == ["CONV_2D"]
    with pytest.raises(ValueError, match="unknown weight algorithm 'L2'"):
        quantize.weight_rules(base, "L2")
