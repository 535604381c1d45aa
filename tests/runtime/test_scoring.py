"""`uvq` end to end on float32 models built from the reference checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

VIDEOS = ["sample_landscape", "sample_portrait"]


def run_uvq(args, env=None, **kw):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", "from uvq_int8.cli import uvq_main; "
                           "raise SystemExit(uvq_main())", *args],
                          capture_output=True, text=True, env=full_env, **kw)


@pytest.fixture(scope="module")
def float32_stats(built_models, reference_dir):
    out = {}
    for video in VIDEOS:
        result = run_uvq([str(reference_dir / f"{video}.mp4"), "--backend", "float32",
                          "--model-dir", str(built_models), "--output_all_stats"])
        assert result.returncode == 0, result.stderr
        out[video] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("video", VIDEOS)
def test_float32_reproduces_upstream_logits_and_scores(float32_stats, reference_dir, video):
    golden = np.load(reference_dir / f"{video}.golden.npz")
    stats = float32_stats[video]
    assert len(stats["per_frame_logits"]) == len(golden["per_frame_logits"])
    assert np.abs(np.array(stats["per_frame_logits"]) - golden["per_frame_logits"]).max() < 5e-3
    assert np.abs(np.array(stats["per_frame_scores"]) - golden["per_frame_scores"]).max() < 1e-4
    assert abs(stats["uvq1p5_score"] - float(golden["uvq1p5_score"])) < 1e-4
    assert stats["frame_indices"] == golden["frame_indices"].tolist()


def test_all_stats_has_upstream_keys_and_ours(float32_stats, built_models):
    stats = float32_stats["sample_landscape"]
    for key in ("uvq1p5_score", "per_frame_scores", "frame_indices", "video_name",
                "backend", "model_sha256", "per_frame_logits"):
        assert key in stats
    assert stats["backend"] == "float32"
    assert stats["warnings"] == []  # as batch rows have; a padded decode would say so
    manifest = json.loads((built_models / "manifest.json").read_text())
    text = json.dumps(manifest)
    for sha in stats["model_sha256"].values():
        assert sha in text


def test_portrait_is_transposed_automatically_in_single_mode(float32_stats):
    assert float32_stats["sample_portrait"]["transpose"] is True
    assert float32_stats["sample_landscape"]["transpose"] is False


def test_plain_output_is_the_score_and_output_file_is_json(built_models, reference_dir, tmp_path):
    out = tmp_path / "sub" / "stats.json"
    result = run_uvq([str(reference_dir / "sample_portrait.mp4"), "--model-dir", str(built_models),
                      "--backend", "float32", "--output", str(out)])
    assert result.returncode == 0, result.stderr
    score = float(result.stdout.strip())
    assert 1.0 <= score <= 5.0
    assert json.loads(out.read_text())["uvq1p5_score"] == pytest.approx(score)


def _selected_files(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["model_files"]


def test_backend_selection_flag_env_and_config_file(built_models, reference_dir, tmp_path):
    video = str(reference_dir / "sample_portrait.mp4")
    cfg = tmp_path / "uvq.toml"
    cfg.write_text(f'backend = "int8"\nmodel_dir = "{built_models}"\n')
    base_env = {"XDG_CONFIG_HOME": str(tmp_path / "none"), "UVQ_BACKEND": "",
                "UVQ_MODEL_DIR": "", "UVQ_CONFIG": ""}
    # the config file alone
    files = _selected_files(run_uvq([video, "--output_all_stats"],
                                    env={**base_env, "UVQ_CONFIG": str(cfg)}))
    assert files["distortion"].endswith("distortion_net_int8.tflite")
    # the environment alone, and winning over the file
    cfg.write_text(f'backend = "fp16"\nmodel_dir = "{built_models}"\n')
    files = _selected_files(run_uvq([video, "--output_all_stats"],
                                    env={**base_env, "UVQ_CONFIG": str(cfg), "UVQ_BACKEND": "int8"}))
    assert files["content"].endswith("content_net_int8.tflite")
    # the flag wins over the environment
    files = _selected_files(run_uvq([video, "--output_all_stats", "--backend", "int8"],
                                    env={**base_env, "UVQ_CONFIG": str(cfg),
                                         "UVQ_BACKEND": "float32"}))
    assert files["aggregation"].endswith("aggregation_net_int8.tflite")


def test_per_net_mix_scores(built_models, reference_dir):
    result = run_uvq([str(reference_dir / "sample_portrait.mp4"), "--model-dir", str(built_models),
                      "--backend", "content=fp16,distortion=int8,aggregation=float32",
                      "--output_all_stats"])
    files = _selected_files(result)
    assert files["content"].endswith("content_net_fp16.tflite")
    assert files["distortion"].endswith("distortion_net_int8.tflite")
    assert files["aggregation"].endswith("aggregation_net.tflite")


def test_python_api_returns_the_same_dict(built_models, reference_dir, float32_stats):
    import uvq_int8

    result = uvq_int8.score(reference_dir / "sample_landscape.mp4", backend="float32",
                            model_dir=built_models, fps=1)
    expected = float32_stats["sample_landscape"]
    assert result["per_frame_logits"] == pytest.approx(expected["per_frame_logits"], abs=1e-6)
    assert set(expected) == set(result)


def test_batch_mode_keeps_going_past_a_bad_video_and_resumes(built_models, reference_dir,
                                                             tmp_path):
    bad = tmp_path / "not a video.mp4"
    bad.write_text("hello")
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{reference_dir / 'sample_portrait.mp4'}\n{bad}\n")
    out = tmp_path / "scores.csv"
    args = [str(listing), "--output", str(out), "--model-dir", str(built_models),
            "--backend", "float32"]
    result = run_uvq(args)
    assert result.returncode == 1
    assert "not a video.mp4" in result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sample_portrait.mp4,")
    # --resume skips what is already there and scores nothing twice
    listing.write_text(f"{reference_dir / 'sample_portrait.mp4'}\n")
    result = run_uvq(args + ["--resume"])
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == lines
    assert "1 already in" in result.stderr


def test_batch_mode_needs_output(reference_dir, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text("x.mp4\n")
    result = run_uvq([str(listing)])
    assert result.returncode != 0 and "--output" in result.stderr


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing.mp4", "no such file"),
    (lambda p: (p / "text.mp4").write_text("not video") and p / "text.mp4", "text.mp4"),
    (lambda p: (p / "empty.mp4").write_bytes(b"") or p / "empty.mp4", "empty.mp4"),
])
def test_bad_videos_are_one_line_errors(built_models, tmp_path, make, needle):
    path = make(tmp_path)
    result = run_uvq([str(path), "--model-dir", str(built_models), "--backend", "float32"])
    assert result.returncode != 0
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_not_built_says_to_build(reference_dir, tmp_path):
    result = run_uvq([str(reference_dir / "sample_portrait.mp4"), "--model-dir", str(tmp_path),
                      "--backend", "int4"])
    assert result.returncode != 0
    assert "uvq-int8 build" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = run_uvq([str(tmp_path / "missing.mp4"), "--debug"])
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_third_party_backend_from_an_entry_point_scores(built_models, reference_dir, tmp_path,
                                                         make_plugin):
    plugin = make_plugin(tmp_path / "site", broken=False)
    models = tmp_path / "models"
    models.mkdir()
    for net in ("content", "distortion", "aggregation"):
        # the plugin's files: float32 models under its own names
        (models / f"{net}_net_extra.tflite").write_bytes(
            (built_models / f"{net}_net.tflite").read_bytes())
    result = run_uvq([str(reference_dir / "sample_portrait.mp4"), "--backend", "extra",
                      "--model-dir", str(models), "--output_all_stats"],
                     env={"PYTHONPATH": str(plugin)})
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["backend"] == "extra"
    assert stats["model_files"]["distortion"].endswith("distortion_net_extra.tflite")
    golden = np.load(reference_dir / "sample_portrait.golden.npz")
    assert np.abs(np.array(stats["per_frame_logits"]) - golden["per_frame_logits"]).max() < 5e-3


@pytest.mark.parametrize("cores, threads, expected", [(2, 2, 1), (8, 2, 6), (4, 4, 1), (1, 2, 1),
                                                      (4, 0, 3)])
def test_decoder_gets_the_cores_the_interpreter_leaves(monkeypatch, cores, threads, expected):
    from uvq_int8.runtime import scoring

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert scoring.decode_threads(threads) == expected


def test_both_decoders_give_the_same_logits(built_models, reference_dir, float32_stats):
    # The default decoder is pyav; --decoder and UVQ_DECODER pick the ffmpeg command line.
    video = str(reference_dir / "sample_landscape.mp4")
    default = float32_stats["sample_landscape"]
    assert (default["decoder"], default["fallback"]) == ("pyav", "")
    assert default["skipped_packets"] > 0
    flag = run_uvq([video, "--backend", "float32", "--model-dir", str(built_models),
                    "--output_all_stats", "--decoder", "ffmpeg"])
    env = run_uvq([video, "--backend", "float32", "--model-dir", str(built_models),
                   "--output_all_stats"], env={"UVQ_DECODER": "ffmpeg"})
    for result in (flag, env):
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        assert (stats["decoder"], stats["skipped_packets"], stats["fallback"]) == ("ffmpeg", 0, "")
        assert stats["per_frame_logits"] == default["per_frame_logits"]


def test_bad_decoder_flag_is_a_usage_error(reference_dir):
    result = run_uvq([str(reference_dir / "sample_landscape.mp4"), "--decoder", "vlc"])
    assert result.returncode == 2 and "invalid choice: 'vlc'" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--model_version", "1.0"], "invalid choice: '1.0'"),
    (["--device", "cuda"], "invalid choice: 'cuda'"),
    (["--batch_json_output", "x.json"], "unrecognized arguments: --batch_json_output"),
])
def test_upstream_flags_uvq_does_not_take_are_usage_errors(reference_dir, args, message):
    # docs/design.md, "uvq next to upstream's uvq_inference.py"
    result = run_uvq([str(reference_dir / "sample_landscape.mp4"), *args])
    assert result.returncode == 2 and message in result.stderr


def test_no_auto_transpose_help_says_upstreams_single_video_mode_does_not_rotate():
    result = run_uvq(["--help"])
    assert result.returncode == 0
    assert "upstream's single-video mode does not rotate" in " ".join(result.stdout.split())


def test_an_auto_set_ranked_for_another_instruction_set_warns(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from uvq_int8 import runtime, util
    from uvq_int8.runtime import scoring

    entries = {"distortion_net_auto.tflite": {
        "recipe": "auto", "recipe_options": {"choice": {"cost_isa": "avx512_vnni"}}}}
    monkeypatch.setattr(runtime, "manifest_entries", lambda directory: entries)
    monkeypatch.setattr(util, "cpu_features", lambda: ("AMD EPYC", ("avx2", "fma")))
    auto = SimpleNamespace(backend="auto", model_dir=tmp_path)
    (warning,) = scoring.isa_warnings(auto)
    assert "made for instruction set avx512_vnni; this machine is avx2" in warning
    assert scoring.isa_warnings(SimpleNamespace(backend="int8-static", model_dir=tmp_path)) == []
    monkeypatch.setattr(util, "cpu_features",
                        lambda: ("AMD EPYC", ("avx2", "avx512f", "avx512bw", "avx512vl",
                                              "avx512_vnni")))
    assert scoring.isa_warnings(auto) == []


def test_a_truncated_decode_is_a_warning_of_the_result():
    from uvq_int8.runtime import scoring
    from uvq_int8.runtime.decode.probe import DecodeStats

    assert scoring.decode_warnings(DecodeStats(real_frames=5), 5) == []
    (warning,) = scoring.decode_warnings(DecodeStats(real_frames=3, padded_frames=2), 5)
    assert warning.startswith("decoding may be truncated: 3 of 5 frames decoded; 2 black")
