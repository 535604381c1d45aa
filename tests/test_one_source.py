"""Each fact in one place: these hold the line that issue 14 drew.

- one place renames temporary files into place and calls fsync (uvq_int8.util);
- one reader of manifest.json (uvq_int8.runtime.manifest);
- one NETS literal (uvq_int8.backends), which everything else imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "uvq_int8").rglob("*.py"), *(REPO / "benchmarks").glob("*.py")])
NETS = ("content", "distortion", "aggregation")


def _calls(tree: ast.AST, module: str, attr: str) -> int:
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and n.func.attr == attr
               and isinstance(n.func.value, ast.Name) and n.func.value.id == module)


def _trees():
    for path in SOURCES:
        yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def test_one_rename_and_fsync_site():
    replaces = {rel: _calls(t, "os", "replace") for rel, t in _trees()}
    fsyncs = {rel: _calls(t, "os", "fsync") for rel, t in _trees()}
    assert {rel: n for rel, n in replaces.items() if n} == {"uvq_int8/util.py": 1}
    assert {rel for rel, n in fsyncs.items() if n} == {"uvq_int8/util.py"}


def test_one_manifest_reader():
    reader = "uvq_int8/runtime/manifest.py"
    for rel, tree in _trees():
        literals = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                    and n.value == "manifest.json"]
        if rel != reader:
            assert not literals, f"{rel} names manifest.json itself"
        for fn in ast.walk(tree):
            if rel == reader or not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | {
                n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
            if names & {"MANIFEST_NAME", "manifest_path"}:
                assert not names & {"json", "loads", "read_text", "read_bytes", "open"}, \
                    f"{rel}:{fn.name} reads a manifest itself"


def test_one_nets_literal():
    found = [rel for rel, tree in _trees() for n in ast.walk(tree)
             if isinstance(n, (ast.Tuple, ast.List))
             and [getattr(e, "value", None) for e in n.elts] == list(NETS)]
    assert found == ["uvq_int8/backends.py"]
