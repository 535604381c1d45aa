"""Scoring a video end to end: decode, the three nets, upstream's result dict."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from uvq_int8 import config as _config
from uvq_int8 import runtime
from uvq_int8.errors import UserError
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
    segment_seconds: Fraction | None = None  # pool scores per segment of this many seconds


def parse_segment_seconds(value) -> Fraction | None:
    """``--segment-seconds``: a positive number of seconds as an exact rational ("10",
    "2.5", "1/3"); None stays None (no segments). One-line UserError otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if isinstance(value, bool):
            raise TypeError
        seconds = Fraction(repr(value)) if isinstance(value, float) else Fraction(text)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        seconds = None
    if seconds is None or seconds <= 0:
        raise UserError(f"segment seconds must be a positive number of seconds such as 10, "
                        f"2.5 or 1/3; got {text!r}")
    return seconds


def _mean(scores: list[float]) -> float:
    # Upstream averages the float32 scores with torch.mean; keep that precision.
    return float(np.mean(np.asarray(scores, dtype=np.float32), dtype=np.float32))


def segments(scores: list[float], instants: list[Fraction] | None, padded: int,
             seconds: Fraction, video_length: int) -> list[dict[str, Any]] | None:
    """Per-segment pooled scores: segment k holds the scored frames whose *source*
    timestamp lies in [k * seconds, (k + 1) * seconds).

    Source timestamps, not output positions: ``-r`` writes a frame up to 1.1 output frames
    early (at ``--fps 1`` the second scored frame is the source's second frame), so the
    i-th score is not the one at i / fps seconds. ``instants`` are the exact timestamps of
    the real (decoded) frames, the first ``len(scores) - padded`` scores; the last
    ``padded`` scores are the black frames upstream pads a truncated video with. They
    have no timestamp and are one entry of their own, ``"padded": true``, with null
    bounds. Segments run from 0 to the end of ``video_length`` (upstream's
    ``ceil(duration)``) or of the last frame's segment; a segment without frames has
    ``frames`` 0 and null ``mean`` and ``min``. ``mean`` is computed as the whole-video
    score is (float32), so one segment covering the video gives ``uvq1p5_score``.
    None when the timestamps are missing.
    """
    real = len(scores) - padded
    if instants is None or len(instants) < real or real < 0:
        return None
    # A frame before the start time (an edit list's negative timestamps) joins segment 0.
    index = [max(0, math.floor(Fraction(t) / seconds)) for t in instants[:real]]
    count = max(math.ceil(video_length / seconds), max(index, default=-1) + 1)
    groups: list[list[float]] = [[] for _ in range(count)]
    for k, score in zip(index, scores[:real]):
        groups[k].append(score)
    out = [_pooled(group, float(k * seconds), float((k + 1) * seconds), False)
           for k, group in enumerate(groups)]
    if padded:
        out.append(_pooled(scores[real:], None, None, True))
    return out


def _pooled(scores: list[float], start: float | None, end: float | None,
            padded: bool) -> dict[str, Any]:
    return {"start": start, "end": end, "frames": len(scores),
            "mean": _mean(scores) if scores else None,
            "min": float(min(scores)) if scores else None, "padded": padded}


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
                audit_budget: float | None = None,
                source_times: Callable[[], list[Fraction] | None] | None = None
                ) -> dict[str, Any]:
    """Score one video with loaded models; returns upstream's keys plus ours.

    ``frames``: upstream's frames of this video already being decoded elsewhere (a
    prefetching batch worker), with the ``stats`` that decode fills in, and
    ``source_times`` to ask (once the frames are scored) for their exact source
    timestamps (``probe.source_instants``); by default the frames are decoded and the
    timestamps read here. ``frame_times`` reports them; with
    ``options.segment_seconds`` the result has ``segments`` (see ``segments``).
    ``audit``: a fraction > 0 adds an ``audit`` entry (see uvq_int8.runtime.audit).
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
    if decoded_here:
        instants = probing.source_instants(name, plan.fps, stats.real_frames, options.ffprobe)
    else:
        instants = source_times() if source_times is not None else None
    mean = _mean(scores)
    extra: dict[str, Any] = {}
    warnings: list[str] = []
    if options.segment_seconds is not None:
        extra["segment_seconds"] = probing.fps_value(options.segment_seconds)
        extra["segments"] = segments(scores, instants, stats.padded_frames,
                                     options.segment_seconds, plan.video_length)
        if extra["segments"] is None:
            warnings.append("no segments: the scored frames' source timestamps are not known "
                            "(ffprobe gave none, or ffmpeg's -r choice is not reproduced for "
                            "this file)")
    return {
        "uvq1p5_score": mean,
        "per_frame_scores": scores,
        "frame_indices": list(plan.frame_indices[:len(scores)]),
        # Seconds from the file's start of the source frames scored (padded ones have none).
        "frame_times": probing.rounded_times(instants),
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
        "warnings": ((decode_warnings(stats, total) if decoded_here else []) + warnings
                     + isa_warnings(models)),
        **extra,
        **({"audit": auditor.result()} if auditor is not None else {}),
    }


def score(path: str | Path, backend: str | None = None, fps: Fraction | float | str = 1,
          model_dir: str | Path | None = None, threads: int | None = None,
          transpose: bool | None = None, ffmpeg: str = "ffmpeg",
          ffprobe: str = "ffprobe", decoder: str | None = None, audit: float | None = None,
          audit_budget: float | None = None,
          segment_seconds: Fraction | float | str | None = None) -> dict[str, Any]:
    """Score a video with the configured (or given) backend, as ``uvq --output_all_stats``.

    ``fps``: frames per second to sample, whole or not (1, 0.5, "1/4"), or -1 for every
    frame. ``segment_seconds``: also pool the scores per segment of that many seconds of
    source time (the ``segments`` entry, see ``segments``). ``audit``: a fraction of
    frames to score with the float32 files too (UVQ_AUDIT / config ``audit`` when not
    given); the result then has an ``audit`` entry (uvq_int8.runtime.audit)."""
    cfg = _config.resolve(backend=backend, model_dir=model_dir, threads=threads, decoder=decoder,
                          audit=audit, audit_budget=audit_budget)
    models = runtime.load_models(cfg.backend.value, cfg.model_dir.value, cfg.threads.value)
    return score_video(path, models,
                       ScoreOptions(probing.parse_fps(fps), transpose, ffmpeg, ffprobe,
                                    cfg.decoder.value, parse_segment_seconds(segment_seconds)),
                       audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
