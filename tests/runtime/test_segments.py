"""``--segment-seconds`` (issue 20, item 5): per-segment pooled scores by source time.

The nets are replaced by a stand-in whose logit follows the frame's brightness, so a clip
whose first half is black and second half white shows whether each segment holds the
frames of its own source time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.errors import UserError
from uvq_int8.runtime import scoring
from uvq_int8.runtime.frames import logit_to_score

needs_ffmpeg = pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                                  reason="ffmpeg/ffprobe not installed")


class BrightnessModels:
    """Stands in for runtime.Models: the logit is the frame's mean brightness / 255 - 1,
    so a black frame scores tanh(-1) * 2 + 3 and a white one 3."""

    threads = 1
    backend = "fake"
    sha256 = {"content": "c", "distortion": "d", "aggregation": "a"}
    paths: dict = {}
    model_dir = ""

    def features(self, frame):
        return float(frame[::16, ::16].mean()) / 255.0 - 1.0, None

    def aggregate(self, content, distortion):
        return content, 0.0


BLACK = float(logit_to_score(np.float32([-1.0]))[0])
WHITE = 3.0


# --- the pooling itself ------------------------------------------------------------------

def test_segments_cut_by_source_time_not_by_position():
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    times = [Fraction(0), Fraction(1, 30), Fraction(26, 30), Fraction(2), Fraction(59, 30)]
    out = scoring.segments(scores, times, 0, Fraction(2), 4)
    assert [(s["start"], s["end"], s["frames"]) for s in out] == [(0.0, 2.0, 4), (2.0, 4.0, 1)]
    assert out[0]["min"] == 1.0 and out[0]["mean"] == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert out[1]["mean"] == 4.0 and not any(s["padded"] for s in out)  # t = 2 starts seg 1


def test_empty_segments_and_padded_frames_are_their_own_entries():
    out = scoring.segments([1.0, 2.0, 4.5, 4.0], [Fraction(0), Fraction(5)], 2, Fraction(2), 8)
    assert [s["frames"] for s in out] == [1, 0, 1, 0, 2]
    assert out[1]["mean"] is None and out[1]["min"] is None
    assert out[-1] == {"start": None, "end": None, "frames": 2, "mean": 4.25, "min": 4.0,
                       "padded": True}
    assert scoring.segments([1.0, 2.0], None, 0, Fraction(1), 2) is None  # no timestamps


def test_one_segment_over_the_whole_video_is_the_video_score():
    rng = np.random.default_rng(0)
    scores = [float(s) for s in rng.uniform(1, 5, 37).astype(np.float32)]
    times = [Fraction(i, 3) for i in range(37)]
    (whole,) = scoring.segments(scores, times, 0, Fraction(13), 13)
    assert whole["mean"] == scoring._mean(scores) and whole["frames"] == 37


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "", "1/0", True])
def test_bad_segment_seconds_are_one_line_errors(bad):
    with pytest.raises(UserError, match="segment seconds"):
        scoring.parse_segment_seconds(bad)
    assert scoring.parse_segment_seconds("2.5") == Fraction(5, 2)
    assert scoring.parse_segment_seconds(None) is None


# --- a clip whose halves differ ----------------------------------------------------------

def _halves(out: Path, seconds: int = 8, noise: bool = False) -> Path:
    half = seconds / 2
    # Noise makes the media data, not the index at the front, most of the file.
    grain = ",noise=alls=40:allf=t" if noise else ""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"color=c=black:s=64x36:r=30:d={half}",
                    "-f", "lavfi", "-i", f"color=c=white:s=64x36:r=30:d={half}",
                    "-filter_complex", f"[0:v][1:v]concat=n=2:v=1{grain}[v]", "-map", "[v]",
                    "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p", "-movflags",
                    "+faststart", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> Path:
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg/ffprobe not installed")
    return _halves(tmp_path_factory.mktemp("halves") / "halves.mp4")


def _score(path, fps, seconds, **kw):
    options = scoring.ScoreOptions(fps=Fraction(fps), segment_seconds=Fraction(seconds), **kw)
    return scoring.score_video(path, BrightnessModels(), options)


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_segment_bounds_follow_the_source_frames(halves, decoder):
    pytest.importorskip("av")
    result = _score(halves, 1, 4, decoder=decoder)
    # -r 1 on 30 fps writes source frames 0, 1, 26, 56, 86, 116, 146, 176: the fifth and
    # sixth scored frames (positions 4 and 5) are still black, at 2.87 s and 3.87 s.
    assert result["frame_times"] == pytest.approx([0, 1 / 30, 26 / 30, 56 / 30, 86 / 30,
                                                  116 / 30, 146 / 30, 176 / 30], abs=1e-6)
    first, second = result["segments"]
    assert (first["start"], first["end"], first["frames"]) == (0.0, 4.0, 6)
    assert (second["start"], second["end"], second["frames"]) == (4.0, 8.0, 2)
    assert first["mean"] == pytest.approx(BLACK, abs=0.05) and first["padded"] is False
    assert second["mean"] == pytest.approx(WHITE, abs=0.05)
    assert first["min"] == min(result["per_frame_scores"][:6])
    # The whole-video score is upstream's mean, unchanged.
    assert result["uvq1p5_score"] == scoring._mean(result["per_frame_scores"])
    assert result["segment_seconds"] == 4 and result["fps"] == 1


def test_half_a_frame_per_second_segments(halves):
    result = _score(halves, "0.5", 2)
    # ceil(8 s) * 0.5 = 4 frames; -r 0.5 writes source frames 0, 1, 53, 113 (0-3.77 s).
    assert result["fps"] == 0.5 and len(result["per_frame_scores"]) == 4
    assert result["frame_times"] == pytest.approx([0, 1 / 30, 53 / 30, 113 / 30], abs=1e-6)
    assert [(s["start"], s["frames"]) for s in result["segments"]] == [
        (0.0, 3), (2.0, 1), (4.0, 0), (6.0, 0)]
    assert result["segments"][2]["mean"] is None


def test_padded_frames_of_a_truncated_video_are_counted_apart(tmp_path):
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg/ffprobe not installed")
    full = _halves(tmp_path / "full.mp4", seconds=10, noise=True)
    cut = tmp_path / "cut.mp4"  # faststart: the moov is at the front, so the cut file opens
    data = full.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.5)])
    result = _score(cut, 1, 5)
    padded = [s for s in result["segments"] if s["padded"]]
    real = [s for s in result["segments"] if not s["padded"]]
    assert len(padded) == 1 and padded[0]["frames"] > 0
    assert padded[0]["start"] is None and padded[0]["mean"] == pytest.approx(BLACK, abs=0.05)
    assert sum(s["frames"] for s in real) == len(result["frame_times"])
    assert sum(s["frames"] for s in result["segments"]) == len(result["per_frame_scores"]) == 10
    assert any("padded" in w for w in result["warnings"])


# --- the command line and batch rows -------------------------------------------------------

@pytest.fixture()
def fake_models(monkeypatch, clean_env):
    from uvq_int8 import runtime

    monkeypatch.setattr(runtime, "load_models", lambda *a, **k: BrightnessModels())


def test_uvq_prints_segments(halves, fake_models, capsys):
    from uvq_int8.cli import uvq_main

    assert uvq_main([str(halves), "--fps", "1", "--segment-seconds", "4", "--output_all_stats",
                     "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(s["start"], s["end"], s["frames"]) for s in result["segments"]] == [
        (0.0, 4.0, 6), (4.0, 8.0, 2)]


@pytest.mark.parametrize("flags", [["--fps", "0"], ["--fps", "x"], ["--segment-seconds", "0"],
                                   ["--segment-seconds", "-1"]])
def test_bad_flags_are_usage_errors(halves, fake_models, capsys, flags):
    from uvq_int8.cli import uvq_main

    with pytest.raises(SystemExit) as exc:
        uvq_main([str(halves), *flags])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("uvq: error: argument") and "Traceback" not in "".join(err)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_batch_rows_carry_segments(halves, fake_models, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    from uvq_int8 import batch
    from uvq_int8.cli import uvq_main

    out = tmp_path / f"rows.{fmt}"
    assert uvq_main([str(halves), "--format", fmt, "--output", str(out), "--fps", "1/2",
                     "--segment-seconds", "2", "--quiet"]) == 0
    (row,) = batch.read_rows(out)
    assert row["error"] is None and row["fps"] == 0.5
    assert [(s["start"], s["end"], s["frames"], s["padded"]) for s in row["segments"]] == [
        (0.0, 2.0, 3, False), (2.0, 4.0, 1, False), (4.0, 6.0, 0, False),
        (6.0, 8.0, 0, False)]
    assert row["frame_times"] == pytest.approx([0, 1 / 30, 53 / 30, 113 / 30], abs=1e-6)
    if fmt == "csv":  # JSON text in the cell
        import csv

        header, values = list(csv.reader(out.open()))
        assert json.loads(values[header.index("segments")])[0]["frames"] == 3
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        kind = pq.read_schema(out).field("segments").type
        assert pa.types.is_list(kind) and pa.types.is_struct(kind.value_type)
        assert pq.read_schema(out).field("fps").type == pa.float64()


def test_rows_without_segments_have_a_null_column(halves, fake_models, tmp_path):
    from uvq_int8 import batch
    from uvq_int8.cli import uvq_main

    out = tmp_path / "rows.jsonl"
    assert uvq_main([str(halves), "--format", "jsonl", "--output", str(out), "--quiet"]) == 0
    (row,) = batch.read_rows(out)
    assert row["segments"] is None and row["fps"] == 1


def test_csv_written_before_the_segments_column_is_resumed(halves, fake_models, tmp_path):
    from uvq_int8 import batch
    from uvq_int8.batch import rows as R
    from uvq_int8.cli import uvq_main

    out = tmp_path / "rows.csv"
    assert uvq_main([str(halves), "--format", "csv", "--output", str(out), "--quiet"]) == 0
    lines = list(__import__("csv").reader(out.open()))
    old = "".join(R._csv_line_from(v[:-1]) for v in lines)  # drop the last column
    out.write_text(old)
    result = uvq_main([str(halves), "--format", "csv", "--output", str(out), "--resume",
                       "--quiet"])
    assert result == 0
    (row,) = batch.read_rows(out)
    assert row["segments"] is None and row["score"] is not None
    assert out.read_text().splitlines()[0].endswith(",segments")
