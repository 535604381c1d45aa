"""manifest.json: schema, validation, merging across builds, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from uvq_int8.runtime import manifest as mf
from uvq_int8 import util
from uvq_int8 import runtime


def _entry(filename="content_net_int8.tflite", **override):
    values = dict(
        filename=filename, backend="int8", net="content", recipe="dynamic_wi8_afp32",
        recipe_options={"recipe_version": 1, "weights": "int8"}, size=3, sha256="ab" * 32,
        checkpoint={"path": "/x/content_net.pth", "sha256": "cd" * 32},
        built_at=mf.utc_now(), build_id="b1", tensors_by_dtype={"float32": 2, "int8": 1},
        constant_tensors_by_dtype={"int8": 1}, quantized_tensors_by_dtype={"int8": 1},
        conv_weights_by_dtype={"int8": 1}, int4_conv_weights=0, ops_by_name={"CONV_2D": 1},
        inputs=[{"index": 0, "name": "in", "signature_name": "args_0", "role": "frame",
                 "shape": [1, 256, 256, 3], "dtype": "float32", "scale": None,
                 "zero_point": None}],
        outputs=[{"index": 5, "name": "out", "signature_name": "output_0", "role": "features",
                  "shape": [1, 8, 8, 128], "dtype": "float32", "scale": None,
                  "zero_point": None}])
    values.update(override)
    return mf.file_entry(**values)


def _record(build_id="b1"):
    return {"build_id": build_id, "started_at": mf.utc_now(), "finished_at": mf.utc_now(),
            "seconds": 1.5, "tools": {"python": "3.11"}, "checkpoints": {},
            "calibration": None, "peak_rss_bytes": {"self": 1, "children": 2, "max": 2}, "conversions": [],
            "backends": ["int8"], "built": [], "skipped": [], "failed": []}


def test_save_and_load_round_trip(tmp_path):
    m = mf.Manifest(files={"content_net_int8.tflite": _entry()}, builds=[_record()])
    path = mf.save(m, tmp_path)
    assert path == tmp_path / "manifest.json"
    loaded = mf.load(tmp_path)
    assert loaded.files == m.files and loaded.builds == m.builds
    data = json.loads(path.read_text())
    assert data["format_version"] == mf.FORMAT_VERSION and mf.validate(data) == []


def test_missing_manifest_loads_empty(tmp_path):
    m = mf.load(tmp_path)
    assert m.files == {} and m.builds == []


def test_file_entry_refuses_missing_or_extra_fields():
    with pytest.raises(ValueError, match="missing"):
        mf.file_entry(filename="x")
    with pytest.raises(ValueError, match="unexpected"):
        _entry(colour="blue")


@pytest.mark.parametrize("damage, problem", [
    (lambda d: d["files"]["content_net_int8.tflite"].pop("sha256"), "missing sha256"),
    (lambda d: d["files"]["content_net_int8.tflite"].update(size="3"), "size has type str"),
    (lambda d: d["files"]["content_net_int8.tflite"].update(size=True), "size has type bool"),
    (lambda d: d["files"]["content_net_int8.tflite"].update(filename="other.tflite"),
     "filename is 'other.tflite'"),
    (lambda d: d["files"]["content_net_int8.tflite"]["checkpoint"].pop("sha256"),
     "checkpoint: missing sha256"),
    (lambda d: d["files"]["content_net_int8.tflite"]["outputs"][0].pop("role"),
     "outputs[0]: missing role"),
    (lambda d: d.update(format_version=mf.FORMAT_VERSION + 1), "newer than this uvq-int8"),
    (lambda d: d.pop("format_version"), "format_version is missing"),
    (lambda d: d["builds"][0].pop("peak_rss_bytes"), "builds[0]: missing peak_rss_bytes"),
    (lambda d: d.update(files=[]), "files is missing or not an object"),
])
def test_validate_names_each_problem(damage, problem):
    data = mf.Manifest(files={"content_net_int8.tflite": _entry()}, builds=[_record()]).as_dict()
    data = json.loads(json.dumps(data))
    assert mf.validate(data) == []
    damage(data)
    problems = mf.validate(data)
    assert any(problem in p for p in problems), problems


def test_load_refuses_broken_json_and_invalid_schema(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(mf.ManifestError, match="unreadable"):
        mf.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99, "files": {}}))
    with pytest.raises(mf.ManifestVersionError, match="newer than this uvq-int8"):
        mf.load(tmp_path)


def test_save_refuses_an_invalid_manifest(tmp_path):
    bad = mf.Manifest(files={"x.tflite": {"filename": "x.tflite"}})
    with pytest.raises(ValueError, match="invalid manifest"):
        mf.save(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_update_merges_entries_across_builds_and_caps_build_records(tmp_path):
    mf.update(tmp_path, {"content_net_int8.tflite": _entry()}, build=_record("b1"))
    fp16 = _entry("content_net_fp16.tflite", backend="fp16", recipe="fp16_weights")
    mf.update(tmp_path, {"content_net_fp16.tflite": fp16}, build=_record("b2"))
    replaced = _entry(sha256="ef" * 32)
    m = mf.update(tmp_path, {"content_net_int8.tflite": replaced})
    assert set(m.files) == {"content_net_int8.tflite", "content_net_fp16.tflite"}
    assert mf.load(tmp_path).files["content_net_int8.tflite"]["sha256"] == "ef" * 32
    assert [b["build_id"] for b in mf.load(tmp_path).builds] == ["b1", "b2"]
    for i in range(mf.MAX_BUILD_RECORDS + 5):
        mf.update(tmp_path, build=_record(f"n{i}"))
    builds = [b["build_id"] for b in mf.load(tmp_path).builds]
    # The newest records stay, and so does b1: content_net_int8.tflite still points to it.
    assert builds == ["b1"] + [f"n{j}" for j in range(5, mf.MAX_BUILD_RECORDS + 5)]


def test_update_replaces_a_broken_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("garbage")
    mf.update(tmp_path, {"content_net_int8.tflite": _entry()})
    assert set(mf.load(tmp_path).files) == {"content_net_int8.tflite"}


def test_runtime_reads_the_hashes_this_schema_writes(tmp_path):
    mf.update(tmp_path, {"content_net_int8.tflite": _entry()})
    entries = runtime.manifest_entries(tmp_path)
    assert {name: e["sha256"] for name, e in entries.items()} == {
        "content_net_int8.tflite": "ab" * 32}
    assert runtime.manifest_entries(tmp_path / "nothing-here") is None


def test_atomic_write_replaces_the_file_in_one_step(tmp_path):
    target = tmp_path / "model.tflite"
    util.atomic_write_bytes(target, b"first")
    os.chmod(target, 0o640)
    util.atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o640  # the old file's permissions are kept
    assert list(tmp_path.iterdir()) == [target]


def test_new_files_are_readable_by_others(tmp_path):
    target = tmp_path / "model.tflite"
    util.atomic_write_bytes(target, b"x")
    assert target.stat().st_mode & 0o777 == 0o644


def test_an_interrupted_write_leaves_neither_a_partial_file_nor_a_temp_file(tmp_path):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"old and complete")
    with pytest.raises(KeyboardInterrupt):
        with util.atomic_writer(target) as fh:
            fh.write(b"half of the new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old and complete"
    assert list(tmp_path.iterdir()) == [target]
    fresh = tmp_path / "fresh.tflite"
    with pytest.raises(RuntimeError):
        with util.atomic_writer(fresh) as fh:
            fh.write(b"partial")
            raise RuntimeError("disk full")
    assert not fresh.exists() and list(tmp_path.iterdir()) == [target]


def test_sha256_of_files_and_bytes(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert util.sha256_file(path) == hashlib.sha256(data).hexdigest() == util.sha256_bytes(data)
