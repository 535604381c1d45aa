"""The old INT8 guide's claims, each with its source and conditions, next to our
measurement of the same quantity (``uvq-int8 verify``'s report shows both)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uvq_int8.verify.metrics import REL_EPS
from uvq_int8.verify.results import BASELINE, VerifyReport


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
