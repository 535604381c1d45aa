"""What a build is asked to do and what it reports: options, the plan, the results.

Plain data shared by ``plan``, ``stages`` and the CLI; nothing here does work.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from uvq_int8.backends import NETS
from uvq_int8.errors import UserError
from uvq_int8.runtime import manifest as mf


DEFAULT_CALIBRATION_FRAMES = 16
# Where int8-static's calibration frames come from without --calibration-videos: natural
# clips made from photographs (build/natural.py, the "calibration" split; closer to
# float32 on photographs no split saw: benchmarks/calibration_content.py), or the
# synthetic patterns of uvq_int8.synthetic.
CALIBRATION_CONTENTS = ("natural", "synthetic")
DEFAULT_CALIBRATION_CONTENT = "natural"


DEFAULT_VALIDATION_FRAMES = 12  # search frames the auto search chooses on


# How int8-static sets each activation's int8 range (docs/backends.md, "Full-integer
# int8"): "minmax" merges per-frame min/max (the recipe before 0.2.0); "percentile" and
# "mse" choose from a histogram of the tensor over all calibration frames.
INT8_RANGE_METHODS = ("minmax", "percentile", "mse")
DEFAULT_INT8_RANGES = "percentile"
DEFAULT_INT8_PERCENTILE = 99.99
# Empirical bias correction of the int8 file: none, the 16 depthwise convolutions, or all 81.
INT8_BIAS_CORRECTIONS = ("none", "depthwise", "all")
DEFAULT_INT8_BIAS_CORRECTION = "none"
# Least-squares refit of int8-static's 1x1 convolutions with int8 inputs in the loop
# (uvq_int8.convert.refit): none (recipe version 2); lsq, one ridge towards the original
# weights and a fit kept if better on the last quarter of the frames (recipe version 3);
# or cv, each op's ridge chosen by cross-validation over frame folds (the default since
# recipe version 4).
INT8_REFITS = ("none", "lsq", "cv")
DEFAULT_INT8_REFIT = "cv"
DEFAULT_INT8_REFIT_RIDGE = 3e-2  # lsq's


@dataclass(frozen=True)
class Int8Settings:
    """How int8-static's activation ranges and biases are set; recorded in the manifest."""

    ranges: str = DEFAULT_INT8_RANGES
    percentile: float = DEFAULT_INT8_PERCENTILE
    bias_correction: str = DEFAULT_INT8_BIAS_CORRECTION
    refit: str = DEFAULT_INT8_REFIT
    refit_ridge: float = DEFAULT_INT8_REFIT_RIDGE

    @property
    def needs_statistics(self) -> bool:
        """Whether the tensor histograms / channel means pass is needed."""
        return self.ranges != "minmax" or self.bias_correction != "none"

    def as_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"activation_ranges": self.ranges}
        if self.ranges == "percentile":
            out["percentile"] = self.percentile
        out["bias_correction"] = self.bias_correction
        out["refit"] = self.refit
        if self.refit == "lsq":
            out["refit_ridge"] = self.refit_ridge
        elif self.refit == "cv":
            from uvq_int8.convert import refit as R

            out.update(refit_ridges=list(R.CV_RIDGES), refit_folds=R.CV_FOLDS,
                       refit_samples_per_input=R.CV_SAMPLES_PER_INPUT)
        return out


# Confirmation frames: with up to 3 looks (runtime/promise.py) each is tested at
# 1 - 0.05/3, which needs at least 59 frames for a bound (the 1st largest of 60).
DEFAULT_CONFIRMATION_FRAMES = 60
DEFAULT_CONFIRMATION_LOOKS = 3


# What a build may hold at once (this process plus conversion workers): the design target
# for the 8 GB edge boxes and CI runners we build on. Going past it is reported, not fatal.
MEMORY_BOUND_BYTES = 4_000_000_000


BUILD_EXTRA_HINT = "pip install 'uvq-int8[build]'"


BUILD_MODULES = ("torch", "litert_torch", "ai_edge_quantizer")


# Conversions run first for the slowest net, so the quick ones fill in beside it.
CONVERSION_ORDER = ("distortion", "content", "aggregation")


class BuildError(UserError):
    """Bad build input (named in the message) or a failed build step."""


class CheckpointMissingError(BuildError):
    pass


FrameSource = Callable[[int], Iterable[Any]]


@dataclass(frozen=True)
class BuildOptions:
    """Everything one build needs; ``build`` and the CLI share it."""

    checkpoints: Mapping[str, Path]
    out_dir: Path
    backends: str | Sequence[str] = "all"
    force: bool = False
    calibration_videos: Sequence[Path] = ()
    calibration_frames: int = DEFAULT_CALIBRATION_FRAMES
    calibration_content: str = DEFAULT_CALIBRATION_CONTENT
    # Conversions run in parallel, one process each (peaks recorded in the manifest).
    jobs: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    # Replaces the built-in calibration frames (API users, tests): n -> uint8 [1080,1920,3].
    frame_source: FrameSource | None = None
    frame_source_name: str = "custom"
    # --backend auto: the largest logit change allowed on the held-out frames, and those
    # frames (1-fps frames of validation videos, else the built-in validation set).
    max_logit_delta: float | None = None
    validation_videos: Sequence[Path] = ()
    validation_frames: int = DEFAULT_VALIDATION_FRAMES
    validation_source: FrameSource | None = None
    validation_source_name: str = "custom"
    # The confirmation (runtime/promise.py): frames from images the search never saw, and
    # the promised fraction of frames within the budget.
    confirmation_frames: int = DEFAULT_CONFIRMATION_FRAMES
    confirmation_looks: int = DEFAULT_CONFIRMATION_LOOKS
    promise_fraction: float = 0.95
    # Grow int8/float mixes from the per-op-group sensitivity table when full int8 is over
    # budget; the table is measured for the manifest and the verify report either way.
    auto_mixed: bool = True
    sensitivity: bool = True
    int8: Int8Settings = field(default_factory=Int8Settings)


@dataclass
class FileJob:
    backend: str
    net: str
    filename: str
    recipe: str
    options: dict[str, Any]
    reason: str | None  # why it is (re)built; None: up to date, skipped


@dataclass
class BuildPlan:
    options: BuildOptions
    out_dir: Path
    backends: list[str]
    checkpoints: dict[str, dict[str, str]]   # net -> {"path", "sha256"}
    jobs: list[FileJob]
    manifest: mf.Manifest
    calibration: dict[str, Any] | None
    float_sources: dict[str, Path]           # net -> current float32 file to derive from
    notes: list[str] = field(default_factory=list)

    @property
    def to_build(self) -> list[FileJob]:
        return [j for j in self.jobs if j.reason is not None]

    @property
    def to_skip(self) -> list[FileJob]:
        return [j for j in self.jobs if j.reason is None]

    @property
    def auto_jobs(self) -> list[FileJob]:
        return [j for j in self.to_build if j.recipe == "auto"]

    @property
    def nets_to_convert(self) -> list[str]:
        nets = {j.net for j in self.to_build}
        if self.auto_jobs:  # the search measures against all three float32 nets
            nets = set(NETS)
        return [n for n in CONVERSION_ORDER if n in nets and n not in self.float_sources]


@dataclass
class FileResult:
    backend: str
    net: str
    filename: str
    recipe: str
    status: str                 # "built", "skipped" or "failed"
    reason: str | None = None   # why built, or why it failed
    size: int | None = None
    sha256: str | None = None
    float32_size: int | None = None
    quantized_tensors_by_dtype: dict[str, int] = field(default_factory=dict)
    int4_conv_weights: int = 0

    @property
    def ratio_to_float32(self) -> float | None:
        if self.size is None or not self.float32_size:
            return None
        return self.size / self.float32_size

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio_to_float32"] = self.ratio_to_float32
        return out


@dataclass
class BuildSummary:
    out_dir: Path
    manifest_path: Path
    files: list[FileResult]
    seconds: float
    peak_rss_bytes: dict[str, int]
    conversions: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    build_id: str | None = None
    auto: dict[str, Any] | None = None  # the auto search's record, when it ran

    @property
    def built(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "built"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def backend_totals(self) -> dict[str, dict[str, Any]]:
        totals: dict[str, dict[str, Any]] = {}
        for f in self.files:
            t = totals.setdefault(f.backend, {"size": 0, "float32_size": 0, "complete": True})
            if f.size is None or not f.float32_size:
                t["complete"] = False
                continue
            t["size"] += f.size
            t["float32_size"] += f.float32_size
        for t in totals.values():
            t["ratio_to_float32"] = (t["size"] / t["float32_size"]
                                     if t["complete"] and t["float32_size"] else None)
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "build_id": self.build_id,
            "out_dir": str(self.out_dir),
            "manifest": str(self.manifest_path),
            "seconds": round(self.seconds, 2),
            "peak_rss_bytes": self.peak_rss_bytes,
            "built": len(self.built), "skipped": len(self.skipped), "failed": len(self.failed),
            "conversions": self.conversions,
            "calibration": self.calibration,
            "auto": self.auto,
            "files": [f.as_dict() for f in self.files],
            "backends": self.backend_totals(),
        }


class Reporter(Protocol):
    """Progress callbacks; all are called from the building thread."""

    def start(self, jobs: Sequence[FileJob]) -> None: ...

    def status(self, filename: str, text: str) -> None: ...

    def done(self, result: FileResult) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


class NullReporter:
    def start(self, jobs: Sequence[FileJob]) -> None:
        pass

    def status(self, filename: str, text: str) -> None:
        pass

    def done(self, result: FileResult) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass
