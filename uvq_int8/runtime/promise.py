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

Several looks, and the rule that keeps the bound valid. A build may confirm up to L
candidates (``DEFAULT_LOOKS``), in the search's order of modelled time, on the same
confirmation frames, and keeps the first that holds. Each look is tested at the
Bonferroni-split fraction 1 - (1-p)/L: its bound is the k-th largest error with
k = floor((1-p)/L * (n+1)). For the kept candidate, a new frame exceeds D only if that
look's bound failed to cover it, which has probability at most (1-p)/L for each look, so
at most (1-p) over all L: the promise "a fraction >= p within D" still holds. Rank 1 for
L = 2 needs n >= 39 frames, for L = 3 n >= 59 (``frames_needed``), so the default is 60.
When no look holds, the build falls back to float32 on both backbones, whose change
against float32 is 0 by definition, so D holds for it without any measurement. The
rejected choices and their confirmation numbers stay in the build record.

The number that limits the promise is the number of independent images behind the
confirmation frames, not the frame count: frames cut from one photograph are not independent,
so the record states both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

DEFAULT_FRACTION = 0.95
# Candidates a build may confirm on the same frames (see the module docstring).
DEFAULT_LOOKS = 3
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


def look_fraction(fraction: float = DEFAULT_FRACTION, looks: int = 1) -> float:
    """The fraction each of ``looks`` confirmations is tested at: 1 - (1 - p) / L."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    return 1 - (1 - fraction) / looks


def frames_needed(fraction: float = DEFAULT_FRACTION, looks: int = 1) -> int:
    """The fewest confirmation frames that can support ``fraction`` over ``looks`` looks
    (19 for 0.95 and one look, 39 for two, 59 for three)."""
    n = 1
    while conformal_rank(n, look_fraction(fraction, looks)) < 1:
        n += 1
    return n


def supported_looks(frames: int, fraction: float = DEFAULT_FRACTION,
                    looks: int = DEFAULT_LOOKS) -> int:
    """The most looks, up to ``looks``, that ``frames`` confirmation frames support (0: none)."""
    return max((L for L in range(1, looks + 1)
                if conformal_rank(frames, look_fraction(fraction, L)) >= 1), default=0)


def conformal_bound(errors: Sequence[float], fraction: float = DEFAULT_FRACTION,
                    looks: int = 1) -> float | None:
    """The k-th largest error (k from ``conformal_rank`` at the look's fraction), or None
    when too few frames."""
    values = np.sort(np.abs(np.asarray(errors, dtype=np.float64)))[::-1]
    k = conformal_rank(len(values), look_fraction(fraction, looks))
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
    fallback: bool = False   # every confirmed choice failed and float32 was taken instead
    looks: int = 1           # L: candidates the build may confirm on these frames
    look: int = 1            # which of them this is

    @property
    def coverage(self) -> float:
        """The probability the bound carries over all looks: 1 - L·k/(n+1)."""
        return 1 - self.looks * self.rank / (self.frames + 1) if self.frames else 0.0

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
                    f"{self.fraction:.0%} bound over {self.looks} look(s) (need "
                    f"{frames_needed(self.fraction, self.looks)})")
        verdict = "holds" if self.holds else "NOT promised"
        return (f"at least {self.fraction:.0%} of frames within logit Δ {self.budget:g}: "
                f"{verdict} (bound {self.bound:.4f} = {ordinal(self.rank)} largest of "
                f"{self.frames} confirmation frames from {self.images} images, look "
                f"{self.look} of at most {self.looks}, coverage {self.coverage:.3f}; max {self.max_logit_delta:.4f}, mean "
                f"{self.mean_logit_delta:.4f}; content: {self.content})")


def ordinal(k: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def confirm(errors: Sequence[float], budget: float, images: int, content: str,
            fraction: float = DEFAULT_FRACTION, looks: int = 1, look: int = 1) -> Promise:
    """Confirm one configuration (look ``look`` of at most ``looks``) on its per-frame
    confirmation errors."""
    values = np.abs(np.asarray(errors, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no confirmation frames")
    bound = conformal_bound(values, fraction, looks)
    return Promise(float(budget), float(fraction), int(values.size), int(images),
                   conformal_rank(values.size, look_fraction(fraction, looks)), bound,
                   float(values.max()), float(values.mean()),
                   bound is not None and bound <= budget, content, looks=looks, look=look)


def confirm_first(choices: Iterable[T], deltas_of: Callable[[T], Sequence[float]],
                  budget: float, images: int, content: str,
                  fraction: float = DEFAULT_FRACTION, looks: int = DEFAULT_LOOKS
                  ) -> tuple[T | None, Promise | None, list[tuple[T, Promise]]]:
    """Confirm ``choices`` in order, at most ``looks`` of them, each at the split fraction.

    Returns the first that holds with its promise (None, None when none did) and the
    rejected ones with theirs.
    """
    rejected: list[tuple[T, Promise]] = []
    for look, choice in enumerate(choices, start=1):
        if look > looks:
            break
        found = confirm(deltas_of(choice), budget, images, content, fraction, looks, look)
        if found.holds:
            return choice, found, rejected
        rejected.append((choice, found))
    return None, None, rejected


def float32_fallback(failed: Promise) -> Promise:
    """The promise of float32 after ``failed`` (the last confirmed candidate) missed D."""
    return Promise(failed.budget, failed.fraction, failed.frames, failed.images, failed.rank,
                   0.0, 0.0, 0.0, True, failed.content, fallback=True, looks=failed.looks,
                   look=failed.look)


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
