"""The README's commands, run exactly as a new user types them.

The quick start once broke when a backend was added, because no test ran the demo's
defaults. This test keeps no copy of the commands: it reads them from README.md.

- Sections run: "Quick start" and "Run the tests".
- Exempt: the line that runs the test suite itself (it would recurse), and the whole
  "With the official checkpoints" section, which needs the official UVQ weights (not
  available here; the proxy weights stand in for them everywhere else).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from uvq_int8 import convert as _convert
from uvq_int8 import verify as _verify
from uvq_int8.cli import demo_cmd
from uvq_int8.errors import UserError

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN_SECTIONS = ("Quick start", "Run the tests")
SHELL_FENCES = ("bash", "sh", "shell", "console")


def readme_commands(text: str, sections=RUN_SECTIONS) -> list[str]:
    """Every command in the fenced shell blocks under the named ``##`` headings."""
    commands: list[str] = []
    section, fence = None, None
    pending = ""
    for line in text.splitlines():
        if fence is None:
            heading = re.match(r"##\s+(.*)", line)
            if heading and not line.startswith("###"):
                section = heading.group(1).strip()
            opening = re.match(r"```\s*(\w*)", line)
            if opening:
                fence = opening.group(1)
            continue
        if line.startswith("```"):
            fence = None
            continue
        if fence not in SHELL_FENCES or not any(section and section.startswith(s)
                                                 for s in sections):
            continue
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(pending)
        pending = ""
    return commands


def runs_test_suite(command: str) -> bool:
    return "pytest" in command


def isolated_env(home: Path) -> dict[str, str]:
    """The user's environment with every per-user location inside ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UVQ_")}
    for key, sub in (("HOME", ""), ("TMPDIR", "tmp"), ("XDG_CONFIG_HOME", ".config"),
                     ("XDG_DATA_HOME", ".local/share"), ("XDG_CACHE_HOME", ".cache"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_RUNTIME_DIR", "run")):
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path)
    return env


def run_readme(text: str, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run each command (from the repository's root, as the README says); stop at the first
    failure, which is returned last."""
    done = []
    for command in readme_commands(text):
        if runs_test_suite(command):
            continue
        result = _run_command(command, env)
        done.append(result)
        if result.returncode != 0:
            break
    return done


def _run_command(command: str, env: dict[str, str],
                 timeout: float = 1800) -> subprocess.CompletedProcess:
    # Its own process group, so a timeout ends the demo and its workers too, not just bash.
    proc = subprocess.Popen(["bash", "-c", command], cwd=REPO, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _outside_state() -> dict[str, object]:
    """What a leak would change: the checkout (ignored files too), and anything of ours in
    the real per-user and temporary directories. Other programs may write there at the same
    time (a shared machine), so only names that say uvq count."""
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO,
                            capture_output=True, text=True)
    home = Path.home()
    listings = {}
    for place in (Path(tempfile.gettempdir()), home, home / ".config", home / ".cache",
                  home / ".local" / "share", home / ".local" / "state"):
        try:
            listings[str(place)] = sorted(p.name for p in place.iterdir()
                                          if "uvq" in p.name.lower())
        except OSError:
            listings[str(place)] = None
    return {"git": status.stdout if status.returncode == 0 else None, **listings}


def test_readme_commands_find_the_quick_start():
    commands = readme_commands(README.read_text())
    assert any("uvq-int8 demo" in c for c in commands)
    assert any(runs_test_suite(c) for c in commands)
    # the official-checkpoint section is never run
    assert not any("--uvq-root" in c for c in commands)


def test_readme_quick_start_runs_as_written(tmp_path):
    before = _outside_state()
    env = isolated_env(tmp_path / "home")
    results = run_readme(README.read_text(), env)
    assert len(results) >= 1, "no README command ran"
    for result in results:
        assert result.returncode == 0, f"{result.args[-1]!r} failed:\n{result.stderr[-3000:]}"
    out = "".join(r.stdout for r in results)
    assert demo_cmd.TABLE_TITLE in out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5:
            rows[cells[0]] = cells
    expected = [b.name for b in _convert.buildable_backends(include_auto=False)]
    assert [name for name in rows if name in expected] == expected
    assert float(rows["float32"][4]) == 0.0
    assert _outside_state() == before, "a README command left files outside its directory"
    assert not any(Path(env["TMPDIR"]).iterdir()), "temporary files were left behind"


def test_a_broken_readme_command_fails_the_extractor(tmp_path):
    # The permanent negative twin: the same extractor and runner on a changed copy.
    text = README.read_text()
    broken = text.replace("uvq-int8 demo", "uvq-int8 demo --backend int9")
    assert broken != text
    results = run_readme(broken, isolated_env(tmp_path / "home"))
    assert results and results[-1].returncode != 0
    assert "unknown backend 'int9'" in results[-1].stderr


def test_all_means_one_thing_per_command(tmp_path):
    # Written out by hand, so a wrong definition of `all` cannot pass.
    assert [b.name for b in _convert.buildable_backends(include_auto=False)] == [
        "float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static"]
    assert [b.name for b in _convert.buildable_backends(include_auto=True)] == [
        "float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static", "auto"]
    for name in ("content_net.tflite", "aggregation_net.tflite", "distortion_net_int8.tflite"):
        (tmp_path / name).write_bytes(b"")
    assert [b.name for b in _verify.backends_with_files(tmp_path)] == ["float32", "int8"]
    # the demo asks build's function
    assert demo_cmd.demo_backends("all", None) == [
        "float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static"]
    assert demo_cmd.demo_backends("all", 1.0)[-1] == "auto"
    assert demo_cmd.demo_backends("int8-static", None) == ["float32", "int8-static"]


@pytest.mark.parametrize("args, message", [
    (["--backend", "auto"], "--backend auto needs --max-logit-delta D"),
    (["--max-logit-delta", "-1"], "--max-logit-delta must be a non-negative number"),
    (["--backend", "int9"], "unknown backend 'int9'"),
])
def test_demo_refuses_before_any_work(tmp_path, args, message):
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "uvq_int8", "demo", "--workdir",
                             str(work), *args], capture_output=True, text=True,
                            env=isolated_env(tmp_path / "home"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not work.exists()


def test_demo_without_ffmpeg_says_so_before_any_work(tmp_path):
    env = isolated_env(tmp_path / "home")
    env["PATH"] = str(tmp_path / "empty-path")
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "uvq_int8", "demo", "--workdir",
                             str(work)], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr == ("uvq-int8: error: ffmpeg and ffprobe not found on PATH; install "
                             "ffmpeg (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew "
                             "install ffmpeg)\n")
    assert not work.exists()


def test_demo_backends_refuses_auto_without_budget():
    with pytest.raises(UserError, match="needs --max-logit-delta"):
        demo_cmd.demo_backends("float32,auto", None)
