"""``uvq-int8 build`` on bad input: one-line errors that say what to give."""

from __future__ import annotations


import pytest

from uvq_int8 import convert


def test_missing_checkpoint_names_the_expected_path(tmp_path, capsys, build_helpers):
    (tmp_path / "ckpt").mkdir()
    out = tmp_path / "out"
    build_helpers.fails(["--checkpoints", str(tmp_path / "ckpt"), "--out", str(out)], capsys,
                  f"content checkpoint not found: {tmp_path / 'ckpt' / 'content_net.pth'}")
    assert not out.exists()


def test_uvq_root_uses_the_upstream_layout(tmp_path, reference_dir, capsys, build_helpers):
    root = tmp_path / "uvq"
    (root / "uvq1p5_pytorch" / "checkpoints").mkdir(parents=True)
    paths = convert.resolve_checkpoints(uvq_root=root)
    assert paths["distortion"] == root / "uvq1p5_pytorch/checkpoints/distortion_net.pth"
    assert convert.default_out_dir(root) == root / "models/tflite_models/uvq1.5"
    # A per-net path overrides the directory.
    override = convert.resolve_checkpoints(uvq_root=root, content=reference_dir / "x.pth")
    assert override["content"] == reference_dir / "x.pth"
    build_helpers.fails(["--uvq-root", str(root)], capsys, "content checkpoint not found: "
                  f"{root / 'uvq1p5_pytorch/checkpoints/content_net.pth'}")
    assert not (root / "models").exists()


def test_no_checkpoint_source_says_what_to_give(capsys, build_helpers):
    build_helpers.fails(["--content", "a.pth"], capsys, "distortion, aggregation",
                  "--uvq-root DIR, --checkpoints DIR")


def test_wrong_keys_list_the_first_mismatches(reference_dir, tmp_path, capsys, build_helpers):
    torch = pytest.importorskip("torch")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    out = tmp_path / "out"
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir, distortion=bad), "--out", str(out)], capsys,
                  f"distortion checkpoint {bad} does not match",
                  "missing key features.0.0.conv.weight", "unexpected key conv1.weight")
    assert not out.exists()


def test_wrong_shapes_are_listed(reference_dir, tmp_path, capsys, build_helpers):
    torch = pytest.importorskip("torch")
    state = torch.load(reference_dir / "aggregation_net.pth", weights_only=True)
    state = {k: v.clone() for k, v in state.items()}
    state["linear1.weight"] = torch.zeros(1, 128)
    bad = tmp_path / "agg.pth"
    torch.save(state, bad)
    out = tmp_path / "out"
    out.mkdir()
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir, aggregation=bad), "--out", str(out)], capsys,
                  "wrong shape linear1.weight: checkpoint shape [1, 128], expected [1, 256]")
    assert list(out.iterdir()) == []


def test_unknown_backend_lists_the_known_ones(reference_dir, tmp_path, capsys, build_helpers):
    out = tmp_path / "out"
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(out), "--backend", "float32,int9"],
                  capsys, "unknown backend 'int9'",
                  "known backends: float32, fp16, int8, int8-weight-only, int4, int8-static")
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(out), "--backend",
                   "content=fp16,distortion=int8,aggregation=float32"], capsys,
                  "not a per-net mix")
    assert not out.exists()


def test_unwritable_output_directory_is_refused(reference_dir, tmp_path, capsys, build_helpers):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(blocker / "models")], capsys,
                  f"output directory {blocker / 'models'} cannot be created")
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(blocker)], capsys,
                  "exists and is not a directory")
    assert list(tmp_path.iterdir()) == [blocker]


def test_read_only_output_directory_is_refused(reference_dir, tmp_path, capsys, build_helpers):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("x")
            probe.unlink()
            pytest.skip("running as root: permissions do not stop writes")
        except PermissionError:
            pass
        build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(locked)], capsys,
                      f"output directory {locked} is not writable")
    finally:
        locked.chmod(0o700)


def test_missing_build_extra_says_how_to_install_it(reference_dir, tmp_path, capsys, monkeypatch, build_helpers):
    monkeypatch.setattr(convert.options, "BUILD_MODULES", ("torch", "no_such_module_for_uvq_test"))
    out = tmp_path / "out"
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(out), "--backend", "float32"],
                  capsys, "no_such_module_for_uvq_test", "pip install 'uvq-int8[build]'")
    assert not out.exists()


def test_missing_calibration_video_is_refused_before_building(reference_dir, tmp_path, capsys, build_helpers):
    out = tmp_path / "out"
    build_helpers.fails([*build_helpers.ckpt_args(reference_dir), "--out", str(out), "--backend", "int8-static",
                   "--calibration-videos", str(tmp_path / "nope.mp4")], capsys,
                  f"calibration video not found: {tmp_path / 'nope.mp4'}")
    assert not out.exists()


