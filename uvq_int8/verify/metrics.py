"""How far one output is from its reference: abs/relative error, cosine, SNR, and the
rank and linear correlations across clips. Pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


REL_EPS = 1e-8  # the old guide's denominator guard: |a - b| / (|a| + 1e-8)


@dataclass(frozen=True)
class TensorStats:
    """Error of one output tensor against a reference, over all samples together."""

    max_abs: float | None  # all None when there were no samples
    mean_abs: float | None
    mean_rel: float | None  # mean of |got - ref| / (|ref| + 1e-8), the old guide's "relative diff"
    cosine: float | None  # of all elements of all samples as one vector
    cosine_min: float | None  # smallest per-sample cosine
    snr_db: float | None  # 10 log10(sum ref^2 / sum err^2); None when the outputs are identical
    samples: int
    elements: int


class StatsAccumulator:
    """Streams (reference, candidate) pairs into a TensorStats without keeping them."""

    def __init__(self) -> None:
        self.samples = 0
        self.elements = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.sum_rel = 0.0
        self.dot = 0.0
        self.ref_sq = 0.0
        self.got_sq = 0.0
        self.err_sq = 0.0
        self.cos_min: float | None = None

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        got = np.asarray(candidate, dtype=np.float64).ravel()
        if ref.shape != got.shape:
            raise ValueError(f"shape mismatch: reference {ref.shape}, candidate {got.shape}")
        err = got - ref
        abs_err = np.abs(err)
        self.samples += 1
        self.elements += ref.size
        self.max_abs = max(self.max_abs, float(abs_err.max(initial=0.0)))
        self.sum_abs += float(abs_err.sum())
        self.sum_rel += float((abs_err / (np.abs(ref) + REL_EPS)).sum())
        dot, rsq, gsq = float(ref @ got), float(ref @ ref), float(got @ got)
        self.dot += dot
        self.ref_sq += rsq
        self.got_sq += gsq
        self.err_sq += float(err @ err)
        cos = _cosine(dot, rsq, gsq)
        if cos is not None:
            self.cos_min = cos if self.cos_min is None else min(self.cos_min, cos)

    def result(self) -> TensorStats:
        if self.samples == 0:
            return TensorStats(None, None, None, None, None, None, 0, 0)
        n = self.elements
        if self.err_sq == 0.0:
            snr = None
        elif self.ref_sq == 0.0:
            snr = -math.inf
        else:
            snr = 10.0 * math.log10(self.ref_sq / self.err_sq)
        return TensorStats(self.max_abs, self.sum_abs / n, self.sum_rel / n,
                           _cosine(self.dot, self.ref_sq, self.got_sq), self.cos_min, snr,
                           self.samples, self.elements)


def _cosine(dot: float, a_sq: float, b_sq: float) -> float | None:
    if a_sq == 0.0 or b_sq == 0.0:
        return None
    return float(min(1.0, dot / math.sqrt(a_sq * b_sq)))


def compare(reference: np.ndarray, candidate: np.ndarray) -> TensorStats:
    """TensorStats of one pair."""
    acc = StatsAccumulator()
    acc.add(reference, candidate)
    return acc.result()


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    # ties share their average rank, as in scipy.stats.rankdata
    for v in np.unique(values):
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def plcc(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or a constant series."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 3 or len(x) != len(y) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def srcc(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation; None with fewer than 3 points or a constant series."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 3 or len(x) != len(y):
        return None
    return plcc(_ranks(x), _ranks(y))
