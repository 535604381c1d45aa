"""The limits verify holds each backend to, and the checks against them.

Defaults come from the "verify" column of the backend table
(``uvq_int8.backends.BUILTIN_BACKENDS``); an auto build is held to its own budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from uvq_int8.backends import BUILTIN_BACKENDS, VerifyLimits
from uvq_int8.verify.results import BASELINE, OUTPUTS, BackendReport, Check, VerifyReport


EXIT_THRESHOLD = 3  # distinct from 1 (user error) and 2 (bad arguments)


@dataclass(frozen=True)
class Threshold:
    """A limit on one metric of one net; ``basis`` is the measurement it rests on."""

    net: str
    metric: str  # "logit_delta_max", "score_delta_max" (net aggregation) or "cosine_min"
    limit: float
    reference: str = BASELINE
    basis: str = ""

    @property
    def bound(self) -> str:
        return "min" if self.metric.startswith("cosine") else "max"


# Defaults per built-in backend. Each rests on the measurement written in its basis:
# `uvq-int8 verify` on models built from the reference checkpoints (proxy content and
# distortion weights, the real aggregation head), over 26 frames: 16 built-in synthetic
# frames (run A) plus the 2 golden frames and the 8 frames of the two sample videos
# (run B); docs/backends.md has both runs. Logit limits are ~1.5x the largest delta seen,
# cosine limits allow about twice the largest shortfall from 1, so a rebuild that drifts
# clearly past what was measured fails while other frames of the same kind pass.
# Scores: score = 3 + 2 tanh(logit), so |Δscore| <= 2 |Δlogit|. The proxy weights keep
# most logits where tanh saturates, so their measured score deltas understate what the
# official weights give; the default score limit is the one the logit limit implies.
_RUNS = "runs A+B (26 frames)"


def _limits(v: VerifyLimits) -> tuple[Threshold, ...]:
    return (
        Threshold("aggregation", "logit_delta_max", v.logit, v.reference,
                  f"largest logit delta {v.logit_seen:g} in {_RUNS}"),
        Threshold("aggregation", "score_delta_max", round(2 * v.logit, 6), v.reference,
                  "implied by the logit limit (|Δscore| <= 2 |Δlogit|)"),
        Threshold("content", "cosine_min", v.content_cosine, v.reference,
                  f"smallest content cosine {v.content_seen:g} in {_RUNS}"),
        Threshold("distortion", "cosine_min", v.distortion_cosine, v.reference,
                  f"smallest distortion cosine {v.distortion_seen:g} in {_RUNS}"),
    )


# The "verify" column of the backend table (uvq_int8.backends.BUILTIN_BACKENDS).
DEFAULT_THRESHOLDS: dict[str, tuple[Threshold, ...]] = {
    name: _limits(row["verify"]) for name, row in BUILTIN_BACKENDS.items() if row["verify"]}


def default_thresholds(backend: str) -> tuple[Threshold, ...]:
    """The documented defaults; a backend without its own gets the loosest built-in limits."""
    if backend in DEFAULT_THRESHOLDS:
        return DEFAULT_THRESHOLDS[backend]
    loosest: dict[tuple[str, str], Threshold] = {}
    for name, limits in DEFAULT_THRESHOLDS.items():
        for t in limits:
            if t.reference != BASELINE:
                continue
            key = (t.net, t.metric)
            old = loosest.get(key)
            looser = old is None or (t.limit < old.limit if t.bound == "min" else
                                     t.limit > old.limit)
            if looser:
                loosest[key] = Threshold(t.net, t.metric, t.limit, t.reference,
                                         f"no measured default for {backend}; the loosest "
                                         f"built-in limit ({name})")
    return tuple(loosest.values())


def auto_thresholds(record: Mapping[str, Any]) -> tuple[Threshold, ...]:
    """An auto build is held to its own budget: the logit limit is --max-logit-delta, which
    the search met on its validation frames; verify checks it holds on other frames too.
    The cosine limits are the loosest built-in ones (the budget is on the logit only)."""
    budget = float(record["max_logit_delta"])
    basis = (f"the build's --max-logit-delta {budget:g} (met with "
             f"{record['measured']['logit_delta_max']:.4g} on its "
             f"{record['validation_frames']} search frames)")
    if record.get("auto_version", 1) < 2:
        basis += "; auto version 1: measured on synthetic frames, no promise (rebuild for one)"
    loose = [t for t in default_thresholds("(auto)") if t.metric == "cosine_min"]
    return (Threshold("aggregation", "logit_delta_max", budget, BASELINE, basis),
            Threshold("aggregation", "score_delta_max", round(2 * budget, 6), BASELINE,
                      "implied by the logit limit (|Δscore| <= 2 |Δlogit|)"),
            *(Threshold(t.net, t.metric, t.limit, t.reference,
                        "the loosest built-in limit; the auto budget is on the logit")
              for t in loose))


def thresholds_for(backend: str, max_logit_delta: float | None = None,
                   max_score_delta: float | None = None,
                   auto: Mapping[str, Any] | None = None) -> tuple[Threshold, ...]:
    """Defaults (or an auto build's own limits) with the command-line limits put in place
    of the logit/score ones."""
    override = {"logit_delta_max": max_logit_delta, "score_delta_max": max_score_delta}
    out = []
    for t in (auto_thresholds(auto) if auto else default_thresholds(backend)):
        value = override.get(t.metric)
        if value is not None:
            t = Threshold(t.net, t.metric, float(value), t.reference, "set on the command line")
        out.append(t)
    for metric, value in override.items():
        if value is not None and not any(t.metric == metric for t in out):
            out.append(Threshold("aggregation", metric, float(value), BASELINE,
                                 "set on the command line"))
    return tuple(out)


def measured_value(backend: BackendReport, threshold: Threshold) -> float | None:
    key = f"vs_{threshold.reference}"
    if threshold.metric in ("logit_delta_max", "score_delta_max"):
        e2e = backend.end_to_end.get(key)
        return None if e2e is None else getattr(e2e, threshold.metric)
    if threshold.metric == "cosine_min":
        stats = backend.nets.get(threshold.net, {}).get("frames", {}).get(key, {})
        first = stats.get(OUTPUTS[threshold.net][0])
        return None if first is None else first.cosine_min
    raise ValueError(f"unknown threshold metric {threshold.metric!r}")


def check_thresholds(report: VerifyReport, thresholds: Mapping[str, Sequence[Threshold]]) -> None:
    """Fill each backend's ``checks``; a metric that was not measured is not enforced."""
    for name, backend in report.backends.items():
        checks = []
        for t in thresholds.get(name, ()):
            value = measured_value(backend, t)
            if value is None:
                passed = True
            elif t.bound == "min":
                passed = value >= t.limit
            else:
                passed = value <= t.limit
            checks.append(Check(name, t.net, t.metric, t.reference, t.limit, t.bound, value,
                                passed, t.basis))
        backend.checks = checks
