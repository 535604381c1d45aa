"""Preprocessing: the [-1,1] map, ContentNet's resize and the patch cut."""

from __future__ import annotations

import numpy as np
import pytest

from uvq_int8.runtime import frames as F


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


def _full_frame_content(frame_uint8):
    # The path before the tap-only resize, kept verbatim as the reference: map the
    # whole frame to [-1,1], then resize the float frame.
    frame = F.to_unit_range(frame_uint8)
    h, w = frame.shape[:2]
    hi0, hi1, hw0, hw1 = F.bilinear_taps(h, 256)
    wi0, wi1, ww0, ww1 = F.bilinear_taps(w, 256)
    top = frame[hi0]
    bottom = frame[hi1]
    wa, wb = ww0[None, :, None], ww1[None, :, None]
    top = top[:, wi0] * wa + top[:, wi1] * wb
    bottom = bottom[:, wi0] * wa + bottom[:, wi1] * wb
    out = top * hw0[:, None, None] + bottom * hw1[:, None, None]
    return out.astype(np.float32, copy=False)[None]


def test_tap_only_content_input_is_bit_identical_on_golden_frames(golden_frames):
    for frame in golden_frames["frames_uint8"]:
        fast = F.content_input(frame)
        assert fast.dtype == np.float32 and fast.shape == (1, 256, 256, 3)
        assert np.array_equal(fast, _full_frame_content(frame))


@pytest.mark.parametrize("shape", [(1920, 1080, 3), (1080, 1920, 3), (720, 1280, 3), (300, 257, 3),
                                   (7, 13, 3), (256, 256, 3), (1, 1, 3)])
def test_tap_only_content_input_is_bit_identical_on_odd_sizes(shape):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(F.content_input(frame), _full_frame_content(frame))


def test_content_input_does_not_read_a_view_wrongly():
    # A non-contiguous frame (a crop of a larger one) gives the same numbers as its copy.
    big = np.random.default_rng(1).integers(0, 256, (1200, 2000, 3), dtype=np.uint8)
    crop = big[50:1130, 30:1950]
    assert np.array_equal(F.content_input(crop), _full_frame_content(np.ascontiguousarray(crop)))


def test_content_input_rejects_float_frames():
    with pytest.raises(TypeError):
        F.content_input(np.zeros((1080, 1920, 3), np.float32))


def test_net_inputs_match_the_full_frame_path(golden_frames):
    frame = golden_frames["frames_uint8"][0]
    content, patches = F.net_inputs(frame)
    assert np.array_equal(content, _full_frame_content(frame))
    assert np.array_equal(content, F.resize_for_content(F.to_unit_range(frame))[None])
    assert np.array_equal(patches, F.cut_patches(F.to_unit_range(frame)))
