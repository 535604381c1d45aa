"""The runtime side must not need torch: importing it and building the CLI pull none in."""

from __future__ import annotations

import subprocess
import sys

# The one check of the torch boundary: the runtime (every module of it), the CLI with
# every subcommand's parser, the build and verify packages' own imports, and the `uvq`
# console script as it is installed. Ray (the optional engine of `uvq-int8 batch`) is
# imported only when that engine runs.
CHECK = """
import contextlib, importlib, io, pkgutil, sys
from importlib.metadata import entry_points
import uvq_int8, uvq_int8.runtime, uvq_int8.cli, uvq_int8.convert, uvq_int8.verify
for info in pkgutil.walk_packages(uvq_int8.runtime.__path__, "uvq_int8.runtime."):
    importlib.import_module(info.name)
importlib.import_module("uvq_int8.cli.main").build_parser()
(uvq,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "uvq"]
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    uvq.load()(["--help"])
heavy = [m for m in ("torch", "litert_torch", "ai_edge_quantizer", "tensorflow", "ray")
         if m in sys.modules]
print(",".join(heavy))
"""


def test_runtime_cli_and_uvq_entry_point_import_no_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_help_of_every_command_exits_zero():
    for args in (["--help"], ["build", "--help"], ["verify", "--help"], ["demo", "--help"],
                 ["patch", "--help"], ["backends", "--help"], ["config", "--help"],
                 ["batch", "--help"]):
        out = subprocess.run([sys.executable, "-m", "uvq_int8", *args], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "usage: uvq-int8" in out.stdout, (args, out.stderr)
    out = subprocess.run([sys.executable, "-c", "from uvq_int8.cli import uvq_main; "
                          "raise SystemExit(uvq_main(['--help']))"], capture_output=True, text=True)
    assert out.returncode == 0 and "--output_all_stats" in out.stdout


# Folder names that common tools take for generated output and skip: ruff's and black's
# default excludes, pytest's norecursedirs, GitHub's Python .gitignore.
GENERATED_NAMES = {"build", "dist", "out", "target", "generated"}


def test_no_source_folder_is_named_like_build_output():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bad = [str(p.relative_to(repo)) for top in ("uvq_int8", "tests", "benchmarks")
           for p in (repo / top).rglob("*") if p.is_dir() and p.name in GENERATED_NAMES]
    assert bad == []


def test_every_benchmark_names_the_machine_it_measured_on():
    # Speed-ups depend on the instruction set (docs/benchmarks.md): a benchmark that writes
    # JSON or a table without machine_info() (cpu, cpu_features, isa) cannot be compared.
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(p for p in bench.glob("*.py") if p.name != "common.py")  # not a benchmark
    assert len(scripts) >= 9
    missing = [p.name for p in scripts if "machine_info()" not in p.read_text()]
    assert missing == []


def test_benchmarks_and_tests_do_not_edit_sys_path():
    # A benchmark runs as a script, so Python puts benchmarks/ on sys.path itself (they
    # share benchmarks/common.py); the tests run in importlib mode.
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    files = [*(repo / "benchmarks").glob("*.py"), *(repo / "tests").rglob("*.py")]
    needles = tuple("sys.path." + verb for verb in ("insert", "append"))
    edits = [p.name for p in files if any(n in p.read_text() for n in needles)]
    assert edits == []
