"""The LiteRT runtime: load-time checks, output roles, full-integer I/O."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from uvq_int8 import runtime
from uvq_int8.runtime import interpreter
from uvq_int8.errors import ModelFilesError


def test_float32_aggregation_matches_the_real_fork_file(built_models, reference_dir, golden_frames,
                                                       golden_close):
    ours = runtime.NetRunner("aggregation", built_models / "aggregation_net.tflite", 2)
    fork = runtime.NetRunner("aggregation", reference_dir / "aggregation_net.tflite", 2)
    assert ours.roles == ["score", "logit"]
    for i in range(2):
        c = golden_frames["content_features"][i:i + 1]
        d = golden_frames["distortion_features"][i:i + 1]
        score, logit = ours.run(c, d)
        assert abs(score.item() - fork.run(c, d)[0].item()) < 1e-5
        golden_close(logit.item(), golden_frames["logits"][i, 0], "logit")


def test_static_int8_models_take_float_and_give_float(built_models, golden_frames):
    models = runtime.load_models("int8-static", built_models, 2)
    content_in = models.runners["content"].inputs[0]
    assert content_in.quantized and content_in.dtype == np.int8
    content, distortion = models.features(golden_frames["frames_uint8"][0])
    assert content.dtype == np.float32 and distortion.shape == (1, 24, 24, 128)
    ref = golden_frames["distortion_features"][0]
    cos = float(np.sum(distortion[0] * ref) / np.linalg.norm(distortion[0]) / np.linalg.norm(ref))
    # Quantized, but clearly the same features (unrelated features give about 0). This frame
    # is synthetic; the default calibration is natural content, which measures closer to
    # float32 on photographs and less close on synthetic patterns (about 0.71 here).
    assert cos > 0.5


def copy_backend(src, dst, names):
    dst.mkdir()
    for name in names + ["manifest.json"]:
        shutil.copy(src / name, dst / name)


FLOAT_FILES = ["content_net.tflite", "distortion_net.tflite", "aggregation_net.tflite"]


def test_corrupt_model_is_named_and_suggests_build(built_models, tmp_path):
    copy_backend(built_models, tmp_path / "m", FLOAT_FILES)
    target = tmp_path / "m" / "distortion_net.tflite"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ModelFilesError, match="distortion_net.tflite.*uvq-int8 build"):
        runtime.load_models("float32", tmp_path / "m", 1)


def test_swapped_model_fails_its_shape_check(built_models, tmp_path):
    copy_backend(built_models, tmp_path / "m", FLOAT_FILES)
    shutil.copy(built_models / "content_net.tflite", tmp_path / "m" / "distortion_net.tflite")
    # without the manifest's sha256 check, the shape check still catches the swap
    with pytest.raises(ModelFilesError, match="not a UVQ 1.5 distortion net"):
        runtime.load_models("float32", tmp_path / "m", 1, check_manifest=False)
    with pytest.raises(ModelFilesError, match="does not match its manifest entry"):
        runtime.load_models("float32", tmp_path / "m", 1)


def test_truncated_file_is_not_loadable(built_models, tmp_path):
    copy_backend(built_models, tmp_path / "m", FLOAT_FILES)
    target = tmp_path / "m" / "aggregation_net.tflite"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ModelFilesError, match="aggregation_net.tflite"):
        runtime.load_models("float32", tmp_path / "m", 1, check_manifest=False)


def test_unreadable_manifest_is_a_clear_error(built_models, tmp_path):
    copy_backend(built_models, tmp_path / "m", FLOAT_FILES)
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFilesError, match="manifest"):
        runtime.load_models("float32", tmp_path / "m", 1)


def test_models_are_loaded_once_per_process(built_models):
    a = runtime.load_models("fp16", built_models, 1)
    b = runtime.load_models("fp16", built_models, 1)
    assert a is b
    assert json.dumps(a.sha256)  # plain strings, fit for JSON output


def test_integer_input_table_gives_the_same_bits_as_quantizing_floats(built_models,
                                                                       golden_frames):
    from uvq_int8.runtime import frames as F

    models = runtime.load_models("int8-static", built_models, 2)
    frame = golden_frames["frames_uint8"][1]
    fast = models.features(frame)
    slow = models.features_from_inputs(*F.net_inputs(frame))
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    port = models.runners["distortion"].inputs[0]
    table = models.runners["distortion"].pixel_table()
    assert table.dtype == port.dtype and table.shape == (256,)


def _pixel_table(dtype, scale: float, zero_point: int) -> interpreter.PixelTable:
    # Only the input port matters to the pixel tables; no model file is needed.
    return interpreter.PixelTable(
        interpreter.Port(0, (9, 360, 640, 3), np.dtype(dtype), scale, zero_point))


@pytest.mark.parametrize("dtype, scale, zero_point", [
    (np.int8, 0.007823913358151913, 0),  # the built int8-static DistortionNet's input
    (np.int8, 0.0078125, -3),
    (np.uint8, 0.0079, 127),
    (np.int16, 3.1e-5, 0),  # 2-byte values: falls back to the 256-entry table
])
def test_pixel_pair_lookup_equals_the_pixel_table(dtype, scale, zero_point):
    from uvq_int8.runtime import frames as F

    pixels = _pixel_table(dtype, scale, zero_point)
    table = pixels.table
    every_pair = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2, 1)
    assert np.array_equal(pixels.lookup(every_pair), table[every_pair])
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    patches = F.cut_patches(frame)
    fast = pixels.lookup(patches)
    assert fast.dtype == table.dtype == np.dtype(dtype) and fast.shape == patches.shape
    assert np.array_equal(fast, table[patches])
    # ... and both equal quantizing the [-1,1] floats, as NetRunner.run would
    assert np.array_equal(fast, interpreter.to_port(F.to_unit_range(patches), pixels.port))
    odd = frame[:5, :7]  # odd byte count and not contiguous: the 256-entry table path
    assert np.array_equal(pixels.lookup(odd), table[odd])
