"""Fractional ``--fps`` (issue 20, item 5): the rate, the plan, and the decoders' frames.

Which source frames each rate picks is checked against the ffmpeg CLI in
``test_frame_choice.py``; here the whole decode is: upstream's command run with the
user's own ``-r 0.5`` gives the same bytes as both decoders.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.errors import VideoError
from uvq_int8.runtime.decode import ffmpeg_cli, pyav, verified
from uvq_int8.runtime.decode import probe as probing

needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="ffmpeg/ffprobe not installed")


@pytest.mark.parametrize("text, rate", [("1", Fraction(1)), ("0.5", Fraction(1, 2)),
                                        ("1/4", Fraction(1, 4)), (" 0.2 ", Fraction(1, 5)),
                                        ("30000/1001", Fraction(30000, 1001)),
                                        ("-1", Fraction(-1)), (0.1, Fraction(1, 10)),
                                        (2, Fraction(2)), (np.int64(3), Fraction(3)),
                                        (Fraction(1, 3), Fraction(1, 3))])
def test_rates_are_exact_rationals(text, rate):
    assert probing.parse_fps(text) == rate
    assert isinstance(probing.parse_fps(text), Fraction)


@pytest.mark.parametrize("bad", ["0", "0/5", "-2", "-0.5", "abc", "", "1/0", "nan", "inf",
                                 "1e400", True, None, "1/1234567"])
def test_bad_rates_are_one_line_errors(bad):
    with pytest.raises(VideoError) as exc:
        probing.parse_fps(bad)
    assert "\n" not in str(exc.value) and "fps" in str(exc.value)


def test_json_value_of_a_rate():
    assert probing.fps_value(Fraction(2)) == 2 and isinstance(probing.fps_value(2), int)
    assert probing.fps_value(Fraction(1, 4)) == 0.25
    assert ffmpeg_cli.rate_arg(Fraction(1, 4)) == "1/4" and ffmpeg_cli.rate_arg(Fraction(3)) == "3"


# --- both decoders give upstream's command's bytes at fractional rates --------------------

def _clip(tmp: Path) -> Path:
    out = tmp / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=30:duration=9.4", "-c:v", "libx264", "-bf", "3",
                    "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def _upstream(path: Path, rate_text: str, tmp: Path) -> bytes:
    # Upstream's command with the user's own -r text, truncated or zero-padded to
    # ceil(ceil(duration) * rate) frames.
    out = tmp / "upstream.rgb"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
                    verified.upstream_filter(False), "-r", rate_text, "-f", "rawvideo",
                    "-pix_fmt", "rgb24", "-y", str(out)], check=True)
    info = probing.probe(path)
    need = math.ceil(math.ceil(info.duration) * Fraction(rate_text)) * probing.FRAME_BYTES
    raw = out.read_bytes()[:need]
    out.unlink()
    return raw + bytes(need - len(raw))


@needs_ffmpeg
@pytest.mark.parametrize("rate_text", ["0.5", "1/3"])
def test_both_decoders_give_upstreams_bytes_at_fractional_rates(tmp_path, rate_text):
    pytest.importorskip("av")
    clip = _clip(tmp_path)
    want = _upstream(clip, rate_text, tmp_path)
    rate = probing.parse_fps(rate_text)
    for method in ("upstream", "split"):
        stats = probing.DecodeStats()
        got = b"".join(f.tobytes() for f in ffmpeg_cli.iter_frames(clip, fps=rate,
                                                                    method=method, stats=stats))
        assert got == want, (method, rate_text)
        assert stats.method == method and "-r" in stats.commands[0]
        assert stats.commands[0][stats.commands[0].index("-r") + 1] == ffmpeg_cli.rate_arg(rate)
    stats = probing.DecodeStats()
    got = b"".join(f.tobytes() for f in pyav.iter_frames(clip, fps=rate, stats=stats))
    assert got == want, ("pyav", rate_text)
    if verified.is_verified_ffmpeg():
        assert stats.method == "pyav" and not stats.fallback
        assert stats.source_positions[:2] == [0, 1]
