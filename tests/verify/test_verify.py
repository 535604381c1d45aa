"""uvq-int8 verify: metrics, limits, the guide's claims, and the command on built models."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uvq_int8 import verify as V
from uvq_int8.backends import BUILTIN_ORDER, NETS
from uvq_int8.cli.main import main
from uvq_int8.errors import UserError
from uvq_int8.runtime import frames as F

CKPT = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
        "aggregation": "aggregation_net.pth"}
METRICS = ("max_abs", "mean_abs", "mean_rel", "cosine", "cosine_min", "snr_db")


# --------------------------------------------------------------------------- metrics

def test_compare_gives_the_textbook_numbers():
    ref = np.array([1.0, 2.0, 3.0])
    got = np.array([1.0, 2.0, 4.0])
    s = V.compare(ref, got)
    assert s.max_abs == 1.0
    assert s.mean_abs == pytest.approx(1 / 3)
    assert s.mean_rel == pytest.approx((1 / 3) / 3, rel=1e-6)  # |Δ| / (|ref| + 1e-8), averaged
    assert s.cosine == pytest.approx(17 / math.sqrt(14 * 21))
    assert s.snr_db == pytest.approx(10 * math.log10(14 / 1))
    assert (s.samples, s.elements) == (1, 3)


def test_identical_outputs_have_no_snr_and_cosine_one():
    x = np.linspace(-1, 1, 10)
    s = V.compare(x, x.copy())
    assert s.max_abs == 0 and s.snr_db is None and s.cosine == pytest.approx(1.0)


def test_accumulator_pools_samples_and_keeps_the_worst_cosine():
    acc = V.StatsAccumulator()
    acc.add(np.array([1.0, 0.0]), np.array([1.0, 0.0]))
    acc.add(np.array([1.0, 0.0]), np.array([0.0, 1.0]))  # orthogonal: cosine 0
    s = acc.result()
    assert s.samples == 2 and s.elements == 4
    assert s.cosine_min == pytest.approx(0.0)
    assert s.cosine == pytest.approx(0.5)  # of the pooled vectors
    assert V.StatsAccumulator().result().max_abs is None  # nothing measured, nothing claimed


def test_rank_and_linear_correlation():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert V.srcc(a, [x ** 3 for x in a]) == pytest.approx(1.0)
    assert V.plcc(a, [x ** 3 for x in a]) < 0.99
    assert V.srcc(a, a[::-1]) == pytest.approx(-1.0)
    assert V.srcc([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties share a rank
    assert V.srcc([1, 2], [1, 2]) is None  # too few clips to mean anything
    assert V.plcc([1, 2, 3], [5, 5, 5]) is None  # constant: undefined


# --------------------------------------------------------------------------- limits

def test_every_builtin_backend_has_documented_default_limits():
    for name in BUILTIN_ORDER:
        limits = V.default_thresholds(name)
        metrics = {t.metric for t in limits}
        assert {"logit_delta_max", "score_delta_max", "cosine_min"} <= metrics, name
        assert all(t.basis for t in limits), name


def test_fp16_logit_limit_is_strict():
    limit = next(t.limit for t in V.default_thresholds("fp16") if t.metric == "logit_delta_max")
    assert limit <= 0.02


def test_command_line_limits_replace_the_defaults():
    limits = V.thresholds_for("int8", max_logit_delta=1e-9)
    logit = [t for t in limits if t.metric == "logit_delta_max"]
    assert [t.limit for t in logit] == [1e-9]
    assert logit[0].basis == "set on the command line"


def test_unknown_backend_gets_the_loosest_builtin_limits():
    limits = V.default_thresholds("someone-elses-backend")
    assert limits and all("no measured default" in t.basis for t in limits)


def test_failure_line_names_backend_net_metric_value_and_limit():
    check = V.Check("int8", "aggregation", "logit_delta_max", "float32", 0.3, "max", 0.41,
                    False, "")
    assert check.line() == ("FAIL backend=int8 net=aggregation metric=logit_delta_max "
                            "value=0.41 > limit=0.3 vs=float32")


# --------------------------------------------------------------------------- the old guide

def test_guide_claims_are_stored_with_source_and_conditions():
    claims = {c.key: c for c in V.GUIDE_CLAIMS}
    expected = {"size_reduction_total": 70.6, "speedup": 1.30, "score_rel_random": 1.91,
                "content_rel_random": 95.63, "coverage_content": 81}
    for key, value in expected.items():
        assert claims[key].value == value
        assert claims[key].source and claims[key].conditions
    assert "randn" in claims["score_rel_random"].conditions


# --------------------------------------------------------------------------- inputs

def test_checkpoint_paths_from_each_option(tmp_path):
    assert V.checkpoint_paths() is None
    paths = V.checkpoint_paths(uvq_root=tmp_path)
    assert paths["content"] == tmp_path / "uvq1p5_pytorch" / "checkpoints" / "content_net.pth"
    paths = V.checkpoint_paths(checkpoints=tmp_path, aggregation=tmp_path / "agg.pth")
    assert paths["aggregation"] == tmp_path / "agg.pth"
    assert paths["distortion"] == tmp_path / "distortion_net.pth"
    with pytest.raises(UserError, match="no distortion checkpoint"):
        V.checkpoint_paths(content=tmp_path / "c.pth")


def test_npz_frames_are_checked(tmp_path):
    with pytest.raises(UserError, match="not found"):
        V.npz_clips(tmp_path / "missing.npz")
    np.savez(tmp_path / "nokey.npz", x=np.zeros(3))
    with pytest.raises(UserError, match="frames_uint8"):
        V.npz_clips(tmp_path / "nokey.npz")
    np.savez(tmp_path / "small.npz", frames_uint8=np.zeros((1, 10, 10, 3), np.uint8))
    with pytest.raises(UserError, match="1080"):
        V.npz_clips(tmp_path / "small.npz")


def test_random_inputs_are_standard_normal_with_the_net_shapes():
    (x,) = V.random_inputs("content", seed=1)
    assert x.shape == (1, 256, 256, 3) and x.dtype == np.float32
    assert abs(float(x.std()) - 1.0) < 0.02 and float(np.abs(x).max()) > 3
    a, b = V.random_inputs("aggregation", seed=1)
    assert a.shape == (1, 8, 8, 128) and b.shape == (1, 24, 24, 128)


# --------------------------------------------------------------------------- on built models

@pytest.fixture(scope="session")
def model_dir(built_models) -> Path:
    """Every backend built from the reference checkpoints (the session's shared build)."""
    return Path(built_models)


def _built(model_dir: Path) -> list[str]:
    from uvq_int8.backends import discover

    return [name for name, b in discover().items()
            if all(p.is_file() for p in b.model_paths(model_dir).values())]


@pytest.fixture(scope="module")
def full_run(model_dir, reference_dir, tmp_path_factory):
    """One verify of every backend on the golden frames, with the PyTorch comparison."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("verify")
    ckpt = out / "ckpt"
    ckpt.mkdir()
    for net, name in CKPT.items():
        (ckpt / f"{net}_net.pth").symlink_to(reference_dir / name)
    argv = ["verify", "--model-dir", str(model_dir), "--threads", "2", "--frames-npz",
            str(reference_dir / "golden_frames.npz"), "--random-inputs", "1", "--runs", "1",
            "--warmup", "0", "--checkpoints", str(ckpt), "--json", str(out / "r.json"),
            "--markdown", str(out / "r.md"), "--plot", str(out / "r.png"), "--quiet"]
    code = main(argv)
    return code, json.loads((out / "r.json").read_text()), (out / "r.md").read_text(), out


def test_verify_passes_default_limits_on_every_backend(full_run, model_dir):
    code, report, _, _ = full_run
    assert set(report["backends"]) == set(_built(model_dir)) >= set(BUILTIN_ORDER) - {"auto"}
    assert report["failures"] == []  # the regression limits
    # The exit status follows the accuracy verdicts (on these synthetic golden frames
    # int8-static, calibrated on natural content, can miss the 0.1 score target).
    missed = [n for n, b in report["backends"].items()
              if b["verdicts"]["accuracy"]["passed"] is False]
    assert code == (V.EXIT_THRESHOLD if missed else 0), missed
    assert set(missed) <= {"int8-static", "int4"}, missed


def test_json_holds_every_metric_for_every_backend_and_net(full_run):
    _, report, _, _ = full_run
    assert report["schema_version"] == V.SCHEMA_VERSION
    assert report["pytorch"]["available"] is True
    for name, b in report["backends"].items():
        for net in NETS:
            f = b["files"][net]
            assert f["size_bytes"] > 0 and f["tensors"] > 0 and f["tensors_by_dtype"]
            assert b["latency"]["net_ms"][net] > 0
            for kind in ("random", "frames"):
                for ref in ("vs_float32", "vs_pytorch"):
                    for output in V.OUTPUTS[net]:
                        stats = b["nets"][net][kind][ref][output]
                        assert stats["samples"] >= 1, (name, net, kind, ref, output)
                        assert all(m in stats for m in METRICS)
                        assert stats["max_abs"] is not None and stats["cosine"] is not None
        for ref in ("vs_float32", "vs_pytorch"):
            e2e = b["end_to_end"][ref]
            assert e2e["frames"] == 2
            for key in ("logit_delta_max", "logit_delta_mean", "score_delta_max",
                        "clip_score_delta_max", "score_srcc", "score_plcc"):
                assert key in e2e
        assert b["size_vs_float32"] > 0 and b["latency"]["fps"] > 0
        assert b["checks"], name


def test_random_inputs_compare_outputs_by_role(model_dir):
    """The aggregation file's outputs are (score, logit); the random pass labels them by role,
    so its "score" statistic is a score and its "logit" one a logit."""
    from uvq_int8 import runtime
    from uvq_int8.verify import run as R

    models = runtime.load_models("float32", model_dir, 1)
    named = R.named_outputs(models, "aggregation", V.random_inputs("aggregation", seed=3))
    assert set(named) == {"score", "logit"}
    score, logit = float(named["score"].reshape(-1)[0]), float(named["logit"].reshape(-1)[0])
    assert 1.0 <= score <= 5.0
    assert score == pytest.approx(float(F.logit_to_score(logit)), abs=1e-5)


def test_float32_matches_pytorch_on_the_golden_frames(full_run, golden_frames):
    _, report, _, _ = full_run
    f32 = report["backends"]["float32"]
    assert f32["end_to_end"]["vs_pytorch"]["logit_delta_max"] < 1e-3
    logits = [c["logits"][0] for c in f32["clips"]]
    assert np.allclose(logits, golden_frames["logits"].ravel(), atol=1e-3)


def test_fp16_logit_delta_on_the_golden_frames_is_at_most_0_02(full_run):
    _, report, _, _ = full_run
    assert report["backends"]["fp16"]["end_to_end"]["vs_float32"]["logit_delta_max"] <= 0.02


def test_int8_quantizes_the_81_convolutions_like_the_guide(full_run):
    _, report, _, _ = full_run
    files = report["backends"]["int8"]["files"]
    assert files["content"]["conv_weights_by_dtype"] == {"int8": 81}
    assert report["backends"]["int8"]["size_vs_float32"] < 0.35


def test_report_puts_the_guide_next_to_our_numbers(full_run):
    _, report, md, _ = full_run
    rows = {row["key"]: row for row in report["guide"]}
    assert rows["score_rel_random"]["value"] == 1.91 and rows["score_rel_random"]["ours"] >= 0
    assert rows["content_rel_random"]["ours"] is not None
    assert rows["speedup"]["ours"] > 0 and rows["coverage_content"]["ours"] == 81
    assert "The old guide's INT8 claims next to ours" in md
    assert "| 1.91% |" in md and "95.63%" in md


def test_markdown_and_plot_are_written(full_run):
    _, _, md, out = full_run
    assert md.splitlines()[0].startswith("## uvq-int8 verify")
    assert "| backend | size MB |" in md
    png = (out / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_tiny_logit_limit_fails_and_names_what_failed(model_dir, reference_dir, capsys):
    args = ["verify", "--model-dir", str(model_dir), "--backend", "fp16", "--threads", "2",
            "--frames-npz", str(reference_dir / "golden_frames.npz"), "--random-inputs", "0",
            "--runs", "1", "--warmup", "0", "--max-logit-delta", "1e-9", "--no-pytorch",
            "--quiet"]
    code = main(args + ["--regression-only"])
    out = capsys.readouterr().out
    assert code == V.EXIT_THRESHOLD
    assert "FAIL backend=fp16 net=aggregation metric=logit_delta_max value=" in out
    assert "limit=1e-09" in out
    # Without --regression-only the exit follows accuracy: fp16 is accurate (score Δ <= 0.1).
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "accuracy: pass backend=fp16 target: score Δ max <= 0.1 vs float32" in out
    assert "regression: FAIL backend=fp16" in out


def test_accuracy_is_a_score_target_not_the_regression_limit(model_dir, reference_dir, capsys,
                                                             tmp_path):
    """int8-static passes its regression limits (logit 5.0, score 10.0) but not a 0.0001 score
    target; the exit status follows accuracy."""
    report_json = tmp_path / "v.json"
    code = main(["verify", "--model-dir", str(model_dir), "--backend", "int8-static",
                 "--threads", "2", "--frames-npz", str(reference_dir / "golden_frames.npz"),
                 "--random-inputs", "0", "--runs", "1", "--warmup", "0", "--no-pytorch",
                 "--max-score-delta", "0.0001", "--quiet", "--json", str(report_json)])
    out = capsys.readouterr().out
    assert code == V.EXIT_THRESHOLD, out
    assert "accuracy: FAIL backend=int8-static target: score Δ max <= 0.0001" in out
    assert "regression: pass backend=int8-static" in out
    import json

    verdicts = json.loads(report_json.read_text())["backends"]["int8-static"]["verdicts"]
    assert verdicts["accuracy"]["passed"] is False and verdicts["regression"]["passed"] is True


def _copy_models(model_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for path in model_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, dest / path.name)
    return dest


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvq_int8", "verify", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("damage", ["truncated", "bytes changed"])
def test_a_corrupt_model_file_fails_naming_the_file(model_dir, reference_dir, tmp_path, damage):
    models = _copy_models(model_dir, tmp_path / "models")
    target = models / "distortion_net_fp16.tflite"
    data = bytearray(target.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 3]
    else:  # still loads; only the manifest's sha256 can tell
        if not (models / "manifest.json").is_file():
            pytest.skip("no manifest.json beside the models")
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    target.write_bytes(bytes(data))
    result = _run_cli("--model-dir", str(models), "--backend", "fp16", "--frames-npz",
                      str(reference_dir / "golden_frames.npz"), "--quiet")
    assert result.returncode == 1
    assert str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_model_file_fails_naming_the_file(model_dir, reference_dir, tmp_path):
    models = _copy_models(model_dir, tmp_path / "models")
    (models / "content_net_int8.tflite").unlink()
    result = _run_cli("--model-dir", str(models), "--backend", "int8", "--frames-npz",
                      str(reference_dir / "golden_frames.npz"), "--quiet")
    assert result.returncode == 1
    assert "content_net_int8.tflite" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_backend_is_a_one_line_error(model_dir, capsys):
    code = main(["verify", "--model-dir", str(model_dir), "--backend", "int9", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "unknown backend 'int9'" in err


def test_builtin_frames_alternate_clean_and_degraded():
    clips = V.synthetic_clips(2)
    assert [c.name for c in clips] == ["synthetic-0-clean", "synthetic-1-degraded"]
    assert all(c.frames[0].shape == (1080, 1920, 3) and c.frames[0].dtype == np.uint8
               for c in clips)


def test_videos_are_decoded_like_uvq_portrait_included(reference_dir, golden_frames):
    clip = V.video_clip(reference_dir / "sample_portrait.mp4", fps=1)
    golden = np.load(reference_dir / "sample_portrait.golden.npz")
    assert clip.source == "video" and len(clip.frames) == len(golden["per_frame_logits"])
    # Upstream's frames, up to the ffmpeg build's rounding.
    diff = np.abs(clip.frames[0].astype(np.int16) - golden["frames_uint8"][0])
    assert diff.mean() < 0.5
