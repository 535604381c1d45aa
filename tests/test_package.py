"""The runtime side must not need torch: importing it and building the CLI pull none in."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, sys
import uvq_int8, uvq_int8.runtime, uvq_int8.runtime.scoring, uvq_int8.runtime.video, uvq_int8.verify
importlib.import_module("uvq_int8.cli.main").build_parser()
heavy = [m for m in ("torch", "litert_torch", "ai_edge_quantizer", "tensorflow") if m in sys.modules]
print(",".join(heavy))
"""


def test_runtime_and_cli_import_no_torch_or_tensorflow():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_help_of_every_command_exits_zero():
    for args in (["--help"], ["build", "--help"], ["verify", "--help"], ["demo", "--help"],
                 ["patch", "--help"], ["backends", "--help"], ["config", "--help"]):
        out = subprocess.run([sys.executable, "-m", "uvq_int8", *args], capture_output=True,
                             text=True)
        assert out.returncode == 0 and "usage: uvq-int8" in out.stdout, (args, out.stderr)
    out = subprocess.run([sys.executable, "-c", "from uvq_int8.cli import uvq_main; "
                          "raise SystemExit(uvq_main(['--help']))"], capture_output=True, text=True)
    assert out.returncode == 0 and "--output_all_stats" in out.stdout
