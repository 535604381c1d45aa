"""Reading a .tflite flatbuffer: I/O, tensors by dtype, what was quantized."""

from __future__ import annotations

import pytest

from uvq_int8.errors import ModelFilesError
from uvq_int8.runtime.tflite_info import dtype_name, read_model_info


@pytest.fixture(scope="module")
def fork_float(reference_dir):
    return read_model_info(reference_dir / "aggregation_net.tflite")


@pytest.fixture(scope="module")
def fork_int8(reference_dir):
    return read_model_info(reference_dir / "aggregation_net_int8.tflite")


def test_inputs_and_outputs_of_the_fork_aggregation_net(fork_float, reference_dir):
    assert fork_float.size == (reference_dir / "aggregation_net.tflite").stat().st_size
    assert [p.shape for p in fork_float.inputs] == [[1, 8, 8, 128], [1, 24, 24, 128]]
    assert [p.dtype for p in fork_float.inputs] == ["float32", "float32"]
    assert [p.shape for p in fork_float.outputs] == [[1, 1]]
    assert all(p.scale is None and p.zero_point is None for p in fork_float.inputs)


def test_float_file_has_no_quantized_tensors(fork_float):
    assert fork_float.quantized_tensors == 0 and fork_float.quantized_tensors_by_dtype == {}
    assert fork_float.conv_weights_by_dtype == {"float32": 1}  # the 1x1 conv of the head
    assert fork_float.int4_conv_weights == 0
    assert fork_float.tensors_by_dtype["float32"] > 0
    assert fork_float.ops_by_name.get("CONV_2D") == 1


def test_int8_file_reports_its_int8_tensors(fork_int8, fork_float):
    assert fork_int8.quantized_tensors_by_dtype.get("int8", 0) >= 1
    assert fork_int8.constant_bytes_by_dtype.get("int8", 0) > 0
    assert fork_int8.size < fork_float.size / 2
    assert [p.shape for p in fork_int8.inputs] == [p.shape for p in fork_float.inputs]


def test_bytes_and_path_give_the_same_answer(reference_dir, fork_int8):
    data = (reference_dir / "aggregation_net_int8.tflite").read_bytes()
    assert read_model_info(data) == fork_int8
    assert read_model_info(memoryview(data)) == fork_int8


def test_as_dict_is_json_ready(fork_int8):
    import json

    d = fork_int8.as_dict()
    assert json.loads(json.dumps(d))["int4_conv_weights"] == 0
    assert d["inputs"][0]["shape"] == [1, 8, 8, 128]


def test_not_a_tflite_file_is_a_clear_error(tmp_path, reference_dir):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFilesError, match="junk.tflite.*not a TFLite flatbuffer"):
        read_model_info(junk)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelFilesError):
        read_model_info(empty)
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes((reference_dir / "aggregation_net.tflite").read_bytes()[:4096])
    with pytest.raises(ModelFilesError, match="cut.tflite"):
        read_model_info(truncated)
    with pytest.raises(ModelFilesError, match="cannot read"):
        read_model_info(tmp_path / "missing.tflite")


def test_dtype_names_follow_numpy_spelling():
    assert [dtype_name(c) for c in (0, 1, 2, 9, 17)] == ["float32", "float16", "int32", "int8",
                                                        "int4"]
    assert dtype_name(999) == "type999"
