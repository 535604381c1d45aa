"""PyTorch -> float32 TFLite (``convert.export``): the rewrite before export."""

from __future__ import annotations


import pytest

CHECKPOINTS = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
               "aggregation": "aggregation_net.pth"}


def test_export_rewrite_keeps_the_maths_of_squeeze_excitation(reference_dir):
    torch = pytest.importorskip("torch")
    from uvq_int8.convert import export, nets

    module = nets.export_module("content", nets.load_core(
        "content", reference_dir / CHECKPOINTS["content"]))
    x = nets.example_inputs("content")
    with torch.inference_mode():
        before = module(*x)
    assert export.rewrite_for_export(module) == 16
    with torch.inference_mode():
        after = module(*x)
    # Only the summation order changes: float32 noise, which this random net amplifies
    # to ~1.6e-4 on outputs of magnitude ~25.
    assert (before - after).abs().max().item() < 1e-3

