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


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants that are not docstrings (f-string parts included)."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_decoding_facts_are_written_once():
    # What is verified about ffmpeg 5.1 (the version check, the containers, the pixel
    # formats), upstream's scale chain and the bounded queue each live in one module of
    # uvq_int8.runtime.decode; both decoders and the batch workers import them.
    facts = {
        "the ffmpeg 5.1 check": lambda s: "5\\.1" in s,
        "the verified containers": lambda s: s == "matroska",
        "the verified pixel formats": lambda s: s == "yuvj420p",
        "upstream's scale chain": lambda s: s == ":h=" or "w=1920:h=1080" in s,
    }
    where = {fact: sorted(rel for rel, tree in _trees()
                          if any(test(s) for s in _code_strings(tree)))
             for fact, test in facts.items()}
    assert where == {fact: ["uvq_int8/runtime/decode/verified.py"] for fact in facts}
    queues = sorted(rel for rel, tree in _trees() if rel.startswith("uvq_int8/")
                    and _calls(tree, "queue", "Queue"))
    assert queues == ["uvq_int8/runtime/decode/pipe.py"]
    # ffmpeg's -r rule (drop below -1.1 output slots, repeat above 1.1): one model of it,
    # which both the PyAV decoder and the batch rows' source frame times use.
    rule = sorted(rel for rel, tree in _trees() if any(
        isinstance(n, ast.Constant) and n.value == 1.1 for n in ast.walk(tree)))
    assert rule == ["uvq_int8/runtime/decode/frame_choice.py"]


def test_the_decoder_table_names_the_configurable_decoders():
    from uvq_int8 import config
    from uvq_int8.runtime import decode

    assert tuple(decode.DECODERS) == config.DECODERS
