"""The runtime audit: score a deterministic sample of a video's frames with the float32 files
as well, and say whether the per-frame logit changes contradict the stated promise.

Turned on by ``--audit F`` / ``UVQ_AUDIT`` / config ``audit`` (a fraction of frames; 0 is
off). Each audited frame is the frame the main backend just scored (no second decode); the
float32 nets run on it afterwards, so the main result's logits are computed exactly as
without the audit.

Budget: the build's own D for ``auto`` (with its promised fraction), else ``--audit-budget``
/ ``UVQ_AUDIT_BUDGET`` / ``audit_budget``, else none (report only). ``exceeded`` is in the
promise's unit: the audited frames over budget are too many for "at least a fraction p of
frames within D" (a one-sided binomial test at 1 %, promise.contradicts), so one unlucky
frame is not a breach.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from uvq_int8.runtime import promise as P
from uvq_int8.errors import ModelFilesError, UserError

EXIT_AUDIT_EXCEEDED = 4


class AuditError(UserError):
    """The audit cannot run (for example, no float32 files beside the backend's)."""


def sample_indices(total: int, fraction: float) -> list[int]:
    """Which of ``total`` frames to audit: ceil(fraction * total) of them (at least one when
    the audit is on), spread evenly, the same for the same inputs."""
    if total <= 0 or fraction <= 0:
        return []
    count = min(total, max(1, math.ceil(fraction * total - 1e-9)))
    return sorted({int((i + 0.5) * total / count) for i in range(count)})


def build_budget(model_dir: Path, backend: str) -> tuple[float, float, str] | None:
    """(D, fraction, basis) an ``auto`` build recorded for its files, or None."""
    from uvq_int8.runtime import manifest_entries

    if backend != "auto":
        return None
    entries = manifest_entries(Path(model_dir)) or {}
    for entry in entries.values():
        if entry.get("recipe") != "auto":
            continue
        choice = (entry.get("recipe_options") or {}).get("choice") or {}
        if "max_logit_delta" not in choice:
            continue
        promise = choice.get("promise") or {}
        fraction = float(promise.get("fraction", P.DEFAULT_FRACTION))
        version = choice.get("auto_version", 1)
        basis = (f"the auto build's --max-logit-delta {choice['max_logit_delta']:g}"
                 + ("" if version >= 2 else " (auto version 1: measured on synthetic frames, "
                                             "no promise; rebuild for one)"))
        return float(choice["max_logit_delta"]), fraction, basis
    return None


@dataclass
class Auditor:
    """Collects float32 logits for the sampled frames of one video."""

    reference: Any                     # runtime.Models of float32
    indices: list[int]
    budget: float | None
    fraction: float = P.DEFAULT_FRACTION
    basis: str = "report only"
    deltas: dict[int, float] = field(default_factory=dict)

    def observe(self, index: int, frame: np.ndarray, logit: float) -> None:
        if index in self._wanted:
            ref_logit, _ = self.reference.aggregate(*self.reference.features(frame))
            self.deltas[index] = abs(float(logit) - float(ref_logit))

    def __post_init__(self) -> None:
        self._wanted = set(self.indices)

    def result(self) -> dict[str, Any]:
        frames = sorted(self.deltas)
        values = np.array([self.deltas[i] for i in frames], dtype=np.float64)
        out: dict[str, Any] = {
            "frames": frames,
            "logit_deltas": [float(v) for v in values],
            "max_logit_delta": float(values.max()) if values.size else None,
            "mean_logit_delta": float(values.mean()) if values.size else None,
            "budget": self.budget, "budget_basis": self.basis,
            "promised_fraction": self.fraction,
            "fraction_within": None, "exceeded": None, "p_value": None,
        }
        if self.budget is not None and values.size:
            exceeded, p_value = P.contradicts(values, self.budget, self.fraction)
            out.update(fraction_within=float((values <= self.budget).mean()),
                       exceeded=bool(exceeded), p_value=round(p_value, 6))
        return out


def _reference(model_dir: str, threads: int) -> Any:
    """The float32 models, loaded once per process while the directory's files are unchanged
    (a batch worker audits many videos)."""
    directory = Path(model_dir)
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                         for p in directory.glob("*") if p.suffix in (".tflite", ".json")))
    return _load_reference(model_dir, threads, stamp)


@functools.lru_cache(maxsize=2)
def _load_reference(model_dir: str, threads: int, stamp: tuple) -> Any:
    from uvq_int8 import runtime

    return runtime.load_models("float32", model_dir, threads)


def make_auditor(models: Any, total_frames: int, fraction: float,
                 budget: float | None = None) -> Auditor | None:
    """An auditor for one video scored with ``models`` (runtime.Models), or None when off.

    ``budget``: the user's --audit-budget; for ``auto`` the build's D is used instead when
    the user gave none.
    """
    if not fraction or fraction <= 0:
        return None
    model_dir = Path(models.model_dir)
    try:
        reference = _reference(str(model_dir), models.threads)
    except ModelFilesError:
        raise AuditError(f"--audit needs the float32 files beside the {models.backend} files in "
                         f"{model_dir} (content_net.tflite, distortion_net.tflite, "
                         f"aggregation_net.tflite): build them with 'uvq-int8 build --backend "
                         f"float32 --out {model_dir}', or turn the audit off") from None
    promised = P.DEFAULT_FRACTION
    basis = "report only (no --audit-budget)"
    if budget is not None:
        basis = "--audit-budget"
    else:
        recorded = build_budget(model_dir, models.backend)
        if recorded is not None:
            budget, promised, basis = recorded
    return Auditor(reference, sample_indices(total_frames, fraction), budget, promised, basis)


def warning(result: Mapping[str, Any], video: str) -> str:
    """One line for stderr when the audited frames contradict the promise."""
    n = len(result["frames"])
    over = sum(1 for d in result["logit_deltas"] if d > result["budget"])
    return (f"uvq: audit: {video}: {over} of {n} audited frames changed the logit by more than "
            f"{result['budget']:g} against float32 (max {result['max_logit_delta']:.4f}); "
            f"that contradicts 'at least {result['promised_fraction']:.0%} of frames within "
            f"{result['budget']:g}' (binomial p = {result['p_value']:.2g})")
