"""Probing and the frame plan (``uvq_int8.runtime.decode.probe``)."""

from __future__ import annotations

import numpy as np
import pytest

from uvq_int8.runtime.decode.probe import source_frame_times


@pytest.mark.parametrize("video", ["sample_landscape", "sample_portrait"])
def test_source_frame_times_are_the_frames_ffmpeg_hands_on(reference_dir, video):
    golden = np.load(reference_dir / f"{video}.golden.npz")
    count = int(golden["num_real_frames"])
    times = source_frame_times(reference_dir / f"{video}.mp4", 1, count)
    expected = golden["source_frame_indices"][:count] / float(golden["orig_fps"])
    np.testing.assert_allclose(times, expected, atol=1e-5)
