"""The build (``convert.stages``): every backend from the reference checkpoints, the
manifest, rebuild rules, calibration videos, bias correction, a full disk."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from uvq_int8 import convert
from uvq_int8.runtime import frames
from uvq_int8.runtime import manifest as mf
from uvq_int8 import util
from uvq_int8.backends import BUILTIN_ORDER, NETS, discover
from uvq_int8.cli.main import main
from uvq_int8.runtime.tflite_info import read_model_info

QUANTIZED_DTYPE = {"fp16": "float16", "int8": "int8", "int8-weight-only": "int8",
                   "int4": "int4", "int8-static": "int8"}
CHECKPOINTS = {"content": "content_net_proxy.pth", "distortion": "distortion_net_proxy.pth",
               "aggregation": "aggregation_net.pth"}
MAX_SIZE_RATIO = {"int8": 0.31, "int8-weight-only": 0.31, "int8-static": 0.33, "fp16": 0.53,
                  "int4": 0.25}


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=2)
    interp.allocate_tensors()
    return interp


def _run(interp, *inputs) -> list[np.ndarray]:
    for detail, value in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], np.ascontiguousarray(value, dtype=np.float32))
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def reference_checkpoints(reference_dir: Path) -> dict[str, Path]:
    return {net: reference_dir / name for net, name in CHECKPOINTS.items()}


def _files(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir()}


# --------------------------------------------------------------------------- the full build

def test_all_backends_give_18_files_and_a_manifest(build_all):
    # auto is not in "all" without --max-logit-delta (tests/convert/test_auto_build.py builds it).
    expected = {name for b in discover().values() if b.name in BUILTIN_ORDER and b.name != "auto"
                for name in b.filenames().values()}
    assert len(expected) == 18
    on_disk = set(_files(build_all.path))
    assert on_disk == expected | {mf.MANIFEST_NAME}  # no temp files left behind
    data = json.loads((build_all.path / mf.MANIFEST_NAME).read_text())
    assert mf.validate(data) == []
    assert set(data["files"]) == expected
    for name, entry in data["files"].items():
        path = build_all.path / name
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == util.sha256_file(path)
    assert build_all.summary.ok and len(build_all.summary.built) == 18
    print(f"\nfull --backend all build: {build_all.seconds:.1f} s, peak RSS "
          f"{build_all.summary.peak_rss_bytes}")


def test_sizes_relative_to_float32(build_all):
    totals = build_all.summary.backend_totals()
    sizes = {name: t["size"] for name, t in totals.items()}
    for backend, limit in MAX_SIZE_RATIO.items():
        assert sizes[backend] / sizes["float32"] <= limit, (backend, sizes)


def test_each_quantizing_backend_quantized_tensors_of_its_dtype(build_all):
    entries = mf.load(build_all.path).files
    for backend in discover().values():
        if backend.name not in QUANTIZED_DTYPE:
            continue
        dtype = QUANTIZED_DTYPE[backend.name]
        for net, name in backend.filenames().items():
            if backend.recipes[net] == "float32":  # int8-static keeps the head in float
                assert entries[name]["quantized_tensors_by_dtype"] == {}
                continue
            counts = read_model_info(build_all.path / name).quantized_tensors_by_dtype
            assert counts.get(dtype, 0) > 0, (name, counts)
            assert entries[name]["quantized_tensors_by_dtype"] == counts
    for name in ("content_net.tflite", "distortion_net.tflite", "aggregation_net.tflite"):
        assert entries[name]["quantized_tensors_by_dtype"] == {}


def test_int4_really_stores_convolution_weights_as_int4(build_all):
    entries = mf.load(build_all.path).files
    for net in ("content", "distortion"):
        entry = entries[f"{net}_net_int4.tflite"]
        # 65 of the 81 convolutions; ai-edge-quantizer leaves depthwise filters float.
        assert entry["int4_conv_weights"] >= 60
        assert entry["int4_conv_weights"] == read_model_info(
            build_all.path / f"{net}_net_int4.tflite").int4_conv_weights
    for net in ("content", "distortion"):  # the int8 recipe quantizes all 81, like the guide
        assert entries[f"{net}_net_int8.tflite"]["conv_weights_by_dtype"] == {"int8": 81}


def test_manifest_records_how_each_file_was_made(build_all, reference_dir):
    data = json.loads((build_all.path / mf.MANIFEST_NAME).read_text())
    assert data["format_version"] == mf.FORMAT_VERSION
    record = data["builds"][-1]
    for tool in ("uvq-int8", "torch", "litert-torch", "ai-edge-quantizer", "ai-edge-litert",
                 "python"):
        assert record["tools"][tool]
    ckpts = reference_checkpoints(reference_dir)
    for net in NETS:
        assert record["checkpoints"][net]["sha256"] == util.sha256_file(ckpts[net])
    assert record["calibration"]["frames_used"] == build_all.options.calibration_frames
    assert {c["net"] for c in record["conversions"]} == set(NETS)
    for conversion in record["conversions"]:  # the worker's check against PyTorch
        assert max(conversion["max_abs_diff"]) < 2e-3
    assert 0 < record["peak_rss_bytes"]["max"] < 4e9
    assert record["peak_rss_bytes"]["concurrent"] < 4e9
    static = data["files"]["distortion_net_int8_static.tflite"]
    assert static["recipe"] == "static_wi8_ai8"
    assert static["recipe_options"]["calibration"]["frames"] == build_all.options.calibration_frames
    assert static["checkpoint"]["sha256"] == record["checkpoints"]["distortion"]["sha256"]
    # The recipe's activation ranges (0.2.0: percentile of a histogram over all frames).
    # Recipe version 4: the 1x1 convolutions refitted by least squares, each op's ridge
    # chosen by cross-validation over frame folds.
    assert static["recipe_options"]["recipe_version"] == 4
    assert static["recipe_options"]["activation_ranges"] == "percentile"
    assert static["recipe_options"]["percentile"] == 99.99
    assert static["recipe_options"]["bias_correction"] == "none"
    assert static["recipe_options"]["refit"] == "cv"
    assert static["recipe_options"]["refit_ridges"] == [1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0,
                                                         10.0]
    assert static["recipe_options"]["refit_folds"] == 4
    assert "refit_ridge" not in static["recipe_options"]
    refit_record = record["calibration"]["nets"]["distortion"]["refit"]
    assert refit_record["folds"] == 4 and refit_record["ridge"] is None
    assert 1 <= refit_record["accepted"] == len(refit_record["ridges_kept"]) <= 31
    # DistortionNet's statistics ran a patch at a time on the one-patch variant.
    nets_record = record["calibration"]["nets"]
    assert nets_record["distortion"]["statistics_runs"] == 9 * build_all.options.calibration_frames
    assert nets_record["content"]["statistics_runs"] == build_all.options.calibration_frames
    # The CPU the build ran on, with the features int8 speed depends on.
    assert record["machine"]["isa"] == util.isa_name(record["machine"]["cpu_features"])
    assert record["machine"]["cpu_features"] == util.machine_info()["cpu_features"]
    # Full-integer I/O: the runtime needs scale and zero point to (de)quantize.
    for port in static["inputs"] + static["outputs"]:
        assert port["dtype"] == "int8" and port["scale"] > 0 and port["zero_point"] is not None
    assert data["files"]["content_net_fp16.tflite"]["inputs"][0]["scale"] is None


def test_every_aggregation_file_has_the_score_first_and_the_logit_second(build_all,
                                                                        golden_frames):
    entries = mf.load(build_all.path).files
    content, distortion = golden_frames["content_features"], golden_frames["distortion_features"]
    for backend in discover().values():
        if backend.name not in BUILTIN_ORDER or backend.name == "auto":
            continue
        name = backend.filenames()["aggregation"]
        assert [p["role"] for p in entries[name]["outputs"]] == ["score", "logit"]
        assert [p["signature_name"] for p in entries[name]["outputs"]] == ["output_0", "output_1"]
        interp = _interpreter(build_all.path / name)
        assert [d["index"] for d in interp.get_output_details()] == [
            p["index"] for p in entries[name]["outputs"]]
        score, logit = _run(interp, content[:1], distortion[:1])
        # The fork's host reads output_details()[0]: it must be the score.
        assert np.allclose(score, np.tanh(logit) * 2 + 3, atol=1e-5), (name, score, logit)


def test_float32_aggregation_matches_the_fork_file_and_the_golden_logits(built_models,
                                                                          reference_dir,
                                                                          golden_frames,
                                                                          golden_close):
    ours = _interpreter(built_models / "aggregation_net.tflite")
    fork = _interpreter(reference_dir / "aggregation_net.tflite")
    for i in range(len(golden_frames["logits"])):
        c = golden_frames["content_features"][i:i + 1]
        d = golden_frames["distortion_features"][i:i + 1]
        score, logit = _run(ours, c, d)
        fork_score = _run(fork, c, d)[0]
        assert abs(score.item() - fork_score.item()) <= 1e-5
        golden_close(logit.item(), golden_frames["logits"][i, 0], "logit")


def test_float32_backbones_match_the_golden_features(built_models, golden_frames):
    content_net = _interpreter(built_models / "content_net.tflite")
    distortion_net = _interpreter(built_models / "distortion_net.tflite")
    for i, frame in enumerate(golden_frames["frames_uint8"]):
        content_in, patches = frames.net_inputs(frame)
        content = _run(content_net, content_in)[0]
        distortion = _run(distortion_net, patches)[0]
        assert np.abs(content - golden_frames["content_features"][i:i + 1]).max() <= 1e-3
        assert np.abs(distortion - golden_frames["distortion_features"][i:i + 1]).max() <= 1e-3


# --------------------------------------------------------------------------- rebuild rules

def test_a_second_identical_build_changes_nothing(build_all):
    before = {name: (p.stat().st_mtime_ns, p.read_bytes() if name == mf.MANIFEST_NAME else None)
              for name, p in _files(build_all.path).items()}
    summary = convert.build(build_all.options)
    assert len(summary.skipped) == 18 and not summary.built and not summary.conversions
    after = {name: (p.stat().st_mtime_ns, p.read_bytes() if name == mf.MANIFEST_NAME else None)
             for name, p in _files(build_all.path).items()}
    assert after == before


def test_the_command_skips_up_to_date_files_without_converting(build_all, reference_dir, capsys, build_helpers):
    manifest_before = (build_all.path / mf.MANIFEST_NAME).read_bytes()
    # The fixture built with the defaults, so the command's defaults must match them.
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(build_all.path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["built"], out["skipped"], out["conversions"]) == (0, 18, [])
    assert out["backends"]["int4"]["ratio_to_float32"] <= MAX_SIZE_RATIO["int4"]
    assert (build_all.path / mf.MANIFEST_NAME).read_bytes() == manifest_before


def test_a_changed_checkpoint_rebuilds_only_the_files_made_from_it(build_all, reference_dir,
                                                                  tmp_path, capsys, build_helpers):
    torch = pytest.importorskip("torch")
    state = torch.load(reference_dir / "aggregation_net.pth", weights_only=True)
    state = {k: v.clone() for k, v in state.items()}
    state["linear1.bias"] += 0.5
    changed = tmp_path / "aggregation_changed.pth"
    torch.save(state, changed)

    names = [f"{net}_net{sfx}.tflite" for net in NETS for sfx in ("", "_fp16")]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    mtimes = {n: (out_dir / n).stat().st_mtime_ns for n in names}
    code = main(["build", *build_helpers.ckpt_args(reference_dir, aggregation=changed), "--out", str(out_dir),
                 "--backend", "float32,fp16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    built = {f["filename"] for f in out["files"] if f["status"] == "built"}
    assert built == {"aggregation_net.tflite", "aggregation_net_fp16.tflite"}
    assert [c["net"] for c in out["conversions"]] == ["aggregation"]
    for name in names:
        same = (out_dir / name).stat().st_mtime_ns == mtimes[name]
        assert same == (name not in built), name
    entries = mf.load(out_dir).files
    assert entries["aggregation_net.tflite"]["checkpoint"]["sha256"] == util.sha256_file(changed)
    assert (entries["aggregation_net.tflite"]["build_id"]
            != entries["content_net.tflite"]["build_id"])
    # The new head really is the changed checkpoint: its logit moved by the bias change.
    c = np.zeros((1, 8, 8, 128), np.float32)
    d = np.zeros((1, 24, 24, 128), np.float32)
    old = _run(_interpreter(build_all.path / "aggregation_net.tflite"), c, d)[1]
    new = _run(_interpreter(out_dir / "aggregation_net.tflite"), c, d)[1]
    assert abs((new - old).item() - 0.5) < 1e-4


def test_plan_rebuilds_forced_changed_and_corrupted_files_only(build_all, tmp_path, build_helpers):
    names = ["content_net.tflite", "content_net_int8.tflite", "distortion_net.tflite",
             "distortion_net_int8.tflite", "aggregation_net.tflite", "aggregation_net_int8.tflite"]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    options = convert.BuildOptions(checkpoints=build_all.options.checkpoints, out_dir=out_dir,
                                 backends="float32,int8")
    plan = convert.plan_build(options)
    assert plan.to_build == [] and set(plan.float_sources) == set(NETS)

    damaged = out_dir / "content_net_int8.tflite"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (out_dir / "aggregation_net_int8.tflite").unlink()
    plan = convert.plan_build(options)
    assert {j.filename: j.reason for j in plan.to_build} == {
        "content_net_int8.tflite": "file does not match its recorded sha256",
        "aggregation_net_int8.tflite": "file missing"}
    assert plan.nets_to_convert == []  # derived from the current float32 files

    forced = convert.plan_build(convert.BuildOptions(checkpoints=options.checkpoints,
                                                 out_dir=out_dir, backends="float32,int8",
                                                 force=True))
    assert {j.reason for j in forced.jobs} == {"forced"} and forced.float_sources == {}
    assert forced.nets_to_convert == ["distortion", "content", "aggregation"]

    more_frames = convert.BuildOptions(checkpoints=options.checkpoints, out_dir=build_all.path,
                                     backends="int8-static,int4",
                                     calibration_frames=build_all.options.calibration_frames + 1,
                                     frame_source=build_all.options.frame_source,
                                     frame_source_name=build_all.options.frame_source_name)
    reasons = {j.filename: j.reason for j in convert.plan_build(more_frames).jobs}
    assert reasons == {"content_net_int8_static.tflite": "recipe options changed",
                       "distortion_net_int8_static.tflite": "recipe options changed",
                       "aggregation_net_int8_static.tflite": None,
                       "content_net_int4.tflite": None, "distortion_net_int4.tflite": None,
                       "aggregation_net_int4.tflite": None}


def test_a_recipe_that_quantizes_nothing_fails_and_writes_no_file(build_all, reference_dir,
                                                                  tmp_path, monkeypatch, capsys, build_helpers):
    from uvq_int8.convert import quantize

    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    monkeypatch.setattr(quantize, "quantize_model", lambda recipe, model, cal=None: bytes(model))
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir), "--backend", "int8",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "content_net_int8.tflite" in err and "quantized no tensor to int8" in err
    assert set(_files(out_dir)) == set(names) | {mf.MANIFEST_NAME}
    assert mf.validate(json.loads((out_dir / mf.MANIFEST_NAME).read_text())) == []


def test_a_manifest_from_a_newer_uvq_int8_is_not_overwritten(reference_dir, tmp_path, capsys, build_helpers):
    out = tmp_path / "models"
    out.mkdir()
    newer = json.dumps({"format_version": mf.FORMAT_VERSION + 1, "files": {}})
    (out / mf.MANIFEST_NAME).write_text(newer)
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(out), "--backend", "float32"],
                  capsys, "newer than this uvq-int8", "--force")
    assert (out / mf.MANIFEST_NAME).read_text() == newer
    assert sorted(p.name for p in out.iterdir()) == [mf.MANIFEST_NAME]


def test_static_int8_calibrates_on_videos_without_converting_again(build_all, reference_dir,
                                                                    tmp_path, capsys, build_helpers):
    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    videos = [reference_dir / "sample_landscape.mp4", reference_dir / "sample_portrait.mp4"]
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir), "--backend",
                 "int8-static", "--calibration-videos", *map(str, videos),
                 "--calibration-frames", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["conversions"] == [] and out["built"] == 3
    assert [v["frames"] for v in out["calibration"]["videos_used"]] == [1, 1]
    entry = mf.load(out_dir).files["distortion_net_int8_static.tflite"]
    calibration = entry["recipe_options"]["calibration"]
    assert calibration["source"] == "videos" and calibration["frames"] == 2
    assert [v["sha256"] for v in calibration["videos"]] == [util.sha256_file(v) for v in videos]
    assert entry["inputs"][0]["dtype"] == "int8"


def test_bias_correction_is_a_build_option_recorded_in_the_manifest(build_all, reference_dir,
                                                                   tmp_path, capsys, build_helpers):
    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    video = reference_dir / "sample_landscape.mp4"
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir), "--backend",
                 "int8-static", "--calibration-videos", str(video), "--calibration-frames", "2",
                 "--int8-bias-correction", "depthwise", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    manifest = mf.load(out_dir)
    for net in ("content", "distortion"):
        entry = manifest.files[f"{net}_net_int8_static.tflite"]
        assert entry["recipe_options"]["bias_correction"] == "depthwise"
        record = out["calibration"]["nets"][net]["bias_correction"]
        assert record["convolutions"] == 16 and record["ops"] == ["DEPTHWISE_CONV_2D"]
        assert record["mean_abs_channel_error_after"] < record["mean_abs_channel_error_before"]
    # A bad value is refused before any work, with the choices named.
    with pytest.raises(SystemExit) as exit_:
        main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir), "--backend",
              "int8-static", "--int8-bias-correction", "some"])
    assert exit_.value.code == 2 and "invalid choice: 'some'" in capsys.readouterr().err


def test_refit_is_a_build_option_recorded_in_the_manifest(build_all, reference_dir, tmp_path,
                                                          capsys, build_helpers):
    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    video = reference_dir / "sample_landscape.mp4"
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir), "--backend",
                 "int8-static", "--calibration-videos", str(video), "--calibration-frames", "2",
                 "--int8-refit", "lsq", "--int8-refit-ridge", "0.03", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    manifest = mf.load(out_dir)
    for net in ("content", "distortion"):
        options = manifest.files[f"{net}_net_int8_static.tflite"]["recipe_options"]
        assert options["refit"] == "lsq" and options["refit_ridge"] == 0.03
        record = out["calibration"]["nets"][net]["refit"]
        assert record["ops"] == 31 and record["frames"] == 2 and record["ridge"] == 0.03
        assert record["check_frames"] == 1 and 0 <= record["accepted"] <= 31
        assert record["mean_op_check_snr_after_db"] >= record["mean_op_check_snr_before_db"]
    # Bad values are refused before any work, in one line.
    for flag, value, message in (("--int8-refit", "some", "invalid choice: 'some'"),
                                 ("--int8-refit-ridge", "-1", "--int8-refit-ridge must be a "
                                                              "positive number")):
        argv = ["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir),
                "--backend", "int8-static", flag, value]
        if flag == "--int8-refit":
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            assert exit_.value.code == 2 and message in capsys.readouterr().err
        else:
            assert main(argv) == 1  # a build error, as for other bad build options
            assert message in capsys.readouterr().err


@pytest.fixture()
def small_disk(tmp_path):
    """A size-limited file system (a 40 MB tmpfs); needs root, as in CI."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_writing_models_is_one_line_and_loses_nothing(
        build_all, reference_dir, small_disk, capsys, build_helpers):
    # The float32 files (31 MB) fit; the fp16 files made from them do not.
    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, small_disk / "models", names)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    code = main(["build", *build_helpers.ckpt_args(reference_dir), "--out", str(out_dir),
                 "--backend", "float32,fp16", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    # (the quantizer's own progress bars may precede it; they are not ours to silence here)
    errors = [line for line in err.splitlines() if line.startswith("uvq-int8:")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert errors[0].startswith("uvq-int8: error: no space left on the device writing ")
    assert "free some space, or write elsewhere (--out/--workdir DIR" in err
    # Nothing lost or half-written: the files already there are as they were, no temporary
    # file is left, and every file the manifest lists is whole (a file finished before the
    # disk filled up may stay, listed with its sha256).
    after = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert not [name for name in after if name.startswith(".")]
    for name, data in before.items():
        if name != mf.MANIFEST_NAME:
            assert after[name] == data, name
    entries = mf.load(out_dir).files
    for name, data in after.items():
        if name != mf.MANIFEST_NAME:
            assert entries[name]["sha256"] == util.sha256_bytes(data), name


def test_a_second_build_in_one_process_takes_the_calibration_the_first_computed(
        build_all, tmp_path, monkeypatch, build_helpers):
    """Same float32 files, same calibration frames: a second build takes the ranges, tensor
    statistics and refit that a first build in this process computed (none is computed
    again), and writes the same file; after ``forget`` they are computed again."""
    from uvq_int8.convert import calibration, refit

    names = [f"{net}_net.tflite" for net in NETS]
    out_dir = build_helpers.copy_subset(build_all.path, tmp_path / "models", names)
    options = convert.BuildOptions(**{**build_all.options.__dict__, "out_dir": out_dir,
                                      "backends": "int8-static"})
    made = [f"{net}_net_int8_static.tflite" for net in NETS]
    first = convert.build(options)  # computes, unless the session build left them
    assert first.ok

    calls = []

    def computed(*_args, **_kwargs):
        calls.append(_args)
        raise AssertionError("computed again")

    for module, name in ((calibration, "calibrate_per_frame"),
                         (calibration, "tensor_statistics"), (refit, "refit")):
        monkeypatch.setattr(module, name, computed)
    for name in made:
        (out_dir / name).unlink()
    second = convert.build(options)
    assert second.ok and calls == []
    files = mf.load(build_all.path).files
    for name in made:
        assert mf.load(out_dir).files[name]["sha256"] == files[name]["sha256"], name
    assert second.calibration["nets"]["distortion"]["refit"] == \
        first.calibration["nets"]["distortion"]["refit"]
    calibration.forget()
    (out_dir / made[0]).unlink()
    with contextlib.suppress(Exception):
        convert.build(options)
    assert calls
