"""Every op output of a .tflite net, frame by frame, reduced to statistics as soon as it is read.

``TensorProbe`` runs one net on a LiteRT interpreter that keeps every intermediate tensor
(``experimental_preserve_all_tensors``; XNNPACK still runs the ops). After each frame its
op outputs are read one at a time and folded into running sums, so what a calibration or
a per-layer report holds does not grow with the frame count. Quantized tensors are read
back as float with their scale and zero point.

``Histograms`` keeps a fixed-range histogram per tensor (the range is the union of the
per-frame min/max that calibration measured first), and ``mse_range`` picks from one the
clipping range that minimises the int8 quantization error; ``percentile_range`` is the
simpler rule it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

# Outputs of these ops have a scale the quantizer fixes (LOGISTIC 1/256, TANH 1/128,
# SOFTMAX 1/256) or share their input's (the rest): a range chosen for them is not used,
# so they keep what calibration measured.
FIXED_OR_SHARED_SCALE_OPS = frozenset({
    "LOGISTIC", "TANH", "SOFTMAX", "RESHAPE", "MAX_POOL_2D", "CONCATENATION",
    "STRIDED_SLICE", "SLICE", "TRANSPOSE", "PAD", "SQUEEZE", "GATHER"})
INT8_LEVELS = 256
DEFAULT_BINS = 2048


@dataclass(frozen=True)
class OpOutput:
    """One op's output tensor, as a probe reads it."""

    op_index: int
    op: str
    name: str
    index: int  # tensor index
    inputs: tuple[str, ...] = ()  # names of the op's non-constant inputs


class TensorProbe:
    """One net on an interpreter that keeps every tensor; float in, float tensors out."""

    def __init__(self, model: bytes, threads: int = 2, keep_all: bool = True) -> None:
        """``keep_all=False`` keeps only the graph's outputs readable (a plain, faster
        interpreter; with ``prefix_model`` those are the tensors wanted)."""
        from uvq_int8.runtime.interpreter import interpreter_class
        from uvq_int8.util import quiet_fd2

        with quiet_fd2():
            self._interp = interpreter_class()(model_content=bytes(model), num_threads=threads,
                                                experimental_preserve_all_tensors=keep_all)
            self._interp.allocate_tensors()
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        self._quant = {i: (float(d["quantization"][0]), int(d["quantization"][1]))
                       for i, d in details.items()}
        self._dtype = {i: np.dtype(d["dtype"]) for i, d in details.items()}
        self.ops: list[OpOutput] = []
        produced: set[int] = {int(d["index"]) for d in self._interp.get_input_details()}
        for op in self._interp._get_ops_details():
            if op["op_name"] == "DELEGATE":  # the XNNPACK node: its ops are listed too
                continue
            ins = tuple(details[t]["name"] for t in op["inputs"] if t in produced)
            for t in op["outputs"]:
                if t >= 0:
                    produced.add(int(t))
                    self.ops.append(OpOutput(int(op["index"]), op["op_name"],
                                             details[t]["name"], int(t), ins))
        self.inputs = self._interp.get_input_details()

    def run(self, *arrays: np.ndarray) -> None:
        """One frame: ``arrays`` are the float inputs in signature order."""
        for detail, array in zip(self.inputs, arrays):
            dtype = detail["dtype"]
            scale, zero = detail["quantization"]
            # An array already of the input's integer type is its raw values (``raw``).
            if np.issubdtype(dtype, np.integer) and scale and array.dtype != dtype:
                info = np.iinfo(dtype)
                array = np.clip(np.round(array / scale) + zero, info.min, info.max)
            self._interp.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=dtype))
        self._interp.invoke()

    def tensor(self, index: int) -> np.ndarray:
        """A tensor of the last frame, as float32 (dequantized when quantized)."""
        return self.as_float(index, self._interp.get_tensor(index))

    def as_float(self, index: int, a: np.ndarray) -> np.ndarray:
        """Tensor ``index``'s values ``a`` (as ``raw`` gives them) as float32."""
        return dequantized(a, *self._quant[index])

    def raw(self, index: int) -> np.ndarray:
        """A tensor of the last frame as the interpreter holds it (a copy)."""
        return self._interp.get_tensor(index).copy()

    def dtype(self, index: int) -> np.dtype:
        """A tensor's type as the interpreter holds it."""
        return self._dtype[index]

    def quantization(self, index: int) -> tuple[float, int]:
        """A tensor's (scale, zero point); scale 0 when it is not quantized."""
        return self._quant[index]

    def outputs(self) -> Iterator[tuple[OpOutput, np.ndarray]]:
        """Every op output of the last frame in graph order, one array at a time."""
        for out in self.ops:
            yield out, self.tensor(out.index)


def dequantized(a: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """Raw tensor values as float32 (integers with a scale are dequantized)."""
    if np.issubdtype(a.dtype, np.integer) and scale:
        return (a.astype(np.float32) - zero) * np.float32(scale)
    return a.astype(np.float32, copy=False)


class Histograms:
    """A fixed-range histogram per tensor, added to frame by frame."""

    def __init__(self, ranges: Mapping[str, tuple[float, float]], bins: int = DEFAULT_BINS) -> None:
        self.bins = bins
        self.ranges = {n: (float(lo), float(hi)) for n, (lo, hi) in ranges.items()}
        self.counts = {n: np.zeros(bins, np.int64) for n in self.ranges}

    def add(self, name: str, values: np.ndarray) -> None:
        lo, hi = self.ranges[name]
        if hi <= lo:
            self.counts[name][0] += values.size
            return
        idx = ((values.ravel() - lo) * (self.bins / (hi - lo))).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts[name] += np.bincount(idx, minlength=self.bins)

    def centres(self, name: str) -> np.ndarray:
        lo, hi = self.ranges[name]
        return lo + (np.arange(self.bins) + 0.5) * ((hi - lo) / self.bins)


def _with_zero(lo: float, hi: float) -> tuple[float, float]:
    # An int8 range holds zero exactly (the quantizer nudges it so).
    return min(lo, 0.0), max(hi, 0.0)


def quantization_mse(counts: np.ndarray, centres: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     levels: int = INT8_LEVELS) -> np.ndarray:
    """Expected squared error per element for each candidate range [lo, hi] (arrays).

    Inside the range, rounding to a step s costs s²/12; outside, clipping costs the squared
    distance to the nearer end. Prefix sums make each candidate O(1).
    """
    n = counts.astype(np.float64)
    total = max(n.sum(), 1.0)
    c0 = np.concatenate([[0.0], np.cumsum(n)])
    c1 = np.concatenate([[0.0], np.cumsum(n * centres)])
    c2 = np.concatenate([[0.0], np.cumsum(n * centres * centres)])
    i = np.searchsorted(centres, lo, side="left")   # bins below lo: [0, i)
    j = np.searchsorted(centres, hi, side="right")  # bins above hi: [j, bins)
    below = c2[i] - 2 * lo * c1[i] + lo * lo * c0[i]
    above = ((c2[-1] - c2[j]) - 2 * hi * (c1[-1] - c1[j]) + hi * hi * (c0[-1] - c0[j]))
    inside = (c0[j] - c0[i]) * ((hi - lo) / (levels - 1)) ** 2 / 12
    return (below + above + inside) / total


def mse_range(counts: np.ndarray, centres: np.ndarray, lo: float, hi: float,
              steps: int = 100, levels: int = INT8_LEVELS) -> tuple[float, float]:
    """The clipping range within [lo, hi] that minimises ``quantization_mse``.

    Each end is searched on ``steps`` fractions of its own extent from zero, jointly.
    """
    lo, hi = _with_zero(lo, hi)
    if hi - lo <= 0 or counts.sum() == 0:
        return lo, hi
    fractions = np.linspace(1.0 / steps, 1.0, steps)
    los = lo * fractions if lo < 0 else np.zeros(1)
    his = hi * fractions if hi > 0 else np.zeros(1)
    grid_lo, grid_hi = np.meshgrid(los, his, indexing="ij")
    keep = grid_hi > grid_lo
    err = quantization_mse(counts, centres, grid_lo[keep], grid_hi[keep], levels)
    k = int(np.argmin(err))
    return float(grid_lo[keep][k]), float(grid_hi[keep][k])


def percentile_range(counts: np.ndarray, centres: np.ndarray, lo: float, hi: float,
                     percentile: float = 99.99) -> tuple[float, float]:
    """The range holding ``percentile`` % of the values, the same share cut from each end."""
    lo, hi = _with_zero(lo, hi)
    total = counts.sum()
    if total == 0:
        return lo, hi
    cdf = np.cumsum(counts) / total
    tail = (100.0 - percentile) / 200.0
    a = float(centres[min(np.searchsorted(cdf, tail), len(centres) - 1)])
    b = float(centres[min(np.searchsorted(cdf, 1.0 - tail), len(centres) - 1)])
    return _with_zero(max(a, lo), min(b, hi))


def snr_db(signal_power: float, noise_power: float) -> float:
    """10·log10(Σa² / Σ(a−b)²), pooled over frames; inf for no error."""
    if noise_power <= 0:
        return float("inf")
    if signal_power <= 0:
        return float("-inf")
    return float(10.0 * np.log10(signal_power / noise_power))


@dataclass
class PairSums:
    """Running sums for SNR and cosine between a reference tensor a and a candidate b."""

    aa: float = 0.0
    bb: float = 0.0
    ab: float = 0.0
    dd: float = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a = a.astype(np.float64, copy=False).ravel()
        b = b.astype(np.float64, copy=False).ravel()
        d = a - b
        self.aa += float(a @ a)
        self.bb += float(b @ b)
        self.ab += float(a @ b)
        self.dd += float(d @ d)

    @property
    def snr_db(self) -> float:
        return snr_db(self.aa, self.dd)

    @property
    def cosine(self) -> float:
        denom = np.sqrt(self.aa * self.bb)
        return float(self.ab / denom) if denom > 0 else (1.0 if self.dd == 0 else 0.0)


def channel_means(values: np.ndarray) -> np.ndarray:
    """Mean over every axis but the last (NHWC channels)."""
    return values.reshape(-1, values.shape[-1]).mean(0, dtype=np.float64)


@dataclass(frozen=True)
class LayerRow:
    """One op output of a candidate net against the same tensor of the float32 net."""

    op_index: int
    op: str
    group: str
    name: str
    snr_db: float
    cosine: float
    # SNR lost at this op: the worst SNR among its inputs minus its own (None: no input).
    # Against the worst input, an op such as the squeeze-excitation MUL (x · gate, the
    # gate far more exact than x) is not charged for the error that x brings in.
    snr_drop_db: float | None
    # Where the loss comes from. ``rounding_snr_db``: the float32 tensor rounded and
    # clipped to the candidate's own int8 scale and zero point, against itself (the op's
    # own output quantization; None where the candidate's tensor is not quantized).
    # ``float_weights_snr_db``: for a 1x1 CONV_2D without a fused activation, the float32
    # weights applied to the candidate's input, against the float32 output (what the
    # input's error becomes through the exact weights; None for other ops). When this is
    # near ``snr_db`` and far below the input's, the op amplifies its input's error, and no
    # choice of its output range or rounding of its weights can recover it.
    rounding_snr_db: float | None = None
    float_weights_snr_db: float | None = None


def layer_report(float_model: bytes, model: bytes, frames: Iterable[Sequence[np.ndarray]],
                 threads: int = 2) -> list[LayerRow]:
    """SNR and cosine of every op output of ``model`` that the float32 net also has,
    pooled over ``frames`` (each a tuple of float inputs), in graph order, with the
    op's own rounding and, for 1x1 convolutions, the float32 weights on the candidate's
    input (``LayerRow``)."""
    from uvq_int8.convert.sensitivity import group_of
    from uvq_int8.convert.tflite_graph import TFLiteGraph

    reference = TensorProbe(float_model, threads)
    candidate = TensorProbe(model, threads)
    by_name = {o.name: o for o in candidate.ops}
    index = {o.name: o.index for o in candidate.ops}
    graph = TFLiteGraph(bytearray(float_model))
    # 1x1 convolutions of the float32 net: output name -> (input name, W [cout, cin], b).
    linear: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for out in reference.ops:
        ins = graph.inputs[out.op_index]
        if (out.op != "CONV_2D" or len(ins) < 3 or ins[2] < 0 or len(out.inputs) != 1
                or graph.activation[out.op_index] != 0 or out.inputs[0] not in index):
            continue
        w = graph.float_view(ins[1])
        if list(w.shape[1:3]) == [1, 1]:
            linear[out.name] = (out.inputs[0], w[:, 0, 0, :].astype(np.float64),
                                graph.float_view(ins[2]).astype(np.float64))
    sums: dict[str, PairSums] = {}
    rounding: dict[str, PairSums] = {}
    through: dict[str, PairSums] = {}
    for arrays in frames:
        reference.run(*arrays)
        candidate.run(*arrays)
        for out, a in reference.outputs():
            if out.name not in by_name:
                continue
            q = by_name[out.name].index
            sums.setdefault(out.name, PairSums()).add(a, candidate.tensor(q))
            scale, zero = candidate.quantization(q)
            kind = candidate.dtype(q)
            if scale and np.issubdtype(kind, np.integer):
                info = np.iinfo(kind)
                r = np.clip(np.round(a / scale) + zero, info.min, info.max)
                rounding.setdefault(out.name, PairSums()).add(a, (r - zero) * scale)
            if out.name in linear:
                source, w, b = linear[out.name]
                x = candidate.tensor(index[source]).reshape(-1, w.shape[1])
                through.setdefault(out.name, PairSums()).add(
                    a, x.astype(np.float64) @ w.T + b)
    rows = []
    snr = {n: s.snr_db for n, s in sums.items()}
    for out in reference.ops:
        if out.name not in sums:
            continue
        known = [snr[i] for i in out.inputs if i in snr]
        drop = (min(known) - snr[out.name]) if known else None
        rows.append(LayerRow(out.op_index, out.op, group_of(out.name), out.name,
                             snr[out.name], sums[out.name].cosine, drop,
                             rounding[out.name].snr_db if out.name in rounding else None,
                             through[out.name].snr_db if out.name in through else None))
    return rows


def one_item_variant(model: bytes) -> bytes:
    """The net for one batch item: DistortionNet's nine patches -> one patch.

    The graph up to the last op that keeps the batch axis (DistortionNet's max-pool: the
    patch tiling that follows slices the batch apart) is kept op for op, with the batch
    dimension of every tensor set to 1 and that op's output as the only output. Tensor
    names stay the same, so statistics gathered on it apply to the full net's tensors,
    at a ninth of the memory.
    """
    from uvq_int8.runtime.tflite_info import builtin_op_names

    m = _unpacked(model)
    sg = m.subgraphs[0]
    batch = int(sg.tensors[sg.inputs[0]].shape[0])
    names = builtin_op_names()

    def kind(op) -> str:
        code = m.operatorCodes[op.opcodeIndex]
        return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")

    last = None
    for i, op in enumerate(sg.operators):
        if kind(op) in ("SLICE", "STRIDED_SLICE", "CONCATENATION", "RESHAPE", "GATHER"):
            break
        if any(sg.tensors[t].shape is not None and len(sg.tensors[t].shape)
               and int(sg.tensors[t].shape[0]) != batch for t in op.outputs):
            break
        last = i
    if last is None:
        raise ValueError("no op keeps the batch axis")
    sg.operators = sg.operators[:last + 1]
    sg.outputs = list(sg.operators[-1].outputs)
    used = {t for op in sg.operators for t in list(op.inputs) + list(op.outputs) if t >= 0}
    for t, tensor in enumerate(sg.tensors):
        if t in used and m.buffers[tensor.buffer].data is None and tensor.shape is not None \
                and len(tensor.shape) and int(tensor.shape[0]) == batch:
            tensor.shape = [1, *list(tensor.shape)[1:]]
            if tensor.shapeSignature is not None and len(tensor.shapeSignature):
                tensor.shapeSignature = [1, *list(tensor.shapeSignature)[1:]]
    return _packed(m, len(model))


def _unpacked(model: bytes):
    """The model as flatbuffer objects, every buffer's bytes held inline.

    ai-edge-quantizer appends large buffers after the flatbuffer (an offset and a size);
    the object API does not read those bytes, so they are copied in here and written back
    inline.
    """
    from uvq_int8.runtime.tflite_info import load_schema

    m = load_schema().ModelT.InitFromPackedBuf(bytearray(model), 0)
    for buf in m.buffers or []:
        if buf.offset and buf.offset > 1:
            buf.data = np.frombuffer(model, np.uint8, int(buf.size), int(buf.offset)).copy()
            buf.offset = buf.size = 0
    return m


def _packed(m, size_hint: int) -> bytes:
    import flatbuffers

    m.signatureDefs = None  # the signature named the old outputs
    builder = flatbuffers.Builder(size_hint + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def prefix_model(model: bytes, outputs: Sequence[str]) -> bytes:
    """The net cut after the last op that writes one of the named tensors, with those
    tensors as its outputs (in the order given). It runs on a plain interpreter and gives
    the same values as the whole net's tensors, bit for bit."""
    m = _unpacked(model)
    sg = m.subgraphs[0]
    index = {t.name.decode("utf-8", "replace"): i for i, t in enumerate(sg.tensors)}
    missing = [n for n in outputs if n not in index]
    if missing:
        raise ValueError(f"the net has no tensor {missing[0]!r}")
    wanted = {index[n] for n in outputs}
    last = max((i for i, op in enumerate(sg.operators) if wanted & set(op.outputs)),
               default=None)
    if last is None:
        raise ValueError("no op writes the named tensors")
    sg.operators = sg.operators[:last + 1]
    sg.outputs = [index[n] for n in outputs]
    return _packed(m, len(model))


def single_cuts(model: bytes) -> dict[int, str]:
    """The op positions where the net can be cut through a single tensor: position p maps
    to the one non-constant tensor that ops before p (or the graph inputs) write and ops
    from p on read. Between EfficientNet blocks that is the block's output."""
    from uvq_int8.convert.tflite_graph import TFLiteGraph

    g = TFLiteGraph(bytearray(model))
    n = len(g.kinds)
    last_read: dict[int, int] = {}
    for op in range(n):
        for t in g.inputs[op]:
            if t >= 0 and not g.is_constant(t):
                last_read[t] = op
    written_at = {int(g.sg.Inputs(j)): -1 for j in range(g.sg.InputsLength())}
    for op in range(n):
        for t in g.outputs[op]:
            if t >= 0:
                written_at[t] = op
    cuts: dict[int, str] = {}
    live: set[int] = set()
    for p in range(n + 1):
        if p:
            live = {t for t in live if last_read.get(t, -1) >= p}
            live |= {t for t in g.outputs[p - 1] if t >= 0 and last_read.get(t, -1) >= p}
        else:
            live = {t for t in written_at if written_at[t] < 0 and t in last_read}
        if len(live) == 1 and p < n:
            cuts[p] = g.name(next(iter(live)))
    return cuts


def segment_model(model: bytes, start: int, cut: str, outputs: Sequence[str]) -> bytes:
    """Ops ``start`` on of the net, fed the tensor ``cut`` (``single_cuts()[start]``), up to
    the last op that writes one of ``outputs``, which become its outputs. Fed ``cut``'s
    values as the whole net computes them (``TensorProbe.raw``), it gives the whole net's
    values of ``outputs``, bit for bit."""
    m = _unpacked(model)
    sg = m.subgraphs[0]
    index = {t.name.decode("utf-8", "replace"): i for i, t in enumerate(sg.tensors)}
    missing = [n for n in (cut, *outputs) if n not in index]
    if missing:
        raise ValueError(f"the net has no tensor {missing[0]!r}")
    wanted = {index[n] for n in outputs}
    last = max((i for i, op in enumerate(sg.operators) if wanted & set(op.outputs)),
               default=None)
    if last is None or last < start:
        raise ValueError("no op from the cut on writes the named tensors")
    sg.operators = sg.operators[start:last + 1]
    sg.inputs = [index[cut]]
    sg.outputs = [index[n] for n in outputs]
    return _packed(m, len(model))
