"""The verify report as data: per backend its files, errors, scores and speed.

Rendering (JSON, Markdown, plot) is in ``uvq_int8.verify.report``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from uvq_int8.verify.metrics import TensorStats


SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    """One limit held against one measured value (``thresholds.check_thresholds``)."""

    backend: str
    net: str
    metric: str
    reference: str
    limit: float
    bound: str
    value: float | None  # None: not measured (e.g. no PyTorch), so not enforced
    passed: bool
    basis: str

    def line(self) -> str:
        op = "<" if self.bound == "min" else ">"
        return (f"FAIL backend={self.backend} net={self.net} metric={self.metric} "
                f"value={_g(self.value)} {op} limit={_g(self.limit)} vs={self.reference}")


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


BASELINE = "float32"


OUTPUTS = {"content": ("features",), "distortion": ("features",),
           "aggregation": ("logit", "score")}


INPUT_KINDS = ("random", "frames")


@dataclass(frozen=True)
class FileInfo:
    """One model file: size, hash and what its tensors are."""

    net: str
    path: str
    size_bytes: int
    sha256: str
    size_vs_float32: float | None  # this file's size / float32's
    tensors_by_dtype: dict[str, int]
    tensors: int
    # Tensors stored narrower than float32 (int8/int4 with quantization parameters, float16
    # constants). For the int8 recipe this is the old guide's count ("81/499").
    quantized_tensors: int
    quantized_tensors_by_dtype: dict[str, int]
    conv_weights_by_dtype: dict[str, int]  # the dtype each convolution filter is stored in
    ops_by_name: dict[str, int]
    manifest: dict[str, Any] | None = None  # the file's entry in manifest.json, if any


@dataclass(frozen=True)
class Latency:
    threads: int
    warmup: int
    runs: int
    net_ms: dict[str, float]  # median per net, after warm-up
    net_ms_min: dict[str, float]
    frame_ms: float | None  # median per frame: preprocessing + three nets, frames in memory
    fps: float | None
    speed_vs_float32: float | None  # float32's frame time / this backend's; >1 is faster


@dataclass(frozen=True)
class ClipScores:
    name: str
    logits: list[float]
    scores: list[float]
    mean_score: float


@dataclass(frozen=True)
class EndToEnd:
    """Per-frame and per-clip deltas of one backend against a reference."""

    reference: str  # "float32" or "pytorch"
    frames: int
    clips: int
    logit_delta_max: float
    logit_delta_mean: float
    score_delta_max: float
    score_delta_mean: float
    clip_score_delta_max: float  # |mean score of a clip - the reference's|, largest clip
    clip_logit_delta_max: float
    score_srcc: float | None  # across clips (mean scores), None with < 3 clips or constant
    score_plcc: float | None
    logit_srcc: float | None  # across clips (mean logits); scores saturate, logits do not
    logit_plcc: float | None
    per_frame_logit_delta: dict[str, list[float]]  # clip name -> signed deltas, frame order
    per_frame_score_delta: dict[str, list[float]]


@dataclass
class BackendReport:
    name: str
    description: str
    recipes: dict[str, str]
    files: dict[str, FileInfo]
    size_bytes: int
    size_vs_float32: float | None
    reduction_pct: float | None  # (1 - size / float32's) * 100, as the guide states it
    # nets[net][input kind]["vs_float32" | "vs_pytorch"][output] -> TensorStats
    nets: dict[str, dict[str, dict[str, dict[str, TensorStats]]]]
    clips: list[ClipScores]
    end_to_end: dict[str, EndToEnd]  # "vs_float32", "vs_pytorch"
    latency: Latency | None
    checks: list[Check] = field(default_factory=list)
    # For files made by the auto search: its record from the manifest (budget, choices,
    # measurements, sensitivity tables), see uvq_int8.convert.auto.AutoResult.as_dict().
    auto: dict[str, Any] | None = None
    # The accuracy and regression verdicts (verify/verdicts.py), filled by the CLI.
    verdicts: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass
class VerifyReport:
    schema_version: int
    created: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    inputs: list[dict[str, Any]]
    pytorch: dict[str, Any]  # {"available": bool, "reason"/"checkpoints", "clips": [...]}
    backends: dict[str, BackendReport]
    guide: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for b in self.backends.values() for c in b.failures]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, backend in self.backends.items():
            data["backends"][name]["failures"] = [asdict(c) for c in backend.failures]
        data["failures"] = [asdict(c) for c in self.failures]
        return _json_safe(data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value
