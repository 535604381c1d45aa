"""One .tflite file on the LiteRT interpreter: float32 in, float32 out (no torch).

Each file is checked when it is loaded: its sha256 against the manifest entry, and
its input and output shapes against what UVQ 1.5 needs, so a corrupt or swapped file
is a clear error naming the file instead of a wrong score.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from uvq_int8.errors import ModelFilesError
from uvq_int8.runtime import frames as F
from uvq_int8.util import quiet_fd2, sha256_file

# What each output of a net is, in the order of the export wrappers (build/nets.py) and so of
# the files this package writes.
OUTPUT_ROLES = {
    "content": ("features",),
    "distortion": ("features",),
    "aggregation": ("score", "logit"),
}

log = logging.getLogger(__name__)


EXPECTED_SHAPES = {
    "content": ([(1, F.CONTENT_SIZE, F.CONTENT_SIZE, 3)], (1, 8, 8, 128)),
    "distortion": ([(F.PATCH_GRID ** 2, F.PATCH_HEIGHT, F.PATCH_WIDTH, 3)], (1, 24, 24, 128)),
    "aggregation": ([(1, 8, 8, 128), (1, 24, 24, 128)], (1, 1)),
}


BUILD_HINT = "run 'uvq-int8 build' to (re)create the model files"


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore
        except ImportError:
            raise ModelFilesError(
                "no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert)") from None
    return Interpreter


@dataclass
class Port:
    """One input or output tensor: where it is, and how float values map to its dtype."""

    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.uint8, np.int16) and self.scale != 0.0


class NetRunner:
    """One .tflite file on one interpreter; float32 in, float32 out."""

    def __init__(self, net: str, path: str | Path, threads: int,
                 expected_sha256: str | None = None, entry: Mapping | None = None) -> None:
        self.net = net
        self.path = Path(path)
        self.entry = dict(entry or {})
        if not self.path.is_file():
            raise ModelFilesError(f"{net} model file not found: {self.path}; {BUILD_HINT}")
        self.sha256 = sha256_file(self.path)
        if expected_sha256 and self.sha256 != expected_sha256:
            raise ModelFilesError(
                f"{self.path} does not match its manifest entry (sha256 {self.sha256[:12]}..., "
                f"expected {expected_sha256[:12]}...): the file is corrupt or was replaced; "
                f"{BUILD_HINT} --force")
        try:
            with quiet_fd2(log):  # LiteRT's "Created XNNPACK delegate" notice
                self._interp = interpreter_class()(model_path=str(self.path),
                                                    num_threads=threads)
                self._interp.allocate_tensors()
        except ModelFilesError:
            raise
        except Exception as exc:
            raise ModelFilesError(f"{self.path} is not a loadable TFLite model ({exc}); "
                                  f"{BUILD_HINT} --force") from None
        self.inputs = [self._port(d) for d in self._input_details()]
        self.outputs = [self._port(d) for d in self._output_details()]
        self._check_shapes()
        self.roles = self._output_roles()
        self.mtime_ns = self.path.stat().st_mtime_ns  # load_models reloads a changed file
        self._pixels = PixelTable(self.inputs[0])
        self._lock = threading.Lock()

    def _input_details(self) -> list[dict]:
        return _ordered(self._interp.get_input_details(), self._signature_order("inputs"))

    def _output_details(self) -> list[dict]:
        return _ordered(self._interp.get_output_details(), self._signature_order("outputs"))

    def _signature_order(self, kind: str) -> list[int] | None:
        # The signature keeps the export's argument/return order (args_0, args_1 /
        # output_0, output_1); tensor indices alone do not.
        try:
            signatures = self._interp.get_signature_list()
            if len(signatures) != 1:
                return None
            runner = self._interp.get_signature_runner(next(iter(signatures)))
            details = (runner.get_input_details() if kind == "inputs"
                       else runner.get_output_details())
        except (ValueError, KeyError, RuntimeError):
            return None
        return [details[name]["index"] for name in sorted(details, key=_natural_key)]

    @staticmethod
    def _port(detail: dict) -> Port:
        scale, zero = detail.get("quantization", (0.0, 0))
        return Port(detail["index"], tuple(int(s) for s in detail["shape"]),
                     np.dtype(detail["dtype"]), float(scale), int(zero))

    def _check_shapes(self) -> None:
        want_in, want_out = EXPECTED_SHAPES[self.net]
        got_in = [p.shape for p in self.inputs]
        got_out = [p.shape for p in self.outputs]
        ok_out = bool(got_out) and got_out[0] == want_out and all(
            s == want_out for s in got_out[1:])
        if got_in != want_in or not ok_out or len(got_out) > 2:
            raise ModelFilesError(
                f"{self.path} is not a UVQ 1.5 {self.net} net: inputs {got_in}, outputs {got_out}; "
                f"expected inputs {want_in}, output {list(want_out)}")

    def _output_roles(self) -> list[str]:
        """Output roles ("score", "logit") as the manifest records them, else by position."""
        recorded = {o.get("index"): o.get("role") for o in self.entry.get("outputs", [])}
        default = OUTPUT_ROLES[self.net]
        return [recorded.get(p.index) or (default[i] if i < len(default) else f"output_{i}")
                for i, p in enumerate(self.outputs)]

    def pixel_table(self) -> np.ndarray:
        """uint8 pixel -> this net's quantized input value, as ``to_port`` would compute it."""
        return self._pixels.table

    def quantize_pixels(self, pixels_uint8: np.ndarray) -> np.ndarray:
        """uint8 pixels -> this net's quantized input: pixel_table()[pixels], quicker."""
        return self._pixels.lookup(pixels_uint8)

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            for port, array in zip(self.inputs, arrays):
                self._interp.set_tensor(port.index, to_port(array, port))
            self._interp.invoke()
            return [from_port(self._interp.get_tensor(p.index), p) for p in self.outputs]


def _ordered(details: list[dict], order: list[int] | None) -> list[dict]:
    if not order or len(order) != len(details):
        return details
    by_index = {d["index"]: d for d in details}
    return [by_index[i] for i in order if i in by_index] or details


def _natural_key(name: str):
    digits = "".join(ch for ch in name if ch.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1)


def to_port(array: np.ndarray, port: Port) -> np.ndarray:
    if port.quantized and array.dtype == port.dtype:
        return np.ascontiguousarray(array)  # already quantized (see Models.features)
    if port.quantized:
        info = np.iinfo(port.dtype)
        q = np.round(array / port.scale) + port.zero_point
        return np.clip(q, info.min, info.max).astype(port.dtype)
    return np.ascontiguousarray(array, dtype=port.dtype)


def from_port(array: np.ndarray, port: Port) -> np.ndarray:
    if port.quantized:
        return (array.astype(np.float32) - port.zero_point) * np.float32(port.scale)
    return array.astype(np.float32, copy=True)


class PixelTable:
    """uint8 pixels -> a quantized input port's values, through lookup tables.

    The same numbers as ``to_port`` on the [-1,1] frame, without a float pass over it.
    Tables are built on first use.
    """

    def __init__(self, port: Port) -> None:
        self.port = port
        self._table: np.ndarray | None = None
        self._pairs: np.ndarray | None = None

    @property
    def table(self) -> np.ndarray:
        """The 256-entry table: pixel value -> port value."""
        if self._table is None:
            self._table = to_port(F.to_unit_range(np.arange(256, dtype=np.uint8)), self.port)
        return self._table

    def lookup(self, pixels_uint8: np.ndarray) -> np.ndarray:
        table = self.table
        flat = pixels_uint8.reshape(-1)
        if table.itemsize != 1 or flat.size % 2 or not flat.flags.c_contiguous:
            return table[pixels_uint8]
        if self._pairs is None:
            # Two adjacent bytes looked up at once through a 65536-entry table: half the
            # lookups of the 256-entry table, and np.take is quicker than fancy indexing
            # (benchmarks/breakdown.py times the preprocessing).
            pairs = np.arange(1 << 16, dtype=np.uint16).view(np.uint8)
            self._pairs = table.view(np.uint8)[pairs].view(np.uint16)
        out = np.take(self._pairs, flat.view(np.uint16))
        return out.view(table.dtype).reshape(pixels_uint8.shape)
