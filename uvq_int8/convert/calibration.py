"""Calibration: per-frame activation ranges of a float32 net, one frame in memory at a time.

ai-edge-quantizer's profiler-mode calibrator sees one frame per call; the per-frame
min/max of every tensor are kept (``FrameRanges``) so the range merges can be compared
(the auto search does), and ``merged("mean")`` is what the int8-static recipe uses.
``Calibration`` computes them once per net during a build, from the build's frames.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8.runtime import frames as F

if TYPE_CHECKING:
    from uvq_int8.convert import tensor_stats as T
    from uvq_int8.convert.options import Int8Settings
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


# Results that earlier builds in this process computed, for later builds from the same
# files and frames (a second build of a directory, auto after int8-static): each is a pure
# function of what its key names (``Calibration._key``). A few, the newest kept.
_MEMO: "OrderedDict[tuple, tuple[object, dict]]" = OrderedDict()
MEMO_SIZE = 32


def remembered(key: tuple, compute: Callable[[], tuple[object, dict]]) -> tuple[object, dict]:
    """``compute()``'s (result, record), or what it gave before for the same ``key``."""
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    _MEMO[key] = made = compute()
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return made


def forget() -> None:
    """Drop what earlier builds in this process left for later ones (``remembered``)."""
    _MEMO.clear()


class Calibration:
    """Each net's ``FrameRanges`` on the build's calibration frames, computed once; and, when
    the int8 settings need them, its tensor statistics and int8 bias correction."""

    def __init__(self, frames: "FrameSources", threads: int,
                 status: Callable[[str, str], None], tick: Callable[[], None],
                 statistics_model: Callable[[str], bytes | None] | None = None) -> None:
        self.frames = frames
        self.threads = threads
        self.status = status  # (filename, text) -> None: progress
        self.tick = tick      # called once per frame (memory sampling)
        # net -> DistortionNet's one-patch statistics variant (None: use the net itself)
        self.statistics_model = statistics_model or (lambda net: None)
        self.ranges: dict[str, FrameRanges] = {}
        self.statistics: dict[str, TensorStatistics] = {}
        self._refits: dict[tuple, tuple[bytes, dict]] = {}
        self._frames_sha256: str | None = None

    def _key(self, what: str, net: str, *models: bytes | None) -> tuple:
        """What a result of ``net`` is computed from: the models' bytes, the calibration
        frames' bytes and the interpreter threads (the memo's key, ``remembered``)."""
        if self._frames_sha256 is None:
            digest = hashlib.sha256()
            for path in self.frames.calibration_store().paths:
                digest.update(path.read_bytes())
            self._frames_sha256 = digest.hexdigest()
        return (what, net, self._frames_sha256, self.threads,
                *(None if m is None else hashlib.sha256(m).hexdigest() for m in models))

    def _inputs(self, net: str, filename: str, what: str | None):
        """The calibration frames as ``net``'s inputs, again at each call of the result;
        ``what``: the progress text per frame (None: none)."""
        store = self.frames.calibration_store()
        total = len(store)

        def inputs() -> Iterable[tuple[np.ndarray]]:
            for i, frame in enumerate(store):
                if what is not None:
                    self.status(filename, f"{what} {i + 1}/{total}")
                content, patches = F.net_inputs(frame)
                yield (content if net == "content" else patches,)
                self.tick()
        return inputs

    def __call__(self, net: str, filename: str, float_model: bytes) -> FrameRanges:
        from uvq_int8.runtime.tflite_info import read_model_info

        if net in self.ranges:
            return self.ranges[net]

        def compute() -> tuple[FrameRanges, dict]:
            signature_input = read_model_info(float_model).inputs[0].signature_name or "args_0"
            started = time.perf_counter()
            inputs = self._inputs(net, filename, "calibrating")
            ranges = calibrate_per_frame(float_model,
                                         ({signature_input: x[0]} for x in inputs()),
                                         threads=self.threads)
            return ranges, {
                "frames": ranges.frames, "tensors": len(ranges.names),
                "seconds": round(time.perf_counter() - started, 2),
                # How much the ranges swing between frames: why the merge matters.
                "range_spread_max": round(ranges.spread_max(), 3)}

        ranges, record = remembered(self._key("ranges", net, float_model), compute)
        self.frames.record_net(net, record)
        self.ranges[net] = ranges
        return ranges

    def tensor_statistics(self, net: str, filename: str, float_model: bytes) -> TensorStatistics:
        """Histograms and convolution channel means of ``net``, computed once."""
        if net not in self.statistics:
            ranges = self(net, filename, float_model)
            one_item = self.statistics_model(net)

            def compute() -> tuple[TensorStatistics, dict]:
                started = time.perf_counter()
                stats = tensor_statistics(float_model, self._inputs(net, filename, "statistics"),
                                          ranges, self.threads, statistics_model=one_item)
                return stats, {"statistics_seconds": round(time.perf_counter() - started, 2),
                               "statistics_runs": stats.runs}

            stats, record = remembered(self._key("statistics", net, float_model, one_item),
                                       compute)
            self.frames.record_net(net, record)
            self.statistics[net] = stats
        return self.statistics[net]

    def activation_ranges(self, net: str, filename: str, float_model: bytes,
                          settings: "Int8Settings") -> dict[str, dict[str, np.ndarray]]:
        """The calibration result that int8-static quantizes with."""
        if settings.ranges == "minmax":
            return self(net, filename, float_model).merged("mean")
        return histogram_ranges(self.tensor_statistics(net, filename, float_model),
                                settings.ranges, settings.percentile)

    def net_ranges(self, net: str, filename: str, float_model: bytes,
                   settings: "Int8Settings") -> "NetRanges":
        """What the auto search quantizes ``net`` with: every merge of the per-frame ranges,
        and the settings' histogram ranges when they use histograms."""
        ranges = self(net, filename, float_model)
        if settings.ranges == "minmax":
            return NetRanges(ranges)

        def refit(int8_model: bytes) -> tuple[bytes, dict]:
            return self.refit(net, filename, int8_model, float_model, settings)

        return NetRanges(ranges, self.tensor_statistics(net, filename, float_model), settings,
                         refit if settings.refit != "none" else None)

    def bias_correct(self, net: str, filename: str, int8_model: bytes, float_model: bytes,
                     settings: "Int8Settings") -> tuple[bytes, dict]:
        """``int8_model`` with its biases corrected as ``settings`` say, and the record."""
        from uvq_int8.convert import bias_correction as B

        ops = {"depthwise": ("DEPTHWISE_CONV_2D",), "all": B.CONV_OPS}[settings.bias_correction]
        stats = self.tensor_statistics(net, filename, float_model)
        inputs = self._inputs(net, filename, None)  # B.correct reports its own progress

        def say(text: str) -> None:
            self.status(filename, text)

        model, record = B.correct(int8_model, float_model, inputs, iterations=1,
                                  threads=self.threads, float_means=stats.conv_means,
                                  progress=say, ops=ops)
        return model, record.as_dict()

    def refit(self, net: str, filename: str, int8_model: bytes, float_model: bytes,
              settings: "Int8Settings") -> tuple[bytes, dict]:
        """``int8_model`` with its 1x1 convolutions refitted (``uvq_int8.convert.refit``)."""
        from uvq_int8.convert import refit as R

        def say(text: str) -> None:
            self.status(filename, text)

        if len(self.frames.calibration_store()) < 2:  # one to fit on, one to check on
            return int8_model, {"skipped": "the refit needs at least 2 calibration frames"}
        # int8-static's file and auto's full-int8 one are the same bytes: refit them once.
        key = (net, hashlib.sha256(int8_model).hexdigest(), settings.refit,
               settings.refit_ridge if settings.refit == "lsq" else None)  # cv takes no ridge
        if key not in self._refits:
            one_item = self.statistics_model(net)

            def compute() -> tuple[bytes, dict]:
                started = time.perf_counter()
                model, record = R.refit(int8_model, float_model,
                                        self._inputs(net, filename, None), threads=self.threads,
                                        ridge=settings.refit_ridge, cv=settings.refit == "cv",
                                        statistics_model=one_item, progress=say)
                return model, {**record.as_dict(),
                               "seconds": round(time.perf_counter() - started, 1)}

            self._refits[key] = remembered(
                (*self._key("refit", net, int8_model, float_model, one_item), *key[2:]), compute)
        return self._refits[key]


class NetRanges:
    """A net's calibration results by name: ``mean``, ``union`` and ``median`` merge the
    per-frame ranges; the histogram method of the settings (``percentile``, ``mse``) comes
    from tensor statistics, when they were gathered."""

    def __init__(self, ranges: FrameRanges, statistics: "TensorStatistics | None" = None,
                 settings: "Int8Settings | None" = None,
                 refit: Callable[[bytes], tuple[bytes, dict]] | None = None) -> None:
        self.ranges = ranges
        self.statistics = statistics
        self.settings = settings
        # The settings' refit of a full-integer file quantized with their own ranges
        # (``FrameRanges.refit``), made once when first asked for.
        self._refit = refit
        self._refitted: tuple[bytes, dict] | None = None

    @property
    def refits(self) -> bool:
        """Whether int8 files with the settings' own ranges take the refit."""
        return self._refit is not None and self.settings is not None

    def refitted(self, full_int8: bytes | Callable[[], bytes]) -> bytes:
        """The refit of ``full_int8`` (all int8, the settings' ranges; or what makes it,
        called only the first time), made once."""
        if self._refit is None:
            raise ValueError("these ranges come without a refit")
        if self._refitted is None:
            self._refitted = self._refit(full_int8() if callable(full_int8) else full_int8)
        return self._refitted[0]

    @property
    def refit_record(self) -> dict | None:
        return self._refitted[1] if self._refitted is not None else None

    @property
    def merges(self) -> tuple[str, ...]:
        """Every name ``merged`` takes, the build's own int8-static choice first."""
        if self.statistics is None or self.settings is None:
            return RANGE_MERGES
        return (self.settings.ranges, *RANGE_MERGES)

    def merged(self, how: str) -> dict[str, dict[str, np.ndarray]]:
        if how in RANGE_MERGES:
            return self.ranges.merged(how)
        if self.statistics is None or self.settings is None or how != self.settings.ranges:
            raise ValueError(f"no {how!r} ranges: known {', '.join(self.merges)}")
        return histogram_ranges(self.statistics, how, self.settings.percentile)


# --------------------------------------------------------------------------- full statistics

RANGE_METHODS = ("minmax", "percentile", "mse")
# Values read per tensor and per run into a histogram: a larger tensor is sampled with a
# stride that shares no factor with its channel count, so every channel is seen.
HISTOGRAM_SAMPLES = 1 << 20


def _stride(size: int, channels: int, limit: int = HISTOGRAM_SAMPLES) -> int:
    import math

    step = max(1, -(-size // limit))
    while step > 1 and math.gcd(step, channels) != 1:
        step += 1
    return step


@dataclass
class TensorStatistics:
    """Histograms of every op output over the calibration frames (a second pass, over the
    union of the per-frame ranges), each output's op kind, and the per-channel means of
    the convolution outputs (what bias correction compares with)."""

    ranges: FrameRanges
    histograms: "T.Histograms"
    op_kinds: dict[str, str]
    conv_means: dict[str, np.ndarray]
    runs: int = 0


def tensor_statistics(float_model: bytes, inputs: Callable[[], Iterable[Sequence[np.ndarray]]],
                      ranges: FrameRanges, threads: int = 2, bins: int = 2048,
                      statistics_model: bytes | None = None,
                      progress: Callable[[int], None] | None = None) -> TensorStatistics:
    """Histogram every op output of ``float_model`` on the frames ``inputs()`` yields.

    ``ranges`` come from ``calibrate_per_frame`` on the same frames, so each histogram's
    fixed range (the union) holds every value. The interpreter keeps every tensor of a
    run (about 3.6 GB for DistortionNet's nine patches), but each is reduced as soon as it
    is read. With ``statistics_model`` (``tensor_stats.one_item_variant``: the same tensors
    for one batch item), each input is run one batch item at a time on it instead: a
    ninth of the memory, the same values.
    """
    from uvq_int8.convert import tensor_stats as T
    from uvq_int8.convert.bias_correction import CONV_OPS

    union = {n: (float(a), float(b)) for n, a, b in zip(ranges.names, ranges.lo.min(0),
                                                        ranges.hi.max(0))}
    probe = T.TensorProbe(statistics_model if statistics_model is not None else float_model,
                          threads)
    op_kinds = {o.name: o.op for o in probe.ops}
    hist = T.Histograms({n: union[n] for n in op_kinds if n in union}, bins)
    sums: dict[str, np.ndarray] = {}
    runs = 0
    for frame, arrays in enumerate(inputs()):
        items = ([tuple(a[i:i + 1] for a in arrays) for i in range(len(arrays[0]))]
                 if statistics_model is not None else [tuple(arrays)])
        for item in items:
            probe.run(*item)
            runs += 1
            for out in probe.ops:
                name = out.name
                if name not in hist.ranges and out.op not in CONV_OPS:
                    continue
                values = probe.tensor(out.index)
                if out.op in CONV_OPS:
                    sums[name] = sums.get(name, 0.0) + T.channel_means(values)
                if name in hist.ranges:
                    flat = values.reshape(-1)
                    hist.add(name, flat[::_stride(flat.size, values.shape[-1])])
        if progress:
            progress(frame + 1)
    del probe
    if not runs:
        raise ValueError("tensor statistics got no frames")
    return TensorStatistics(ranges, hist, op_kinds, {n: v / runs for n, v in sums.items()}, runs)


def histogram_ranges(stats: TensorStatistics, method: str, percentile: float = 99.99,
                     base: str = "mean") -> dict[str, dict[str, np.ndarray]]:
    """A calibration result whose op-output ranges come from the histograms.

    ``method`` is ``percentile`` (the range holding that share of the values) or ``mse``
    (the clipping range of least int8 quantization error). Tensors the histograms do not
    cover (the model input, DistortionNet's tiling), and outputs whose scale the quantizer
    fixes or shares (``tensor_stats.FIXED_OR_SHARED_SCALE_OPS``), keep the ``base`` merge
    of the per-frame ranges; ``minmax`` gives that merge alone.
    """
    from uvq_int8.convert import tensor_stats as T

    if method not in RANGE_METHODS:
        raise ValueError(f"unknown range method {method!r}; known: {', '.join(RANGE_METHODS)}")
    result = stats.ranges.merged(base)
    if method == "minmax":
        return result
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
