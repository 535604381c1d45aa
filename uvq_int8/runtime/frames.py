"""Frame geometry and preprocessing shared by every path (numpy only).

This is the one place where a 1080p RGB frame becomes net inputs: the [-1,1]
mapping, ContentNet's 256x256 resize and DistortionNet's nine patches.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

FRAME_HEIGHT = 1080
FRAME_WIDTH = 1920
CONTENT_SIZE = 256
PATCH_GRID = 3
PATCH_HEIGHT = FRAME_HEIGHT // PATCH_GRID
PATCH_WIDTH = FRAME_WIDTH // PATCH_GRID

# Upstream maps with (uint8 / 255 - 0.5) * 2 in float64, then casts to float32.
# A lookup table gives exactly those float32 values at a fraction of the cost.
_UNIT_LUT = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) * 2).astype(np.float32)


def to_unit_range(frames_uint8: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1], bit-identical to upstream's mapping."""
    if frames_uint8.dtype != np.uint8:
        raise TypeError(f"expected uint8 frames, got {frames_uint8.dtype}")
    return _UNIT_LUT[frames_uint8]


@lru_cache(maxsize=8)
def bilinear_taps(in_size: int, out_size: int):
    """(low index, high index, low weight, high weight) per output pixel of a resize."""
    # torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
    # antialias=False): half-pixel centres, source clamped at 0, no filtering.
    scale = np.float32(in_size / out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0).astype(np.float32)
    w0 = (np.float32(1) - w1).astype(np.float32)
    return i0, i1, w0, w1


def _blend(top0: np.ndarray, top1: np.ndarray, bottom0: np.ndarray, bottom1: np.ndarray,
           hw0: np.ndarray, hw1: np.ndarray, ww0: np.ndarray, ww1: np.ndarray) -> np.ndarray:
    # One order of float32 operations for both resize paths, so they agree to the bit.
    wa, wb = ww0[None, :, None], ww1[None, :, None]
    top = top0 * wa + top1 * wb
    bottom = bottom0 * wa + bottom1 * wb
    out = top * hw0[:, None, None] + bottom * hw1[:, None, None]
    return out.astype(np.float32, copy=False)


def resize_for_content(frame: np.ndarray, size: int = CONTENT_SIZE) -> np.ndarray:
    """[H,W,C] float32 -> [size,size,C], as upstream ContentNet resizes its input."""
    h, w = frame.shape[:2]
    hi0, hi1, hw0, hw1 = bilinear_taps(h, size)
    wi0, wi1, ww0, ww1 = bilinear_taps(w, size)
    top = frame[hi0]
    bottom = frame[hi1]
    return _blend(top[:, wi0], top[:, wi1], bottom[:, wi0], bottom[:, wi1], hw0, hw1, ww0, ww1)


def content_input(frame_uint8: np.ndarray, size: int = CONTENT_SIZE) -> np.ndarray:
    """uint8 [H,W,3] -> ContentNet's input [1,size,size,3] float32.

    The same bits as ``resize_for_content(to_unit_range(frame))[None]``: the bilinear
    resize reads only 2x2 taps per output pixel, so only those rows and columns of the
    uint8 frame are gathered and mapped to [-1,1] (~4 % of a 1080p frame).
    """
    if frame_uint8.dtype != np.uint8:
        raise TypeError(f"expected a uint8 frame, got {frame_uint8.dtype}")
    h, w = frame_uint8.shape[:2]
    hi0, hi1, hw0, hw1 = bilinear_taps(h, size)
    wi0, wi1, ww0, ww1 = bilinear_taps(w, size)
    rows = frame_uint8[np.concatenate((hi0, hi1))]
    taps = _UNIT_LUT[rows[:, np.concatenate((wi0, wi1))]]
    n = len(hi0)
    m = len(wi0)
    out = _blend(taps[:n, :m], taps[:n, m:], taps[n:, :m], taps[n:, m:], hw0, hw1, ww0, ww1)
    return out[None]


def cut_patches(frame: np.ndarray) -> np.ndarray:
    """[1080,1920,C] -> [9,360,640,C]: rows of patches top to bottom, left to right."""
    h, w, c = frame.shape
    if (h, w) != (FRAME_HEIGHT, FRAME_WIDTH):
        raise ValueError(f"expected a {FRAME_HEIGHT}x{FRAME_WIDTH} frame, got {h}x{w}")
    g = PATCH_GRID
    patches = frame.reshape(g, PATCH_HEIGHT, g, PATCH_WIDTH, c).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(patches.reshape(g * g, PATCH_HEIGHT, PATCH_WIDTH, c))


def net_inputs(frame_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One 1080p uint8 RGB frame -> (content [1,256,256,3], patches [9,360,640,3])."""
    return content_input(frame_uint8), cut_patches(to_unit_range(frame_uint8))


def logit_to_score(logit):
    """UVQ's final scaling: tanh(logit) * 2 + 3, in float32 like the nets."""
    return np.tanh(np.asarray(logit, dtype=np.float32)) * np.float32(2) + np.float32(3)


def score_to_logit(score: float) -> float:
    """The logit behind a score, for an older aggregation file with only the score output.

    Imprecise near tanh's saturation, where a float32 score keeps few digits of the logit.
    """
    return float(np.arctanh(np.clip((float(score) - 3.0) / 2.0, -1 + 1e-7, 1 - 1e-7)))
