"""What ``uvq`` and ``uvq-int8 batch`` share: arguments, the configuration, options, progress.

Both scoring commands import this module and not each other. A command resolves its
configuration once (``resolve``) and passes the result down.
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction

from uvq_int8 import config as _config
from uvq_int8.batch import FORMATS
from uvq_int8.errors import UserError
from uvq_int8.runtime.scoring import ScoreOptions

FORMAT_HELP = ("write one row per video (path, file size and sha256 of its first MiB, score, "
               "per-frame scores/logits, frame indices and source-frame times, pooled "
               "statistics, backend, model hashes, seconds, warnings, error, audit, and with "
               "--segment-seconds the segments) as JSON lines, "
               "CSV or Parquet. Without --format, batch output is upstream's headerless "
               "'basename,score' lines, which cannot tell two files of the same name apart "
               "(--resume then matches by basename)")
JOBS_HELP = ("worker processes, each loading the models once (default 1: score in this "
             "process); threads per worker default to max(1, cores // N)")


FPS_HELP = ("frames per second to sample: a whole number, a decimal or a fraction (0.5 and "
            "1/4 score one frame every 2 and every 4 seconds, for long videos); -1 scores "
            "every frame (default 1). The frames are those 'ffmpeg -r FPS' picks, and "
            "ceil(duration) * FPS of them, rounded up, are scored")


def fps_type(text: str) -> Fraction:
    """``--fps``'s argparse type: an exact rate, or -1 (``probe.parse_fps``); a bad value is
    argparse's one-line usage error (exit 2)."""
    from uvq_int8.runtime.decode.probe import parse_fps

    try:
        return parse_fps(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_fps_argument(p: argparse.ArgumentParser) -> None:
    """``--fps``."""
    p.add_argument("--fps", type=fps_type, default="1", metavar="FPS", help=FPS_HELP)


SEGMENT_HELP = ("also pool the scores per segment of S seconds of source time (e.g. 10, 2.5): "
                "segment k holds the scored frames whose source timestamp is in "
                "[k*S, (k+1)*S), with its start, end, frame count, mean and minimum; black "
                "frames padded onto a truncated video are one entry of their own "
                "(\"padded\": true). Adds 'segments' to the JSON stats and to --format rows "
                "(CSV: JSON text; Parquet: a list of structs). The whole-video score stays "
                "upstream's mean")


def segment_seconds_type(text: str) -> Fraction:
    """``--segment-seconds``' argparse type (``scoring.parse_segment_seconds``)."""
    from uvq_int8.runtime.scoring import parse_segment_seconds

    try:
        return parse_segment_seconds(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_segment_argument(p: argparse.ArgumentParser) -> None:
    """``--segment-seconds``."""
    p.add_argument("--segment-seconds", "--segment_seconds", dest="segment_seconds",
                   type=segment_seconds_type, metavar="S", help=SEGMENT_HELP)


def add_batch_options(p: argparse.ArgumentParser) -> None:
    """``--format`` and ``--jobs`` on ``uvq``: either one makes a run a batch."""
    p.add_argument("--format", choices=FORMATS, help=FORMAT_HELP)
    p.add_argument("--jobs", type=int, default=None, metavar="N", help=JOBS_HELP)


def add_audit_arguments(p: argparse.ArgumentParser) -> None:
    """``--audit``, ``--audit-budget``, ``--audit-strict``."""
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
    """``--decoder``."""
    p.add_argument("--decoder", choices=_config.DECODERS,
                   help="pyav (default): decode only the packets scoring needs, same frames; "
                        "ffmpeg: upstream's ffmpeg command line (UVQ_DECODER, config 'decoder')")


def resolve(args: argparse.Namespace) -> _config.Config:
    """The command's configuration: flags, then environment, then the config file."""
    return _config.resolve(backend=args.backend, model_dir=args.model_dir, threads=args.threads,
                           decoder=args.decoder, audit=args.audit, audit_budget=args.audit_budget,
                           audit_strict=args.audit_strict)


def score_options(args: argparse.Namespace, cfg: _config.Config) -> ScoreOptions:
    """How each video is decoded and sampled, from the flags and the configured decoder."""
    transpose = True if args.transpose else (False if args.no_auto_transpose else None)
    return ScoreOptions(args.fps, transpose, args.ffmpeg_path, args.ffprobe_path,
                        cfg.decoder.value, getattr(args, "segment_seconds", None))


def progress(enabled: bool):
    """A transient progress bar on stderr; off when not a terminal or not ``enabled``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True,
                    disable=not enabled or not console.is_terminal)


def audit_exceeded(cfg: _config.Config, results: dict, video: str) -> bool:
    """Warn (stderr) when the audit contradicts the promise; True when that fails the run."""
    from uvq_int8.runtime.audit import warning

    audit = results.get("audit")
    if not audit or not audit.get("exceeded"):
        return False
    print(warning(audit, video), file=sys.stderr)
    return bool(cfg.audit_strict.value)
