"""What a .tflite file holds, read straight from its flatbuffer (no torch, no interpreter).

Used by the build (to describe each file in the manifest and to refuse a
"quantized" file in which nothing was quantized) and by verification. The
schema module ships with ai-edge-litert, a runtime dependency.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from uvq_int8.errors import ModelFilesError

# Ops whose input 1 is the filter: these are the "conv weights" of the manifest.
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")
FLOAT_TYPES = ("float32", "float64")
# Narrow float types hold weights converted from float32: quantized in the size sense.
NARROW_FLOAT_TYPES = ("float16", "bfloat16")


@lru_cache(maxsize=1)
def load_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the install
        raise ModelFilesError("reading .tflite files needs ai-edge-litert "
                              "(pip install ai-edge-litert)") from None
    return schema


@lru_cache(maxsize=1)
def _type_names() -> dict[int, str]:
    return _enum_names(load_schema().TensorType)


@lru_cache(maxsize=1)
def builtin_op_names() -> dict[int, str]:
    return _enum_names(load_schema().BuiltinOperator)


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def dtype_name(code: int) -> str:
    """TFLite TensorType code -> lower-case name as numpy spells it (``int8``, ``float16``)."""
    return _type_names().get(code, f"type{code}").lower()


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output."""

    index: int
    name: str
    signature_name: str | None
    shape: list[int]
    dtype: str
    # Per-tensor quantization of a full-integer input/output (None for float):
    # real = (q - zero_point) * scale.
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    """Summary of one .tflite file: I/O, tensors by dtype, what was quantized."""

    size: int
    signature_key: str | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensors_by_dtype: dict[str, int]
    constant_tensors_by_dtype: dict[str, int]
    constant_bytes_by_dtype: dict[str, int]
    quantized_tensors_by_dtype: dict[str, int]
    conv_weights_by_dtype: dict[str, int]
    ops_by_name: dict[str, int] = field(default_factory=dict)

    @property
    def int4_conv_weights(self) -> int:
        return self.conv_weights_by_dtype.get("int4", 0)

    @property
    def quantized_tensors(self) -> int:
        return sum(self.quantized_tensors_by_dtype.values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["int4_conv_weights"] = self.int4_conv_weights
        return out


def _buffer_bytes(buffer) -> int:
    if buffer is None:
        return 0
    # Large models keep tensor data after the flatbuffer (offset/size); small ones inline it.
    size = buffer.Size() if hasattr(buffer, "Size") else 0
    offset = buffer.Offset() if hasattr(buffer, "Offset") else 0
    if offset > 1 and size:
        return int(size)
    return int(buffer.DataLength())


def _quantization(tensor) -> tuple[list[float], list[int], bool]:
    q = tensor.Quantization()
    if q is None:
        return [], [], False
    scales = [float(q.Scale(i)) for i in range(q.ScaleLength())]
    zeros = [int(q.ZeroPoint(i)) for i in range(q.ZeroPointLength())]
    has_details = bool(q.DetailsType())  # blockwise schemes keep scales elsewhere
    return scales, zeros, bool(scales) or has_details


def _tensor_info(subgraph, index: int, signature_name: str | None) -> TensorInfo:
    tensor = subgraph.Tensors(index)
    shape = [int(tensor.Shape(i)) for i in range(tensor.ShapeLength())]
    dtype = dtype_name(tensor.Type())
    scales, zeros, quantized = _quantization(tensor)
    scale = zero = None
    if quantized and len(scales) == 1 and dtype not in FLOAT_TYPES:
        scale, zero = scales[0], (zeros[0] if zeros else 0)
    name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else ""
    return TensorInfo(index, name, signature_name, shape, dtype, scale, zero)


def _signature_names(model) -> tuple[str | None, dict[int, str], dict[int, str]]:
    if not hasattr(model, "SignatureDefsLength") or model.SignatureDefsLength() != 1:
        return None, {}, {}
    sig = model.SignatureDefs(0)
    key = sig.SignatureKey().decode() if sig.SignatureKey() else None
    ins = {sig.Inputs(i).TensorIndex(): sig.Inputs(i).Name().decode()
           for i in range(sig.InputsLength())}
    outs = {sig.Outputs(i).TensorIndex(): sig.Outputs(i).Name().decode()
            for i in range(sig.OutputsLength())}
    return key, ins, outs


def _read(data) -> ModelInfo:
    schema = load_schema()
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise ModelFilesError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.Model.GetRootAs(data, 0)
    op_names = builtin_op_names()
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Newer files put the real code in BuiltinCode; old ones only in the deprecated byte.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        opcodes.append(custom.decode() if builtin == 32 and custom else  # 32 = CUSTOM
                       op_names.get(builtin, f"op{builtin}"))

    tensors: Counter = Counter()
    constants: Counter = Counter()
    const_bytes: Counter = Counter()
    quantized: Counter = Counter()
    conv_weights: Counter = Counter()
    ops: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            dtype = dtype_name(tensor.Type())
            tensors[dtype] += 1
            buf_index = tensor.Buffer()
            nbytes = _buffer_bytes(model.Buffers(buf_index)) if buf_index > 0 else 0
            if nbytes:
                constants[dtype] += 1
                const_bytes[dtype] += nbytes
            _, _, has_q = _quantization(tensor)
            if (has_q and dtype not in FLOAT_TYPES) or (nbytes and dtype in NARROW_FLOAT_TYPES):
                quantized[dtype] += 1
        dequantized_from: dict[int, int] = {}
        filters: list[int] = []
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            name = opcodes[op.OpcodeIndex()]
            ops[name] += 1
            if name == "DEQUANTIZE" and op.InputsLength() and op.OutputsLength():
                dequantized_from[int(op.Outputs(0))] = int(op.Inputs(0))
            elif name in CONV_OPS and op.InputsLength() > 1:
                filters.append(int(op.Inputs(1)))  # the filter, also for TRANSPOSE_CONV
        for index in filters:
            # Weight-only recipes store the filter narrow and DEQUANTIZE it before the
            # conv: count the dtype stored in the file, not the one the conv sees.
            index = dequantized_from.get(index, index)
            conv_weights[dtype_name(subgraph.Tensors(index).Type())] += 1

    key, sig_in, sig_out = _signature_names(model)
    main = model.Subgraphs(0)
    inputs = [_tensor_info(main, int(main.Inputs(i)), sig_in.get(int(main.Inputs(i))))
              for i in range(main.InputsLength())]
    outputs = [_tensor_info(main, int(main.Outputs(i)), sig_out.get(int(main.Outputs(i))))
               for i in range(main.OutputsLength())]
    return ModelInfo(len(data), key, inputs, outputs, dict(sorted(tensors.items())),
                     dict(sorted(constants.items())), dict(sorted(const_bytes.items())),
                     dict(sorted(quantized.items())), dict(sorted(conv_weights.items())),
                     dict(sorted(ops.items())))


def read_model_info(source: str | Path | bytes | bytearray | memoryview) -> ModelInfo:
    """Describe a .tflite file (path) or flatbuffer (bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read(bytes(source) if isinstance(source, memoryview) else source)
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFilesError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return _read(data)
    except ModelFilesError as exc:
        raise ModelFilesError(f"{path}: {exc}") from None
    except Exception as exc:  # a truncated flatbuffer fails in many ways
        raise ModelFilesError(f"{path} is not a readable TFLite model ({exc})") from None
