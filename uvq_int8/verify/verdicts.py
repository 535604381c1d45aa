"""``uvq-int8 verify``'s two verdicts per backend.

- **accuracy**: is the backend accurate enough to use? Against a user-meaningful target:
  the largest per-frame score change against float32 (default 0.1 of a point on the 1-5
  scale, ``--max-score-delta`` to set your own); for an ``auto`` build, its own promise
  ("at least a fraction p of frames within logit change D"), judged with the same binomial
  test as the runtime audit (promise.contradicts).
- **regression**: did the backend change against what the build measured? The per-backend
  limits in ``verify.thresholds.DEFAULT_THRESHOLDS`` (or an auto build's budget), each resting on a
  recorded measurement. Passing it says "unchanged", not "accurate".

The exit status follows accuracy, unless ``--regression-only``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from uvq_int8.runtime import promise as P

DEFAULT_MAX_SCORE_DELTA = 0.1


@dataclass(frozen=True)
class Verdict:
    backend: str
    kind: str                 # "accuracy" or "regression"
    passed: bool | None       # None: not measurable here
    target: str               # what it was held to
    measured: str             # what was measured
    basis: str                # where the target comes from

    def line(self) -> str:
        state = {True: "pass", False: "FAIL", None: "n/a"}[self.passed]
        return (f"{self.kind}: {state} backend={self.backend} target: {self.target}; "
                f"measured: {self.measured} ({self.basis})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _frame_deltas(e2e: Any) -> np.ndarray:
    values = [abs(v) for deltas in e2e.per_frame_logit_delta.values() for v in deltas]
    return np.asarray(values, dtype=np.float64)


def accuracy(name: str, backend: Any, max_score_delta: float | None = None) -> Verdict:
    """The accuracy verdict of one verify.BackendReport."""
    e2e = backend.end_to_end.get("vs_float32")
    record = backend.auto
    if name == "float32":
        ref = backend.end_to_end.get("vs_pytorch")
        if ref is None:
            return Verdict(name, "accuracy", None, "the reference itself", "-",
                           "float32 is what the other backends are measured against")
        target = DEFAULT_MAX_SCORE_DELTA if max_score_delta is None else max_score_delta
        return Verdict(name, "accuracy", ref.score_delta_max <= target,
                       f"score Δ max <= {target:g} vs PyTorch",
                       f"{ref.score_delta_max:.4g} on {ref.frames} frames", "--max-score-delta"
                       if max_score_delta is not None else "default target")
    if e2e is None:
        return Verdict(name, "accuracy", None, "-", "not measured", "no float32 run")
    promise = (record or {}).get("promise") if record else None
    if record and promise and max_score_delta is None:
        budget, fraction = float(record["max_logit_delta"]), float(promise["fraction"])
        deltas = _frame_deltas(e2e)
        exceeded, p_value = P.contradicts(deltas, budget, fraction)
        within = float((deltas <= budget).mean()) if deltas.size else float("nan")
        return Verdict(name, "accuracy", not exceeded,
                       f"the build's promise: at least {fraction:.0%} of frames within logit "
                       f"Δ {budget:g}",
                       f"{within:.1%} of {deltas.size} frames within (max {deltas.max():.4g}; "
                       f"binomial p = {p_value:.2g}); score Δ max {e2e.score_delta_max:.4g}",
                       "auto build, confirmed on " + str(promise.get("frames")) + " frames from "
                       + str(promise.get("images")) + " images")
    target = DEFAULT_MAX_SCORE_DELTA if max_score_delta is None else max_score_delta
    basis = "--max-score-delta" if max_score_delta is not None else "default target"
    if record and not promise:
        basis += ("; auto version 1 build: it has no promise (chosen and measured on the same "
                  "synthetic frames); rebuild for one")
    return Verdict(name, "accuracy", e2e.score_delta_max <= target,
                   f"score Δ max <= {target:g} vs float32",
                   f"{e2e.score_delta_max:.4g} on {e2e.frames} frames "
                   f"(logit Δ max {e2e.logit_delta_max:.4g})", basis)


def regression(name: str, backend: Any) -> Verdict:
    checks = backend.checks
    failed = [c for c in checks if not c.passed]
    measured = [c for c in checks if c.value is not None]
    return Verdict(name, "regression", not failed if measured else None,
                   f"{len(checks)} limits from what the build measured",
                   (f"{len(failed)} exceeded: " + ", ".join(f"{c.net} {c.metric} "
                                                           f"{c.value:.4g} vs {c.limit:g}"
                                                           for c in failed))
                   if failed else f"{len(measured)} measured, all within",
                   "verify.thresholds.DEFAULT_THRESHOLDS or the auto build's budget")


def judge(report: Any, max_score_delta: float | None = None) -> dict[str, dict[str, Verdict]]:
    """Both verdicts for every backend of a verify.VerifyReport; stored on each backend."""
    out: dict[str, dict[str, Verdict]] = {}
    for name, backend in report.backends.items():
        out[name] = {"accuracy": accuracy(name, backend, max_score_delta),
                     "regression": regression(name, backend)}
        backend.verdicts = {k: v.as_dict() for k, v in out[name].items()}
    return out


def failed(verdicts: Mapping[str, Mapping[str, Verdict]], kind: str) -> list[Verdict]:
    return [v[kind] for v in verdicts.values() if v[kind].passed is False]
