"""Least-squares refit of a full-integer int8 net's 1x1 convolutions, int8 inputs in the loop.

A convolution whose output is a small difference of large terms amplifies the noise that
int8 activations put on its input. EfficientNet's projection convolutions are such: the
per-layer report (``benchmarks/int8_layers.py``) shows the trained DistortionNet losing
23 dB at block 1's. Given the int8 net's own (noisy) input x̃ and the float32 net's output
y of the same op, the weights that minimise E‖W x̃ + b − y‖² give up a little of the signal
for less noise (the Wiener solution). They are found in closed form from sampled positions
of the calibration frames, with a small ridge towards the current weights, quantized per
output channel as the quantizer does, and written into the file: the int8 weights, their
scales and the int32 bias (and its scale, s_in · s_w[c]). The ops, the tensors and the
single XNNPACK node stay as they are.

The ops are refitted one at a time in graph order, each measured with every one before it
refitted, on the net cut after its input (``tensor_stats.prefix_model``), so that a plain
interpreter gives that input without keeping every tensor. Each fit uses the first three
quarters of the frames and is kept only if it beats the current weights on the last
quarter: with few positions per frame (ContentNet's last blocks see 8x8) a fit would
otherwise learn the calibration frames. Only 1x1 CONV_2D ops with at least
``MIN_POSITIONS`` output positions per frame take part: the squeeze-excitation ones see
one position per frame.

That single split made the kept set fragile. The cross-validated refit (``cv=True``, the
build's default since recipe version 4) chooses each op's ridge among ``CV_RIDGES`` by
``CV_FOLDS``-fold cross-validation over contiguous frame folds, from per-frame sufficient
statistics, fits the chosen ridge on all the frames, and keeps that fit only if its
cross-validated error is below the current weights' error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from uvq_int8.convert import tensor_stats as T
from uvq_int8.convert.tflite_graph import INT8, INT32, TFLiteGraph, buffer_view

MIN_POSITIONS = 16
DEFAULT_SAMPLES = 1024  # positions per frame and op
DEFAULT_RIDGE = 1e-3  # relative to the mean diagonal of the inputs' second moment
# The cross-validated refit ("cv"): the ridges it chooses among for each op, its number of
# contiguous frame folds, and its least positions per frame as a multiple of the op's
# inputs (a wide projection then has more samples than weights per output channel).
CV_RIDGES = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0)
CV_FOLDS = 4
CV_SAMPLES_PER_INPUT = 4


@dataclass(frozen=True)
class RefitSite:
    """One 1x1 convolution of the int8 net, or (``kind`` "depthwise") one depthwise
    convolution, whose every channel is a fit of its own on ``cin`` = kh·kw inputs."""

    op_index: int
    input: str
    output: str
    weight: int  # tensor indices in the int8 file
    bias: int
    cin: int
    cout: int
    kind: str = "conv"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # rows and columns of padding before the input
    in_shape: tuple[int, ...] = ()  # B, H, W, C of the input
    out_hw: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class RefitRecord:
    """What a refit did; ``ridge`` is None for the cross-validated one, whose ridges are
    chosen per op (``ridges``: op index -> the chosen ridge, for the kept ops)."""

    ops: int  # 1x1 convolutions considered
    accepted: int  # refits kept: better on the check frames than the weights they replace
    frames: int
    check_frames: int
    samples_per_frame: int
    ridge: float | None
    # Mean over the considered ops of the output's SNR in dB against float32 on the check
    # frames' samples, with the weights before and after (kept or not) that op's refit.
    snr_before_db: float
    snr_after_db: float
    folds: int = 0  # the cross-validated refit's frame folds (0: one check split)
    ridges: dict[int, float] = field(default_factory=dict)
    # The depthwise convolutions considered (``depthwise=True``), how many of them kept a
    # fit in at least one channel, and the channels kept in all.
    depthwise_ops: int = 0
    depthwise_kept: int = 0
    depthwise_channels: int = 0
    depthwise_channels_kept: int = 0
    # The cross-validated refit samples at least CV_SAMPLES_PER_INPUT positions per input
    # channel and frame: the most positions per frame that any op then took.
    samples_per_frame_most: int = 0
    rounding: str = "nearest"  # of the fitted weights (``rounding`` of ``refit``)

    def as_dict(self) -> dict:
        out = {"method": "least-squares refit of 1x1 convolutions, int8 inputs in the loop",
               "ops": self.ops, "accepted": self.accepted, "frames": self.frames,
               "check_frames": self.check_frames,
               "samples_per_frame": self.samples_per_frame, "ridge": self.ridge,
               "mean_op_check_snr_before_db": round(self.snr_before_db, 2),
               "mean_op_check_snr_after_db": round(self.snr_after_db, 2)}
        if self.folds:
            out.update(method="least-squares refit of 1x1 convolutions, int8 inputs in the "
                              "loop, ridge chosen per op by cross-validation over frames",
                       folds=self.folds, ridges_kept={str(k): v for k, v in
                                                      sorted(self.ridges.items())},
                       samples_per_frame_most=self.samples_per_frame_most,
                       rounding=self.rounding)
        if self.depthwise_ops:
            out.update(depthwise_ops=self.depthwise_ops, depthwise_kept=self.depthwise_kept,
                       depthwise_channels=self.depthwise_channels,
                       depthwise_channels_kept=self.depthwise_channels_kept)
        return out


def refit_sites(int8_model: bytes, depthwise: bool = False) -> list[RefitSite]:
    """The 1x1 CONV_2D ops with int8 weights, an int32 bias and enough positions, in graph
    order; with ``depthwise``, also such DEPTHWISE_CONV_2D ops (``_depthwise_site``)."""
    g = TFLiteGraph(bytearray(int8_model))
    sites = []
    for op, kind in enumerate(g.kinds):
        ins = g.inputs[op]
        if depthwise and kind == "DEPTHWISE_CONV_2D":
            site = _depthwise_site(g, op)
            if site is not None:
                sites.append(site)
            continue
        if kind != "CONV_2D" or len(ins) < 3 or ins[2] < 0:
            continue
        w, out = g.shape(ins[1]), g.shape(g.outputs[op][0])
        if (w[1:3] != [1, 1] or g.sg.Tensors(ins[1]).Type() != INT8
                or g.sg.Tensors(ins[2]).Type() != INT32 or len(out) != 4
                or out[1] * out[2] < MIN_POSITIONS):
            continue
        sites.append(RefitSite(op, g.name(ins[0]), g.name(g.outputs[op][0]), ins[1], ins[2],
                               w[3], w[0]))
    return sites


def _depthwise_site(g: TFLiteGraph, op: int) -> RefitSite | None:
    """A depthwise convolution the refit can fit channel by channel: int8 weights
    quantized per channel, an int32 bias, depth multiplier 1, no fused activation (its
    output is then linear in its weights) and enough output positions."""
    ins = g.inputs[op]
    if len(ins) < 3 or ins[2] < 0:
        return None
    x, w, out = g.shape(ins[0]), g.shape(ins[1]), g.shape(g.outputs[op][0])
    options = g.depthwise_options(op)
    wt = g.sg.Tensors(ins[1])
    if (len(x) != 4 or len(w) != 4 or len(out) != 4 or wt.Type() != INT8
            or g.sg.Tensors(ins[2]).Type() != INT32 or options["multiplier"] != 1
            or options["activation"] != 0 or x[3] != out[3] or w[3] != out[3]
            or wt.Quantization() is None or wt.Quantization().ScaleLength() != out[3]
            or out[1] * out[2] < MIN_POSITIONS):
        return None
    (kh, kw), (sh, sw), (dh, dw) = w[1:3], options["stride"], options["dilation"]
    pad = (0, 0)
    if options["padding"] == 0:  # SAME: the lesser half before
        pad = tuple(max((o - 1) * s + (k - 1) * d + 1 - n, 0) // 2
                    for o, s, k, d, n in ((out[1], sh, kh, dh, x[1]), (out[2], sw, kw, dw, x[2])))
    return RefitSite(op, g.name(ins[0]), g.name(g.outputs[op][0]), ins[1], ins[2], kh * kw,
                     out[3], kind="depthwise", kernel=(kh, kw), stride=(sh, sw),
                     dilation=(dh, dw), pad=pad, in_shape=tuple(x), out_hw=(out[1], out[2]))


def _patches(site: RefitSite, raw: np.ndarray, quantization: tuple[float, int],
             where: np.ndarray) -> np.ndarray:
    """A depthwise site's inputs at output positions ``where`` (flat over batch, rows and
    columns), as float [n, kh·kw, C]; padding reads the zero point, i.e. 0.0."""
    b, h, w, c = site.in_shape
    (kh, kw), (sh, sw), (dh, dw) = site.kernel, site.stride, site.dilation
    ho, wo = site.out_hw
    top, left = site.pad
    bottom = max((ho - 1) * sh + (kh - 1) * dh + 1 - h - top, 0)
    right = max((wo - 1) * sw + (kw - 1) * dw + 1 - w - left, 0)
    zero = quantization[1] if np.issubdtype(raw.dtype, np.integer) else 0
    x = np.pad(raw.reshape(b, h, w, c), ((0, 0), (top, bottom), (left, right), (0, 0)),
               constant_values=zero)
    item, rest = np.divmod(where, ho * wo)
    oh, ow = np.divmod(rest, wo)
    rows = oh[:, None] * sh + np.arange(kh)[None, :] * dh
    cols = ow[:, None] * sw + np.arange(kw)[None, :] * dw
    p = x[item[:, None, None], rows[:, :, None], cols[:, None, :], :]
    return T.dequantized(p.reshape(len(where), kh * kw, c), *quantization)


def _take(site: RefitSite, raw: np.ndarray, quantization: tuple[float, int],
          where: np.ndarray) -> np.ndarray:
    """What a site's fit reads of its input tensor ``raw`` at output positions ``where``."""
    if site.kind == "depthwise":
        return _patches(site, raw, quantization, where)
    return T.dequantized(raw.reshape(-1, site.cin)[where], *quantization)


def _positions(rng: np.random.Generator, total: int, samples: int) -> np.ndarray:
    return np.sort(rng.choice(total, size=min(total, samples), replace=False))


def _snr(a: np.ndarray, ref: np.ndarray) -> float:
    return T.snr_db(float(np.sum(ref.astype(np.float64) ** 2)),
                    float(np.sum((a.astype(np.float64) - ref) ** 2)))


def refit(int8_model: bytes, float_model: bytes,
          inputs: Callable[[], Iterable[Sequence[np.ndarray]]], threads: int = 2,
          samples: int = DEFAULT_SAMPLES, ridge: float = DEFAULT_RIDGE, seed: int = 0,
          statistics_model: bytes | None = None, check: bool = True,
          progress: Callable[[str], None] | None = None,
          incremental: bool = True, cv: bool = False,
          cv_ridges: Sequence[float] = CV_RIDGES,
          depthwise: bool = False, rounding: str = "nearest") -> tuple[bytes, RefitRecord]:
    """The refitted ``int8_model``; ``inputs()`` yields each calibration frame's inputs.

    ``check=False`` fits on every frame and keeps every fit (what the check guards against;
    for measurement only).

    ``cv=True`` is the cross-validated refit (``_cross_validated``): for each op, every
    ridge of ``cv_ridges`` is scored over ``CV_FOLDS`` contiguous frame folds, fitted on the
    other folds; the best is fitted on all the frames, and kept only if its cross-validated
    error is below the current weights' error on the same frames. ``ridge`` and ``check``
    are then unused, and each op samples at least ``CV_SAMPLES_PER_INPUT`` positions per
    input channel and frame.

    The float32 targets come from ``float_model``, or, with ``statistics_model``
    (DistortionNet's one-patch variant, ``tensor_stats.one_item_variant``), from that,
    one batch item at a time: a ninth of the memory, the same values.

    ``depthwise=True`` (with ``cv`` only) also refits each depthwise convolution, channel
    by channel: each channel's kh·kw weights and bias are a ridge fit of their own, its
    ridge chosen and its fit kept by the same cross-validation.

    ``rounding="gptq"`` (with ``cv`` only) rounds each 1x1 fit's weights one input at a
    time, carrying the rounding error onto the inputs not yet rounded
    (``_hessian_rounded``); the cross-validation scores the fits so rounded.

    ``incremental=False`` reads each op's input from the net cut after it, run from the
    frames (slower; the same values, which a test checks), instead of carrying the frames
    along the net (``_Walk``).
    """
    if depthwise and not cv:
        raise ValueError("the depthwise refit is the cross-validated one's (cv=True)")
    if rounding not in ("nearest", "gptq"):
        raise ValueError(f"unknown rounding {rounding!r}: nearest or gptq")
    if rounding != "nearest" and not cv:
        raise ValueError("the gptq rounding is the cross-validated refit's (cv=True)")
    sites = refit_sites(int8_model, depthwise)
    if not sites:
        raise ValueError("no 1x1 convolution to refit")
    # The float32 targets, once: y at fixed sampled positions of every site's output.
    probe = T.TensorProbe(statistics_model if statistics_model is not None else float_model,
                          threads)
    index = {o.name: o.index for o in probe.ops}
    missing = [s.output for s in sites if s.output not in index]
    if missing:
        raise ValueError(f"the float32 net has no tensor {missing[0]!r}")
    targets: dict[str, list[np.ndarray]] = {s.output: [] for s in sites}
    chosen: dict[str, list[np.ndarray]] = {s.output: [] for s in sites}
    rng = np.random.default_rng(seed)
    frames = 0
    for arrays in inputs():
        items = ([tuple(a[i:i + 1] for a in arrays) for i in range(len(arrays[0]))]
                 if statistics_model is not None else [tuple(arrays)])
        per_site: dict[str, list[np.ndarray]] = {s.output: [] for s in sites}
        for item in items:
            probe.run(*item)
            for s in sites:
                per_site[s.output].append(probe.tensor(index[s.output]).reshape(-1, s.cout))
        frames += 1
        for s in sites:
            y = np.concatenate(per_site[s.output])
            where = _positions(rng, len(y), _samples(s, samples) if cv else samples)
            chosen[s.output].append(where)
            # float16 halves what the targets hold (DistortionNet, 16 frames: ~360 MB);
            # its 1e-3 relative rounding is far below the int8 error being fitted.
            targets[s.output].append(y[where].astype(np.float16))
    del probe
    if not frames:
        raise ValueError("refit got no frames")
    if frames < 2:
        raise ValueError("refit needs at least 2 calibration frames (one to check on)")
    if cv:
        return _cross_validated(int8_model, sites, inputs, threads, incremental, chosen,
                                targets, frames, samples, tuple(cv_ridges), progress,
                                rounding)
    # The last quarter of the frames (at least one) only checks each fit: a refit is kept
    # only where it beats the weights it replaces there. Contiguous, so that with natural
    # clips or videos the check frames are mostly other content than the fitted ones.
    held = max(1, frames // 4) if check else 0
    fit_frames = frames - held
    data = bytearray(int8_model)
    walk = _Walk(inputs, threads, T.single_cuts(int8_model) if incremental else {})
    before, after = [], []
    accepted = 0
    for k, site in enumerate(sites):
        if progress:
            progress(f"refit {k + 1}/{len(sites)}")
        xs = walk.site_inputs(bytes(data), site, chosen[site.output])
        split = sum(len(v) for v in xs[:fit_frames])
        x = np.concatenate(xs).astype(np.float64)
        y = np.concatenate(targets[site.output]).astype(np.float64)
        old = _weights(data, site)
        new = _solve(x[:split], y[:split], old, ridge)
        rest = slice(split, None) if check else slice(None)
        old_snr, new_snr = (_snr(_apply(w, x[rest]), y[rest]) for w in (old, new))
        before.append(old_snr)
        after.append(max(old_snr, new_snr) if check else new_snr)
        if new_snr > old_snr or not check:
            _write(data, site, new)
            accepted += 1
    return bytes(data), RefitRecord(len(sites), accepted, frames, held, samples, ridge,
                                    float(np.mean(before)), float(np.mean(after)))


def _samples(site: RefitSite, samples: int) -> int:
    """Positions per frame the cross-validated refit samples for ``site``."""
    return max(samples, CV_SAMPLES_PER_INPUT * (site.cin + 1))


@dataclass
class _Moments:
    """Sufficient statistics of a least-squares fit of y on a = [x 1]: AᵀA, Aᵀy, Σy², n."""

    aa: np.ndarray
    ay: np.ndarray
    yy: float
    n: int

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> "_Moments":
        a = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
        y = y.astype(np.float64)
        return cls(a.T @ a, a.T @ y, float(np.sum(y * y)), len(a))

    def __add__(self, other: "_Moments") -> "_Moments":
        return _Moments(self.aa + other.aa, self.ay + other.ay, self.yy + other.yy,
                        self.n + other.n)

    def __sub__(self, other: "_Moments") -> "_Moments":
        return _Moments(self.aa - other.aa, self.ay - other.ay, self.yy - other.yy,
                        self.n - other.n)

    def error(self, w: "_Weights") -> float:
        """Σ‖W a + b − y‖² over these samples, for the int8 weights ``w`` as they act."""
        theta = _theta(w)
        return float(self.yy - 2.0 * np.sum(theta * self.ay.T)
                     + np.sum((theta @ self.aa) * theta))

    def fit(self, old: "_Weights", ridge: float, rounding: str = "nearest") -> "_Weights":
        """The ridge fit towards ``old`` on these samples, quantized as ``_solve`` does
        (``rounding`` "nearest"), or with each weight's rounding error carried onto the
        weights not yet rounded (``_hessian_rounded``, ``rounding`` "gptq")."""
        gram, rhs = self.aa / self.n, self.ay / self.n
        lam = ridge * float(np.mean(np.diag(gram)))
        hessian = gram + lam * np.eye(len(gram))
        theta = np.linalg.solve(hessian, rhs + lam * _theta(old).T).T
        if rounding == "gptq":
            return _hessian_rounded(theta, old, hessian)
        if rounding != "nearest":
            raise ValueError(f"unknown rounding {rounding!r}: nearest or gptq")
        return _quantized(theta, old)


def _theta(w: "_Weights") -> np.ndarray:
    """[W b] as float, one row per output channel."""
    return np.hstack([w.q_w * w.w_scale[:, None], (w.q_b * w.b_scale)[:, None]])


def _folds(frames: int, folds: int) -> list[range]:
    """``folds`` contiguous, near-equal runs of frame indices (fewer if there are fewer
    frames): natural clips and videos then have other content in each fold."""
    k = min(folds, frames)
    edges = [round(i * frames / k) for i in range(k + 1)]
    return [range(edges[i], edges[i + 1]) for i in range(k)]


def _cross_validated(int8_model: bytes, sites: Sequence[RefitSite],
                     inputs: Callable[[], Iterable[Sequence[np.ndarray]]], threads: int,
                     incremental: bool, chosen: dict[str, list[np.ndarray]],
                     targets: dict[str, list[np.ndarray]], frames: int, samples: int,
                     cv_ridges: tuple[float, ...],
                     progress: Callable[[str], None] | None,
                     rounding: str = "nearest") -> tuple[bytes, RefitRecord]:
    """The cross-validated refit (``refit(cv=True)``), from the sampled float32 targets."""
    folds = _folds(frames, CV_FOLDS)
    data = bytearray(int8_model)
    walk = _Walk(inputs, threads, T.single_cuts(int8_model) if incremental else {})
    before, after = [], []
    ridges: dict[int, float] = {}
    depthwise = [0, 0, 0, 0]  # ops, ops kept, channels, channels kept
    for k, site in enumerate(sites):
        if progress:
            progress(f"refit {k + 1}/{len(sites)}")
        xs = walk.site_inputs(bytes(data), site, chosen[site.output])
        if site.kind == "depthwise":
            kept = _cross_validated_depthwise(data, site, xs, targets[site.output], folds,
                                              cv_ridges)
            del xs
            depthwise = [depthwise[0] + 1, depthwise[1] + (kept > 0),
                         depthwise[2] + site.cout, depthwise[3] + kept]
            continue
        per_frame = [_Moments.of(x, y) for x, y in zip(xs, targets[site.output])]
        del xs
        per_fold = [sum((per_frame[f] for f in fold[1:]), per_frame[fold[0]])
                    for fold in folds]
        total = sum(per_fold[1:], per_fold[0])
        old = _weights(data, site)
        old_error = total.error(old)
        scores = {r: sum(part.error((total - part).fit(old, r, rounding))
                         for part in per_fold)
                  for r in cv_ridges}
        best = min(scores, key=lambda r: (scores[r], r))
        before.append(T.snr_db(total.yy, old_error))
        after.append(T.snr_db(total.yy, min(old_error, scores[best])))
        if scores[best] < old_error:
            _write(data, site, total.fit(old, best, rounding))
            ridges[site.op_index] = best
    return bytes(data), RefitRecord(len(before), len(ridges), frames, 0, samples, None,
                                    float(np.mean(before)) if before else float("nan"),
                                    float(np.mean(after)) if after else float("nan"),
                                    folds=len(folds), ridges=ridges,
                                    depthwise_ops=depthwise[0], depthwise_kept=depthwise[1],
                                    depthwise_channels=depthwise[2],
                                    depthwise_channels_kept=depthwise[3],
                                    samples_per_frame_most=max(
                                        (_samples(s, samples) for s in sites), default=0),
                                    rounding=rounding)


@dataclass
class _ChannelMoments:
    """``_Moments`` for C independent fits at once (a depthwise convolution's channels):
    aa [C, k+1, k+1], ay [C, k+1], yy [C]."""

    aa: np.ndarray
    ay: np.ndarray
    yy: np.ndarray
    n: int

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> "_ChannelMoments":
        """From inputs x [n, k, C] and targets y [n, C]."""
        a = np.concatenate([x.astype(np.float64), np.ones((len(x), 1, x.shape[2]))], axis=1)
        y = y.astype(np.float64)
        return cls(np.einsum("nic,njc->cij", a, a, optimize=True),
                   np.einsum("nic,nc->ci", a, y, optimize=True), np.sum(y * y, axis=0), len(a))

    def __add__(self, other: "_ChannelMoments") -> "_ChannelMoments":
        return _ChannelMoments(self.aa + other.aa, self.ay + other.ay, self.yy + other.yy,
                               self.n + other.n)

    def __sub__(self, other: "_ChannelMoments") -> "_ChannelMoments":
        return _ChannelMoments(self.aa - other.aa, self.ay - other.ay, self.yy - other.yy,
                               self.n - other.n)

    def error(self, w: "_Weights") -> np.ndarray:
        """Each channel's Σ (w·a + b − y)² over these samples, for the int8 weights ``w``."""
        theta = _theta(w)
        return (self.yy - 2.0 * np.sum(theta * self.ay, axis=1)
                + np.einsum("ci,cij,cj->c", theta, self.aa, theta, optimize=True))

    def fit(self, old: "_Weights", ridge: float) -> "_Weights":
        """Each channel's ridge fit towards ``old``, quantized per channel."""
        gram, rhs = self.aa / self.n, self.ay / self.n
        lam = ridge * np.einsum("cii->c", gram) / gram.shape[1]
        eye = np.eye(gram.shape[1])
        theta = np.linalg.solve(gram + lam[:, None, None] * eye,
                                (rhs + lam[:, None] * _theta(old))[..., None])[..., 0]
        return _quantized(theta, old)


def _cross_validated_depthwise(data: bytearray, site: RefitSite, xs: Sequence[np.ndarray],
                               ys: Sequence[np.ndarray], folds: Sequence[range],
                               cv_ridges: tuple[float, ...]) -> int:
    """Refit a depthwise site's channels in ``data``; how many channels took a new fit.

    Each channel takes, among ``cv_ridges``, the ridge with the least cross-validated error,
    fitted on all frames, where that error is below its current weights' error."""
    per_frame = [_ChannelMoments.of(x, y) for x, y in zip(xs, ys)]
    per_fold = [sum((per_frame[f] for f in fold[1:]), per_frame[fold[0]]) for fold in folds]
    total = sum(per_fold[1:], per_fold[0])
    old = _weights(data, site)
    scores = np.stack([sum(part.error((total - part).fit(old, r)) for part in per_fold)
                       for r in cv_ridges])  # [ridges, C]
    best = np.argmin(scores, axis=0)  # the first, i.e. the least ridge, on a tie
    keep = scores[best, np.arange(site.cout)] < total.error(old)
    if not keep.any():
        return 0
    q_w, w_scale, q_b, b_scale = (a.copy() for a in (old.q_w, old.w_scale, old.q_b,
                                                     old.b_scale))
    for i, r in enumerate(cv_ridges):
        rows = keep & (best == i)
        if rows.any():
            new = total.fit(old, r)
            q_w[rows], w_scale[rows] = new.q_w[rows], new.w_scale[rows]
            q_b[rows], b_scale[rows] = new.q_b[rows], new.b_scale[rows]
    _write(data, site, _Weights(q_w, w_scale, q_b, b_scale, old.s_in))
    return int(keep.sum())


def transplant(refitted: bytes, target: bytes) -> tuple[bytes, int]:
    """``target`` with the refitted 1x1 convolutions of ``refitted``, and how many it took.

    ``refitted`` is the full-integer net after ``refit``; ``target`` the same float net
    quantized with the same activation ranges but with some ops left float (``auto``'s
    mixed choices). Each of ``target``'s 1x1 convolutions that is int8 there, by its output
    tensor, with the same shape and input scale, takes the refitted weights, bias and
    scales. Their fit saw the noisier all-int8 inputs; what that costs a mixed file is
    measured where the file is chosen.
    """
    donor = {s.output: s for s in refit_sites(refitted, depthwise=True)}
    source, data = bytearray(refitted), bytearray(target)
    taken = 0
    for site in refit_sites(target, depthwise=True):
        src = donor.get(site.output)
        if src is None or (src.kind, src.cin, src.cout) != (site.kind, site.cin, site.cout):
            continue
        new = _weights(source, src)
        if not np.isclose(new.s_in, _weights(data, site).s_in, rtol=1e-6, atol=0.0):
            continue
        _write(data, site, new)
        taken += 1
    return bytes(data), taken


class _Walk:
    """Each refit op's int8 input on every calibration frame, with the ops before it as
    the file holds them at that point.

    The frames are carried through the net from cut to cut (``tensor_stats.single_cuts``:
    a position that one tensor crosses, such as a block's output or a projection's
    input), as that tensor's raw int8 values, so each op runs about once per frame over
    the whole refit instead of once for every op refitted after it. A cut is only passed
    when the ops before it are final: every op before the one being refitted is. Without
    cuts (or before the first), the input comes from the net cut after it
    (``tensor_stats.prefix_model``) run from the frames.
    """

    def __init__(self, inputs: Callable[[], Iterable[Sequence[np.ndarray]]], threads: int,
                 cuts: dict[int, str]) -> None:
        self.inputs, self.threads, self.cuts = inputs, threads, cuts
        self.pos, self.cut = 0, None  # the cut the frames are carried to, and its tensor
        self.state: list[np.ndarray] = []  # the cut tensor's raw values, per frame
        self.quantization = (0.0, 0)  # and their scale and zero point

    def _run(self, model: bytes, wanted: str, keep: Callable[[T.TensorProbe, int], None]) -> None:
        """``model`` (a prefix from the frames, or a segment from the cut) on every frame."""
        probe = T.TensorProbe(model, self.threads, keep_all=False)
        index = {o.name: o.index for o in probe.ops}[wanted]
        frames = self.inputs() if self.cut is None else ((x,) for x in self.state)
        for arrays in frames:
            probe.run(*arrays)
            keep(probe, index)

    def _model(self, data: bytes, wanted: str) -> bytes:
        if self.cut is None:
            return T.prefix_model(data, [wanted])
        return T.segment_model(data, self.pos, self.cut, [wanted])

    def site_inputs(self, data: bytes, site: RefitSite,
                    where: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The op's input on each frame at the sampled positions ``where[f]``, as float."""
        ahead = max((p for p in self.cuts if self.pos < p <= site.op_index), default=None)
        if ahead is not None:
            name, state = self.cuts[ahead], []

            def carry(probe: T.TensorProbe, index: int) -> None:
                state.append(probe.raw(index))
                self.quantization = probe.quantization(index)

            self._run(self._model(data, name), name, carry)
            self.pos, self.cut, self.state = ahead, name, state
        if self.cut == site.input:
            return [_take(site, x, self.quantization, w) for x, w in zip(self.state, where)]
        xs: list[np.ndarray] = []

        def sample(probe: T.TensorProbe, index: int) -> None:
            xs.append(_take(site, probe.raw(index), probe.quantization(index),
                            where[len(xs)]))

        self._run(self._model(data, site.input), site.input, sample)
        return xs


@dataclass(frozen=True)
class _Weights:
    """One op's int8 weights and int32 bias, with their scales, as the file holds them."""

    q_w: np.ndarray  # [cout, cin] int8
    w_scale: np.ndarray  # [cout]
    q_b: np.ndarray  # [cout] int32
    b_scale: np.ndarray  # [cout], s_in * w_scale
    s_in: float


def _weights(data: bytearray, site: RefitSite) -> _Weights:
    g = TFLiteGraph(data)
    wt, bt = g.sg.Tensors(site.weight), g.sg.Tensors(site.bias)
    q_w = buffer_view(data, g.m, int(wt.Buffer()), np.int8)
    # A depthwise kernel is stored [1, kh, kw, C]: one row per channel is its transpose.
    q_w = (q_w.reshape(site.cin, site.cout).T if site.kind == "depthwise"
           else q_w.reshape(site.cout, site.cin))
    return _Weights(
        q_w.copy(),
        np.asarray(wt.Quantization().ScaleAsNumpy(), np.float64),
        buffer_view(data, g.m, int(bt.Buffer()), np.int32).copy(),
        np.asarray(bt.Quantization().ScaleAsNumpy(), np.float64),
        float(g.sg.Tensors(g.inputs[site.op_index][0]).Quantization().Scale(0)))


def _apply(w: _Weights, x: np.ndarray) -> np.ndarray:
    return x @ (w.q_w.astype(np.float64) * w.w_scale[:, None]).T + w.q_b * w.b_scale


def _solve(x: np.ndarray, y: np.ndarray, old: _Weights, ridge: float) -> _Weights:
    """The ridge least-squares fit of [W b] to (x, y), quantized per output channel
    (symmetric int8 weights, int32 bias at scale s_in * s_w[c], as the quantizer does)."""
    theta0 = np.hstack([old.q_w * old.w_scale[:, None], (old.q_b * old.b_scale)[:, None]])
    a = np.hstack([x, np.ones((len(x), 1))])
    gram = a.T @ a / len(a)
    lam = ridge * float(np.mean(np.diag(gram)))
    theta = np.linalg.solve(gram + lam * np.eye(len(gram)), a.T @ y / len(a) + lam * theta0.T).T
    return _quantized(theta, old)


def _quantized(theta: np.ndarray, old: _Weights,
               w_scale: np.ndarray | None = None) -> _Weights:
    """[W b] quantized per output channel as the quantizer does, at ``old``'s input scale
    (and at ``w_scale``, where given, instead of each row's largest |w| over 127)."""
    w, b = theta[:, :-1], theta[:, -1]
    if w_scale is None:
        w_scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127.0
    b_scale = old.s_in * w_scale
    info = np.iinfo(np.int32)
    return _Weights(np.clip(np.round(w / w_scale[:, None]), -127, 127).astype(np.int8), w_scale,
                    np.clip(np.round(b / b_scale), info.min, info.max).astype(np.int32),
                    b_scale, old.s_in)


def _hessian_rounded(theta: np.ndarray, old: _Weights, hessian: np.ndarray,
                     block: int = 128) -> _Weights:
    """[W b] quantized as ``_quantized`` does, but rounded one input at a time with the
    error compensated on the inputs not yet rounded (GPTQ's order-k update).

    The fit's objective is (θ − θ*) H (θ − θ*)ᵀ per output channel, with H the ridge
    problem's matrix ``hessian`` over [x 1]. Rounding input i to the grid leaves an error
    e_i; the best change of the later coefficients for it is −e_i U[i, i+1:] / U[i, i],
    with U the upper Cholesky factor of H⁻¹. The scales stay those of nearest rounding (the
    largest |w| of each row over 127), and the bias, last and at a far finer step, absorbs
    what is left. Lazy updates by blocks of ``block`` inputs, as GPTQ does them."""
    w_scale = np.maximum(np.abs(theta[:, :-1]).max(axis=1), 1e-12) / 127.0
    try:
        u = np.linalg.cholesky(np.linalg.inv(hessian)).T
    except np.linalg.LinAlgError:
        return _quantized(theta, old)
    t = theta.copy()
    k = t.shape[1] - 1
    for start in range(0, k, block):
        end = min(start + block, k)
        errors = np.empty((len(t), end - start))
        for i in range(start, end):
            q = np.clip(np.round(t[:, i] / w_scale), -127, 127) * w_scale
            e = (t[:, i] - q) / u[i, i]
            t[:, i] = q
            t[:, i + 1:end] -= np.outer(e, u[i, i + 1:end])
            errors[:, i - start] = e
        t[:, end:] -= errors @ u[start:end, end:]
    return _quantized(t, old, w_scale)  # the weights are on the grid already


def _write(data: bytearray, site: RefitSite, w: _Weights) -> None:
    """Put ``w`` into the file: weight and bias bytes and their scale vectors, in place."""
    g = TFLiteGraph(data)
    wt, bt = g.sg.Tensors(site.weight), g.sg.Tensors(site.bias)
    buffer_view(data, g.m, int(wt.Buffer()), np.int8)[...] = (
        w.q_w.T.reshape(-1) if site.kind == "depthwise" else w.q_w.reshape(-1))
    buffer_view(data, g.m, int(bt.Buffer()), np.int32)[...] = w.q_b
    w_scale, b_scale = wt.Quantization().ScaleAsNumpy(), bt.Quantization().ScaleAsNumpy()
    w_scale[...] = w.w_scale.astype(w_scale.dtype)
    b_scale[...] = w.b_scale.astype(b_scale.dtype)
