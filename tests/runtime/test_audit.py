"""The runtime audit: settings, frame sample, the breach test, and ``uvq --audit`` end to end
(audit deltas equal a separate float32 run; main logits unchanged; exit 4 only for a set
whose audited frames contradict its promise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uvq_int8.backends import NETS
from uvq_int8.runtime import audit as A
from uvq_int8 import config as C
from uvq_int8.runtime import manifest as mf



# --------------------------------------------------------------------------- pieces

def test_the_sample_is_deterministic_spread_and_never_empty_when_on():
    assert A.sample_indices(100, 0.05) == [10, 30, 50, 70, 90]
    assert A.sample_indices(5, 0.2) == [2]
    assert A.sample_indices(3, 0.01) == [1]           # at least one frame
    assert A.sample_indices(4, 1.0) == [0, 1, 2, 3]
    assert A.sample_indices(10, 0) == [] and A.sample_indices(0, 0.5) == []
    assert A.sample_indices(37, 0.3) == A.sample_indices(37, 0.3)


def test_audit_settings_follow_flag_env_config_default(clean_env, monkeypatch):
    cfg = clean_env / "c.toml"
    cfg.write_text('audit = 0.1\naudit_budget = 0.3\naudit_strict = true\n')
    monkeypatch.setenv("UVQ_CONFIG", str(cfg))
    got = C.resolve()
    assert (got.audit.value, got.audit_budget.value, got.audit_strict.value) == (0.1, 0.3, True)
    assert got.audit.source.startswith("config ")
    monkeypatch.setenv("UVQ_AUDIT", "0.25")
    monkeypatch.setenv("UVQ_AUDIT_STRICT", "no")
    got = C.resolve(audit_budget=0.05)
    assert (got.audit.value, got.audit.source) == (0.25, "env UVQ_AUDIT")
    assert (got.audit_budget.value, got.audit_budget.source) == (0.05, "flag")
    assert got.audit_strict.value is False
    monkeypatch.delenv("UVQ_CONFIG")
    monkeypatch.delenv("UVQ_AUDIT")
    monkeypatch.delenv("UVQ_AUDIT_STRICT")
    got = C.resolve()
    assert (got.audit.value, got.audit_budget.value, got.audit_strict.value) == (0.0, None, False)
    assert [k for k, _, _ in got.as_rows()][-3:] == ["audit", "audit_budget", "audit_strict"]


@pytest.mark.parametrize("key,value,needle", [
    ("audit", "1.5", "between 0"), ("audit", "lots", "fraction"),
    ("audit_budget", "-1", "non-negative"), ("audit_strict", "maybe", "true or false")])
def test_bad_audit_settings_say_what_is_wrong(clean_env, monkeypatch, key, value, needle):
    monkeypatch.setenv(f"UVQ_{key.upper()}", value)
    with pytest.raises(C.ConfigError, match=needle):
        C.resolve()


class _Ref:
    """A stand-in float32 model set whose logit is the frame's mean."""

    def features(self, frame):
        return float(frame.mean()), None

    def aggregate(self, content, _distortion):
        return content, 0.0


def test_the_result_reports_deltas_and_calls_a_pattern_a_breach():
    auditor = A.Auditor(_Ref(), [0, 2, 4], budget=0.1)
    for i in range(5):
        auditor.observe(i, np.full((2, 2), 1.0), 1.0 + (0.5 if i in (2, 4) else 0.0))
    result = auditor.result()
    assert result["frames"] == [0, 2, 4]
    assert result["logit_deltas"] == pytest.approx([0, 0.5, 0.5])
    assert result["max_logit_delta"] == pytest.approx(0.5)
    assert result["fraction_within"] == pytest.approx(1 / 3) and result["exceeded"] is True
    one = A.Auditor(_Ref(), [0], budget=0.1)
    one.observe(0, np.zeros((2, 2)), 0.5)
    assert one.result()["exceeded"] is False          # one unlucky frame is not a breach
    report_only = A.Auditor(_Ref(), [0], budget=None)
    report_only.observe(0, np.zeros((2, 2)), 0.5)
    assert report_only.result()["exceeded"] is None and report_only.result()["budget"] is None


# --------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def models_dir(request) -> Path:
    given = os.environ.get("UVQ_INT8_TEST_MODELS")  # a set built by hand, to iterate faster
    return Path(given) if given else request.getfixturevalue("built_models")


def _labelled_auto(src: Path, dest: Path, backend_suffix: str, budget: float) -> Path:
    """``src``'s files of one backend copied under the auto names, recorded as an auto build
    with logit budget ``budget``."""
    dest.mkdir(parents=True)
    manifest = mf.load(src)
    entries = {}
    for net in NETS:
        name = f"{net}_net{backend_suffix if net != 'aggregation' else ''}.tflite"
        target = f"{net}_net_auto.tflite"
        shutil.copy(src / name, dest / target)
        entry = dict(manifest.files[name])
        entry.update(filename=target, backend="auto", recipe="auto",
                     recipe_options={"choice": {"auto_version": 2, "max_logit_delta": budget,
                                                "promise": {"fraction": 0.95}}})
        entries[target] = entry
    for net in NETS:  # the float32 files the audit compares against
        name = f"{net}_net.tflite"
        shutil.copy(src / name, dest / name)
        entries[name] = manifest.files[name]
    mf.update(dest, entries)
    return dest


def _uvq(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvq_int8.cli.main", "uvq", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=900)


def _score(video: Path, model_dir: Path, backend: str, *extra: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from uvq_int8.cli import uvq_main; "
                               "sys.exit(uvq_main(sys.argv[1:]))",
         str(video), "--backend", backend, "--model-dir", str(model_dir), "--threads", "2",
         "--output_all_stats", "--quiet", *extra],
        capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("UVQ_")})
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, data, proc.stderr


@pytest.fixture(scope="module")
def sets(models_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("audit")
    return {"bad": _labelled_auto(models_dir, base / "bad", "_int4", 0.02),
            "static": _labelled_auto(models_dir, base / "static", "_int8_static", 3.0)}


def test_audit_deltas_equal_a_separate_float32_run_and_main_logits_are_untouched(
        sets, reference_dir):
    video = reference_dir / "sample_landscape.mp4"
    code, audited, err = _score(video, sets["static"], "auto", "--audit", "0.2")
    assert code == 0, err
    audit = audited["audit"]
    assert audit["frames"] == A.sample_indices(len(audited["per_frame_logits"]), 0.2)
    assert audit["budget"] == 3.0 and "auto build" in audit["budget_basis"]
    code, plain, err = _score(video, sets["static"], "auto")
    assert code == 0, err
    assert "audit" not in plain
    assert audited["per_frame_logits"] == plain["per_frame_logits"]   # bit for bit
    code, ref, err = _score(video, sets["static"], "float32")
    assert code == 0, err
    expected = [abs(plain["per_frame_logits"][i] - ref["per_frame_logits"][i])
                for i in audit["frames"]]
    assert audit["logit_deltas"] == pytest.approx(expected, abs=1e-6)
    assert audit["max_logit_delta"] == pytest.approx(max(expected), abs=1e-6)
    assert audit["exceeded"] is False and audit["fraction_within"] == 1.0


def test_a_bad_set_fails_strict_and_warns_otherwise(sets, reference_dir):
    video = reference_dir / "sample_landscape.mp4"
    code, data, err = _score(video, sets["bad"], "auto", "--audit", "1", "--audit-strict")
    assert code == 4, err
    assert data["audit"]["exceeded"] is True and data["audit"]["budget"] == 0.02
    assert "contradicts 'at least 95% of frames within 0.02'" in err
    code, data, err = _score(video, sets["bad"], "auto", "--audit", "1")
    assert code == 0 and "uvq: audit:" in err and data["audit"]["exceeded"] is True


def test_a_good_set_passes_strict(models_dir, reference_dir):
    video = reference_dir / "sample_landscape.mp4"
    code, data, err = _score(video, models_dir, "fp16", "--audit", "1", "--audit-budget", "0.1",
                             "--audit-strict")
    assert code == 0, err
    assert data["audit"]["exceeded"] is False and data["audit"]["budget"] == 0.1
    assert data["audit"]["budget_basis"] == "--audit-budget"


def test_without_float32_files_the_audit_says_what_is_missing(models_dir, reference_dir,
                                                              tmp_path):
    only = tmp_path / "m"
    only.mkdir()
    entries = {}
    manifest = mf.load(models_dir)
    for net in NETS:
        name = f"{net}_net_fp16.tflite"
        shutil.copy(models_dir / name, only / name)
        entries[name] = manifest.files[name]
    mf.update(only, entries)
    code, _, err = _score(reference_dir / "sample_landscape.mp4", only, "fp16", "--audit", "0.5")
    assert code == 1
    assert "--audit needs the float32 files" in err and "uvq-int8 build --backend float32" in err


def test_batch_rows_carry_the_audit_and_strict_exits_4(sets, reference_dir, tmp_path):
    """``uvq-int8 batch --audit``: every row's ``audit`` column holds the same entry as ``uvq
    --output_all_stats``; a set whose audited frames contradict its promise exits 4 when
    strict, and warns (exit 0) otherwise."""
    videos = [reference_dir / "sample_landscape.mp4", reference_dir / "sample_portrait.mp4"]
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{v}\n" for v in videos))

    def batch(model_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from uvq_int8.cli import main; "
                                   "sys.exit(main(sys.argv[1:]))",
             "batch", str(listing), "--output", str(out), "--backend", "auto", "--model-dir",
             str(model_dir), "--threads", "2", "--quiet", *extra],
            capture_output=True, text=True, timeout=900,
            env={k: v for k, v in os.environ.items() if not k.startswith("UVQ_")})

    proc = batch(sets["bad"], tmp_path / "strict.jsonl", "--audit", "1", "--audit-strict")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.count("uvq: audit:") == 2
    rows = [json.loads(line) for line in (tmp_path / "strict.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(v) for v in videos]
    code, single, err = _score(videos[0], sets["bad"], "auto", "--audit", "1")
    assert json.loads(rows[0]["audit"]) == single["audit"]

    proc = batch(sets["bad"], tmp_path / "warn.csv", "--format", "csv", "--audit", "1")
    assert proc.returncode == 0 and proc.stderr.count("uvq: audit:") == 2, proc.stderr
    proc = batch(sets["static"], tmp_path / "off.jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "off.jsonl").read_text().splitlines()]
    assert [r["audit"] for r in rows] == [None, None]
