"""The accuracy promise of an ``auto`` build, and the test that a runtime audit applies to it.

The unit is the per-frame change of the aggregation logit against the float32 files
(score = 3 + 2*tanh(logit)). The promise reads: *on content like the confirmation content,
at least a fraction p of frames (default 0.95) change by at most D*.

How a build earns it (split conformal). The search chooses a configuration on the search
frames. The chosen configuration is then measured **once** on confirmation frames that the
search never saw (made from other images). With n exchangeable confirmation frames and a new
frame from the same distribution, the k-th largest of the n errors is at least the new
frame's error with probability at least 1 - k/(n+1). Taking the largest k with
1 - k/(n+1) >= p, the promise holds when that k-th largest error is <= D.

The fallback rule, which keeps the bound valid: only one candidate is ever confirmed. If its
bound is over D, the build does not try the next candidate on the same confirmation frames
(that would choose on them and spend the bound); it falls back to float32 on both backbones,
whose change against float32 is 0 by definition, so D holds for it without any measurement.
The rejected choice and its confirmation numbers stay in the build record.

The number that limits the promise is the number of independent images behind the
confirmation frames, not the frame count: frames cut from one photograph are not independent,
so the record states both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_FRACTION = 0.95
# A runtime audit calls the promise contradicted when the audited frames over budget are
# this unlikely (one-sided binomial tail) for a configuration that keeps the promise.
AUDIT_SIGNIFICANCE = 0.01


def conformal_rank(n: int, fraction: float = DEFAULT_FRACTION) -> int:
    """The largest k such that the k-th largest of n held-out errors bounds a new frame's
    error with probability >= ``fraction`` (0: n is too small for that fraction)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the promised fraction must be between 0 and 1, got {fraction}")
    # 1 - k/(n+1) >= fraction  <=>  k <= (1 - fraction)(n + 1); the epsilon absorbs rounding.
    return max(0, int(math.floor((1 - fraction) * (n + 1) + 1e-9)))


def frames_needed(fraction: float = DEFAULT_FRACTION) -> int:
    """The fewest confirmation frames that can support ``fraction`` (19 for 0.95)."""
    n = 1
    while conformal_rank(n, fraction) < 1:
        n += 1
    return n


def conformal_bound(errors: Sequence[float], fraction: float = DEFAULT_FRACTION) -> float | None:
    """The k-th largest error (k from ``conformal_rank``), or None when too few frames."""
    values = np.sort(np.abs(np.asarray(errors, dtype=np.float64)))[::-1]
    k = conformal_rank(len(values), fraction)
    return float(values[k - 1]) if k >= 1 else None


@dataclass(frozen=True)
class Promise:
    """What a build promises, and what it rests on."""

    budget: float            # D, in logit units
    fraction: float          # p
    frames: int              # n confirmation frames
    images: int              # independent images behind them
    rank: int                # k
    bound: float | None      # the k-th largest confirmation error (None: n too small)
    max_logit_delta: float   # the largest confirmation error
    mean_logit_delta: float
    holds: bool              # bound <= budget
    content: str             # what the confirmation frames are
    fallback: bool = False   # the confirmed choice failed and float32 was taken instead

    @property
    def coverage(self) -> float:
        """The probability the bound carries: 1 - k/(n+1)."""
        return 1 - self.rank / (self.frames + 1) if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["coverage"] = round(self.coverage, 4)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Promise":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def sentence(self) -> str:
        if self.fallback:
            return (f"the searched choice missed the budget on the confirmation frames, so the "
                    f"build fell back to float32 (logit change 0): D = {self.budget:g} holds "
                    f"for every frame")
        if self.bound is None:
            return (f"not promised: {self.frames} confirmation frames cannot support a "
                    f"{self.fraction:.0%} bound (need {frames_needed(self.fraction)})")
        verdict = "holds" if self.holds else "NOT promised"
        return (f"at least {self.fraction:.0%} of frames within logit Δ {self.budget:g}: "
                f"{verdict} (bound {self.bound:.4f} = {ordinal(self.rank)} largest of "
                f"{self.frames} confirmation frames from {self.images} images, coverage "
                f"{self.coverage:.3f}; max {self.max_logit_delta:.4f}, mean "
                f"{self.mean_logit_delta:.4f}; content: {self.content})")


def ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def confirm(errors: Sequence[float], budget: float, images: int, content: str,
            fraction: float = DEFAULT_FRACTION) -> Promise:
    """Confirm one configuration on its per-frame confirmation errors."""
    values = np.abs(np.asarray(errors, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no confirmation frames")
    bound = conformal_bound(values, fraction)
    return Promise(float(budget), float(fraction), int(values.size), int(images),
                   conformal_rank(values.size, fraction), bound, float(values.max()),
                   float(values.mean()), bound is not None and bound <= budget, content)


def float32_fallback(failed: Promise) -> Promise:
    """The promise of float32 after ``failed`` (the only confirmed candidate) missed D."""
    return Promise(failed.budget, failed.fraction, failed.frames, failed.images, failed.rank,
                   0.0, 0.0, 0.0, True, failed.content, fallback=True)


def confirmation_deltas(float_paths: Mapping[str, Any], frames: Sequence[np.ndarray],
                        models: Mapping[str, bytes | None], threads: int = 2) -> np.ndarray:
    """Per-frame logit change of one configuration (backbone bytes, None = float32) against
    the float32 files on ``frames``: the one measurement the confirmation makes."""
    from uvq_int8.convert import sensitivity as S

    held = S.HeldOut(float_paths, frames, threads)
    return held.logit_deltas(held.features("content", models.get("content")),
                             held.features("distortion", models.get("distortion")))


# --------------------------------------------------------------------------- audit test


def binomial_tail(m: int, x: int, q: float) -> float:
    """P(X >= x) for X ~ Binomial(m, q)."""
    if x <= 0:
        return 1.0
    return float(sum(math.comb(m, i) * q ** i * (1 - q) ** (m - i) for i in range(x, m + 1)))


def contradicts(deltas: Sequence[float], budget: float, fraction: float = DEFAULT_FRACTION,
                significance: float = AUDIT_SIGNIFICANCE) -> tuple[bool, float]:
    """(exceeded, p-value): do audited frames contradict "a fraction >= p within D"?

    Under the promise each frame is over D with probability at most 1 - p, so the count over
    D among m audited frames is at most Binomial(m, 1 - p) in the tail. The promise is called
    exceeded when that tail probability is below ``significance`` (default 0.01): one frame
    over D is expected now and then and is not a breach (1 of 1: p = 0.05; 4 of 20: p = 0.016),
    while 2 of 3 (p = 0.007) or 5 of 20 (p = 0.003) are.
    """
    values = np.abs(np.asarray(deltas, dtype=np.float64))
    over = int((values > budget).sum())
    p_value = binomial_tail(int(values.size), over, 1 - fraction)
    return p_value < significance, p_value
