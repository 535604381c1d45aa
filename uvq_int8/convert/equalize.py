"""Channel equalization of the residual streams: a function-preserving rewrite of a float32
net before full-integer quantization.

int8 activations get one scale per tensor, so where a tensor's channels differ widely in
range, the small channels get few levels. Between two linear convolutions the channels can
be rescaled freely: dividing output channel c of every producing convolution (weights and
bias) by s_c and multiplying input channel c of every consuming convolution by s_c leaves
the net's function unchanged. In EfficientNet-B0 this holds on the residual streams: the
projection convolutions (no activation), the ADDs that join them, and the convolutions
that read them (the next 1x1 expansions, and the backbone's final 2x2 convolution). A SiLU
between two layers breaks it, so nothing else is touched.

The streams are found from the graph, not from names: a stream is a set of tensors joined
by ADDs without an activation, written only by CONV_2D ops without an activation and read
only by CONV_2D ops (and those ADDs). A stream that breaks any rule is left alone.

The factor follows SmoothQuant's rule, s_c = r_c^α / w_c^(1−α), with r_c the channel's
largest |value| on the calibration frames (over every tensor of the stream) and w_c the
largest |weight| that a consumer applies to it. α = 1 makes every channel's range equal and
moves the spread into the consumers' weights, which keep one int8 scale per output channel;
smaller α shares it between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from uvq_int8.convert import tensor_stats as T
from uvq_int8.convert.tflite_graph import FLOAT32 as _FLOAT32, TFLiteGraph

DEFAULT_ALPHA = 0.5
# A channel whose range is below this share of the stream's largest is treated as having
# this range: a dead channel would otherwise get an unbounded factor.
RANGE_FLOOR = 1e-3
_NO_ACTIVATION = 0  # ActivationFunctionType.NONE


@dataclass(frozen=True)
class Stream:
    """Tensors joined by ADDs, with the convolutions that write and read them."""

    names: tuple[str, ...]
    channels: int
    producers: tuple[int, ...]  # op indices of the CONV_2D ops writing into the stream
    consumers: tuple[int, ...]  # op indices of the CONV_2D ops reading from it


@dataclass
class EqualizationRecord:
    """What equalization did, for the manifest."""

    alpha: float
    frames: int
    streams: int
    channels: int
    # Per stream: the spread of channel ranges (largest / median r_c), before and after.
    spread_before: list[float] = field(default_factory=list)
    spread_after: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"method": "residual-stream channel equalization, s = r^a / w^(1-a)",
                "alpha": self.alpha, "frames": self.frames, "streams": self.streams,
                "channels": self.channels,
                "range_spread_before": [round(v, 2) for v in self.spread_before],
                "range_spread_after": [round(v, 2) for v in self.spread_after]}


def _conv_ok(g: TFLiteGraph, op: int) -> bool:
    ins = g.inputs[op]
    return (g.kinds[op] == "CONV_2D" and len(ins) >= 2 and g.is_constant(ins[1])
            and g.sg.Tensors(ins[1]).Type() == _FLOAT32)


def find_streams(model: bytes) -> list[Stream]:
    """Every residual stream of a float32 net that can be equalized, in graph order."""
    g = TFLiteGraph(bytearray(model))
    parent: dict[int, int] = {}

    def root(t: int) -> int:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    joining = set()
    for op, kind in enumerate(g.kinds):
        ins = g.inputs[op]
        if (kind == "ADD" and g.activation[op] == _NO_ACTIVATION and len(ins) == 2
                and not any(g.is_constant(t) for t in ins)):
            joining.add(op)
            for t in ins:
                parent[root(t)] = root(g.outputs[op][0])
    seeds = [g.outputs[op][0] for op, kind in enumerate(g.kinds)
             if kind == "CONV_2D" and g.activation[op] == _NO_ACTIVATION]
    groups: dict[int, set[int]] = {}
    for t in seeds:
        groups.setdefault(root(t), set())
    for t in list(parent) + seeds:
        if root(t) in groups:
            groups[root(t)].add(t)
    streams = []
    used_buffers: list[int] = []
    for members in groups.values():
        producers = [op for op in range(len(g.kinds)) if op not in joining
                     and any(t in members for t in g.outputs[op])]
        consumers = [op for op in range(len(g.kinds)) if op not in joining
                     and any(t in members for t in g.inputs[op])]
        channels = {g.shape(t)[-1] for t in members}
        if (len(channels) != 1 or members & g.graph_io or not producers or not consumers
                or not all(_conv_ok(g, op) and g.activation[op] == _NO_ACTIVATION
                           and len(g.inputs[op]) >= 3 and g.inputs[op][2] >= 0
                           for op in producers)
                or not all(_conv_ok(g, op) and g.inputs[op][0] in members
                           and g.inputs[op][1:].count(g.inputs[op][0]) == 0
                           for op in consumers)):
            continue
        (c,) = channels
        if not all(g.shape(g.inputs[op][1])[3] == c for op in consumers):
            continue
        buffers = ([int(g.sg.Tensors(g.inputs[op][k]).Buffer()) for op in producers
                    for k in (1, 2)]
                   + [int(g.sg.Tensors(g.inputs[op][1]).Buffer()) for op in consumers])
        used_buffers.extend(buffers)
        order = sorted(members, key=lambda t: min(
            (op for op in range(len(g.kinds)) if t in g.outputs[op]), default=-1))
        streams.append(Stream(tuple(g.name(t) for t in order), c, tuple(producers),
                              tuple(consumers)))
    if len(set(used_buffers)) != len(used_buffers):
        raise ValueError("two convolutions share a weight buffer: scaling one would "
                         "change the other")
    streams.sort(key=lambda s: s.producers[0])
    return streams


def stream_ranges(model: bytes, streams: Sequence[Stream],
                  inputs: Callable[[], Iterable[Sequence[np.ndarray]]], threads: int = 2,
                  statistics_model: bytes | None = None) -> tuple[list[np.ndarray], int]:
    """Per stream, each channel's largest |value| over every tensor of the stream and every
    frame ``inputs()`` yields; and the number of frames. With ``statistics_model``
    (DistortionNet's one-patch variant, same tensor names) each frame runs on it one batch
    item at a time."""
    probe = T.TensorProbe(statistics_model if statistics_model is not None else model,
                          threads)
    index = {o.name: o.index for o in probe.ops}
    missing = [n for s in streams for n in s.names if n not in index]
    if missing:
        raise ValueError(f"the statistics net has no tensor {missing[0]!r}")
    ranges = [np.zeros(s.channels) for s in streams]
    frames = 0
    for arrays in inputs():
        items = ([tuple(a[i:i + 1] for a in arrays) for i in range(len(arrays[0]))]
                 if statistics_model is not None else [tuple(arrays)])
        frames += 1
        for item in items:
            probe.run(*item)
            for r, s in zip(ranges, streams):
                for name in s.names:
                    values = np.abs(probe.tensor(index[name]))
                    np.maximum(r, values.reshape(-1, s.channels).max(axis=0), out=r)
    del probe
    if not frames:
        raise ValueError("equalization got no frames")
    return ranges, frames


def factors(r: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """s_c = r_c^α / w_c^(1−α), scaled so that the stream's largest range is kept."""
    r = np.maximum(r, RANGE_FLOOR * r.max())
    w = np.maximum(w, RANGE_FLOOR * w.max())
    s = r ** alpha / w ** (1.0 - alpha)
    return s * ((r / s).max() / r.max())


def _spread(r: np.ndarray) -> float:
    r = np.maximum(r, RANGE_FLOOR * r.max())
    return float(r.max() / np.median(r))


def equalize(model: bytes, streams: Sequence[Stream], ranges: Sequence[np.ndarray],
             alpha: float = DEFAULT_ALPHA, frames: int = 0) -> tuple[bytes, EqualizationRecord]:
    """A copy of the float32 ``model`` with each stream's channels rescaled."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    data = bytearray(model)
    g = TFLiteGraph(data)
    record = EqualizationRecord(alpha, frames, len(streams), sum(s.channels for s in streams))
    for s, r in zip(streams, ranges):
        weights = [g.float_view(g.inputs[op][1]) for op in s.consumers]
        w = np.max([np.abs(v).max(axis=(0, 1, 2)) for v in weights], axis=0)
        scale = factors(np.asarray(r, np.float64), w.astype(np.float64), alpha)
        for op in s.producers:
            g.float_view(g.inputs[op][1])[...] /= scale.astype(np.float32).reshape(-1, 1, 1, 1)
            g.float_view(g.inputs[op][2])[...] /= scale.astype(np.float32)
        for v in weights:
            v[...] *= scale.astype(np.float32)
        record.spread_before.append(_spread(r))
        record.spread_after.append(_spread(r / scale))
    return bytes(data), record


def equalized(model: bytes, inputs: Callable[[], Iterable[Sequence[np.ndarray]]],
              alpha: float = DEFAULT_ALPHA, threads: int = 2,
              statistics_model: bytes | None = None) -> tuple[bytes, EqualizationRecord]:
    """Find, measure and equalize ``model``'s residual streams in one call."""
    streams = find_streams(model)
    ranges, frames = stream_ranges(model, streams, inputs, threads, statistics_model)
    return equalize(model, streams, ranges, alpha, frames)
