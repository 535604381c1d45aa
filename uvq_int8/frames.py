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
def _bilinear_taps(in_size: int, out_size: int):
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


def resize_for_content(frame: np.ndarray, size: int = CONTENT_SIZE) -> np.ndarray:
    """[H,W,C] float32 -> [size,size,C], as upstream ContentNet resizes its input."""
    h, w = frame.shape[:2]
    hi0, hi1, hw0, hw1 = _bilinear_taps(h, size)
    wi0, wi1, ww0, ww1 = _bilinear_taps(w, size)
    top = frame[hi0]
    bottom = frame[hi1]
    wa, wb = ww0[None, :, None], ww1[None, :, None]
    top = top[:, wi0] * wa + top[:, wi1] * wb
    bottom = bottom[:, wi0] * wa + bottom[:, wi1] * wb
    out = top * hw0[:, None, None] + bottom * hw1[:, None, None]
    return out.astype(np.float32, copy=False)


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
    unit = to_unit_range(frame_uint8)
    content = resize_for_content(unit)[None]
    return content, cut_patches(unit)


def logit_to_score(logit):
    """UVQ's final scaling: tanh(logit) * 2 + 3, in float32 like the nets."""
    return np.tanh(np.asarray(logit, dtype=np.float32)) * np.float32(2) + np.float32(3)
