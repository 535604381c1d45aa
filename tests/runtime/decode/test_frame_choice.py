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


# --- any rational rate, against the ffmpeg 5.1 command line's own -r output -------------

# Each clip's frames carry their presentation index in their pixels (lossless, so exact):
# the left half's luma is 4 * (index mod 64), the right half's 4 * (index // 64).
_INDEX = "geq=lum='if(lt(X\\,16)\\,mod(N\\,64)*4\\,floor(N/64)*4)':cb=128:cr=128"
_LOSSLESS = ["-c:v", "libx264", "-qp", "0", "-bf", "3", "-pix_fmt", "yuv420p"]
# name: (ffmpeg arguments after -y; "{b}" is the b-frames clip), suffix
_CLIPS = {
    "30fps_bframes": (["-f", "lavfi", "-i", f"nullsrc=s=32x32:r=30:d=7.3,{_INDEX}",
                       *_LOSSLESS], ".mp4"),
    "29.97fps": (["-f", "lavfi", "-i", f"nullsrc=s=32x32:r=30000/1001:d=9.5,{_INDEX}",
                  *_LOSSLESS], ".mp4"),
    "24fps_mkv": (["-f", "lavfi", "-i", f"nullsrc=s=32x32:r=24:d=5.55,{_INDEX}",
                   *_LOSSLESS], ".mkv"),
    "25fps_with_audio": (["-f", "lavfi", "-i", f"nullsrc=s=32x32:r=25:d=6.3,{_INDEX}",
                          "-f", "lavfi", "-i", "sine=d=6.3", *_LOSSLESS, "-c:a", "aac",
                          "-shortest"], ".mp4"),  # two streams: cfr, not vscfr
    "vfr": (["-f", "lavfi", "-i",
             f"nullsrc=s=32x32:r=30:d=8,select='not(eq(mod(n\\,7)\\,3))',{_INDEX}",
             "-fps_mode", "vfr", *_LOSSLESS], ".mp4"),
    "start_time_0.77": (["-itsoffset", "0.77", "-i", "{b}", "-c", "copy"], ".mp4"),
    "60fps_61s": (["-f", "lavfi", "-i", f"nullsrc=s=32x32:r=60:d=61,{_INDEX}", *_LOSSLESS],
                  ".mp4"),
}
_RATES = ["1", "2", "0.5", "1/4", "0.2", "0.1", "1/3", "3/10", "7/3", "30000/1001"]
_LONG_RATES = ["0.5", "1/4", "0.1", "1/3"]  # a minute: does the rounding drift?


def _cli_choice(path, rate: str) -> list[int]:
    """The presentation index of each frame ``ffmpeg -i PATH -vf ... -r RATE`` writes."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
                          "scale=32:32,format=yuv420p", "-r", rate, "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    luma = np.frombuffer(raw, np.uint8).reshape(-1, 32 * 32 * 3 // 2)[:, :32 * 32]
    luma = luma.reshape(-1, 32, 32).astype(np.int64)
    return (np.rint(luma[:, 16, 24] / 4) * 64 + np.rint(luma[:, 16, 8] / 4)).astype(int).tolist()


@pytest.fixture(scope="module")
def index_clips(tmp_path_factory):
    import shutil
    import subprocess

    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg/ffprobe not installed")
    from uvq_int8.runtime.decode import verified

    if not verified.is_verified_ffmpeg():
        pytest.skip(f"the choice reproduced is ffmpeg 5.1's, found {verified.ffmpeg_version()!r}")
    tmp = tmp_path_factory.mktemp("index_clips")
    out = {}
    for name, (args, suffix) in _CLIPS.items():
        path = tmp / f"{name}{suffix}"
        args = [a.replace("{b}", str(out.get("30fps_bframes", ""))) for a in args]
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
        out[name] = path
    return out


@pytest.mark.parametrize("name", sorted(_CLIPS))
def test_any_rate_chooses_the_frames_the_cli_writes(index_clips, name):
    from uvq_int8.runtime.decode import probe as probing

    path = index_clips[name]
    for rate in _LONG_RATES if name == "60fps_61s" else _RATES:
        choice = probing.source_choice(path, Fraction(rate), None)
        assert choice is not None, rate
        # Every frame the CLI writes, the end-of-stream repeat included.
        assert choice[1] == _cli_choice(path, rate), f"-r {rate}"


def test_half_a_frame_per_second_writes_what_ffmpeg_does(index_clips):
    # "-r 0.5": the encoder time base is 2/1; a frame is written up to 1.1 output frames
    # (2.2 s) early, so the second output frame is the source's second frame.
    from uvq_int8.runtime.decode import probe as probing

    path = index_clips["30fps_bframes"]
    assert _cli_choice(path, "0.5") == [0, 1, 53, 113, 173]
    assert probing.source_choice(path, Fraction(1, 2), None)[1] == [0, 1, 53, 113, 173]
    assert probing.source_choice(path, Fraction(1, 2), 3)[1] == [0, 1, 53]


def test_fractional_rates_use_the_encoder_time_base():
    assert RateSync(Fraction(1, 2), Fraction(1, 15360), Fraction(30), True).encoder_time_base \
        == 2
    params = RateSync(Fraction(1, 4), Fraction(1, 15360), Fraction(30), True)
    assert params.duration == pytest.approx(1 / 120)
    # 1 s of source time is a quarter of an output frame (plus the 2^-17 nudge).
    assert params.sync_pts(15360) == 0.25 + 2 ** -17
    # A whole rate is the same as before: time base 1/N.
    assert RateSync(2, Fraction(1, 15360), Fraction(30), True).encoder_time_base == \
        Fraction(1, 2)
    with pytest.raises(ValueError):
        RateSync(0, Fraction(1, 15360), Fraction(30), True)
