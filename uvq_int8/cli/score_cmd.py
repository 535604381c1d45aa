"""``uvq``: upstream ``uvq_inference.py``'s interface on the TFLite backends."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uvq_int8 import config as _config
from uvq_int8 import runtime
from uvq_int8.cli import batch_cmd
from uvq_int8.runtime.audit import EXIT_AUDIT_EXCEEDED
from uvq_int8.errors import UserError
from uvq_int8.util import atomic_write_text
from uvq_int8.runtime.scoring import ScoreOptions, probe, score_video


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
    add_decoder_argument(p)
    p.add_argument("--transpose", action="store_true",
                   help="rotate the video 90 degrees before scoring (portrait videos are "
                        "detected and rotated automatically)")
    p.add_argument("--no-auto-transpose", action="store_true",
                   help="do not rotate portrait videos automatically")
    p.add_argument("--fps", type=int, default=1,
                   help="frames per second to sample; -1 scores every frame (default 1)")
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
    add_audit_arguments(p)
    batch_cmd.add_batch_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    return p


def _config_of(args: argparse.Namespace) -> _config.Config:
    return _config.resolve(backend=args.backend, model_dir=args.model_dir, threads=args.threads,
                           decoder=args.decoder, audit=args.audit, audit_budget=args.audit_budget,
                           audit_strict=args.audit_strict)


def _load(args: argparse.Namespace) -> runtime.Models:
    cfg = _config_of(args)
    return runtime.load_models(cfg.backend.value, cfg.model_dir.value, cfg.threads.value)


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    """``--audit``, ``--audit-budget``, ``--audit-strict``, shared by ``uvq`` and
    ``uvq-int8 batch``."""
    audit = p.add_argument_group(
        "audit (also score a sample of frames with the float32 files in the model directory)")
    audit.add_argument("--audit", type=float, metavar="F",
                       help="fraction of frames to audit, e.g. 0.05 (UVQ_AUDIT, config 'audit'; "
                            "default 0: off). The result gets an 'audit' entry: the audited "
                            "frames, their logit change against float32, and whether they "
                            "contradict the promise")
    audit.add_argument("--audit-budget", type=float, metavar="D",
                       help="the logit change at least 95%% of frames must stay within "
                            "(UVQ_AUDIT_BUDGET, config 'audit_budget'); default: the build's "
                            "own D for auto, else none (report only)")
    audit.add_argument("--audit-strict", action="store_true", default=None,
                       help="exit 4 when the audit is exceeded (UVQ_AUDIT_STRICT, config "
                            "'audit_strict'); without it a warning goes to stderr")


def add_decoder_argument(p: argparse.ArgumentParser) -> None:
    """``--decoder``, shared by ``uvq`` and ``uvq-int8 batch``."""
    p.add_argument("--decoder", choices=_config.DECODERS,
                   help="pyav (default): decode only the packets scoring needs, same frames; "
                        "ffmpeg: upstream's ffmpeg command line (UVQ_DECODER, config 'decoder')")


def _audit_kwargs(args: argparse.Namespace) -> dict:
    cfg = _config_of(args)
    return {"audit": cfg.audit.value, "audit_budget": cfg.audit_budget.value}


def _audit_exceeded(args: argparse.Namespace, results: dict, video: str) -> bool:
    """Warn (stderr) when the audit contradicts the promise; True when that fails the run."""
    from uvq_int8.runtime.audit import warning

    audit = results.get("audit")
    if not audit or not audit.get("exceeded"):
        return False
    print(warning(audit, video), file=sys.stderr)
    return bool(_config_of(args).audit_strict.value)


def _options(args: argparse.Namespace) -> ScoreOptions:
    if args.fps == 0 or args.fps < -1:
        raise UserError(f"--fps must be a positive number of frames per second or -1, got {args.fps}")
    transpose = True if args.transpose else (False if args.no_auto_transpose else None)
    decoder = _config_of(args).decoder.value
    return ScoreOptions(args.fps, transpose, args.ffmpeg_path, args.ffprobe_path, decoder)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not enabled or not console.is_terminal)


def run_single(args: argparse.Namespace) -> int:
    if not Path(args.input).exists():
        raise UserError(f"{args.input}: no such file; give a video file or a .txt list")
    options = _options(args)
    info = probe(args.input, options)  # a bad video fails before any model loads
    models = _load(args)
    with _progress(not args.quiet) as progress:
        task = progress.add_task(f"scoring {Path(args.input).name}", total=None)
        results = score_video(args.input, models, options, info=info,
                              on_frame=lambda i, n: progress.update(task, completed=i, total=n),
                              **_audit_kwargs(args))
    if args.output_all_stats:
        print(json.dumps(results))
    else:
        print(results["uvq1p5_score"])
    if args.output:
        _write_json(Path(args.output), results)
    return EXIT_AUDIT_EXCEEDED if _audit_exceeded(args, results, args.input) else 0


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def run(args: argparse.Namespace) -> int:
    if batch_cmd.wants_batch(args):
        return batch_cmd.run_uvq(args)
    return run_single(args)
