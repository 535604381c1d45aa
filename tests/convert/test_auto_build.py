"""``uvq-int8 build --backend auto``: the search inside the build, its manifest record,
reproducibility, and ``uvq-int8 verify --backend auto`` against the build's own budget.

The auto builds start from a copy of the shared ``--backend all`` build, so they reuse its
float32 files (no conversion) and only calibrate, search and write the auto files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from uvq_int8.convert import auto, calibration, sensitivity
from uvq_int8 import convert
from uvq_int8.runtime import manifest as mf
from uvq_int8 import util
from uvq_int8.cli.main import main
from uvq_int8.runtime.tflite_info import read_model_info

CHECKPOINTS = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
               "aggregation": "aggregation_net.pth"}

AUTO_FILES = ("content_net_auto.tflite", "distortion_net_auto.tflite",
              "aggregation_net_auto.tflite")
VALIDATION_FRAMES = 4  # the default is 12; 4 keeps the suite short and still measures
CONFIRMATION_FRAMES = 19  # the default is 40; 19 is the least a 95% promise can rest on


def reference_checkpoints(reference_dir: Path) -> dict[str, Path]:
    return {net: reference_dir / name for net, name in CHECKPOINTS.items()}


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _auto_options(reference_dir: Path, out: Path, budget: float | None, **extra):
    return convert.BuildOptions(checkpoints=reference_checkpoints(reference_dir), out_dir=out,
                              backends="auto", max_logit_delta=budget,
                              validation_frames=VALIDATION_FRAMES,
                              confirmation_frames=CONFIRMATION_FRAMES, **extra)


@pytest.fixture(scope="module")
def loose(build_all, reference_dir, tmp_path_factory):
    """auto with a loose budget (3.0), built beside the other backends."""
    out = _copy(build_all.path, tmp_path_factory.mktemp("auto") / "models")
    options = _auto_options(reference_dir, out, 3.0)
    summary = convert.build(options)
    return SimpleNamespace(path=out, summary=summary, options=options,
                           manifest=mf.load(out))


# --------------------------------------------------------------------------- loose budget

def test_a_loose_budget_chooses_full_integer_int8_on_both_backbones(loose):
    record = loose.summary.auto
    assert record is not None and loose.summary.ok
    for net in ("content", "distortion"):
        choice = record["choices"][net]
        assert choice["recipe"] == "static_wi8_ai8" and choice["float_groups"] == []
        # The per-frame merges, or the build's histogram ranges (which take its refit).
        assert choice["range_merge"] in (*auto.RANGE_MERGES, "percentile")
    assert record["measured"]["logit_delta_max"] <= 3.0
    # int8-static's refit, made once per backbone for the candidates with its ranges.
    assert set(record["refits"]) == {"content", "distortion"}
    assert all(r["ops"] == 31 and r["frames"] == 16 for r in record["refits"].values())
    # Both nets all int8: the modelled time is the float32 one at this ISA's int8 ratio
    # (0.30 on AVX-512 VNNI, 0.68 on AVX2), plus the per-frame overhead.
    ms, ratio = record["modelled_ms_per_frame"], record["cost_model"]["int8_time_ratio"]
    overhead = sensitivity.FRAME_OVERHEAD_MS
    assert ms["chosen"] == pytest.approx(overhead + ratio * (ms["float32"] - overhead), abs=0.2)
    assert record["modelled_speedup"] > 1.25
    # Only the auto files were made, from the float32 files already there.
    assert sorted(f.filename for f in loose.summary.built) == sorted(AUTO_FILES)
    assert loose.summary.conversions == []


def test_each_auto_file_says_what_it_is_and_the_build_record_says_why(loose, build_all):
    files = loose.manifest.files
    record = loose.manifest.builds[-1]["auto"]
    assert mf.validate(json.loads(mf.manifest_path(loose.path).read_text())) == []
    for net in ("content", "distortion"):
        entry = files[f"{net}_net_auto.tflite"]
        assert entry["recipe"] == "auto"
        options = entry["recipe_options"]
        assert options["max_logit_delta"] == 3.0
        validation = options["validation"]
        assert validation["source"] == "natural" and validation["split"] == "search"
        assert validation["frames"] == VALIDATION_FRAMES and validation["fraction"] == 0.95
        assert validation["confirmation"]["split"] == "confirmation"
        assert validation["confirmation"]["frames"] == CONFIRMATION_FRAMES
        assert not set(validation["images"]) & set(validation["confirmation"]["images"])
        assert options["choice"]["promise"] == record["promise"]
        assert options["choice"]["recipe"] == record["choices"][net]["recipe"]
        assert options["choice"]["range_merge"] == record["choices"][net]["range_merge"]
        # The instruction set the cost model ranked for: uvq warns when it runs elsewhere.
        assert options["choice"]["cost_isa"] == record["cost_model"]["isa"] is not None
        info = read_model_info(loose.path / f"{net}_net_auto.tflite")
        assert info.quantized_tensors_by_dtype.get("int8", 0) > 100
        assert all(p["dtype"] == "int8" for p in entry["inputs"])
        assert mf.auto_record(loose.manifest, f"{net}_net_auto.tflite") == record
    # The promise says what it rests on: images and frames of each split, with licences.
    promise = record["promise"]
    assert promise["frames"] == CONFIRMATION_FRAMES and promise["rank"] == 1
    assert promise["images"] == 5 and promise["holds"] and not promise["fallback"]
    assert promise["bound"] <= 3.0 and promise["max_logit_delta"] >= promise["bound"]
    basis = record["content_basis"]
    assert basis["confirmation"]["frames"] == CONFIRMATION_FRAMES
    assert len(basis["confirmation"]["decoded_sha256"]) == 64
    assert all(img["licence"] for img in basis["search"]["images"])
    # The head stays float32: the same bytes as the float32 backend's.
    assert (files["aggregation_net_auto.tflite"]["sha256"]
            == files["aggregation_net.tflite"]["sha256"])
    # Every candidate was measured, and both backbones have a sensitivity table.
    labels = {(c["net"], c["label"]) for c in record["candidates"]}
    assert {("distortion", "float32"), ("distortion", "fp16"), ("content", "int8(union)"),
            ("distortion", "int8(mean)"), ("distortion", "int8(median)")} <= labels
    for net, groups in (("content", 18), ("distortion", 19)):
        table = record["sensitivity"][net]
        assert len(table["rows"]) == groups and table["frames"] == VALIDATION_FRAMES
        assert table["all_int8"]["logit_delta_max"] == pytest.approx(
            next(c["logit_delta_max"] for c in record["candidates"]
                 if c["net"] == net and c["label"] == record["labels"][net]))


def test_auto_is_a_backend_like_the_others(loose):
    from uvq_int8 import runtime

    models = runtime.load_models("auto", loose.path, threads=2)
    assert {net: p.name for net, p in models.paths.items()} == {
        "content": "content_net_auto.tflite", "distortion": "distortion_net_auto.tflite",
        "aggregation": "aggregation_net_auto.tflite"}


def test_a_second_auto_build_searches_nothing(loose):
    again = convert.build(loose.options)
    assert again.auto is None and not again.built
    assert sorted(f.filename for f in again.skipped) == sorted(AUTO_FILES)


def test_verify_holds_auto_to_the_builds_budget(loose, reference_dir, tmp_path, capsys):
    report_json, report_md = tmp_path / "verify.json", tmp_path / "verify.md"
    code = main(["verify", "--model-dir", str(loose.path), "--backend", "auto",
                 "--frames-npz", str(reference_dir / "golden_frames.npz"),
                 "--videos", str(reference_dir / "sample_landscape.mp4"),
                 str(reference_dir / "sample_portrait.mp4"),
                 "--no-pytorch", "--runs", "1", "--warmup", "0",
                 "--json", str(report_json), "--markdown", str(report_md), "--quiet"])
    assert code == 0, capsys.readouterr().out
    data = json.loads(report_json.read_text())
    checks = {c["metric"]: c for c in data["backends"]["auto"]["checks"]}
    logit = checks["logit_delta_max"]
    assert logit["limit"] == 3.0 and "--max-logit-delta 3" in logit["basis"]
    assert logit["value"] is not None and 0 < logit["value"] <= 3.0 and logit["passed"]
    assert data["backends"]["auto"]["auto"]["labels"] == loose.summary.auto["labels"]
    text = report_md.read_text()
    assert "auto: the configuration the build's search chose" in text
    assert "distortion net, each op group alone in int8" in text


# --------------------------------------------------------------------------- tight budget

def test_a_tight_budget_is_met_and_verify_confirms_it(build_all, reference_dir, tmp_path,
                                                      capsys):
    out = _copy(build_all.path, tmp_path / "models")
    # Without the refit (the loose build has it): the budget is what this test is about.
    code = main(["build", *_ckpt_args(reference_dir), "--out", str(out), "--backend", "auto",
                 "--max-logit-delta", "0.02", "--validation-frames", str(VALIDATION_FRAMES),
                 "--confirmation-frames", str(CONFIRMATION_FRAMES), "--int8-refit", "none",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads(captured.out)["auto"]
    assert record["measured"]["logit_delta_max"] <= 0.02
    assert record["max_logit_delta"] == 0.02
    assert "no --validation-videos" in captured.err
    # Kept (confirmed) or rejected and replaced by float32: either way the budget holds.
    promise = record["promise"]
    assert promise["holds"] and (promise["bound"] <= 0.02 or promise["fallback"])
    if promise["fallback"]:
        assert record["labels"] == {"content": "float32", "distortion": "float32"}
        assert record["rejected"]["confirmation"]["bound"] > 0.02
    code = main(["verify", "--model-dir", str(out), "--backend", "auto", "--frames-npz",
                 str(reference_dir / "golden_frames.npz"), "--no-pytorch", "--runs", "1",
                 "--warmup", "0", "--quiet"])
    assert code == 0, capsys.readouterr().out


def test_the_same_inputs_and_budget_give_the_same_files(loose, tmp_path):
    out = _copy(loose.path, tmp_path / "models")
    for name in AUTO_FILES:
        (out / name).unlink()  # made again from the same float32 files, not reconverted
    calibration.forget()  # calibrated and refitted again too, not taken from the loose build
    again = convert.build(convert.BuildOptions(**{**loose.options.__dict__, "out_dir": out,
                                              "sensitivity": False}))
    assert again.conversions == []
    assert again.auto["choices"] == loose.summary.auto["choices"]
    first = loose.manifest.files
    for name in AUTO_FILES:
        assert mf.load(out).files[name]["sha256"] == first[name]["sha256"], name


# --------------------------------------------------------------------------- bad input

def _ckpt_args(reference_dir: Path) -> list[str]:
    paths = reference_checkpoints(reference_dir)
    return [arg for net in ("content", "distortion", "aggregation")
            for arg in (f"--{net}", str(paths[net]))]


def test_auto_without_a_budget_says_what_to_give(reference_dir, tmp_path, capsys):
    code = main(["build", *_ckpt_args(reference_dir), "--out", str(tmp_path / "m"),
                 "--backend", "auto"])
    assert code == 1
    assert "--backend auto needs --max-logit-delta D" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf"])
def test_a_budget_that_is_not_a_non_negative_number_is_refused(reference_dir, tmp_path, capsys,
                                                               value):
    code = main(["build", *_ckpt_args(reference_dir), "--out", str(tmp_path / "m"),
                 "--backend", "auto", f"--max-logit-delta={value}"])
    assert code == 1
    assert "--max-logit-delta must be a non-negative number" in capsys.readouterr().err


def test_validation_videos_are_checked_before_building(reference_dir, tmp_path, capsys):
    args = ["build", *_ckpt_args(reference_dir), "--out", str(tmp_path / "m"), "--backend",
            "auto", "--max-logit-delta", "1"]
    assert main(args + ["--validation-videos", str(tmp_path / "nope.mp4")]) == 1
    assert "validation video not found" in capsys.readouterr().err
    video = str(reference_dir / "sample_landscape.mp4")
    assert main(args + ["--calibration-videos", video, "--validation-videos", video]) == 1
    assert "both a calibration and a validation video" in capsys.readouterr().err
    assert main(args + ["--validation-frames", "0"]) == 1
    assert "--validation-frames must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_confirmation_too_small_for_the_promise_is_refused(reference_dir, tmp_path, capsys):
    args = ["build", *_ckpt_args(reference_dir), "--out", str(tmp_path / "m"), "--backend",
            "auto", "--max-logit-delta", "1"]
    assert main(args + ["--confirmation-frames", "18"]) == 1
    assert "cannot support a 95% promise: it needs at least 19 frames" in capsys.readouterr().err
    assert main(args + ["--promise-fraction", "1.5"]) == 1
    assert "--promise-fraction must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_all_names_auto_only_when_a_budget_is_given(reference_dir, tmp_path):
    options = _auto_options(reference_dir, tmp_path / "m", None)
    plain = convert.plan_build(convert.BuildOptions(**{**options.__dict__, "backends": "all"}))
    assert "auto" not in plain.backends
    with_budget = convert.plan_build(convert.BuildOptions(**{**options.__dict__, "backends": "all",
                                                         "max_logit_delta": 0.5}))
    assert with_budget.backends[-1] == "auto"
    assert with_budget.auto_jobs and set(with_budget.nets_to_convert) == {
        "content", "distortion", "aggregation"}


def test_a_changed_budget_rebuilds_the_auto_files_only(loose, tmp_path):
    out = _copy(loose.path, tmp_path / "models")
    options = convert.BuildOptions(**{**loose.options.__dict__, "out_dir": out,
                                    "max_logit_delta": 2.0})
    plan = convert.plan_build(options)
    reasons = {j.filename: j.reason for j in plan.jobs}
    assert reasons == {"content_net_auto.tflite": "recipe options changed",
                       "distortion_net_auto.tflite": "recipe options changed",
                       "aggregation_net_auto.tflite": None}
    assert plan.nets_to_convert == []  # the float32 files are current


def test_validation_videos_are_split_by_video_decoded_and_recorded(build_all, reference_dir,
                                                                    tmp_path, capsys):
    out = _copy(build_all.path, tmp_path / "models")
    videos = [reference_dir / "sample_landscape.mp4", reference_dir / "sample_portrait.mp4"]
    args = ["build", *_ckpt_args(reference_dir), "--out", str(out), "--backend", "auto",
            "--max-logit-delta", "3", "--validation-frames", "2", "--calibration-frames", "2",
            "--no-mixed", "--no-sensitivity", "--json"]
    # Two videos: the second confirms, and its 3 frames cannot carry a 95% promise.
    assert main(args + ["--validation-videos", *map(str, videos)]) == 1
    err = capsys.readouterr().err
    assert "sample_portrait.mp4" in err and "gave 3 frames" in err and "needs 19" in err
    # One video: the search uses it; the confirmation uses the natural clips.
    code = main(args + ["--validation-videos", str(videos[0]), "--confirmation-frames",
                        str(CONFIRMATION_FRAMES)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no --validation-videos" not in captured.err
    summary = json.loads(captured.out)
    assert summary["conversions"] == [] and summary["auto"]["validation_frames"] == 2
    assert summary["auto"]["sensitivity"] == {}
    validation = mf.load(out).files["distortion_net_auto.tflite"]["recipe_options"]["validation"]
    assert validation["source"] == "videos" and validation["frames"] == 2
    assert [v["sha256"] for v in validation["videos"]] == [util.sha256_file(videos[0])]
    assert validation["confirmation"]["source"] == "natural"
    assert summary["auto"]["content_basis"]["search"]["videos"] == [videos[0].name]


def test_a_broken_validation_video_stops_the_build_before_any_work(build_all, reference_dir,
                                                                   tmp_path, capsys):
    out = _copy(build_all.path, tmp_path / "models")
    before = sorted(p.name for p in out.iterdir())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    code = main(["build", *_ckpt_args(reference_dir), "--out", str(out), "--backend", "auto",
                 "--max-logit-delta", "3", "--validation-videos", str(broken)])
    err = capsys.readouterr().err
    assert code == 1 and "broken.mp4" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written


def test_uvq_audits_a_real_auto_build_against_its_own_budget(loose, reference_dir, capsys):
    from uvq_int8.cli.main import uvq_main

    video = str(reference_dir / "sample_landscape.mp4")
    common = [video, "--model-dir", str(loose.path), "--output_all_stats", "--quiet"]
    assert uvq_main(common + ["--backend", "auto", "--audit", "0.2", "--audit-strict"]) == 0
    audited = json.loads(capsys.readouterr().out)
    assert uvq_main(common + ["--backend", "auto"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert uvq_main(common + ["--backend", "float32"]) == 0
    ref = json.loads(capsys.readouterr().out)
    audit = audited["audit"]
    assert audited["per_frame_logits"] == plain["per_frame_logits"]
    assert audit["budget"] == 3.0 and audit["exceeded"] is False
    assert audit["logit_deltas"] == pytest.approx(
        [abs(plain["per_frame_logits"][i] - ref["per_frame_logits"][i]) for i in audit["frames"]],
        abs=1e-6)
