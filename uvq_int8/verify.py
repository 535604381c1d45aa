"""Measuring backends: accuracy against float32 (and PyTorch), coverage, size, speed.

``run_verify`` returns a ``VerifyReport``; ``check_thresholds`` fills in each
backend's ``checks`` against the limits. Rendering (JSON, Markdown, plot) lives in
``uvq_int8.report``.
Everything is computed in one pass over the frames, so each frame is decoded
and preprocessed once and every backend sees exactly the same net inputs.
PyTorch is imported only when checkpoints are given.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from uvq_int8 import frames as F
from uvq_int8 import runtime, tflite_info
from uvq_int8.backends import (ALL, BUILTIN_BACKENDS, NETS, BackendLike, VerifyLimits, all_with_files, discover, get_backend,
                               parse_spec)
from uvq_int8.errors import ModelFilesError, UserError
from uvq_int8.util import machine_info, sha256_file

SCHEMA_VERSION = 1
BASELINE = "float32"
REL_EPS = 1e-8  # the old guide's denominator guard: |a - b| / (|a| + 1e-8)
OUTPUTS = {"content": ("features",), "distortion": ("features",),
           "aggregation": ("logit", "score")}
INPUT_KINDS = ("random", "frames")
EXIT_THRESHOLD = 3  # distinct from 1 (user error) and 2 (bad arguments)

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- metrics

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


# --------------------------------------------------------------------------- inputs

@dataclass
class Clip:
    """Frames scored together, like one video; each clip gives one point to SRCC/PLCC."""

    name: str
    source: str  # "synthetic", "npz" or "video"
    frames: list[np.ndarray]
    decode_seconds: float = 0.0


def synthetic_clips(n: int) -> list[Clip]:
    """The built-in set: each synthetic frame (clean or degraded) is its own clip."""
    from uvq_int8 import synthetic

    frames = synthetic.validation_frames(n)
    # validation_frames alternates clean (even) and degraded (odd) frames.
    return [Clip(f"synthetic-{i}-{'degraded' if i % 2 else 'clean'}", "synthetic",
                 [np.asarray(f)]) for i, f in enumerate(frames)]


def npz_clips(path: str | Path) -> list[Clip]:
    """Each frame of ``frames_uint8`` in an .npz is its own clip (they are stills)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            frames = np.asarray(data["frames_uint8"])
    except FileNotFoundError:
        raise UserError(f"frames file not found: {path}") from None
    except KeyError:
        raise UserError(f"{path} has no 'frames_uint8' array") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file ({exc})") from None
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (
            F.FRAME_HEIGHT, F.FRAME_WIDTH, 3):
        raise UserError(f"{path}: frames_uint8 must be uint8 [N,{F.FRAME_HEIGHT},"
                        f"{F.FRAME_WIDTH},3], got {frames.dtype} {list(frames.shape)}")
    return [Clip(f"{path.name}[{i}]", "npz", [frames[i]]) for i in range(len(frames))]


def video_clip(path: str | Path, fps: int = 1, max_frames: int | None = None,
               ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> Clip:
    """Decode a video the way ``uvq`` does (portrait videos transposed)."""
    from uvq_int8 import video

    name = str(path)
    if not Path(name).is_file():
        raise UserError(f"video not found: {name}")
    started = time.perf_counter()
    decoded = video.uvq_frames(name, fps=fps, ffmpeg=ffmpeg, ffprobe=ffprobe)
    frames = list(itertools.islice(decoded, max_frames or None))
    decoded.close()
    if not frames:
        raise UserError(f"{name}: no frames decoded")
    return Clip(name, "video", frames, time.perf_counter() - started)


def random_inputs(net: str, seed: int) -> tuple[np.ndarray, ...]:
    """Standard-normal inputs with the net's shapes, as the old guide drew them."""
    rng = np.random.default_rng(seed)
    shapes = runtime.EXPECTED_SHAPES[net][0]
    return tuple(rng.standard_normal(shape).astype(np.float32) for shape in shapes)


# --------------------------------------------------------------------------- PyTorch

class TorchReference:
    """The PyTorch nets from checkpoints; same NHWC inputs as the TFLite files."""

    def __init__(self, checkpoints: Mapping[str, Path], threads: int) -> None:
        import torch

        from uvq_int8 import nets

        torch.set_num_threads(threads)
        self._torch = torch
        self.checkpoints = {net: Path(checkpoints[net]) for net in NETS}
        cores = {net: nets.load_core(net, self.checkpoints[net]) for net in NETS}
        self._modules = {net: nets.export_module(net, cores[net]) for net in NETS}
        self._pipeline = nets.UVQ1p5Torch(cores["content"], cores["distortion"],
                                          cores["aggregation"])

    def run(self, net: str, *arrays: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self._modules[net](*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        outs = out if isinstance(out, tuple) else (out,)
        return [o.numpy().astype(np.float32) for o in outs]

    def frame(self, frame_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Upstream's pipeline on one frame: (content, distortion, logit).

        ContentNet resizes in torch here, so a fault in our numpy resize would show.
        """
        unit = F.to_unit_range(frame_uint8)[None]
        content, distortion = self._pipeline.features(unit)
        logit = float(self._pipeline.logits(content, distortion).reshape(-1)[0])
        return content.numpy(), distortion.numpy(), logit


def checkpoint_paths(checkpoints: str | Path | None = None, uvq_root: str | Path | None = None,
                     content: str | Path | None = None, distortion: str | Path | None = None,
                     aggregation: str | Path | None = None) -> dict[str, Path] | None:
    """The three checkpoint paths from the options (build's rules), or None if none given."""
    if not any((checkpoints, uvq_root, content, distortion, aggregation)):
        return None
    from uvq_int8.build import resolve_checkpoints

    return resolve_checkpoints(uvq_root, checkpoints, content, distortion, aggregation)


def manifest_checkpoints(model_dir: str | Path) -> tuple[dict[str, Path] | None, str]:
    """The checkpoints float32 was built from, per manifest.json, if they are still there.

    Returns (paths, "") or (None, why not). A checkpoint whose sha256 no longer matches
    the manifest is not used: the comparison would be against other weights.
    """
    from uvq_int8.backends import model_filename

    entries = _manifest_entries(Path(model_dir).expanduser())
    if not entries:
        return None, "no checkpoints given and no manifest.json naming them"
    paths = {}
    for net in NETS:
        ckpt = (entries.get(model_filename(net)) or {}).get("checkpoint") or {}
        path = Path(ckpt["path"]) if ckpt.get("path") else None
        if path is None or not path.is_file():
            return None, f"the {net} checkpoint recorded in manifest.json is not there ({path})"
        if ckpt.get("sha256") and sha256_file(path) != ckpt["sha256"]:
            return None, f"{path} changed since the build (sha256 differs from manifest.json)"
        paths[net] = path
    return paths, ""


# --------------------------------------------------------------------------- reports

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


@dataclass(frozen=True)
class Check:
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
    # measurements, sensitivity tables), see uvq_int8.auto.AutoResult.as_dict().
    auto: dict[str, Any] | None = None

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


# --------------------------------------------------------------------------- thresholds

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
             f"{record['validation_frames']} validation frames)")
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


# --------------------------------------------------------------------------- the old guide

@dataclass(frozen=True)
class GuideClaim:
    """A number from the old INT8 guide, with where it came from and how it was measured."""

    key: str
    claim: str
    value: float
    unit: str
    conditions: str
    source: str


_GUIDE = ("madhuhegde/ai-edge-torch ai_edge_torch/generative/examples/uvq1.5/"
          "INT8_QUANTIZATION_README.md @ 5e18583")
_GUIDE_VERIFY = ("madhuhegde/ai-edge-torch .../uvq1.5/verify_int8_models.py (how the guide's "
                 "accuracy was measured)")
_PERF = "madhuhegde/uvq .cursor/memory-banks/uvq_tflite/performance.md @ 308779c"
_RANDOM = ("one np.random.randn input per net (standard normal), INT8 vs FLOAT32 TFLite "
           "output 0; relative diff = |a-b|/(|a|+1e-8); real UVQ weights; TF 2.x interpreter")
_VIDEO = ("Gaming_360P_local.mp4, 19 frames at 1 fps, x86_64 CPU with XNNPACK, "
          "TensorFlow 2.18.0 interpreter, 2-5 iterations averaged, real UVQ weights")

GUIDE_CLAIMS: tuple[GuideClaim, ...] = (
    GuideClaim("size_reduction_total", "70.6% smaller (29.38 MB -> 8.63 MB)", 70.6, "%",
               "three files, full_dynamic_recipe(INT8, CHANNELWISE) via ai-edge-torch", _GUIDE),
    GuideClaim("size_reduction_content", "ContentNet 70.7% smaller (14.55 -> 4.27 MB)", 70.7, "%",
               "full_dynamic_recipe(INT8, CHANNELWISE)", _GUIDE),
    GuideClaim("size_reduction_distortion", "DistortionNet 70.7% smaller (14.53 -> 4.25 MB)",
               70.7, "%", "full_dynamic_recipe(INT8, CHANNELWISE)", _GUIDE),
    GuideClaim("size_reduction_aggregation", "AggregationNet 62.5% smaller (0.30 -> 0.11 MB)",
               62.5, "%", "full_dynamic_recipe(INT8, CHANNELWISE)", _GUIDE),
    GuideClaim("speedup", "1.30x faster (15.235 s -> 11.750 s per video)", 1.30, "x",
               _VIDEO + "; whole pipeline per video", _PERF),
    GuideClaim("score_rel_random", "1.91% error on the final quality score", 1.91, "%",
               "AggregationNet output (the 1-5 score), mean relative diff; " + _RANDOM,
               _GUIDE + "; " + _GUIDE_VERIFY),
    GuideClaim("aggregation_abs_random", "AggregationNet mean abs diff 0.027", 0.027, "",
               "score output; " + _RANDOM, _GUIDE),
    GuideClaim("content_rel_random", "ContentNet features 95.63% mean relative diff, "
               "'acceptable'", 95.63, "%", _RANDOM, _GUIDE),
    GuideClaim("content_abs_random", "ContentNet features mean abs diff 14.24", 14.24, "",
               _RANDOM, _GUIDE),
    GuideClaim("distortion_rel_random", "DistortionNet features 74.98% mean relative diff",
               74.98, "%", _RANDOM, _GUIDE),
    GuideClaim("distortion_abs_random", "DistortionNet features mean abs diff 3.95", 3.95, "",
               _RANDOM, _GUIDE),
    GuideClaim("coverage_content", "ContentNet 81/499 tensors quantized (16.2%)", 81, "tensors",
               "tensors with quantization parameters in the interpreter's tensor list",
               _GUIDE),
    GuideClaim("coverage_distortion", "DistortionNet 81/501 tensors quantized (16.2%)", 81,
               "tensors", "as above", _GUIDE),
    GuideClaim("coverage_aggregation", "AggregationNet 2/48 tensors quantized (4.2%)", 2,
               "tensors", "as above", _GUIDE),
    GuideClaim("video_score_rel", "video score 2.44% apart (3.0440 vs 3.1185)", 2.44, "%",
               _VIDEO, _PERF),
    GuideClaim("frame_score_delta_max", "largest per-frame score difference 0.1553", 0.1553, "",
               _VIDEO, _PERF),
)
GUIDE_BACKEND = "int8"  # the guide's INT8 is our dynamic-range int8 backend


def guide_comparison(report: VerifyReport, backend: str = GUIDE_BACKEND) -> list[dict[str, Any]]:
    """Each guide claim next to our measurement of the same quantity, with both conditions."""
    b = report.backends.get(backend)
    base = report.backends.get(BASELINE)
    if b is None:
        return []
    threads = report.settings.get("threads")
    random_n = report.settings.get("random_inputs")
    frames_desc = report.settings.get("frames_description", "")

    def rnd(net: str, output: str, attr: str, scale: float = 1.0):
        s = b.nets.get(net, {}).get("random", {}).get("vs_float32", {}).get(output)
        value = None if s is None else getattr(s, attr)
        return None if value is None else value * scale

    def reduction(net: str | None):
        if net is None:
            return b.reduction_pct
        f = b.files.get(net)
        return None if f is None or f.size_vs_float32 is None else (1 - f.size_vs_float32) * 100

    def coverage(net: str):
        f = b.files.get(net)
        return None if f is None else f.quantized_tensors

    def coverage_text(net: str):
        f = b.files.get(net)
        return "" if f is None else f"{f.quantized_tensors}/{f.tensors} tensors"

    e2e = b.end_to_end.get("vs_float32")
    speed = b.latency.speed_vs_float32 if b.latency else None
    video_rel = None
    if base is not None and base.clips and b.clips:
        ref = np.array([c.mean_score for c in base.clips])
        got = np.array([c.mean_score for c in b.clips])
        video_rel = float(np.mean(np.abs(got - ref) / (np.abs(ref) + REL_EPS)) * 100)
    built = report.settings.get("built_from") or {}
    weights = ", ".join(Path(c["path"]).name for c in built.values() if c and c.get("path"))
    recipe = b.recipes.get("content", "?")
    ours_random = (f"{random_n} standard-normal input(s) per net, our {backend} ({recipe}) vs "
                   f"our float32 TFLite, same formula; weights: {weights or 'see manifest.json'}")
    ours_frames = f"{frames_desc}; frames in memory, {threads} threads"
    ours = {
        "size_reduction_total": (reduction(None), f"sum of the three files, {recipe}"),
        "size_reduction_content": (reduction("content"), recipe),
        "size_reduction_distortion": (reduction("distortion"), recipe),
        "size_reduction_aggregation": (reduction("aggregation"), recipe),
        "speedup": (speed, f"median frame time (preprocessing + 3 nets), {ours_frames}, "
                           "ai-edge-litert with XNNPACK"),
        "score_rel_random": (rnd("aggregation", "score", "mean_rel", 100), ours_random),
        "aggregation_abs_random": (rnd("aggregation", "score", "mean_abs"), ours_random),
        "content_rel_random": (rnd("content", "features", "mean_rel", 100), ours_random),
        "content_abs_random": (rnd("content", "features", "mean_abs"), ours_random),
        "distortion_rel_random": (rnd("distortion", "features", "mean_rel", 100), ours_random),
        "distortion_abs_random": (rnd("distortion", "features", "mean_abs"), ours_random),
        "coverage_content": (coverage("content"), coverage_text("content")),
        "coverage_distortion": (coverage("distortion"), coverage_text("distortion")),
        "coverage_aggregation": (coverage("aggregation"), coverage_text("aggregation")),
        "video_score_rel": (video_rel, "mean over clips of |clip score - float32's| / float32's; "
                                      + ours_frames),
        "frame_score_delta_max": (e2e.score_delta_max if e2e else None, ours_frames),
    }
    rows = []
    for claim in GUIDE_CLAIMS:
        value, conditions = ours.get(claim.key, (None, ""))
        rows.append({**asdict(claim), "ours": value, "ours_conditions": conditions,
                     "ours_backend": backend})
    return rows


# --------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class VerifySettings:
    backends: tuple[str, ...]
    model_dir: Path
    threads: int
    random_inputs: int = 2
    seed: int = 0
    warmup: int = 1
    runs: int = 5
    check_manifest: bool = True


def select_backends(requested: Sequence[str] | None, model_dir: Path) -> list[BackendLike]:
    """Backends to verify; float32 (the baseline) always first.

    Each requested value is a backend spec (``parse_spec``): names, ``all`` or one per-net
    mix. Nothing requested, or ``all``: ``backends.all_with_files``.
    """
    available = discover()
    items: list[str] = []  # backend names and mix specs, in the order given
    for value in requested or [ALL]:
        spec = parse_spec(value)
        items += [value] if spec.mix is not None else list(spec.names)
    chosen: list[BackendLike] = []
    if ALL in items:
        chosen = all_with_files(model_dir, available)
        if not chosen:
            raise ModelFilesError(f"no backend has model files in {model_dir}; "
                                  f"{runtime.BUILD_HINT} --out {model_dir}")
    for item in items:
        if item == ALL:
            continue
        backend = get_backend(item, available)
        if backend.name not in {b.name for b in chosen}:
            chosen.append(backend)
    if BASELINE not in {b.name for b in chosen}:
        chosen.insert(0, get_backend(BASELINE, available))
    chosen.sort(key=lambda b: b.name != BASELINE)
    return chosen


def load_backends(settings: VerifySettings) -> tuple[list[BackendLike], dict[str, runtime.Models]]:
    """Select and load every backend (cached per process); a bad file raises ModelFilesError."""
    specs = select_backends(settings.backends, settings.model_dir)
    loaded = {spec.name: runtime.load_models(spec, settings.model_dir, settings.threads,
                                             check_manifest=settings.check_manifest)
              for spec in specs}
    return specs, loaded


def _file_infos(models: runtime.Models, baseline: runtime.Models | None) -> dict[str, FileInfo]:
    infos = {}
    manifests: dict[Path, dict[str, dict[str, Any]]] = {}
    for net in NETS:
        path = models.runners[net].path
        if path.parent not in manifests:
            manifests[path.parent] = _manifest_entries(path.parent)
        size = path.stat().st_size
        base_size = baseline.runners[net].path.stat().st_size if baseline else None
        info = tflite_info.read_model_info(path)
        infos[net] = FileInfo(net, str(path), size, models.runners[net].sha256,
                              size / base_size if base_size else None, info.tensors_by_dtype,
                              sum(info.tensors_by_dtype.values()), info.quantized_tensors,
                              info.quantized_tensors_by_dtype, info.conv_weights_by_dtype,
                              info.ops_by_name, manifests[path.parent].get(path.name))
    return infos


def _auto_record(files: Mapping[str, FileInfo]) -> dict[str, Any] | None:
    """The auto search record behind these files, if the content file was made by it."""
    from uvq_int8 import manifest as mf

    path = Path(files["content"].path)
    try:
        return mf.auto_record(mf.load(path.parent), path.name)
    except mf.ManifestError:
        return None


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "_Timer":
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t


def _empty_net_stats(references: Iterable[str]) -> dict:
    return {net: {kind: {ref: {o: StatsAccumulator() for o in OUTPUTS[net]} for ref in references}
                  for kind in INPUT_KINDS} for net in NETS}


class _Measurement:
    """The state of one verify run: loaded backends, accumulators, per-frame records."""

    def __init__(self, settings: VerifySettings, clips: Sequence[Clip],
                 torch_ref: TorchReference | None, step: Progress) -> None:
        self.settings, self.clips, self.torch_ref, self.step = settings, clips, torch_ref, step
        self.specs, self.loaded = load_backends(settings)
        self.base = self.loaded[BASELINE]
        references = ["vs_float32"] + (["vs_pytorch"] if torch_ref else [])
        self.acc = {name: _empty_net_stats(references) for name in self.loaded}
        self.frame_ms: dict[str, list[float]] = {name: [] for name in self.loaded}
        self.logits: dict[str, dict[str, list[float]]] = {name: {} for name in self.loaded}
        self.torch_logits: dict[str, list[float]] = {}
        self.latency_ms = {name: {net: [] for net in NETS} for name in self.loaded}

    def random_pass(self) -> None:
        """Random inputs per net: the old guide's test, kept to compare with its numbers."""
        total, done = self.settings.random_inputs * len(NETS), 0
        for i in range(self.settings.random_inputs):
            for net in NETS:
                inputs = random_inputs(net, self.settings.seed * 1000 + i * len(NETS)
                                       + NETS.index(net))
                refs = {"vs_float32": self.base.runners[net].run(*inputs)}
                if self.torch_ref:
                    refs["vs_pytorch"] = self.torch_ref.run(net, *inputs)
                for name, models in self.loaded.items():
                    outs = (refs["vs_float32"] if name == BASELINE
                            else models.runners[net].run(*inputs))
                    for ref_key, ref_outs in refs.items():
                        for o, output in enumerate(OUTPUTS[net]):
                            self.acc[name][net]["random"][ref_key][output].add(ref_outs[o],
                                                                                outs[o])
                done += 1
                self.step("random inputs", done, total)

    def frame_pass(self) -> None:
        """Every frame through every backend: per-net errors on identical inputs, end to end."""
        total, done = sum(len(c.frames) for c in self.clips), 0
        for clip in self.clips:
            for name in self.loaded:
                self.logits[name][clip.name] = []
            if self.torch_ref:
                self.torch_logits[clip.name] = []
            for frame in clip.frames:
                self._frame(clip.name, frame)
                done += 1
                self.step("frames", done, total)

    def _frame(self, clip: str, frame: np.ndarray) -> None:
        with _Timer() as prep:
            content_in, patches = F.net_inputs(frame)
        f32: dict[str, Any] = {}
        torch_out = None
        for name, models in self.loaded.items():  # float32 first: the others need its features
            with _Timer() as run:
                c = models.runners["content"].run(content_in)[0]
                d = models.runners["distortion"].run(patches)[0]
                agg = models.runners["aggregation"].run(c, d)
            self.frame_ms[name].append((prep.seconds + run.seconds) * 1000)
            self.logits[name][clip].append(_logit(agg))
            if name == BASELINE:
                f32 = {"content": c, "distortion": d, "aggregation": agg}
                if self.torch_ref:
                    tc, td, tl = self.torch_ref.frame(frame)
                    self.torch_logits[clip].append(tl)
                    torch_out = {"content": tc, "distortion": td, "aggregation":
                                 self.torch_ref.run("aggregation", c, d)}
            # The aggregation net alone is fed float32's features, so only its own error shows.
            agg_own = agg if name == BASELINE else \
                models.runners["aggregation"].run(f32["content"], f32["distortion"])
            refs = {"vs_float32": f32}
            if torch_out is not None:
                refs["vs_pytorch"] = torch_out
            a = self.acc[name]
            for key, ref in refs.items():
                a["content"]["frames"][key]["features"].add(ref["content"], c)
                a["distortion"]["frames"][key]["features"].add(ref["distortion"], d)
                _add_agg(a["aggregation"]["frames"][key], ref["aggregation"], agg_own)

    def latency_pass(self) -> None:
        """Per-net latency on the first frame's inputs, median after warm-up."""
        content_in, patches = F.net_inputs(self.clips[0].frames[0])
        c = self.base.runners["content"].run(content_in)[0]
        d = self.base.runners["distortion"].run(patches)[0]
        inputs = {"content": (content_in,), "distortion": (patches,), "aggregation": (c, d)}
        rounds = self.settings.warmup + self.settings.runs
        total, done = len(self.loaded) * len(NETS) * rounds, 0
        # Round-robin over backends, so a load change on a shared machine hits them alike.
        for r in range(rounds):
            for name, models in self.loaded.items():
                for net in NETS:
                    with _Timer() as t:
                        models.runners[net].run(*inputs[net])
                    if r >= self.settings.warmup:
                        self.latency_ms[name][net].append(t.seconds * 1000)
                    done += 1
                    self.step("latency", done, total)

    def backend_report(self, spec: BackendLike) -> BackendReport:
        name, models = spec.name, self.loaded[spec.name]
        clip_names = [c.name for c in self.clips]
        files = _file_infos(models, self.base)
        size = sum(f.size_bytes for f in files.values())
        base_size = sum(p.stat().st_size for p in self.base.paths.values())
        e2e = {"vs_float32": _end_to_end("float32", self.logits[BASELINE], self.logits[name],
                                         clip_names)}
        if self.torch_ref:
            e2e["vs_pytorch"] = _end_to_end("pytorch", self.torch_logits, self.logits[name],
                                            clip_names)
        ms = self.frame_ms[name]
        base_ms = self.frame_ms[BASELINE]
        fms = float(np.median(ms)) if ms else None
        lat = Latency(
            self.settings.threads, self.settings.warmup, self.settings.runs,
            {net: float(np.median(v)) for net, v in self.latency_ms[name].items() if v},
            {net: float(np.min(v)) for net, v in self.latency_ms[name].items() if v},
            fms, 1000.0 / fms if fms else None,
            float(np.median(base_ms)) / fms if fms and base_ms else None)
        nets_out = {net: {kind: {ref: {o: s.result() for o, s in outs.items()}
                                 for ref, outs in by_ref.items()}
                          for kind, by_ref in by_kind.items()}
                    for net, by_kind in self.acc[name].items()}
        return BackendReport(
            name=name, description=getattr(spec, "description", ""),
            recipes=dict(getattr(spec, "recipes", {}) or {}), files=files, size_bytes=size,
            size_vs_float32=size / base_size if base_size else None,
            reduction_pct=(1 - size / base_size) * 100 if base_size else None,
            nets=nets_out, clips=[_clip_scores(n, self.logits[name][n]) for n in clip_names],
            end_to_end=e2e, latency=lat, auto=_auto_record(files))


def _unique_names(clips: Sequence[Clip]) -> list[Clip]:
    seen: dict[str, int] = {}
    out = []
    for clip in clips:
        n = seen.get(clip.name, 0) + 1
        seen[clip.name] = n
        out.append(clip if n == 1 else Clip(f"{clip.name}#{n}", clip.source, clip.frames,
                                            clip.decode_seconds))
    return out


def run_verify(settings: VerifySettings, clips: Sequence[Clip],
               torch_ref: TorchReference | None = None, pytorch_note: str = "",
               progress: Progress | None = None) -> VerifyReport:
    """Measure every backend in ``settings`` on ``clips`` (and random inputs)."""
    clips = _unique_names([c for c in clips if c.frames])
    if not clips:
        raise UserError("no frames to verify on")
    m = _Measurement(settings, clips, torch_ref, progress or (lambda *_: None))
    m.random_pass()
    m.frame_pass()
    m.latency_pass()
    reports = {spec.name: m.backend_report(spec) for spec in m.specs}

    clip_names = [c.name for c in clips]
    pytorch: dict[str, Any] = {"available": torch_ref is not None}
    if torch_ref:
        pytorch["checkpoints"] = {n: str(p) for n, p in torch_ref.checkpoints.items()}
        pytorch["clips"] = [asdict(_clip_scores(n, m.torch_logits[n])) for n in clip_names]
    else:
        pytorch["reason"] = pytorch_note or "not requested"
    inputs = [{"name": c.name, "source": c.source, "frames": len(c.frames),
               "decode_seconds": round(c.decode_seconds, 3)} for c in clips]
    f32_files = reports[BASELINE].files
    settings_out = {
        "backends": [s.name for s in m.specs], "model_dir": str(settings.model_dir),
        "threads": settings.threads, "random_inputs": settings.random_inputs,
        "random_distribution": "standard normal (np.random.default_rng(seed).standard_normal)",
        "seed": settings.seed, "warmup": settings.warmup, "runs": settings.runs,
        "frames": sum(len(c.frames) for c in clips), "clips": len(clips),
        "frames_description": describe_inputs(clips),
        "built_from": {net: (f32_files[net].manifest or {}).get("checkpoint") for net in NETS},
    }
    report = VerifyReport(SCHEMA_VERSION, time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine_info(),
                          settings_out, inputs, pytorch, reports)
    report.guide = guide_comparison(report)
    return report


def describe_inputs(clips: Sequence[Clip]) -> str:
    counts: dict[str, tuple[int, int]] = {}
    for c in clips:
        n_clips, n_frames = counts.get(c.source, (0, 0))
        counts[c.source] = (n_clips + 1, n_frames + len(c.frames))
    parts = []
    for source, (n_clips, n_frames) in counts.items():
        if source == "video":
            parts.append(f"{n_frames} frames of {n_clips} video(s)")
        else:
            parts.append(f"{n_frames} {source} 1080p frame(s)")
    return ", ".join(parts)


def _logit(outs: Sequence[np.ndarray]) -> float:
    if len(outs) > 1:
        return float(outs[1].reshape(-1)[0])
    return F.score_to_logit(outs[0].reshape(-1)[0])  # a single-output file


def _add_agg(accs: dict[str, StatsAccumulator], ref: Sequence[np.ndarray],
             got: Sequence[np.ndarray]) -> None:
    accs["logit"].add(np.array([_logit(ref)]), np.array([_logit(got)]))
    accs["score"].add(ref[0], got[0])


def _scores(logits: Sequence[float]) -> list[float]:
    # The same float32 scaling the scorer applies, so deltas are what users would see.
    return [float(s) for s in F.logit_to_score(np.asarray(logits, dtype=np.float32))]


def _clip_scores(name: str, logits: Sequence[float]) -> ClipScores:
    scores = _scores(logits)
    mean = float(np.mean(np.asarray(scores, dtype=np.float32), dtype=np.float32))
    return ClipScores(name, [float(x) for x in logits], scores, mean)


def _end_to_end(reference: str, ref_logits: Mapping[str, list[float]],
                got_logits: Mapping[str, list[float]], clip_names: Sequence[str]) -> EndToEnd:
    dl: dict[str, list[float]] = {}
    ds: dict[str, list[float]] = {}
    ref_clip_scores, got_clip_scores, ref_clip_logits, got_clip_logits = [], [], [], []
    for name in clip_names:
        r, g = np.asarray(ref_logits[name], np.float64), np.asarray(got_logits[name], np.float64)
        rs, gs = np.asarray(_scores(r)), np.asarray(_scores(g))
        dl[name] = (g - r).tolist()
        ds[name] = (gs - rs).tolist()
        ref_clip_scores.append(_clip_scores(name, r).mean_score)
        got_clip_scores.append(_clip_scores(name, g).mean_score)
        ref_clip_logits.append(float(r.mean()))
        got_clip_logits.append(float(g.mean()))
    all_dl = np.abs(np.concatenate([np.asarray(v) for v in dl.values()]))
    all_ds = np.abs(np.concatenate([np.asarray(v) for v in ds.values()]))
    return EndToEnd(
        reference=reference, frames=int(all_dl.size), clips=len(clip_names),
        logit_delta_max=float(all_dl.max()), logit_delta_mean=float(all_dl.mean()),
        score_delta_max=float(all_ds.max()), score_delta_mean=float(all_ds.mean()),
        clip_score_delta_max=float(np.max(np.abs(np.subtract(got_clip_scores, ref_clip_scores)))),
        clip_logit_delta_max=float(np.max(np.abs(np.subtract(got_clip_logits, ref_clip_logits)))),
        score_srcc=srcc(ref_clip_scores, got_clip_scores),
        score_plcc=plcc(ref_clip_scores, got_clip_scores),
        logit_srcc=srcc(ref_clip_logits, got_clip_logits),
        logit_plcc=plcc(ref_clip_logits, got_clip_logits),
        per_frame_logit_delta=dl, per_frame_score_delta=ds)


def _manifest_entries(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The manifest's file entries; {} when it is missing or unreadable (load_models
    reports an unreadable manifest itself)."""
    from uvq_int8 import manifest as mf

    try:
        return mf.entries(model_dir) or {}
    except mf.ManifestError:
        return {}
