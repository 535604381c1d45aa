"""The upstream patches: well-formed, idempotent, refused on foreign trees, reverted exactly.

Everything here runs without the upstream tree. The shipped patches are checked
as files, the patch engine on small synthetic trees, and the host-side module
that patch 0002 adds (uvq_backends.py) is taken out of the patch and run
against the installed package's entry points. One test applies the series to
the real files when a mirror of madhuhegde/uvq is on this machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from uvq_int8 import backends as B
from uvq_int8 import config as C
from uvq_int8 import patching as P
from uvq_int8.cli.main import main as cli

REPO = Path(__file__).resolve().parents[1]
TFLITE = "uvq1p5_pytorch/utils/uvq1p5_tflite.py"
HOST = "uvq1p5_pytorch/utils/uvq_backends.py"
INFERENCE = "uvq_inference.py"
INTENDED = {  # patch number -> files it may touch
    "0001": {TFLITE},
    "0002": {TFLITE, HOST},
    "0003": {TFLITE},
    "0004": {INFERENCE},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------ the shipped patch files

@pytest.fixture(scope="module")
def series():
    return P.load_series()


def test_series_is_the_four_intended_patches_in_order(series):
    assert [p.name[:4] for p in series] == sorted(INTENDED)
    for patch in series:
        assert set(patch.paths) == INTENDED[patch.name[:4]], patch.name
        assert patch.subject and patch.upstream == f"{P.UPSTREAM_REPO} {P.UPSTREAM_COMMIT}"


def test_every_touched_file_has_recorded_hashes_that_chain(series):
    last: dict[str, str] = {}
    for patch in series:
        assert set(patch.sha_before) == set(patch.sha_after) == set(patch.paths), patch.name
        for path in patch.paths:
            if path in last:  # what one patch leaves is what the next one starts from
                assert patch.sha_before[path] == last[path], (patch.name, path)
            last[path] = patch.sha_after[path]
    created = [fp for p in series for fp in p.files if fp.created]
    assert [fp.path for fp in created] == [HOST]
    host_patch = next(p for p in series if HOST in p.paths)
    assert host_patch.sha_before[HOST] == P.ABSENT
    assert host_patch.sha_after[HOST] == sha(host_source(series))


def test_patches_add_no_trailing_whitespace_and_no_import_of_our_package(series):
    for patch in series:
        for fp in patch.files:
            for hunk in fp.hunks:
                added = set(hunk.new) - set(hunk.old)
                assert not [l for l in added if l.rstrip(b"\n") != l.rstrip(b"\n").rstrip()], \
                    (patch.name, fp.path, hunk.header)
                assert not [l for l in added if b"uvq_int8" in l], (patch.name, fp.path)


def test_patch_counts_match_their_diffstat(series):
    for patch in series:
        text = (P.patch_dir() / patch.name).read_text()
        for fp in patch.files:
            stat_line = next(l for l in text.splitlines() if l.startswith(f" {fp.path} "))
            assert int(stat_line.split("|")[1].split()[0]) == fp.added + fp.removed


def test_host_module_compiles_and_imports_only_the_standard_library(series):
    import ast

    tree = ast.parse(host_source(series))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    allowed = {"os", "sys", "dataclasses", "importlib.metadata", "importlib_metadata",
               "tomllib", "tomli"}
    assert modules <= allowed, modules - allowed


def test_the_patches_come_from_the_top_level_folder():
    assert P.patch_dir().resolve() == (REPO / "patches").resolve()
    assert (REPO / "patches" / "README.md").is_file()


# ------------------------------------------------------------ the engine, on synthetic trees

BASE = {
    "pkg/a.py": b"".join(b"line %d\n" % i for i in range(1, 41)),
    "b.txt": b"alpha\r\nbeta\r\ngamma\r\ndelta\r\nend without newline",
}


def edit(text: bytes, old: bytes, new: bytes) -> bytes:
    assert text.count(old) == 1
    return text.replace(old, new)


def synthetic_series(tmp_path: Path) -> tuple[list[P.Patch], list[dict]]:
    """Three patches; the second edits lines the first added and creates a file."""
    s0 = dict(BASE, **{"pkg/new.py": None})
    s1 = dict(s0, **{"pkg/a.py": edit(s0["pkg/a.py"], b"line 10\n", b"line 10\nadded 1\n")})
    s2 = dict(s1, **{"pkg/a.py": edit(edit(s1["pkg/a.py"], b"added 1\n", b"added 2\n"),
                                      b"line 35\n", b"changed 35\n"),
                     "pkg/new.py": b"print('new')\n"})
    s3 = dict(s2, **{"b.txt": edit(s2["b.txt"], b"end without newline", b"end, still none")})
    stages = [s0, s1, s2, s3]
    patches = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        before, after = stages[i], stages[i + 1]
        paths = [p for p in sorted(before) if before[p] != after[p]]
        header = [f"Subject: [PATCH {i + 1}/3] step {i + 1}", "",
                  f"Upstream: {P.UPSTREAM_REPO} {P.UPSTREAM_COMMIT}"]
        header += [f"Sha256-Before: {P.sha256_bytes(before[p])} {p}" for p in paths]
        header += [f"Sha256-After: {P.sha256_bytes(after[p])} {p}" for p in paths]
        body = b"".join(P.unified_diff(p, before[p], after[p]) for p in paths)
        data = ("\n".join(header) + "\n---\n").encode() + body
        (tmp_path / f"000{i + 1}-step.patch").write_bytes(data)
        patches.append(P.parse_patch(data, f"000{i + 1}-step.patch"))
    return patches, stages


def make_tree(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        target = root / rel
        if data is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return root


def read_tree(root: Path, paths) -> dict:
    return {p: (root / p).read_bytes() if (root / p).exists() else None for p in paths}


def test_apply_is_idempotent_and_revert_is_byte_exact(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    tree = make_tree(tmp_path / "tree", stages[0])
    first = P.apply(tree, series=series)
    assert first.applied_before == 0 and first.exact
    assert read_tree(tree, stages[3]) == stages[3]
    again = P.apply(tree, series=series)
    assert not again.changes and again.applied_before == 3
    assert {s for _, s in again.steps} == {"already applied"}
    back = P.revert(tree, series=series)
    assert back.exact and read_tree(tree, stages[0]) == stages[0]
    assert not (tree / "pkg/new.py").exists()
    assert not P.revert(tree, series=series).changes
    assert not list(tree.rglob("*.tmp"))


def test_check_reports_without_writing(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    tree = make_tree(tmp_path / "tree", stages[0])
    result = P.apply(tree, check=True, series=series)
    assert result.changes and set(result.writes) == {"pkg/a.py", "pkg/new.py", "b.txt"}
    assert read_tree(tree, stages[0]) == stages[0]


def test_a_partly_patched_tree_is_completed_or_reverted(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    tree = make_tree(tmp_path / "tree", stages[1])
    assert P.apply(tree, check=True, series=series).applied_before == 1
    P.revert(tree, series=series)
    assert read_tree(tree, stages[0]) == stages[0]
    make_tree(tree, stages[2])
    P.apply(tree, series=series)
    assert read_tree(tree, stages[3]) == stages[3]


def test_hunks_still_apply_when_lines_moved(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    shifted = dict(stages[0], **{"pkg/a.py": b"# a local header\n" * 7 + stages[0]["pkg/a.py"]})
    tree = make_tree(tmp_path / "tree", shifted)
    result = P.apply(tree, series=series)
    assert result.mismatched == ("pkg/a.py",)  # local edits are reported, not lost
    assert (tree / "pkg/a.py").read_bytes().startswith(b"# a local header\n" * 7)
    P.revert(tree, series=series)
    assert read_tree(tree, shifted) == shifted


def test_a_tree_that_matches_neither_side_is_refused_naming_file_and_hunk(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    foreign = dict(stages[0], **{"pkg/a.py": edit(stages[0]["pkg/a.py"], b"line 9\n", b"nine\n")})
    tree = make_tree(tmp_path / "tree", foreign)
    with pytest.raises(P.PatchError) as err:
        P.apply(tree, series=series)
    message = str(err.value)
    assert "0001-step.patch" in message and "pkg/a.py" in message and "hunk 1 of 1" in message
    assert "'nine'" in message and "'line 9'" in message
    assert read_tree(tree, foreign) == foreign  # nothing written


def test_a_patched_tree_with_a_changed_hunk_names_the_patched_hunk(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    broken = dict(stages[3], **{"pkg/a.py": edit(stages[3]["pkg/a.py"], b"changed 35\n", b"x\n")})
    tree = make_tree(tmp_path / "tree", broken)
    for action in (P.apply, P.revert):
        with pytest.raises(P.PatchError, match=r"0002-step.patch: pkg/a.py: hunk 2 of 2 .* patched"):
            action(tree, series=series)
    assert read_tree(tree, broken) == broken


def test_missing_files_mean_a_foreign_tree(tmp_path):
    series, _ = synthetic_series(tmp_path / "patches")
    (tmp_path / "empty").mkdir()
    with pytest.raises(P.PatchError, match="not a madhuhegde/uvq checkout: pkg/a.py, b.txt not found"):
        P.apply(tmp_path / "empty", series=series)


def test_writes_are_all_or_nothing(tmp_path, monkeypatch):
    series, stages = synthetic_series(tmp_path / "patches")
    tree = make_tree(tmp_path / "tree", stages[0])
    calls = []
    real_replace = os.replace

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(P.PatchError, match="restored"):
        P.apply(tree, series=series)
    assert read_tree(tree, stages[0]) == stages[0]
    assert not [p for p in tree.rglob("*") if p.name.endswith(".tmp")]


def test_file_mode_is_kept(tmp_path):
    series, stages = synthetic_series(tmp_path / "patches")
    tree = make_tree(tmp_path / "tree", stages[0])
    (tree / "pkg/a.py").chmod(0o755)
    P.apply(tree, series=series)
    assert (tree / "pkg/a.py").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("bad,needle", [
    (b"no diff here\n", "no 'diff --git'"),
    (b"diff --git a/../x b/../x\n--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n", "outside"),
    (b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n", "header says 2/2"),
    (b"diff --git a/x b/y\n--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "renames"),
    (b"Sha256-Before: 123 x\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
     "malformed header"),
])
def test_malformed_patches_are_rejected(bad, needle):
    with pytest.raises(P.PatchError, match=needle):
        P.parse_patch(bad, "bad.patch")


@pytest.mark.parametrize("seed", range(6))
def test_unified_diff_round_trips(seed):
    import random

    rng = random.Random(seed)
    before = [b"l%d\n" % rng.randrange(8) for _ in range(rng.randrange(1, 60))]
    after = list(before)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(after) + 1)
        if rng.random() < 0.5 and at < len(after):
            del after[at]
        else:
            after.insert(at, b"new %d\n" % rng.randrange(100))
    if seed % 2:
        after[-1:] = [after[-1].rstrip(b"\n")] if after else []
    a, b = b"".join(before), b"".join(after)
    data = P.unified_diff("f.txt", a, b)
    if a == b:
        assert data == b""
        return
    fp = P.parse_patch(data).files[0]
    assert P.apply_file(fp, a) == b
    assert P.apply_file(fp, b, reverse=True) == a


# ------------------------------------------------------------ the command line

@pytest.fixture()
def synthetic_cli(tmp_path, monkeypatch):
    _, stages = synthetic_series(tmp_path / "patches")
    monkeypatch.setattr(P, "patch_dir", lambda: tmp_path / "patches")
    return make_tree(tmp_path / "tree", stages[0]), stages


def test_cli_check_apply_again_revert(synthetic_cli, capsys):
    tree, stages = synthetic_cli
    assert cli(["patch", str(tree), "--check"]) == 3
    assert "would apply" in capsys.readouterr().out
    assert read_tree(tree, stages[0]) == stages[0]
    assert cli(["patch", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "pkg/new.py (new)" in out and "byte-identical" in out
    assert cli(["patch", str(tree)]) == 0
    assert "nothing to do: all patches applied" in capsys.readouterr().out
    assert cli(["patch", str(tree), "--check"]) == 0
    assert cli(["patch", str(tree), "--revert"]) == 0
    assert "pkg/new.py (removed)" in capsys.readouterr().out
    assert read_tree(tree, stages[0]) == stages[0]


def test_cli_refusal_is_one_line_with_exit_1(synthetic_cli, capsys):
    tree, _ = synthetic_cli
    (tree / "b.txt").write_bytes(b"something else\n")
    assert cli(["patch", str(tree)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("uvq-int8: error:") and "b.txt: hunk 1 of 1" in err
    assert "Traceback" not in err


# ------------------------------------------------------------ the host lookup, against our package

def host_source(series) -> bytes:
    fp = next(f for p in series for f in p.files if f.path == HOST)
    return b"".join(fp.hunks[0].new)


# The ``host`` fixture (the patched host's resolver) is in conftest.py.


def env_for(clean_env, **values) -> dict:
    env = {"XDG_CONFIG_HOME": str(clean_env / "xdg-config"),
           "XDG_DATA_HOME": str(clean_env / "xdg-data")}
    env.update({k: str(v) for k, v in values.items()})
    return env


def test_nothing_configured_keeps_the_built_in_paths(host, clean_env):
    env = env_for(clean_env)
    assert host.select(environ=env) is None
    assert host.select(use_quantized=True, environ=env) is None  # the fork's own int8 files
    assert host.num_threads(environ=env) is None


@pytest.mark.parametrize("name", B.BUILTIN_ORDER)
def test_host_lookup_finds_every_builtin_backend(host, clean_env, name):
    backend = B.discover()[name]
    default = host.select(name, environ=env_for(clean_env))
    assert Path(host.DEFAULT_MODEL_DIR) == (
        Path(host.__file__).parents[2] / "models" / "tflite_models" / "uvq1.5").resolve()
    assert default.paths == {n: str(p) for n, p in backend.model_paths(host.DEFAULT_MODEL_DIR).items()}
    from_env = host.select(environ=env_for(clean_env, UVQ_BACKEND=name, UVQ_MODEL_DIR="/srv/m"))
    assert (from_env.backend, from_env.source) == (name, "UVQ_BACKEND")
    assert from_env.paths == {n: str(p) for n, p in backend.model_paths("/srv/m").items()}


def test_use_quantized_means_int8_once_anything_is_configured(host, clean_env):
    sel = host.select(use_quantized=True, environ=env_for(clean_env, UVQ_MODEL_DIR="/m"))
    assert sel.backend == "int8" and sel.paths["content"] == "/m/content_net_int8.tflite"
    assert host.select("fp16", use_quantized=True, environ=env_for(clean_env)).backend == "fp16"


def test_per_net_mix_matches_our_registry(host, clean_env):
    spec = "content=fp16, distortion=int8-static, aggregation=float32"
    sel = host.select(spec, environ=env_for(clean_env, UVQ_MODEL_DIR="/m"))
    assert sel.paths == {n: str(p) for n, p in B.get_backend(spec).model_paths("/m").items()}


@pytest.mark.parametrize("cfg_text,env", [
    ('backend = "int4"\nmodel_dir = "models"\nthreads = 3\n', {}),
    ('[uvq]\nbackend = "fp16"\nmodel_dir = "/abs/dir"\n', {"UVQ_THREADS": "2"}),
    ('[uvq]\nbackend = "fp16"\n', {"UVQ_BACKEND": "int8", "UVQ_MODEL_DIR": "/e"}),
    ('model_dir = "rel"\n', {}),
    # uvq's decoder key is valid in the shared file; the host decodes with upstream's code.
    ('backend = "int8"\nmodel_dir = "m"\ndecoder = "ffmpeg"\n', {}),
])
def test_host_follows_the_same_chain_as_uvq_int8_config(host, clean_env, monkeypatch,
                                                        cfg_text, env):
    cfg = clean_env / "cfgdir" / "uvq.toml"
    cfg.parent.mkdir()
    cfg.write_text(cfg_text)
    values = env_for(clean_env, UVQ_CONFIG=cfg, **env)
    ours = C.resolve(env=values)
    sel = host.select(environ=values)
    assert sel.backend == ours.backend.value
    assert sel.model_dir == str(ours.model_dir.value)
    expected_threads = ours.threads.value if ours.threads.source != "default" else None
    assert host.num_threads(environ=values) == expected_threads


def test_host_accepts_a_config_file_with_the_audit_keys(host, clean_env):
    """The host does not audit, but a config file shared with uvq may hold the audit keys."""
    cfg = clean_env / "cfgdir" / "uvq.toml"
    cfg.parent.mkdir()
    cfg.write_text('[uvq]\nbackend = "fp16"\naudit = 0.05\naudit_budget = 0.1\n'
                   'audit_strict = true\n')
    values = env_for(clean_env, UVQ_CONFIG=cfg)
    assert host.select(environ=values).backend == "fp16" == C.resolve(env=values).backend.value
    cfg.write_text('[uvq]\nbackend = "fp16"\naudits = 0.05\n')
    with pytest.raises(host.BackendError, match="unknown key.*audits"):
        host.select(environ=values)


def test_xdg_config_file_is_found(host, clean_env):
    path = clean_env / "xdg-config" / "uvq" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('backend = "int8"\n')
    sel = host.select(environ=env_for(clean_env))
    assert sel.backend == "int8" and sel.source == f"config {path}"


@pytest.mark.parametrize("spec,env,needle", [
    ("int9", {}, "unknown backend 'int9'.*float32, fp16"),
    ("content=fp16,distortion=int8", {}, "aggregation"),
    ("colour=fp16,distortion=int8,aggregation=float32", {}, "unknown net 'colour'"),
    (None, {"UVQ_CONFIG": "/no/such.toml"}, "does not exist"),
    (None, {"UVQ_BACKEND": "int8", "UVQ_THREADS": "zero"}, "threads from UVQ_THREADS"),
])
def test_host_errors_say_what_to_fix(host, clean_env, spec, env, needle):
    with pytest.raises(host.BackendError, match=needle):
        values = env_for(clean_env, **env)
        host.select(spec, environ=values)
        host.num_threads(environ=values)


def test_a_third_party_plugin_serves_the_host_without_our_classes(host, clean_env, tmp_path,
                                                                 monkeypatch):
    site = tmp_path / "site"
    (site / "other_backend.py").parent.mkdir(parents=True)
    (site / "other_backend.py").write_text(textwrap.dedent("""
        from pathlib import Path

        class Tiny:
            name = "tiny"
            description = "A plugin that knows nothing of uvq_int8."
            recipes = {"content": "x", "distortion": "x", "aggregation": "x"}

            def model_paths(self, model_dir):
                return {net: Path(model_dir) / "tiny" / f"{net}.tflite"
                        for net in ("content", "distortion", "aggregation")}

        TINY = Tiny()
    """))
    dist = site / "other_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[uvq.backends]\ntiny = other_backend:TINY\n")
    monkeypatch.syspath_prepend(str(site))
    sel = host.select(environ=env_for(clean_env, UVQ_BACKEND="tiny", UVQ_MODEL_DIR="/m"))
    assert sel.paths["distortion"] == "/m/tiny/distortion.tflite"
    mix = host.select("content=tiny,distortion=int8,aggregation=float32",
                      environ=env_for(clean_env, UVQ_MODEL_DIR="/m"))
    assert mix.paths == {"content": "/m/tiny/content.tflite",
                         "distortion": "/m/distortion_net_int8.tflite",
                         "aggregation": "/m/aggregation_net.tflite"}


# ------------------------------------------------------------ the real upstream files, if mirrored

def _mirror() -> Path | None:
    path = Path(os.environ.get("UVQ_FORK_GIT", REPO.parent / ".mirror" / "madhuhegde+uvq" / "repo"))
    return path if path.is_dir() and shutil.which("git") else None


UPSTREAM_FILES = [TFLITE, INFERENCE, "utils/video_reader.py", "utils/probe.py",
                  "models/tflite_models/uvq1.5/aggregation_net.tflite"]


@pytest.fixture()
def upstream_tree(tmp_path) -> Path:
    mirror = _mirror()
    if mirror is None:
        pytest.skip("no git mirror of madhuhegde/uvq (set UVQ_FORK_GIT)")
    root = tmp_path / "uvq"
    for rel in UPSTREAM_FILES:
        try:
            data = subprocess.run(["git", "--git-dir", str(mirror), "show",
                                   f"{P.UPSTREAM_COMMIT}:{rel}"],
                                  check=True, capture_output=True).stdout
        except subprocess.CalledProcessError:
            pytest.skip(f"{rel} at {P.UPSTREAM_COMMIT[:7]} is not in the mirror")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_real_upstream_files_patch_and_revert_exactly(upstream_tree, series):
    pristine = read_tree(upstream_tree, [TFLITE, INFERENCE, HOST])
    result = P.apply(upstream_tree)
    assert result.exact and result.applied_before == 0
    for path, digest in P.recorded_sha256(series, final=True).items():
        assert sha((upstream_tree / path).read_bytes()) == digest
    for path in (TFLITE, INFERENCE, HOST):
        compile((upstream_tree / path).read_bytes(), path, "exec")
    assert not P.apply(upstream_tree).changes
    assert P.revert(upstream_tree).exact
    assert read_tree(upstream_tree, pristine) == pristine


def test_patched_upstream_scores_features_without_tensorflow(upstream_tree, golden_frames,
                                                            clean_env):
    """The fork's own aggregation file, through the patched class on ai_edge_litert."""
    pytest.importorskip("ai_edge_litert")
    P.apply(upstream_tree)
    code = textwrap.dedent("""
        import sys, numpy as np
        sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
        from uvq1p5_pytorch.utils import uvq1p5_tflite as T
        g = np.load(sys.argv[1])
        agg = T.AggregationNetTFLite()
        print(T.Interpreter.__module__)
        print(" ".join(str(float(s)) for s in agg(g["content_features"], g["distortion_features"]).ravel()))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UVQ_")}
    env["XDG_CONFIG_HOME"] = str(clean_env / "xdg-config")
    ref = Path(__file__).resolve().parents[1].parent / "shared" / "uvq_reference"
    ref = Path(os.environ.get("UVQ_REFERENCE_DIR", ref))
    out = subprocess.run([sys.executable, "-c", code, str(ref / "golden_frames.npz")],
                         cwd=upstream_tree, env=env, capture_output=True, text=True, check=True)
    module, scores = out.stdout.split("\n")[:2]
    assert module.startswith("ai_edge_litert")
    expected = golden_frames["scores"].ravel()
    assert [float(s) for s in scores.split()] == pytest.approx(expected.tolist(), abs=1e-6)
