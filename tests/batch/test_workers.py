"""Batch scoring end to end: failures as rows, --jobs workers, Ctrl-C and resume (``uvq_int8.batch.workers``, ``uvq`` and ``uvq-int8 batch``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from uvq_int8 import batch
from uvq_int8.batch import inputs, workers
from uvq_int8.batch import rows as R

BACKEND = "int8-static"
COMPARED = ("score", "per_frame_scores", "per_frame_logits", "frame_indices", "backend",
            "model_sha256")


def run_uvq(args, **kw):
    return subprocess.run([sys.executable, "-c", "from uvq_int8.cli import uvq_main; "
                           "raise SystemExit(uvq_main())", *map(str, args)],
                          capture_output=True, text=True, **kw)


def run_uvq_int8(args, **kw):
    return subprocess.run([sys.executable, "-c", "from uvq_int8.cli import main; "
                           "raise SystemExit(main())", *map(str, args)],
                          capture_output=True, text=True, **kw)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Short synthetic clips: [0] and [1] differ; the 10 s one is cut for truncation."""
    from uvq_int8 import synthetic

    root = tmp_path_factory.mktemp("clips")
    out = [synthetic.write_clip(root / f"clip{i}.mp4", seconds=2, fps=8, seed=10 + i)
           for i in range(3)]
    full = synthetic.write_clip(root / "long.mp4", seconds=10, fps=8, seed=3)
    data = full.read_bytes()
    cut = root / "cut.mp4"  # faststart: the moov is at the front, so the cut file opens
    cut.write_bytes(data[:int(len(data) * 0.6)])
    return {"clips": out, "cut": cut}


@pytest.fixture(scope="module")
def eight(tmp_path_factory, clips, reference_dir):
    """The issue's directory: 6 good videos (two named a.mp4), one truncated, one text."""
    root = tmp_path_factory.mktemp("eight")
    (root / "x").mkdir()
    (root / "y").mkdir()
    (root / "x" / "a.mp4").symlink_to(clips["clips"][0])
    (root / "y" / "a.mp4").symlink_to(clips["clips"][1])
    (root / "landscape.mp4").symlink_to(reference_dir / "sample_landscape.mp4")
    (root / "portrait.mp4").symlink_to(reference_dir / "sample_portrait.mp4")
    (root / "c.MOV").symlink_to(clips["clips"][2])
    (root / "y" / "dup.mp4").symlink_to(reference_dir / "sample_portrait.mp4")  # same file
    (root / "e.mkv").write_bytes(_remux(clips["clips"][2]))
    (root / "truncated.mp4").symlink_to(clips["cut"])
    (root / "text.mp4").write_text("this is not a video\n")
    return root


def _remux(src: Path) -> bytes:
    out = src.with_suffix(".mkv")
    if not out.exists():
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-c", "copy",
                        str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="module")
def jobs2_run(built_models, eight, tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs2") / "rows.jsonl"
    result = run_uvq([eight, "--format", "jsonl", "--jobs", "2", "--output", out,
                      "--backend", BACKEND, "--model-dir", built_models])
    return result, out


def test_directory_with_jobs_2_gives_a_row_per_video_and_exit_1(jobs2_run, eight):
    result, out = jobs2_run
    assert result.returncode == 1, result.stderr
    rows = {Path(r["path"]).relative_to(eight).as_posix(): r for r in jsonl(out)}
    assert sorted(rows) == ["c.MOV", "e.mkv", "landscape.mp4", "portrait.mp4", "text.mp4",
                            "truncated.mp4", "x/a.mp4", "y/a.mp4"]
    good = [k for k, r in rows.items() if r["error"] is None]
    assert len(good) == 7
    assert rows["x/a.mp4"]["score"] != rows["y/a.mp4"]["score"]
    assert "text.mp4" in rows["text.mp4"]["error"] and rows["text.mp4"]["score"] is None
    cut = rows["truncated.mp4"]
    assert len(cut["per_frame_scores"]) == 10 and "truncated" in cut["warnings"][0]
    assert cut["frame_times"][:3] == [0.0, 0.125, 0.875] and len(cut["frame_times"]) < 10
    for row in rows.values():
        assert row["size"] == os.path.getsize(row["path"]) and len(row["head_sha256"]) == 64
        assert list(row) == list(R.COLUMNS) and row["audit"] is None
    assert "1 failed" in result.stderr and "uvq: failed:" in result.stderr


def test_batch_rows_equal_a_single_video_all_stats_run(jobs2_run, eight, built_models):
    _, out = jobs2_run
    rows = {Path(r["path"]).name: r for r in jsonl(out)}
    for name in ("landscape.mp4", "portrait.mp4", "truncated.mp4"):
        single = run_uvq([eight / name, "--output_all_stats", "--backend", BACKEND,
                          "--model-dir", built_models])
        assert single.returncode == 0, single.stderr
        stats = json.loads(single.stdout)
        stats["score"] = stats["uvq1p5_score"]
        for key in COMPARED:
            assert rows[name][key] == stats[key], (name, key)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _ffmpeg_in_session(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if b"ffmpeg" in Path(cmd.decode()).name.encode() and os.getsid(int(entry.name)) == sid:
                found.append(int(entry.name))
        except (OSError, ValueError, ProcessLookupError):
            continue
    return found


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg"])
def test_ctrl_c_keeps_finished_rows_leaves_no_ffmpeg_and_resume_finishes(
        built_models, eight, tmp_path, decoder):
    out = tmp_path / "rows.jsonl"
    args = [sys.executable, "-c", "from uvq_int8.cli import uvq_main; raise SystemExit(uvq_main())",
            str(eight), "--format", "jsonl", "--jobs", "2", "--output", str(out),
            "--backend", BACKEND, "--model-dir", str(built_models), "--decoder", decoder]
    # A job started with "&" by a shell without job control inherits SIGINT ignored, and
    # so would this child: give it the default, as a terminal's foreground job has.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: out.is_file() and len(out.read_text().splitlines()) >= 1)
        if decoder == "ffmpeg":  # mid-decode; PyAV decodes inside the worker processes
            _wait_for(lambda: _ffmpeg_in_session(proc.pid), timeout=60)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr.decode()
    time.sleep(0.5)
    assert _ffmpeg_in_session(proc.pid) == []
    kept = jsonl(out)  # every line whole
    assert 1 <= len(kept) < 8
    result = run_uvq(args[3:] + ["--resume"])
    assert result.returncode == 1
    rows = jsonl(out)
    assert sorted(r["path"] for r in rows) == sorted(inputs.collect_inputs(str(eight)))
    assert sum(r["error"] is not None for r in rows) == 1  # only the text file
    # a second resume scores nothing and retries only the failed file
    again = run_uvq(args[3:] + ["--resume"])
    assert "7 already in" in again.stderr and len(jsonl(out)) == 8


def test_legacy_lines_from_a_directory_and_stdin(built_models, clips, tmp_path):
    out = tmp_path / "scores.csv"
    listing = "\n".join(str(p) for p in clips["clips"][:2]) + "\n"
    result = run_uvq(["-", "--output", out, "--backend", BACKEND, "--model-dir", built_models],
                     input=listing)
    assert result.returncode == 0, result.stderr
    names = [line.split(",")[0] for line in out.read_text().splitlines()]
    assert names == ["clip0.mp4", "clip1.mp4"]


def test_bad_jobs_and_missing_output_are_one_line_errors(tmp_path):
    result = run_uvq([tmp_path, "--format", "jsonl"])
    assert result.returncode != 0 and "--output" in result.stderr
    result = run_uvq([tmp_path, "--output", tmp_path / "o.jsonl", "--jobs", "0"])
    assert result.returncode != 0 and "--jobs" in result.stderr
    result = run_uvq([tmp_path, "--output", tmp_path / "o.jsonl"])
    assert result.returncode != 0 and "no videos found" in result.stderr
    for r in (result,):
        assert "Traceback" not in r.stderr


class _FakeModels:
    """Stands in for runtime.Models: a logit from the frame's mean; fails on one video."""

    threads = 1
    backend = "fake"
    sha256 = {"content": "c", "distortion": "d", "aggregation": "a"}
    paths: dict = {}

    def __init__(self, fail_on_mean: float | None = None):
        self.fail_on_mean = fail_on_mean
        self.seen: list[float] = []

    def features(self, frame):
        mean = float(frame[::8, ::8].mean())
        self.seen.append(mean)
        if self.fail_on_mean is not None and abs(mean - self.fail_on_mean) < 1e-9:
            raise RuntimeError("boom")
        return mean, None

    def aggregate(self, content, distortion):
        return content / 100.0, 0.0


def test_a_net_failing_mid_video_is_a_row_and_the_next_video_still_scores(clips):
    from uvq_int8.runtime import scoring

    paths = [str(p) for p in clips["clips"]]
    spec = workers.WorkerSpec("fake", "", 1, scoring.ScoreOptions(), buffer_frames=2)
    first: list[dict] = []
    workers.run_worker(spec, _feeder(paths), first.append,
                     _FakeModels())
    assert [r["error"] for r in first] == [None, None, None]
    # fail on the second frame of the second video
    probe = _FakeModels()
    workers.run_worker(spec, _feeder(paths[1:2]), lambda row: None, probe)
    rows: list[dict] = []
    workers.run_worker(spec, _feeder(paths), rows.append, _FakeModels(fail_on_mean=probe.seen[1]))
    assert [r["path"] for r in rows] == paths
    assert rows[1]["error"] == "RuntimeError: boom" and rows[1]["score"] is None
    assert rows[0] == {**first[0], "seconds": rows[0]["seconds"]}
    assert rows[2] == {**first[2], "seconds": rows[2]["seconds"]}


def _feeder(paths):
    pending = iter(paths)
    return lambda: next(pending, None)


def test_uvq_int8_batch_local_csv_and_parquet(built_models, clips, tmp_path):
    pytest.importorskip("pyarrow")
    listing = tmp_path / "v.txt"
    listing.write_text("".join(f"{p}\n" for p in clips["clips"][:2]))
    rows = {}
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"rows.{fmt}"
        result = run_uvq_int8(["batch", listing, "--format", fmt, "--output", out, "--quiet",
                               "--backend", BACKEND, "--model-dir", built_models])
        assert result.returncode == 0, result.stderr
        rows[fmt] = batch.read_rows(out)
        assert [r["path"] for r in rows[fmt]] == [str(p) for p in clips["clips"][:2]]
    for a, b in zip(rows["csv"], rows["parquet"]):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}
