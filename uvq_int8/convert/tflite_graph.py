"""The main subgraph of a .tflite file as lists, with writable views of its constants.

What equalization and the least-squares refit read and change in place: each op's kind,
inputs, outputs and fused activation, and a constant tensor's bytes as numpy.
"""

from __future__ import annotations

import numpy as np

FLOAT32 = 0  # TensorType.FLOAT32
INT32 = 2
INT8 = 9


def buffer_view(data: bytearray, m, buffer: int, dtype=np.int32) -> np.ndarray:
    """A writable view, as ``dtype``, of a buffer's bytes inside ``data``.

    Small buffers sit inside the flatbuffer; larger ones (ai-edge-quantizer writes them
    so) are appended after it, with an offset and size from the start of the file.
    """
    buf = m.Buffers(buffer)
    if buf.Offset() > 1:
        start, size = int(buf.Offset()), int(buf.Size())
        return np.frombuffer(memoryview(data)[start:start + size], dtype=dtype)
    inner = buf.DataAsNumpy()
    if not isinstance(inner, np.ndarray):
        raise ValueError(f"buffer {buffer} holds no data")
    return inner.view(dtype)


class TFLiteGraph:
    """The main subgraph of a .tflite file, read once."""

    def __init__(self, data: bytearray) -> None:
        from uvq_int8.runtime.tflite_info import builtin_op_names, load_schema

        self.schema = load_schema()
        self.data = data
        self.m = self.schema.Model.GetRootAs(data, 0)
        names = builtin_op_names()
        codes = [names.get(max(self.m.OperatorCodes(i).BuiltinCode(),
                               self.m.OperatorCodes(i).DeprecatedBuiltinCode()), "?")
                 for i in range(self.m.OperatorCodesLength())]
        self.sg = self.m.Subgraphs(0)
        self.kinds: list[str] = []
        self.inputs: list[list[int]] = []
        self.outputs: list[list[int]] = []
        self.activation: list[int | None] = []
        for i in range(self.sg.OperatorsLength()):
            op = self.sg.Operators(i)
            self.kinds.append(codes[op.OpcodeIndex()])
            self.inputs.append([int(op.Inputs(j)) for j in range(op.InputsLength())])
            self.outputs.append([int(op.Outputs(j)) for j in range(op.OutputsLength())])
            self.activation.append(self._activation(op, self.kinds[-1]))
        self.graph_io = ({int(self.sg.Inputs(j)) for j in range(self.sg.InputsLength())}
                         | {int(self.sg.Outputs(j)) for j in range(self.sg.OutputsLength())})

    def _activation(self, op, kind: str) -> int | None:
        options = {"CONV_2D": self.schema.Conv2DOptions, "ADD": self.schema.AddOptions}.get(kind)
        table = op.BuiltinOptions()
        if options is None or table is None:
            return None
        parsed = options()
        parsed.Init(table.Bytes, table.Pos)
        return int(parsed.FusedActivationFunction())

    def depthwise_options(self, op: int) -> dict[str, int]:
        """A DEPTHWISE_CONV_2D op's padding (0 SAME, 1 VALID), strides, dilations, depth
        multiplier and fused activation."""
        table = self.sg.Operators(op).BuiltinOptions()
        parsed = self.schema.DepthwiseConv2DOptions()
        parsed.Init(table.Bytes, table.Pos)
        return {"padding": int(parsed.Padding()), "stride": (int(parsed.StrideH()),
                                                             int(parsed.StrideW())),
                "dilation": (int(parsed.DilationHFactor()), int(parsed.DilationWFactor())),
                "multiplier": int(parsed.DepthMultiplier()),
                "activation": int(parsed.FusedActivationFunction())}

    def name(self, t: int) -> str:
        return self.sg.Tensors(t).Name().decode("utf-8", "replace")

    def shape(self, t: int) -> list[int]:
        tensor = self.sg.Tensors(t)
        return [int(tensor.Shape(i)) for i in range(tensor.ShapeLength())]

    def is_constant(self, t: int) -> bool:
        buf = self.m.Buffers(self.sg.Tensors(t).Buffer())
        return buf.DataLength() > 0 or buf.Offset() > 1

    def float_view(self, t: int) -> np.ndarray:
        """A writable float32 view of a constant tensor's bytes, in its shape."""
        tensor = self.sg.Tensors(t)
        if tensor.Type() != FLOAT32:
            raise ValueError(f"tensor {self.name(t)!r} is not float32")
        flat = buffer_view(self.data, self.m, int(tensor.Buffer()), np.float32)
        return flat.reshape(self.shape(t))
