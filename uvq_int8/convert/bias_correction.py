"""Empirical bias correction of a full-integer int8 net, in the .tflite file itself.

Rounding weights and clipping activations shift each convolution's output channels by a
small mean error that the following layers carry on. On calibration frames, the mean of
every CONV_2D and DEPTHWISE_CONV_2D output channel is measured in the int8 net and in the
float32 net; the int8 net's int32 bias then gets round(-δ / (s_in · s_w[c])), δ being the
channel's mean error and s_in · s_w[c] the bias's own scale. Every convolution has its own
bias buffer, so only those bytes change: same ops, same tensors, same single XNNPACK node.
All convolutions are corrected together and the measurement is repeated a fixed number of
times, since a correction upstream changes the means downstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8.convert import tensor_stats as T
from uvq_int8.convert.tflite_graph import buffer_view

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
DEFAULT_ITERATIONS = 2


@dataclass(frozen=True)
class BiasSite:
    """One convolution: its output tensor's name and where its int32 bias lives."""

    op_index: int
    op: str
    output: str
    buffer: int
    scales: np.ndarray  # the bias's per-channel scale, s_in * s_w[c]


def _model(data: bytearray):
    from uvq_int8.runtime.tflite_info import load_schema

    return load_schema().Model.GetRootAs(data, 0)


def bias_sites(model: bytes | bytearray) -> list[BiasSite]:
    """Every convolution with an int32 bias, in graph order."""
    from uvq_int8.runtime.tflite_info import builtin_op_names

    m = _model(bytearray(model))
    names = builtin_op_names()
    codes = [names.get(max(m.OperatorCodes(i).BuiltinCode(),
                           m.OperatorCodes(i).DeprecatedBuiltinCode()), "?")
             for i in range(m.OperatorCodesLength())]
    sg = m.Subgraphs(0)
    sites = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        kind = codes[op.OpcodeIndex()]
        if kind not in CONV_OPS or op.InputsLength() < 3 or op.Inputs(2) < 0:
            continue
        bias = sg.Tensors(op.Inputs(2))
        if bias.Type() != 2 or bias.Quantization() is None:  # 2: INT32
            continue
        scales = bias.Quantization().ScaleAsNumpy()
        output = sg.Tensors(op.Outputs(0)).Name().decode("utf-8", "replace")
        sites.append(BiasSite(i, kind, output, int(bias.Buffer()),
                              np.asarray(scales, np.float64)))
    buffers = [s.buffer for s in sites]
    if len(set(buffers)) != len(buffers):
        raise ValueError("two convolutions share a bias buffer: correcting one would "
                         "change the other")
    return sites


def biases(model: bytes | bytearray, sites: Sequence[BiasSite]) -> dict[str, np.ndarray]:
    """Each site's int32 bias (copies)."""
    data = bytearray(model)
    m = _model(data)
    return {s.output: buffer_view(data, m, s.buffer).copy() for s in sites}


def add_to_biases(model: bytes, steps: Mapping[str, np.ndarray],
                  sites: Sequence[BiasSite]) -> bytes:
    """A copy of ``model`` with ``steps[output]`` (int32) added to each site's bias."""
    data = bytearray(model)
    m = _model(data)
    for site in sites:
        step = steps.get(site.output)
        if step is None:
            continue
        view = buffer_view(data, m, site.buffer)
        total = view.astype(np.int64) + step.astype(np.int64)
        info = np.iinfo(np.int32)
        view[:] = np.clip(total, info.min, info.max).astype(np.int32)
    return bytes(data)


def channel_means(model: bytes, inputs: Callable[[], Iterable[Sequence[np.ndarray]]],
                  names: Iterable[str], threads: int = 2) -> tuple[dict[str, np.ndarray], int]:
    """Per-channel means of the named op outputs over the frames ``inputs()`` yields,
    and the number of frames."""
    probe = T.TensorProbe(model, threads)
    wanted = {o.name: o for o in probe.ops if o.name in set(names)}
    sums: dict[str, np.ndarray] = {}
    frames = 0
    for arrays in inputs():
        probe.run(*arrays)
        frames += 1
        for name, out in wanted.items():
            mean = T.channel_means(probe.tensor(out.index))
            sums[name] = sums.get(name, 0.0) + mean
    del probe
    if not frames:
        raise ValueError("bias correction got no frames")
    return {n: s / frames for n, s in sums.items()}, frames


@dataclass(frozen=True)
class CorrectionRecord:
    """What bias correction did, for the manifest."""

    iterations: int
    frames: int
    convolutions: int
    # Mean over convolutions of the mean |per-channel error|, relative to the float32
    # output's RMS channel mean, before and after (from the last measurement).
    mean_abs_error_before: float
    mean_abs_error_after: float
    ops: tuple[str, ...] = CONV_OPS

    def as_dict(self) -> dict:
        return {"method": "empirical per-channel mean, int32 bias, one op at a time",
                "ops": list(self.ops),
                "iterations": self.iterations, "frames": self.frames,
                "convolutions": self.convolutions,
                "mean_abs_channel_error_before": round(self.mean_abs_error_before, 6),
                "mean_abs_channel_error_after": round(self.mean_abs_error_after, 6)}


def mean_abs_error(measured: Mapping[str, np.ndarray],
                   reference: Mapping[str, np.ndarray]) -> float:
    """Mean over tensors of mean |δ_c|, each divided by the reference means' RMS."""
    values = []
    for name, ref in reference.items():
        if name in measured:
            scale = float(np.sqrt(np.mean(ref ** 2))) or 1.0
            values.append(float(np.mean(np.abs(measured[name] - ref))) / scale)
    return float(np.mean(values)) if values else 0.0


def correct(int8_model: bytes, float_model: bytes,
            inputs: Callable[[], Iterable[Sequence[np.ndarray]]],
            iterations: int = DEFAULT_ITERATIONS, threads: int = 2,
            float_means: Mapping[str, np.ndarray] | None = None,
            progress: Callable[[str], None] | None = None,
            ops: Sequence[str] = CONV_OPS) -> tuple[bytes, CorrectionRecord]:
    """Bias-corrected ``int8_model``; ``inputs()`` yields each calibration frame's inputs.

    The convolutions are corrected one at a time in graph order, each measured after every
    one before it was corrected. Corrected together (all at once, or a block at a time), a
    later layer also "corrects" error that an earlier correction removes, and the net got
    worse on both weight sets. ``iterations`` repeats the whole pass; ``ops`` limits the
    correction to those op kinds (e.g. only ``DEPTHWISE_CONV_2D``).
    """
    sites = [s for s in bias_sites(int8_model) if s.op in set(ops)]
    if not sites:
        raise ValueError(f"no {'/'.join(ops)} op with an int32 bias to correct")
    names = [s.output for s in sites]
    if float_means is None:
        float_means = channel_means(float_model, inputs, names, threads)[0]
    missing = [n for n in names if n not in float_means]
    if missing:
        raise ValueError(f"the float32 net has no tensor {missing[0]!r}")
    model = bytes(int8_model)
    measured, frames = channel_means(model, inputs, names, threads)
    before = mean_abs_error(measured, float_means)
    passes = iterations * len(sites)
    for i in range(passes):
        site = sites[i % len(sites)]
        if progress:
            progress(f"bias correction {i + 1}/{passes}")
        if i:  # the first site's means were measured above with the others
            measured = channel_means(model, inputs, [site.output], threads)[0]
        delta = measured[site.output] - float_means[site.output]
        model = add_to_biases(model, {site.output: np.round(-delta / site.scales)}, [site])
    measured, frames = channel_means(model, inputs, names, threads)
    after = mean_abs_error(measured, float_means)
    return model, CorrectionRecord(iterations, frames, len(sites), before, after,
                                   tuple(sorted(set(s.op for s in sites))))
