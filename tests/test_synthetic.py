"""Synthetic frames and clips: deterministic, varied, measurably degraded, playable."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import numpy as np
import pytest

from uvq_int8 import synthetic as S
from uvq_int8.errors import VideoError

SMALL = (144, 256)


def digests(frames: np.ndarray) -> set[str]:
    return {hashlib.sha256(f.tobytes()).hexdigest() for f in frames}


def sharpness(frame: np.ndarray) -> float:
    f = frame.astype(np.float32)
    return float(np.abs(np.diff(f, axis=0)).mean() + np.abs(np.diff(f, axis=1)).mean())


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    a = S.synthetic_frames(2, seed=7, size=SMALL)
    b = S.synthetic_frames(2, seed=7, size=SMALL)
    assert a.dtype == np.uint8 and a.shape == (2, *SMALL, 3)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, S.synthetic_frames(2, seed=8, size=SMALL))
    assert not np.array_equal(a[0], a[1])


def test_a_longer_set_starts_with_the_shorter_one():
    assert np.array_equal(S.synthetic_frames(3, seed=1, size=SMALL)[:2],
                          S.synthetic_frames(2, seed=1, size=SMALL))


def test_full_hd_frame_is_varied():
    frame = S.synthetic_frames(1, seed=0)[0]
    assert frame.shape == (1080, 1920, 3)
    assert frame.std() > 30  # not a flat image
    assert len(np.unique(frame.reshape(-1, 3)[::97], axis=0)) > 1000
    assert sharpness(frame) > 3  # edges and textures, not only gradients


def test_calibration_and_validation_sets_are_disjoint_and_deterministic():
    cal = S.calibration_frames(6, size=SMALL)
    val = S.validation_frames(6, size=SMALL)
    assert cal.shape == val.shape == (6, *SMALL, 3)
    assert len(digests(cal)) == 6 and len(digests(val)) == 6
    assert not digests(cal) & digests(val)
    assert np.array_equal(cal, S.calibration_frames(6, size=SMALL))


def test_sets_are_half_clean_half_degraded():
    cal = S.calibration_frames(4, size=SMALL)
    clean = [S.synthetic_frame(S.frame_seed(S.CALIBRATION_SEED, i), SMALL) for i in range(4)]
    assert np.array_equal(cal[0], clean[0]) and np.array_equal(cal[2], clean[2])
    assert not np.array_equal(cal[1], clean[1]) and not np.array_equal(cal[3], clean[3])


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return S.synthetic_frame(123, (272, 480))


@pytest.mark.parametrize("kind", S.DEGRADATIONS)
def test_every_degradation_changes_the_frame_measurably(frame, kind):
    out = S.degrade(frame, kind, 0.8)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - frame).mean() > 2
    assert np.array_equal(out, S.degrade(frame, kind, 0.8))


def test_blur_removes_detail(frame):
    assert sharpness(S.degrade(frame, "blur", 0.8)) < 0.5 * sharpness(frame)


def test_full_blockiness_is_constant_in_16x16_blocks(frame):
    out = S.degrade(frame, "blocky", 1.0).astype(np.int16)
    blocks = out[:256, :480].reshape(16, 16, 30, 16, 3)
    assert (blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))).max() <= 1


def test_quantisation_leaves_few_levels(frame):
    out = S.degrade(frame, "quantize", 1.0)
    assert len(np.unique(out)) <= 256 // 32 + 1 < len(np.unique(frame))


def test_noise_has_the_stated_strength(frame):
    diff = S.degrade(frame, "noise", 0.5).astype(np.float32) - frame
    assert 10 < diff.std() < 16  # sigma 2 + 23 * 0.5 = 13.5, a little lower after clipping


def test_unknown_degradation_is_refused(frame):
    with pytest.raises(ValueError, match="unknown degradation"):
        S.degrade(frame, "sepia", 0.5)


@pytest.mark.parametrize("axis", [0, 1])
def test_box_blur_is_a_moving_average_with_repeated_edges(axis):
    x = np.random.default_rng(0).uniform(0, 255, (23, 31, 3)).astype(np.float32)
    r = 3
    pad = [(0, 0)] * 3
    pad[axis] = (r, r)
    padded = np.pad(x.astype(np.float64), pad, mode="edge")
    n = x.shape[axis]
    expected = sum(np.take(padded, np.arange(k, k + n), axis=axis) for k in range(2 * r + 1))
    assert np.abs(S.box_blur(x, r, axis) - expected / (2 * r + 1)).max() < 1e-3


needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="ffmpeg/ffprobe not installed")


@needs_ffmpeg
def test_write_clip_makes_a_probeable_h264_clip(tmp_path):
    from uvq_int8.runtime.decode import probe as probing

    out = tmp_path / "clip dir" / "demo clip.mp4"
    assert S.write_clip(out, seconds=2, fps=12, size=(180, 320), seed=3) == out
    info = probing.probe(out)
    assert (info.width, info.height, info.codec) == (320, 180, "h264")
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.nb_frames == 24 and info.orig_fps == 12
    assert [p.name for p in out.parent.iterdir()] == ["demo clip.mp4"]  # no temp file left
    # The clip holds the generated frames (up to H.264 loss) and has degraded segments.
    first = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(out), "-frames:v",
                            "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                           capture_output=True, check=True).stdout
    decoded = np.frombuffer(first, np.uint8).reshape(180, 320, 3)
    frames = list(S.clip_frames(2, 12, (180, 320), seed=3))
    assert np.abs(decoded.astype(np.int16) - frames[0]).mean() < 6
    assert sharpness(frames[12]) < 0.7 * sharpness(frames[0])  # second 1 is blurred


@needs_ffmpeg
def test_write_clip_failure_leaves_no_file(tmp_path):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\ncat >/dev/null\necho 'Unknown encoder libx264' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "out" / "clip.mp4"
    with pytest.raises(VideoError, match="Unknown encoder libx264"):
        S.write_clip(out, seconds=1, fps=4, size=(90, 160), ffmpeg=str(fake))
    assert list(out.parent.iterdir()) == []


def test_write_clip_refuses_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        S.write_clip(tmp_path / "x.mp4", size=(181, 320))
