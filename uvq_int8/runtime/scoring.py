"""Scoring a video end to end: decode, the three nets, upstream's result dict."""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from uvq_int8 import config as _config
from uvq_int8 import runtime
from uvq_int8.runtime import decode
from uvq_int8.runtime.decode import probe as probing
from uvq_int8.runtime.frames import logit_to_score
from uvq_int8.util import usable_cores


@dataclass(frozen=True)
class ScoreOptions:
    fps: Fraction | int = 1  # any positive rate (0.5, Fraction(1, 4)) or -1: every frame
    transpose: bool | None = None  # None: transpose portrait videos, like upstream's batch mode
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    decoder: str | None = None  # "pyav" or "ffmpeg"; None: the configured one (config.py)


def score_frames(models: runtime.Models, frames: Iterable[np.ndarray],
                 on_frame: Callable[[int], None] | None = None,
                 auditor: Any = None) -> tuple[list[float], list[float]]:
    """Per-frame (logits, scores) for uint8 1080p RGB frames; ``auditor`` (audit.Auditor)
    sees each frame after it is scored."""
    logits: list[float] = []
    for i, frame in enumerate(frames):
        logit, _ = models.aggregate(*models.features(frame))
        logits.append(logit)
        if auditor is not None:
            auditor.observe(i, frame, logit)
        if on_frame:
            on_frame(i)
    scores = [float(s) for s in logit_to_score(np.asarray(logits, dtype=np.float32))]
    return logits, scores


def decode_threads(interpreter_threads: int) -> int:
    """Video decoder threads: the cores the interpreter leaves free, at least one."""
    # Where the interpreter's threads fill the machine, ffmpeg's extra frame threads only
    # take turns with them, and cost more CPU per decoded frame than one thread
    # (benchmarks/bench_e2e.py measures the end-to-end time).
    return max(1, usable_cores() - max(1, int(interpreter_threads)))


def probe(path: str | Path, options: ScoreOptions = ScoreOptions()) -> probing.VideoInfo:
    # fps=-1 needs upstream's exact frame count, which only a full count gives.
    return probing.probe(str(path), ffprobe=options.ffprobe, count_frames=options.fps == -1)


def decode_warnings(stats: probing.DecodeStats, expected: int) -> list[str]:
    """What a decode did that the user should know: a truncated file padded as upstream does."""
    if stats.padded_frames:
        return [f"decoding may be truncated: {stats.real_frames} of {expected} frames decoded; "
                f"{stats.padded_frames} black frames padded as upstream does"]
    return []


def isa_warnings(models: runtime.Models) -> list[str]:
    """A warning when an ``auto`` model set's choice was made for another instruction set.

    ``auto`` ranks candidates by a cost model whose int8/float32 time ratio depends on the
    instruction set (``convert.sensitivity.INT8_TIME_RATIOS``): a set chosen on AVX-512
    VNNI may not be the fastest within its budget on AVX2, and the reverse. Accuracy and
    the promise do not depend on it."""
    from uvq_int8.runtime import manifest_entries
    from uvq_int8.util import cpu_features, isa_name

    if models.backend != "auto":
        return []
    here = isa_name(cpu_features()[1])
    for entry in (manifest_entries(Path(models.model_dir)) or {}).values():
        choice = (entry.get("recipe_options") or {}).get("choice") or {}
        built_for = choice.get("cost_isa")
        if entry.get("recipe") == "auto" and built_for and built_for != here:
            return [f"the auto choice was made for instruction set {built_for}; this machine is "
                    f"{here}, where another choice within the same budget may be faster "
                    "(rebuild with 'uvq-int8 build --backend auto' here to rank for it)"]
    return []


def score_video(path: str | Path, models: runtime.Models, options: ScoreOptions = ScoreOptions(),
                on_frame: Callable[[int, int], None] | None = None,
                info: probing.VideoInfo | None = None,
                frames: Iterable[np.ndarray] | None = None,
                plan: probing.SamplePlan | None = None,
                stats: probing.DecodeStats | None = None, audit: float | None = None,
                audit_budget: float | None = None) -> dict[str, Any]:
    """Score one video with loaded models; returns upstream's keys plus ours.

    ``frames``: upstream's frames of this video already being decoded elsewhere (a
    prefetching batch worker), with the ``stats`` that decode fills in; by default they
    are decoded here. ``audit``: a fraction > 0 adds an ``audit`` entry (see
    uvq_int8.runtime.audit).
    """
    from uvq_int8.runtime import audit as _audit

    name = str(path)
    info = info or probe(name, options)
    transpose = probing.is_portrait(info) if options.transpose is None else options.transpose
    plan = plan or probing.sample_plan(info, options.fps)
    auditor = _audit.make_auditor(models, plan.num_frames, audit or 0.0, audit_budget)
    started = time.perf_counter()
    decoded_here = frames is None
    if frames is None:
        stats = probing.DecodeStats()
        frames = decode.uvq_frames(name, fps=options.fps, transpose=transpose,
                                  ffmpeg=options.ffmpeg, ffprobe=options.ffprobe, info=info,
                                  decode_threads=decode_threads(models.threads), stats=stats,
                                  decoder=options.decoder, plan=plan)
    elif stats is None:
        stats = probing.DecodeStats()  # decoded elsewhere, by a caller that keeps no stats
    total = plan.num_frames
    logits, scores = score_frames(
        models, frames, (lambda i: on_frame(i + 1, total)) if on_frame else None, auditor)
    elapsed = time.perf_counter() - started
    # Upstream averages the float32 scores with torch.mean; keep that precision.
    mean = float(np.mean(np.asarray(scores, dtype=np.float32), dtype=np.float32))
    return {
        "uvq1p5_score": mean,
        "per_frame_scores": scores,
        "frame_indices": list(plan.frame_indices[:len(scores)]),
        "video_name": name,
        "backend": models.backend,
        "per_frame_logits": logits,
        "model_sha256": models.sha256,
        "model_files": {net: str(p) for net, p in models.paths.items()},
        "transpose": transpose,
        "fps": probing.fps_value(plan.fps),
        "seconds": round(elapsed, 3),
        "decoder": stats.decoder,
        "skipped_packets": stats.skipped_packets,
        "fallback": stats.fallback,
        # A decode elsewhere (a batch worker) reports its own decode warnings.
        "warnings": (decode_warnings(stats, total) if decoded_here else []) + isa_warnings(models),
        **({"audit": auditor.result()} if auditor is not None else {}),
    }


def score(path: str | Path, backend: str | None = None, fps: Fraction | float | str = 1,
          model_dir: str | Path | None = None, threads: int | None = None,
          transpose: bool | None = None, ffmpeg: str = "ffmpeg",
          ffprobe: str = "ffprobe", decoder: str | None = None, audit: float | None = None,
          audit_budget: float | None = None) -> dict[str, Any]:
    """Score a video with the configured (or given) backend, as ``uvq --output_all_stats``.

    ``fps``: frames per second to sample, whole or not (1, 0.5, "1/4"), or -1 for every
    frame. ``audit``: a fraction of frames to score with the float32 files too (UVQ_AUDIT / config
    ``audit`` when not given); the result then has an ``audit`` entry (uvq_int8.runtime.audit)."""
    cfg = _config.resolve(backend=backend, model_dir=model_dir, threads=threads, decoder=decoder,
                          audit=audit, audit_budget=audit_budget)
    models = runtime.load_models(cfg.backend.value, cfg.model_dir.value, cfg.threads.value)
    return score_video(path, models,
                       ScoreOptions(probing.parse_fps(fps), transpose, ffmpeg, ffprobe, cfg.decoder.value),
                       audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
