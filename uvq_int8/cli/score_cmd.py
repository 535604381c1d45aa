"""``uvq VIDEO``: upstream ``uvq_inference.py``'s interface on the TFLite backends.

The parser is also ``uvq``'s for lists and directories; ``uvq_int8.cli.uvq_main`` sends
those to ``batch_cmd``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uvq_int8 import config as _config
from uvq_int8 import runtime
from uvq_int8.cli import common
from uvq_int8.runtime.audit import EXIT_AUDIT_EXCEEDED
from uvq_int8.errors import UserError
from uvq_int8.util import atomic_write_text
from uvq_int8.runtime.scoring import probe, score_video


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uvq",
        description="Score video quality with UVQ 1.5 (1 = bad ... 5 = excellent) on TFLite "
                    "models. Same interface as upstream uvq_inference.py, plus backend choice.",
        epilog="Backend, model directory, threads and decoder follow one precedence chain: "
               "flag, then UVQ_BACKEND / UVQ_MODEL_DIR / UVQ_THREADS / UVQ_DECODER, then the "
               "TOML file named by "
               "UVQ_CONFIG (or ~/.config/uvq/config.toml), then defaults. "
               "'uvq-int8 config' shows the effective values.")
    p.add_argument("input", help="a video file; or, for batch mode (needs --output), a .txt "
                                 "file with one video path per line, a directory (searched "
                                 "recursively for video extensions), or - for a list on stdin")
    p.add_argument("--backend", help="backend name (see 'uvq-int8 backends') or a per-net mix "
                                     "like content=fp16,distortion=int8-static,aggregation=float32")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir",
                   help="directory holding the backend's .tflite files and manifest.json")
    p.add_argument("--threads", type=int, help="interpreter threads per net")
    common.add_decoder_argument(p)
    p.add_argument("--transpose", action="store_true",
                   help="rotate the video 90 degrees before scoring (portrait videos are "
                        "detected and rotated automatically)")
    p.add_argument("--no-auto-transpose", action="store_true",
                   help="do not rotate portrait videos automatically; upstream's "
                        "single-video mode does not rotate them (its .txt batch mode does), "
                        "so this gives upstream's single-video numbers")
    common.add_fps_argument(p)
    common.add_segment_argument(p)
    p.add_argument("--output", default="",
                   help="single video: write the JSON stats here; batch: the results file "
                        "(required): 'basename,score' lines, or rows in --format")
    p.add_argument("--output_all_stats", "--output-all-stats", dest="output_all_stats",
                   action="store_true", help="print all stats as JSON instead of the score")
    p.add_argument("--resume", action="store_true",
                   help="batch mode: skip videos already in --output and append (by basename "
                        "without --format; by path and file identity with it, retrying "
                        "failed videos)")
    p.add_argument("--ffmpeg_path", "--ffmpeg-path", dest="ffmpeg_path", default="ffmpeg",
                   help="ffmpeg executable (default: ffmpeg on PATH)")
    p.add_argument("--ffprobe_path", "--ffprobe-path", dest="ffprobe_path", default="ffprobe",
                   help="ffprobe executable (default: ffprobe on PATH)")
    p.add_argument("--model_version", default="1.5", choices=["1.5"],
                   help="accepted for compatibility with upstream; only 1.5 is supported")
    p.add_argument("--device", default="cpu", choices=["cpu"],
                   help="accepted for compatibility with upstream; TFLite runs on the CPU")
    common.add_audit_arguments(p)
    common.add_batch_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return p


def run_single(args: argparse.Namespace, cfg: _config.Config) -> int:
    """Score one video file; ``cfg`` is the command's resolved configuration."""
    if not Path(args.input).exists():
        raise UserError(f"{args.input}: no such file; give a video file or a .txt list")
    options = common.score_options(args, cfg)
    info = probe(args.input, options)  # a bad video fails before any model loads
    models = runtime.load_models(cfg.backend.value, cfg.model_dir.value, cfg.threads.value)
    with common.progress(not args.quiet) as progress:
        task = progress.add_task(f"scoring {Path(args.input).name}", total=None)
        results = score_video(args.input, models, options, info=info,
                              on_frame=lambda i, n: progress.update(task, completed=i, total=n),
                              audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
    if args.output_all_stats:
        print(json.dumps(results))
    else:
        print(results["uvq1p5_score"])
    if args.output:
        _write_json(Path(args.output), results)
    return EXIT_AUDIT_EXCEEDED if common.audit_exceeded(cfg, results, args.input) else 0


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))
