"""Ray Data engine: the same rows as --jobs, a killed actor, and --address (on loopback only)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from uvq_int8 import batch
from uvq_int8.batch import rows as R

# Everything stays on 127.0.0.1: Ray reads this when it is imported (see distributed.py).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
os.environ.update(RAY_ENV)
ray = pytest.importorskip("ray")

from uvq_int8 import distributed  # noqa: E402

BACKEND = "int8-static"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, reference_dir):
    """Six paths: three short clips, the landscape sample, two copies, and a text file."""
    from uvq_int8 import synthetic

    root = tmp_path_factory.mktemp("ray_inputs")
    paths = [synthetic.write_clip(root / f"clip{i}.mp4", seconds=2, fps=8, seed=20 + i)
             for i in range(3)]
    (root / "landscape.mp4").symlink_to(reference_dir / "sample_landscape.mp4")
    (root / "again.mp4").symlink_to(paths[0])
    (root / "text.mp4").write_text("not a video")
    paths += [root / "landscape.mp4", root / "again.mp4", root / "text.mp4"]
    listing = root / "videos.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return listing, [str(p) for p in paths]


@pytest.fixture(scope="module")
def local_ray():
    # Ray gives its raylet a fixed 30 s to register; on a loaded machine that can run
    # out, so try a few times.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def jobs_rows(built_models, inputs, tmp_path_factory):
    listing, _ = inputs
    out = tmp_path_factory.mktemp("jobs_rows") / "rows.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", "from uvq_int8.cli import uvq_main; raise SystemExit(uvq_main())",
         str(listing), "--format", "jsonl", "--jobs", "2", "--output", str(out),
         "--backend", BACKEND, "--model-dir", str(built_models)],
        capture_output=True, text=True)
    assert result.returncode == 1, result.stderr  # the text file
    return {r["path"]: r for r in batch.read_rows(out)}


def _same_rows(ray_rows: list[dict], jobs_rows: dict[str, dict]) -> None:
    assert sorted(r["path"] for r in ray_rows) == sorted(jobs_rows)
    for row in ray_rows:
        expected = jobs_rows[row["path"]]
        for column in R.COLUMNS:
            if column != "seconds":
                assert row[column] == expected[column], (row["path"], column)


def test_ray_rows_equal_jobs_rows(local_ray, built_models, inputs, jobs_rows):
    _, paths = inputs
    dataset = distributed.score_dataset(paths, backend=BACKEND, model_dir=str(built_models),
                                        concurrency=2, threads_per_actor=1)
    rows = _plain(dataset)
    assert len(rows) == len(paths)
    _same_rows(rows, jobs_rows)


def _plain(dataset) -> list[dict]:
    return [row for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None)
            for row in table.to_pylist()]


def _scorer_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"_Scorer" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_an_actor_killed_mid_run_still_gives_one_row_per_video(local_ray, built_models, inputs,
                                                               jobs_rows):
    _, paths = inputs
    dataset = distributed.score_dataset(paths, backend=BACKEND, model_dir=str(built_models),
                                        concurrency=2, threads_per_actor=1)
    rows: list[dict] = []
    killed = []
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += table.to_pylist()
        if not killed:
            pids = _scorer_pids()
            assert pids, "no scorer actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
    assert killed and len(rows) == len(paths)
    _same_rows(rows, jobs_rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_against_a_ray_head_on_loopback(built_models, inputs, jobs_rows, tmp_path):
    if ray.is_initialized():
        ray.shutdown()
    listing, paths = inputs
    port = _free_port()
    # The test's own head on 127.0.0.1, so no auth token is shared with the client.
    env = {**os.environ, **RAY_ENV, "RAY_AUTH_MODE": "disabled"}
    # Ray's unix sockets live under the temp dir, whose path must stay short.
    temp_dir = tempfile.mkdtemp(prefix="uvqray", dir="/tmp")
    log = tmp_path / "head.log"
    with open(log, "wb") as head_log:
        head = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
             "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
            stdout=head_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert head.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        out = tmp_path / "rows.parquet"
        result = subprocess.run(
            [sys.executable, "-c", "from uvq_int8.cli import main; raise SystemExit(main())",
             "batch", str(listing), "--engine", "ray", "--address", f"127.0.0.1:{port}",
             "--jobs", "2", "--format", "parquet", "--output", str(out), "--quiet",
             "--backend", BACKEND, "--model-dir", str(built_models)],
            capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 1, result.stderr[-3000:]
        assert "1 failed" in result.stderr
        _same_rows(batch.read_rows(out), jobs_rows)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and everything it started
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_path_gets_no_more_rows_than_it_is_listed():
    rows = [{"path": p} for p in ("a", "b", "a", "c", "a")]
    assert [r["path"] for r in distributed.once_per_path(rows, ["a", "b", "a"])] == ["a", "b", "a"]
