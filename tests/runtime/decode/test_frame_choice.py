"""ffmpeg 5.1's ``-r`` frame choice, reproduced from timestamps."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from uvq_int8.runtime.decode.frame_choice import (RateSync, choose_frames, codec_rate_may_apply,
                                   guess_frame_rate, rescale)


@pytest.mark.parametrize("name, rate, time_base", [("sample_landscape", 30, Fraction(1, 15360)),
                                                   ("sample_portrait", 24, Fraction(1, 12288))])
def test_golden_source_frames(reference_dir, name, rate, time_base):
    # The golden files record which source frames upstream's ffmpeg 5.1 command wrote.
    golden = np.load(reference_dir / f"{name}.golden.npz")
    count = int(golden["num_source_frames"])
    pts = [i * int(1 / (rate * time_base)) for i in range(count)]
    chosen = choose_frames(pts, RateSync(1, time_base, Fraction(rate), True))
    assert chosen == [int(i) for i in golden["source_frame_indices"]]
    assert len(chosen) == int(golden["num_real_frames"])


def test_limit_stops_early():
    params = RateSync(1, Fraction(1, 15360), Fraction(30), True)
    pts = [i * 512 for i in range(3000)]
    assert choose_frames(pts, params, limit=3) == [0, 1, 26]


def test_every_frame_at_29_97_duplicates_to_keep_30_per_second():
    # fps=-1 on 29.97 fps runs "-r 30": now and then a frame is written twice.
    params = RateSync(30, Fraction(1, 30000), Fraction(30000, 1001), True)
    chosen = choose_frames([i * 1001 for i in range(1200)], params)
    assert len(chosen) == 1201  # 40.04 s at 30 frames per second
    assert chosen == sorted(chosen) and sorted(set(chosen)) == list(range(1200))
    assert chosen.count(500) == 2  # the first time the drift reaches half a frame


def test_gap_repeats_the_previous_frame():
    # A 0.1 s hole at -r 30: the frame after it is written 4 times, the first
    # llrintf(delta0 - 0.6) = 2 of them as copies of the frame before the hole.
    params = RateSync(30, Fraction(1, 90000), Fraction(30), True)
    pts = [i * 3000 for i in range(10)] + [(i + 3) * 3000 for i in range(10, 20)]
    chosen = choose_frames(pts, params)
    assert chosen.count(9) == 3 and chosen.count(10) == 2
    assert len(chosen) == 23


def test_late_start_single_stream_is_not_padded():
    # vscfr (one stream) does not duplicate initial frames; a late first frame is
    # written at once, and the later frames follow its timeline.
    pts = [45000 + i * 3000 for i in range(30)]
    vscfr = choose_frames(pts, RateSync(30, Fraction(1, 90000), Fraction(30), True))
    assert vscfr == list(range(30))
    with pytest.raises(ValueError):  # cfr would repeat a frame that does not exist yet
        choose_frames(pts, RateSync(30, Fraction(1, 90000), Fraction(30), False))


def test_rescale_rounds_half_away_from_zero():
    assert rescale(1, Fraction(1, 2), Fraction(1)) == 1
    assert rescale(-1, Fraction(1, 2), Fraction(1)) == -1
    assert rescale(-33366, Fraction(1, 1_000_000), Fraction(1, 30000)) == -1001


def test_frame_rate_guess():
    assert guess_frame_rate(Fraction(30), Fraction(30)) == 30
    assert guess_frame_rate(Fraction(240), Fraction(30)) == 30  # r implausible, avg used
    assert guess_frame_rate(None, Fraction(25)) is None
    assert not codec_rate_may_apply(Fraction(30), Fraction(55, 2))
    assert codec_rate_may_apply(Fraction(30), Fraction(20))
    assert codec_rate_may_apply(None, Fraction(30))
