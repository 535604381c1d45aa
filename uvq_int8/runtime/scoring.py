"""Scoring a video end to end: decode, the three nets, upstream's result dict."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from uvq_int8 import config as _config
from uvq_int8 import runtime
from uvq_int8.runtime import video
from uvq_int8.runtime.frames import logit_to_score
from uvq_int8.runtime.pyav_decoder import PacketStats
from uvq_int8.util import usable_cores


@dataclass(frozen=True)
class ScoreOptions:
    fps: int = 1
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


def probe(path: str | Path, options: ScoreOptions = ScoreOptions()) -> video.VideoInfo:
    # fps=-1 needs upstream's exact frame count, which only a full count gives.
    return video.probe(str(path), ffprobe=options.ffprobe, count_frames=options.fps == -1)


def score_video(path: str | Path, models: runtime.Models, options: ScoreOptions = ScoreOptions(),
                on_frame: Callable[[int, int], None] | None = None,
                info: video.VideoInfo | None = None,
                frames: Iterable[np.ndarray] | None = None,
                stats: PacketStats | None = None, audit: float | None = None,
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
    transpose = video.is_portrait(info) if options.transpose is None else options.transpose
    plan = video.sample_plan(info, options.fps)
    auditor = _audit.make_auditor(models, plan.num_frames, audit or 0.0, audit_budget)
    started = time.perf_counter()
    if frames is None:
        stats = PacketStats()
        frames = video.uvq_frames(name, fps=options.fps, transpose=transpose,
                                  ffmpeg=options.ffmpeg, ffprobe=options.ffprobe, info=info,
                                  decode_threads=decode_threads(models.threads), stats=stats,
                                  decoder=options.decoder)
    elif stats is None:
        stats = PacketStats(decoder="")  # decoded elsewhere, by a caller that keeps no stats
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
        "fps": plan.fps,
        "seconds": round(elapsed, 3),
        "decoder": stats.decoder,
        "skipped_packets": stats.skipped_packets,
        "fallback": stats.fallback,
        **({"audit": auditor.result()} if auditor is not None else {}),
    }


def score(path: str | Path, backend: str | None = None, fps: int = 1,
          model_dir: str | Path | None = None, threads: int | None = None,
          transpose: bool | None = None, ffmpeg: str = "ffmpeg",
          ffprobe: str = "ffprobe", decoder: str | None = None, audit: float | None = None,
          audit_budget: float | None = None) -> dict[str, Any]:
    """Score a video with the configured (or given) backend, as ``uvq --output_all_stats``.

    ``audit``: a fraction of frames to score with the float32 files too (UVQ_AUDIT / config
    ``audit`` when not given); the result then has an ``audit`` entry (uvq_int8.runtime.audit)."""
    cfg = _config.resolve(backend=backend, model_dir=model_dir, threads=threads, decoder=decoder,
                          audit=audit, audit_budget=audit_budget)
    models = runtime.load_models(cfg.backend.value, cfg.model_dir.value, cfg.threads.value)
    return score_video(path, models,
                       ScoreOptions(fps, transpose, ffmpeg, ffprobe, cfg.decoder.value),
                       audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
