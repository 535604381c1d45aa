"""Preprocessing: the [-1,1] map, ContentNet's resize and the patch cut."""

from __future__ import annotations

import numpy as np
import pytest

from uvq_int8 import frames as F


def test_unit_range_is_bit_identical_to_upstream_mapping(golden_frames):
    frame = golden_frames["frames_uint8"][0]
    expected = ((frame / 255.0 - 0.5) * 2).astype(np.float32)
    assert np.array_equal(F.to_unit_range(frame), expected)


def test_unit_range_rejects_float_input():
    with pytest.raises(TypeError):
        F.to_unit_range(np.zeros((2, 2, 3), np.float32))


def test_content_resize_matches_torch_bilinear(golden_frames):
    torch = pytest.importorskip("torch")
    unit = F.to_unit_range(golden_frames["frames_uint8"][1])
    ours = F.resize_for_content(unit)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(unit).permute(2, 0, 1)[None], size=(256, 256), mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1)[0].numpy()
    assert ours.shape == (256, 256, 3)
    assert np.abs(ours - ref).max() < 1e-6


def test_patches_are_rows_of_the_frame_left_to_right():
    frame = np.zeros((1080, 1920, 1), np.float32)
    for r in range(3):
        for c in range(3):
            frame[r * 360:(r + 1) * 360, c * 640:(c + 1) * 640] = r * 3 + c
    patches = F.cut_patches(frame)
    assert patches.shape == (9, 360, 640, 1)
    assert [int(p.mean()) for p in patches] == list(range(9))


def test_patch_cut_rejects_wrong_size():
    with pytest.raises(ValueError, match="1080x1920"):
        F.cut_patches(np.zeros((720, 1280, 3), np.float32))


def test_logit_to_score_matches_golden(golden_frames):
    scores = F.logit_to_score(golden_frames["logits"])
    assert np.abs(scores - golden_frames["scores"]).max() < 1e-6
