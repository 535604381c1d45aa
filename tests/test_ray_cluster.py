"""Ray as a cluster: a head and a worker node on this machine (two ``ray start``), a
directory scored with ``--engine ray --jobs 2``, the worker node killed mid-run; the rows
must be the ``--jobs 2`` rows, one per video.

Each node runs in a session of its own (``start_new_session``), so the test kills exactly
its own nodes' processes; ``ray stop`` would kill every Ray process on the host. Each node
has its own temp dir and ports, so nothing here touches another Ray session on the machine.
The head has a spare CPU for the actor restarted when the worker node dies.
"""

from __future__ import annotations

import json
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

# Every node binds 127.0.0.1 (--node-ip-address); a second node needs multi-node mode on,
# which tests/test_distributed.py turns off in this process (distributed.LOOPBACK_ENV). No
# auth token is shared.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
           "RAY_AUTH_MODE": "disabled",
           # The head declares a killed node dead after ~3 s instead of ~15 s.
           "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
ray = pytest.importorskip("ray")

BACKEND = "int8-static"
VIDEOS = 8  # enough that the worker node is still busy when the first video is scored
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """Eight short clips and one file that is not a video (a failure row)."""
    from uvq_int8 import synthetic

    root = tmp_path_factory.mktemp("cluster_videos")
    for i in range(VIDEOS):
        synthetic.write_clip(root / f"clip{i}.mp4", seconds=3, fps=8, seed=40 + i)
    (root / "broken.mp4").write_text("not a video")
    return root


def _uvq(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from uvq_int8.cli import main; "
                           "raise SystemExit(main())", *argv], capture_output=True, text=True,
                          **kwargs)


@pytest.fixture(scope="module")
def dir_jobs_rows(built_models, video_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster_jobs") / "rows.jsonl"
    result = _uvq("batch", str(video_dir), "--jobs", "2", "--format", "jsonl", "--output",
                  str(out), "--quiet", "--backend", BACKEND, "--model-dir", str(built_models))
    assert result.returncode == 1, result.stderr[-3000:]  # broken.mp4
    rows = batch.read_rows(out)
    assert len(rows) == VIDEOS + 1
    return {r["path"]: r for r in rows}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """One ``ray start --block`` in a session of its own: ``kill`` ends it and all it
    started, and nothing else."""

    def __init__(self, name: str, args: list[str], log_dir: Path):
        # Ray's unix sockets live under the temp dir, whose path must stay short.
        self.temp_dir = tempfile.mkdtemp(prefix=f"uvqray{name}", dir="/tmp")
        self.log = log_dir / f"{name}.log"
        env = {**os.environ, **RAY_ENV}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [RAY, "start", "--block", "--node-ip-address=127.0.0.1",
                 "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
                 f"--dashboard-agent-listen-port={_free_port()}",
                 f"--metrics-export-port={_free_port()}",
                 # Rows are small; the default reserves 30% of the machine's memory.
                 f"--object-store-memory={100 * 1024 * 1024}", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self, deadline: float) -> None:
        while b"Ray runtime started" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"Ray node did not start:\n{self.tail()}"
            time.sleep(0.5)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def pids(self) -> list[int]:
        """This node's processes: its session (``ray start``, raylet, agents, and the
        workers, which Ray puts in process groups of their own)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.proc.pid:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to the node's process group, then to every process left in its session."""
        for kill, target in [(os.killpg, self.proc.pid)] + [(os.kill, p) for p in self.pids()]:
            try:
                kill(target, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill(signal.SIGKILL)  # whatever the group still holds
        self.proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _rows_so_far(path: Path) -> list[dict]:
    """The whole rows of a JSONL file being written."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True)
            if line.endswith("\n")]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture()
def two_nodes(tmp_path, request):
    """A head with 2 CPUs (one actor's and one spare, for the actor restarted when the
    worker dies) and a worker node with 1 CPU; ``(address, head, worker)``."""
    nodes: list[Node] = []
    request.addfinalizer(lambda: [n.stop() for n in reversed(nodes)])
    deadline = time.monotonic() + 180
    port = _free_port()
    head = Node("head", ["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"],
                tmp_path)
    nodes.append(head)
    head.wait_started(deadline)
    while not _listening(port):
        assert time.monotonic() < deadline, head.tail()
        time.sleep(0.5)
    address = f"127.0.0.1:{port}"
    worker = Node("worker", [f"--address={address}", "--num-cpus=1"], tmp_path)
    nodes.append(worker)
    worker.wait_started(deadline)
    return address, head, worker


def test_worker_node_killed_mid_run_gives_the_jobs_rows(two_nodes, built_models, video_dir,
                                                        dir_jobs_rows, tmp_path):
    address, head, worker = two_nodes
    out = tmp_path / "rows.jsonl"
    cli = subprocess.Popen(
        [sys.executable, "-c", "from uvq_int8.cli import main; raise SystemExit(main())",
         "batch", str(video_dir), "--engine", "ray", "--address", address, "--jobs", "2",
         "--format", "jsonl", "--output", str(out), "--quiet",
         "--backend", BACKEND, "--model-dir", str(built_models)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **RAY_ENV}, start_new_session=True)
    try:
        # Kill the worker node when the first video is scored (the broken file's row comes
        # sooner), while its actor is at work: both actors have loaded the models by then.
        deadline = time.monotonic() + 180
        while not any(row["error"] is None for row in _rows_so_far(out)):
            assert cli.poll() is None, cli.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no video scored within 180 s"
            time.sleep(0.2)
        on_worker = [p for p in worker.pids() if b"_Scorer" in _cmdline(p)]
        written = len(_rows_so_far(out))
        worker.kill()
        worker.proc.wait(timeout=30)
        assert on_worker, "no scorer actor ran on the worker node"
        assert written < VIDEOS + 1, "every row was written before the kill"
        _, stderr = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 1, stderr[-3000:]  # broken.mp4
    assert f"scored {VIDEOS} of {VIDEOS + 1} videos, 1 failed" in stderr, stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == sorted(dir_jobs_rows)  # one row per video
    for row in lines:
        expected = dir_jobs_rows[row["path"]]
        for column in R.COLUMNS:
            if column != "seconds":
                assert row[column] == expected[column], (row["path"], column)
