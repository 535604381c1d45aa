"""Calibration: per-frame activation ranges of a float32 net, one frame in memory at a time.

ai-edge-quantizer's profiler-mode calibrator sees one frame per call; the per-frame
min/max of every tensor are kept (``FrameRanges``) so the range merges can be compared
(the auto search does), and ``merged("mean")`` is what the int8-static recipe uses.
``Calibration`` computes them once per net during a build, from the build's frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8.runtime import frames as F

if TYPE_CHECKING:
    from uvq_int8.convert import tensor_stats as T
    from uvq_int8.convert.sources import FrameSources


RANGE_MERGES = ("mean", "union", "median")


@dataclass(frozen=True)
class FrameRanges:
    """Per-frame min/max of every tensor, kept so range merges can be compared afterwards."""

    names: tuple[str, ...]
    lo: np.ndarray  # [frames, tensors]
    hi: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.lo.shape[0])

    def spread_max(self) -> float:
        """Largest ratio, over tensors, of a tensor's widest to its narrowest per-frame range."""
        width = self.hi - self.lo
        narrow = width.min(0)
        ok = narrow > 0
        return float((width.max(0)[ok] / narrow[ok]).max()) if ok.any() else 1.0

    def merged(self, how: str) -> dict[str, dict[str, np.ndarray]]:
        """Calibration result for ai-edge-quantizer: {tensor: {"min", "max"}}."""
        if how == "mean":
            lo, hi = self.lo.mean(0), self.hi.mean(0)
        elif how == "union":
            lo, hi = self.lo.min(0), self.hi.max(0)
        elif how == "median":
            lo, hi = np.median(self.lo, 0), np.median(self.hi, 0)
        else:
            raise ValueError(f"unknown range merge {how!r}; known: {', '.join(RANGE_MERGES)}")
        return {n: {"min": np.array([a], np.float32), "max": np.array([b], np.float32)}
                for n, a, b in zip(self.names, lo, hi)}


def calibrate_per_frame(float_model: bytes, inputs: Iterable[Mapping[str, np.ndarray]],
                        threads: int = 2,
                        progress: Callable[[int], None] | None = None) -> FrameRanges:
    """Every tensor's min/max per frame, one frame in memory at a time (profiler mode).

    ``inputs`` yields one {signature input name: array} per frame.
    """
    from uvq_int8.util import quiet_fd2
    from uvq_int8.convert.quantize import QuantizationError, profiler_calibrator

    calib, manager = profiler_calibrator(float_model, threads)
    signature = next(iter(calib.get_signature_list()))
    per_frame: list[dict[str, tuple[float, float]]] = []
    for sample in inputs:
        calib.reset_model_qsvs()
        try:
            with quiet_fd2():
                calib.calibrate({signature: [dict(sample)]}, manager)
        except Exception as exc:
            raise QuantizationError(f"calibration failed on frame {len(per_frame) + 1}: "
                                    f"{exc}") from None
        per_frame.append({k: (float(np.min(q["min"])), float(np.max(q["max"])))
                          for k, q in calib.get_model_qsvs().items()})
        if progress:
            progress(len(per_frame))
    if not per_frame:
        raise QuantizationError("calibration got no frames")
    names = tuple(sorted(set().union(*per_frame)))
    lo = np.array([[f.get(n, (np.nan, np.nan))[0] for n in names] for f in per_frame])
    hi = np.array([[f.get(n, (np.nan, np.nan))[1] for n in names] for f in per_frame])
    if np.isnan(lo).any():
        raise QuantizationError("calibration saw different tensors on different frames")
    return FrameRanges(names, lo, hi)


class Calibration:
    """Each net's ``FrameRanges`` on the build's calibration frames, computed once."""

    def __init__(self, frames: "FrameSources", threads: int,
                 status: Callable[[str, str], None], tick: Callable[[], None]) -> None:
        self.frames = frames
        self.threads = threads
        self.status = status  # (filename, text) -> None: progress
        self.tick = tick      # called once per frame (memory sampling)
        self.ranges: dict[str, FrameRanges] = {}

    def __call__(self, net: str, filename: str, float_model: bytes) -> FrameRanges:
        from uvq_int8.runtime.tflite_info import read_model_info

        if net in self.ranges:
            return self.ranges[net]
        store = self.frames.calibration_store()
        total = len(store)
        signature_input = read_model_info(float_model).inputs[0].signature_name or "args_0"
        started = time.perf_counter()

        def samples() -> Iterable[Mapping[str, np.ndarray]]:
            for i, frame in enumerate(store):
                self.status(filename, f"calibrating {i + 1}/{total}")
                content, patches = F.net_inputs(frame)
                yield {signature_input: content if net == "content" else patches}
                self.tick()

        ranges = calibrate_per_frame(float_model, samples(), threads=self.threads)
        self.frames.record_net(net, {
            "frames": ranges.frames, "tensors": len(ranges.names),
            "seconds": round(time.perf_counter() - started, 2),
            # How much the ranges swing between frames: why the merge matters.
            "range_spread_max": round(ranges.spread_max(), 3)})
        self.ranges[net] = ranges
        return ranges


# --------------------------------------------------------------------------- full statistics

RANGE_METHODS = ("minmax", "percentile", "mse")


@dataclass
class TensorStatistics:
    """Histograms of every op output over the calibration frames (a second pass, over the
    union of the per-frame ranges), with each output's op kind."""

    ranges: FrameRanges
    histograms: "T.Histograms"
    op_kinds: dict[str, str]


def tensor_statistics(float_model: bytes, inputs: Callable[[], Iterable[Sequence[np.ndarray]]],
                      ranges: FrameRanges, threads: int = 2,
                      bins: int = 2048) -> TensorStatistics:
    """Histogram every op output of ``float_model`` on the frames ``inputs()`` yields.

    ``ranges`` come from ``calibrate_per_frame`` on the same frames, so each histogram's
    fixed range (the union) holds every value. The interpreter keeps every tensor of a
    frame (about 3.6 GB for DistortionNet's nine patches), but each is reduced to its
    histogram as soon as it is read.
    """
    from uvq_int8.convert import tensor_stats as T

    union = {n: (float(a), float(b)) for n, a, b in zip(ranges.names, ranges.lo.min(0),
                                                        ranges.hi.max(0))}
    probe = T.TensorProbe(float_model, threads)
    op_kinds = {o.name: o.op for o in probe.ops}
    hist = T.Histograms({n: union[n] for n in op_kinds if n in union}, bins)
    for arrays in inputs():
        probe.run(*arrays)
        for out, values in probe.outputs():
            if out.name in hist.ranges:
                hist.add(out.name, values)
    return TensorStatistics(ranges, hist, op_kinds)


def histogram_ranges(stats: TensorStatistics, method: str, percentile: float = 99.99,
                     base: str = "mean") -> dict[str, dict[str, np.ndarray]]:
    """A calibration result whose op-output ranges come from the histograms.

    ``method`` is ``percentile`` (the range holding that share of the values) or ``mse``
    (the clipping range of least int8 quantization error). Tensors the histograms do not
    cover (the model input), and outputs whose scale the quantizer fixes or shares
    (``tensor_stats.FIXED_OR_SHARED_SCALE_OPS``), keep the ``base`` merge of the
    per-frame ranges; ``minmax`` gives that merge alone.
    """
    from uvq_int8.convert import tensor_stats as T

    result = stats.ranges.merged(base)
    if method == "minmax":
        return result
    if method not in RANGE_METHODS:
        raise ValueError(f"unknown range method {method!r}; known: {', '.join(RANGE_METHODS)}")
    hist = stats.histograms
    for name in result:
        if name not in hist.ranges or stats.op_kinds.get(name) in T.FIXED_OR_SHARED_SCALE_OPS:
            continue
        lo, hi = hist.ranges[name]
        counts, centres = hist.counts[name], hist.centres(name)
        if method == "mse":
            a, b = T.mse_range(counts, centres, lo, hi)
        else:
            a, b = T.percentile_range(counts, centres, lo, hi, percentile)
        result[name] = {"min": np.array([a], np.float32), "max": np.array([b], np.float32)}
    return result
