"""Deterministic synthetic frames, clean and degraded, and a short demo clip (numpy only).

Frames are built from a seed alone: colour gradients, low-frequency colour waves, shaded
rectangles and ellipses, textured panels (stripes, checkers, filtered noise), blocks of
text-like glyphs and mild sensor noise. ``degrade`` gives the distortions UVQ is meant to
see (blur, 16x16 blockiness, colour quantisation, noise). Frame ``i`` of a set depends only
on the set's seed and ``i``, so a longer set starts with the frames of a shorter one.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

from uvq_int8.errors import VideoError
from uvq_int8.util import atomic_path
from uvq_int8.runtime.decode.pipe import StderrTail
from uvq_int8.runtime.decode.probe import find_tool

FULL_HD = (1080, 1920)
DEGRADATIONS = ("blur", "blocky", "quantize", "noise", "mixed")
BLOCK = 16
# Seed spaces of the two built-in sets; different roots keep them disjoint.
CALIBRATION_SEED = 0xCA1
VALIDATION_SEED = 0x7E57
_GLYPHS = 64


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def _gradient_and_waves(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    t = np.float32(np.cos(angle)) * x + np.float32(np.sin(angle)) * y
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = rng.uniform(20, 235, (2, 3)).astype(np.float32)
    canvas = c0 + t[..., None] * (c1 - c0)
    for _ in range(rng.integers(2, 4)):
        fx, fy = rng.uniform(-3, 3, 2).astype(np.float32)
        ax = np.float32(2 * np.pi) * fx * x
        ay = np.float32(2 * np.pi) * fy * y + np.float32(rng.uniform(0, 6.3))
        # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of a 2-D sin.
        wave = np.sin(ax) * np.cos(ay) + np.cos(ax) * np.sin(ay)
        canvas += wave[..., None] * rng.uniform(-30, 30, 3).astype(np.float32)
    return canvas


def _box(rng: np.random.Generator, h: int, w: int, lo: float, hi: float):
    bh = max(4, int(h * rng.uniform(lo, hi)))
    bw = max(4, int(w * rng.uniform(lo, hi)))
    y0 = int(rng.integers(-bh // 4, max(1, h - bh * 3 // 4)))
    x0 = int(rng.integers(-bw // 4, max(1, w - bw * 3 // 4)))
    ys, xs = slice(max(0, y0), min(h, y0 + bh)), slice(max(0, x0), min(w, x0 + bw))
    yy = (np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - y0) / bh
    xx = (np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - x0) / bw
    return ys, xs, yy, xx


def _shapes(rng: np.random.Generator, canvas: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    for _ in range(rng.integers(5, 11)):
        ys, xs, yy, xx = _box(rng, h, w, 0.06, 0.35)
        if yy.size == 0 or xx.size == 0:
            continue
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        # Shading: brightness falls off along a random direction across the shape.
        a = rng.uniform(-0.5, 0.5, 2).astype(np.float32)
        shade = np.float32(1) + a[0] * (yy - 0.5) + a[1] * (xx - 0.5)
        fill = colour * shade[..., None]
        region = canvas[ys, xs]
        if rng.random() < 0.5:
            region[...] = np.broadcast_to(fill, region.shape)
        else:
            inside = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 <= 0.25
            region[inside] = np.broadcast_to(fill, region.shape)[inside]


def _box_last(x: np.ndarray, radius: int) -> np.ndarray:
    # Window sums from one cumulative sum along the contiguous last axis (fast in numpy);
    # the first sample is repeated radius+1 times so that c[i+2r+1] - c[i] covers [i-r, i+r].
    n = x.shape[-1]
    padded = np.concatenate([np.repeat(x[..., :1], radius + 1, axis=-1), x,
                             np.repeat(x[..., -1:], radius, axis=-1)], axis=-1)
    c = np.cumsum(padded, axis=-1, dtype=np.float32)
    return (c[..., 2 * radius + 1:] - c[..., :n]) * np.float32(1.0 / (2 * radius + 1))


def box_blur(image: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over a (2*radius+1) window along ``axis`` (edges repeated), via cumulative sums."""
    x = np.ascontiguousarray(np.moveaxis(np.asarray(image, np.float32), axis, -1))
    if radius > 0:
        x = _box_last(x, radius)
    return np.ascontiguousarray(np.moveaxis(x, -1, axis))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Approximate Gaussian blur: three box passes per axis with the same variance."""
    x = np.asarray(image, np.float32)
    if sigma <= 0:
        return x.copy()
    # Three boxes of width 2r+1 have variance 3 * ((2r+1)^2 - 1) / 12 = r * (r + 1).
    radius = max(1, int(round((-1 + np.sqrt(1 + 4 * sigma * sigma)) / 2)))
    x = x - np.float32(128)  # centred values keep the float32 running sums small
    for axis in (0, 1):
        y = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        for _ in range(3):
            y = _box_last(y, radius)
        x = np.moveaxis(y, -1, axis)
    return np.ascontiguousarray(x) + np.float32(128)


def _soften(image: np.ndarray) -> np.ndarray:
    """[1,2,1]/4 along both axes (edges repeated): a slight optical blur, cheaply."""
    out = image.copy()
    out[1:-1] = (image[:-2] + 2 * image[1:-1] + image[2:]) * np.float32(0.25)
    tmp = out.copy()
    out[:, 1:-1] = (tmp[:, :-2] + 2 * tmp[:, 1:-1] + tmp[:, 2:]) * np.float32(0.25)
    return out


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cell = int(rng.integers(2, 9))
    small = rng.standard_normal((h // cell + 2, w // cell + 2), dtype=np.float32)
    big = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:h, :w]
    big = box_blur(box_blur(big, cell, 0), cell, 1)  # small panels only, so cheap enough
    return big / max(float(big.std()), 1e-6)


def _textures(rng: np.random.Generator, canvas: np.ndarray, fine: bool) -> None:
    h, w = canvas.shape[:2]
    for _ in range(rng.integers(2, 5) + (2 if fine else 0)):
        ys, xs, yy, xx = _box(rng, h, w, 0.08, 0.3)
        rh, rw = yy.shape[0], xx.shape[1]
        if rh == 0 or rw == 0:
            continue
        kind = rng.integers(0, 3)
        py = np.arange(rh, dtype=np.float32)[:, None]
        px = np.arange(rw, dtype=np.float32)[None, :]
        if kind == 0:  # stripes at an angle; fine panels go down to a 3-pixel period
            period = rng.uniform(3, 8) if fine else rng.uniform(6, 40)
            angle = rng.uniform(0, np.pi)
            phase = np.float32(np.cos(angle)) * px + np.float32(np.sin(angle)) * py
            pattern = np.sin(phase * np.float32(2 * np.pi / period))
        elif kind == 1:  # checkers
            size = int(rng.integers(2, 6) if fine else rng.integers(6, 32))
            pattern = ((((py // size) + (px // size)) % 2) * 2 - 1).astype(np.float32)
        else:
            pattern = np.clip(_noise_texture(rng, rh, rw) * 0.6, -1, 1)
        base = rng.uniform(40, 215, 3).astype(np.float32)
        contrast = rng.uniform(20, 90, 3).astype(np.float32)
        alpha = np.float32(rng.uniform(0.6, 1.0))
        region = canvas[ys, xs]
        region *= 1 - alpha
        region += alpha * (base + pattern[..., None] * contrast)


def _glyph_blocks(rng: np.random.Generator, canvas: np.ndarray) -> None:
    h, w = canvas.shape[:2]
    font = np.zeros((_GLYPHS + 1, 8, 6), bool)  # 5x7 glyphs with a 1-pixel gap; last = space
    font[:_GLYPHS, :7, :5] = rng.random((_GLYPHS, 7, 5)) < 0.45
    for _ in range(rng.integers(1, 4)):
        scale = int(rng.integers(1, 4)) * max(1, h // 540)
        rows, cols = int(rng.integers(2, 8)), int(rng.integers(8, 40))
        text = rng.integers(0, _GLYPHS, (rows, cols))
        text[rng.random((rows, cols)) < 0.15] = _GLYPHS
        bits = font[text].transpose(0, 2, 1, 3).reshape(rows * 8, cols * 6)
        bits = np.repeat(np.repeat(bits, scale, axis=0), scale, axis=1)
        bh, bw = min(bits.shape[0], h), min(bits.shape[1], w)
        y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        paper, ink = rng.uniform(180, 250, 3), rng.uniform(0, 70, 3)
        if rng.random() < 0.3:
            paper, ink = ink, paper
        region = canvas[y0:y0 + bh, x0:x0 + bw]
        region[...] = paper.astype(np.float32)
        region[bits[:bh, :bw]] = ink.astype(np.float32)


def synthetic_frame(seed: int, size: tuple[int, int] = FULL_HD) -> np.ndarray:
    """One synthetic RGB scene, uint8 [H,W,3], fully determined by ``seed``."""
    h, w = size
    rng = _rng(seed)
    canvas = _gradient_and_waves(rng, h, w)
    _shapes(rng, canvas)
    _textures(rng, canvas, fine=bool(rng.random() < 0.5))
    _glyph_blocks(rng, canvas)
    # A slight optical blur, then sensor noise, so edges look camera-like.
    canvas = _soften(canvas)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(1, 3))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def synthetic_frames(n: int, seed: int = 0, size: tuple[int, int] = FULL_HD) -> np.ndarray:
    """``n`` varied synthetic scenes, uint8 [n,H,W,3]; frame i depends on (seed, i) only."""
    out = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        out[i] = synthetic_frame(frame_seed(seed, i), size)
    return out


def frame_seed(seed: int, i: int) -> int:
    """The seed of frame ``i`` of the set seeded with ``seed``."""
    return int(_rng(seed, i).integers(0, 2 ** 32))


def _blocky(image: np.ndarray, block: int = BLOCK) -> np.ndarray:
    h, w, c = image.shape
    ph, pw = -h % block, -w % block
    padded = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    hb, wb = padded.shape[0] // block, padded.shape[1] // block
    means = padded.reshape(hb, block, wb, block, c).mean(axis=(1, 3), dtype=np.float32)
    return np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:h, :w]


def _blur_sigma(kind: str, s: float) -> float:
    return 0.5 + (4.5 if kind == "blur" else 2.0) * s


def _degrade_float(img: np.ndarray, kind: str, s: float, seed: int,
                   blurred: bool = False) -> np.ndarray:
    # ``blurred``: the blur of "blur"/"mixed" was already applied by the caller.
    if kind in ("blur", "mixed") and not blurred:
        img = gaussian_blur(img, _blur_sigma(kind, s))
    if kind == "blocky":
        img = (1 - s) * img + s * _blocky(img)
    elif kind == "quantize":
        step = 4 + 28 * s
        img = np.rint(img / step) * step
    elif kind == "noise":
        rng = _rng(seed, 0x9015E)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(2 + 23 * s)
    elif kind == "mixed":
        step = 4 + 12 * s
        img = np.rint(_blocky(img) / step) * step
    return img


def degrade(frame: np.ndarray, kind: str, strength: float = 0.5, seed: int = 0) -> np.ndarray:
    """A degraded copy of a uint8 [H,W,3] frame; ``strength`` in [0, 1].

    blur: Gaussian, sigma 0.5..5 px; blocky: 16x16 block means blended in by ``strength``;
    quantize: colour steps of 4..32; noise: Gaussian, sigma 2..25 (seeded); mixed: blur
    (sigma 0.5..2.5), 16x16 blocks and colour steps of 4..16, like the golden degraded frame.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; choose from {', '.join(DEGRADATIONS)}")
    s = float(np.clip(strength, 0.0, 1.0))
    img = _degrade_float(frame.astype(np.float32), kind, s, seed)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _mixed_set(root: int, n: int, size: tuple[int, int]) -> np.ndarray:
    # Even frames clean, odd frames degraded (kind cycling, strength seeded).
    out = np.empty((n, *size, 3), np.uint8)
    for i in range(n):
        frame = synthetic_frame(frame_seed(root, i), size)
        if i % 2:
            rng = _rng(root, i, 1)
            kind = DEGRADATIONS[(i // 2) % len(DEGRADATIONS)]
            frame = degrade(frame, kind, float(rng.uniform(0.4, 1.0)), seed=frame_seed(root, i))
        out[i] = frame
    return out


def calibration_frames(n: int, size: tuple[int, int] = FULL_HD) -> np.ndarray:
    """Frames for calibrating quantization: half clean, half degraded, uint8 [n,H,W,3]."""
    return _mixed_set(CALIBRATION_SEED, n, size)


def validation_frames(n: int, size: tuple[int, int] = FULL_HD) -> np.ndarray:
    """Held-out frames for verification, disjoint from ``calibration_frames``."""
    return _mixed_set(VALIDATION_SEED, n, size)


# A clip's segments, one per second, cycling: clean stretches between degraded ones.
CLIP_SEGMENTS = (None, "blur", "mixed", None, "noise", "quantize", None, "blocky")
CLIP_STRENGTH = 0.7


def clip_frames(seconds: float = 3, fps: float = 24, size: tuple[int, int] = (360, 640),
                seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the frames of ``write_clip``'s clip (uint8 [H,W,3]): a slow pan over a scene
    with a moving ellipse, degraded per one-second segment as ``CLIP_SEGMENTS`` says."""
    h, w = size
    count = max(1, int(round(seconds * fps)))
    margin = max(8, w // 8)
    scene = synthetic_frame(frame_seed(seed, 0xC11), (h + margin, w + 2 * margin))
    scene = scene.astype(np.float32)
    rng = _rng(seed, 0xC12)
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    ry, rx = max(2, int(h * 0.12)), max(2, int(w * 0.08))
    pad = max(4, ry // 2)
    yy = np.arange(-ry - pad, ry + pad + 1, dtype=np.float32)[:, None] / ry
    xx = np.arange(-rx - pad, rx + pad + 1, dtype=np.float32)[None, :] / rx
    sprite = (yy ** 2 + xx ** 2 <= 1).astype(np.float32)[..., None]
    # Blur is shift-invariant, so blurred segments pan over a scene (and a sprite)
    # blurred once instead of blurring every frame.
    blurred: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in ("blur", "mixed"):
        if kind in CLIP_SEGMENTS:
            sigma = _blur_sigma(kind, CLIP_STRENGTH)
            blurred[kind] = (gaussian_blur(scene, sigma), gaussian_blur(sprite, sigma))
    for i in range(count):
        kind = CLIP_SEGMENTS[int(i / fps) % len(CLIP_SEGMENTS)]
        base, alpha = blurred.get(kind, (scene, sprite))
        phase = i / max(1, count - 1)
        dx = int(round(2 * margin * phase))
        dy = int(round(margin * (0.5 - 0.5 * np.cos(2 * np.pi * phase))))
        frame = base[dy:dy + h, dx:dx + w].copy()
        cy = int(h * (0.3 + 0.4 * phase)) - ry - pad
        cx = int(w * (0.1 + 0.8 * (0.5 - 0.5 * np.cos(np.pi * phase)))) - rx - pad
        y0, x0 = max(cy, 0), max(cx, 0)
        y1, x1 = min(cy + alpha.shape[0], h), min(cx + alpha.shape[1], w)
        a = alpha[y0 - cy:y1 - cy, x0 - cx:x1 - cx]
        frame[y0:y1, x0:x1] = frame[y0:y1, x0:x1] * (1 - a) + colour * a
        if kind:
            frame = _degrade_float(frame, kind, CLIP_STRENGTH, seed + i, blurred=True)
        yield np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def write_clip(path: str | Path, seconds: float = 3, fps: float = 24,
               size: tuple[int, int] = (360, 640), seed: int = 0,
               ffmpeg: str = "ffmpeg") -> Path:
    """Encode the synthetic clip as H.264 (yuv420p) MP4; written atomically. Returns the path."""
    h, w = size
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {w}x{h}")
    binary = find_tool(ffmpeg, "--ffmpeg_path")
    with atomic_path(path, suffix=".mp4") as tmp:
        _encode(binary, tmp, path, seconds, fps, size, seed)
    return Path(path)


def _encode(binary: str, tmp: Path, path: str | Path, seconds: float, fps: float,
            size: tuple[int, int], seed: int) -> None:
    h, w = size
    argv = [binary, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
            "-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4",
            "file:" + str(tmp.absolute())]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    tail = StderrTail(proc.stderr, "uvq-ffmpeg-encode-stderr")
    tail.start()
    try:
        try:
            for frame in clip_frames(seconds, fps, size, seed):
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped; its exit code and message are reported below
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        code = proc.wait()
        tail.join(timeout=5)
        if code != 0:
            message = tail.lines[-1] if tail.lines else f"exit code {code}"
            raise VideoError(f"{path}: ffmpeg could not encode the synthetic clip ({message}); "
                             "check that ffmpeg has libx264")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        tail.join(timeout=5)
        proc.stderr.close()
