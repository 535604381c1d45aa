"""``uvq-int8 verify``: measure each backend against float32 (and PyTorch); fail past a limit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uvq_int8.backends import NETS
from uvq_int8 import config as _config
from uvq_int8.verify import report as _report
from uvq_int8 import verify as V
from uvq_int8.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Two verdicts per backend: accuracy (score change against float32 within "
                "--max-score-delta, default 0.1; for auto, the build's promise) and regression "
                "(within the limits the build's measurements set). Exit status: 0 accurate, "
                "1 an error (missing or corrupt model file, bad input), 3 a backend failed "
                "accuracy (with --regression-only: exceeded a regression limit, each printed "
                "as a FAIL line). See docs/backends.md.")
    g = p.add_argument_group("what to verify")
    g.add_argument("--backend", action="append", metavar="NAME",
                   help="backend to verify (repeatable, or comma-separated; a per-net mix "
                        "content=A,distortion=B,aggregation=C counts as one). Default: every "
                        "backend with files in the model directory. float32 is always included "
                        "as the baseline")
    g.add_argument("--model-dir", help="directory with the .tflite files and manifest.json "
                                       "(default: the configured model directory)")
    g.add_argument("--threads", type=int, help="interpreter threads (default: configured)")
    g = p.add_argument_group("inputs (default: built-in synthetic frames)")
    g.add_argument("--videos", nargs="+", metavar="FILE", default=[],
                   help="videos to decode and score; each is one clip for SRCC/PLCC")
    g.add_argument("--fps", type=int, default=1, help="frames per second sampled from --videos")
    g.add_argument("--max-frames", type=int, metavar="N",
                   help="take at most N frames from each video")
    g.add_argument("--frames-npz", nargs="+", metavar="FILE", default=[],
                   help=".npz files with a frames_uint8 [N,1080,1920,3] array (e.g. the golden "
                        "frames); each frame is its own clip")
    g.add_argument("--frames", type=int, default=4, metavar="N",
                   help="number of built-in synthetic frames (clean and degraded) when no "
                        "--videos/--frames-npz are given (default 4)")
    g.add_argument("--random-inputs", type=int, default=2, metavar="N",
                   help="standard-normal inputs per net, the old guide's test (default 2)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    g.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable")
    g.add_argument("--ffprobe", default="ffprobe", help="ffprobe executable")
    g = p.add_argument_group("PyTorch reference (optional: needs torch and the checkpoints; by "
                                 "default those recorded in manifest.json, if present)")
    g.add_argument("--checkpoints", metavar="DIR",
                   help="directory with content_net.pth, distortion_net.pth, aggregation_net.pth")
    g.add_argument("--uvq-root", metavar="DIR",
                   help="an upstream google/uvq checkout (checkpoints in "
                        "uvq1p5_pytorch/checkpoints)")
    for net in NETS:
        g.add_argument(f"--{net}", metavar="PTH", help=f"the {net} net checkpoint")
    g.add_argument("--no-pytorch", action="store_true", help="skip the PyTorch comparison")
    g = p.add_argument_group("speed")
    g.add_argument("--runs", type=int, default=5, help="timed runs per net (default 5)")
    g.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-score-delta", type=float, metavar="Y",
                   help="accuracy target: largest per-frame score change against float32 "
                        "(1-5 scale) for every backend, auto included (default 0.1; auto: "
                        "the build's promise)")
    g.add_argument("--max-logit-delta", type=float, metavar="X",
                   help="regression limit: largest end-to-end logit difference allowed, for "
                        "every backend (replaces the per-backend defaults)")
    g.add_argument("--regression-only", action="store_true",
                   help="exit status follows the regression verdict, not accuracy")
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    g.add_argument("--markdown", metavar="FILE", help="write the report as Markdown")
    g.add_argument("--plot", metavar="FILE.png",
                   help="write a PNG: speed against logit error, per-frame scores by backend "
                        "(needs matplotlib)")
    g.add_argument("--quiet", action="store_true", help="no progress display and no table")


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("frames", "random_inputs", "runs", "warmup"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    if args.frames < 1 and not (args.videos or args.frames_npz):
        raise UserError("--frames must be at least 1 without --videos or --frames-npz")
    if args.fps < 1:
        raise UserError(f"--fps must be at least 1, got {args.fps}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be at least 1")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'uvq-int8[plot]'") from None


def _clips(args: argparse.Namespace) -> list[V.Clip]:
    clips: list[V.Clip] = []
    for path in args.frames_npz:
        clips += V.npz_clips(path)
    for path in args.videos:
        clips.append(V.video_clip(path, args.fps, args.max_frames, args.ffmpeg, args.ffprobe))
    return clips or V.synthetic_clips(args.frames)


def _torch_reference(args: argparse.Namespace, model_dir: Path,
                     threads: int) -> tuple[V.TorchReference | None, str]:
    if args.no_pytorch:
        return None, "--no-pytorch"
    paths = V.checkpoint_paths(args.checkpoints, args.uvq_root, args.content, args.distortion,
                               args.aggregation)
    if paths is None:
        paths, why = V.manifest_checkpoints(model_dir)
        if paths is None:
            return None, (f"{why}; give --checkpoints DIR, --uvq-root DIR or "
                          "--content/--distortion/--aggregation")
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch is not installed (pip install 'uvq-int8[build]')"
    return V.TorchReference(paths, threads), ""


class _Progress:
    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        console = Console(stderr=True)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                  transient=True, disable=not enabled or not console.is_terminal)
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "_Progress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, description: str, done: int, total: int) -> None:
        if description not in self._tasks:
            self._tasks[description] = self._progress.add_task(description, total=total)
        self._progress.update(self._tasks[description], completed=done, total=total)


def run(args: argparse.Namespace) -> int:
    _check_counts(args)
    cfg = _config.resolve(model_dir=args.model_dir, threads=args.threads)
    threads = cfg.threads.value
    settings = V.VerifySettings(tuple(args.backend or ()), cfg.model_dir.value, threads,
                                random_inputs=args.random_inputs, seed=args.seed,
                                warmup=args.warmup, runs=args.runs)
    # Model files first: a missing or corrupt file fails before any decoding or torch.
    V.load_backends(settings)
    clips = _clips(args)
    torch_ref, note = _torch_reference(args, settings.model_dir, threads)
    with _Progress(not args.quiet) as progress:
        report = V.run_verify(settings, clips, torch_ref, note, progress)
    limits = {name: V.thresholds_for(name, args.max_logit_delta, auto=backend.auto)
              for name, backend in report.backends.items()}
    V.check_thresholds(report, limits)
    from uvq_int8.verify import verdicts as _verdicts

    verdicts = _verdicts.judge(report, args.max_score_delta)

    written = []
    if args.json:
        written.append(_report.write_json(report, args.json))
    if args.markdown:
        written.append(_report.write_markdown(report, args.markdown))
    if args.plot:
        written.append(_report.write_plot(report, args.plot))
    if not args.quiet:
        _report.print_summary(report)
    for path in written:
        print(f"wrote {Path(path)}", file=sys.stderr)
    for pair in verdicts.values():
        for verdict in pair.values():
            print(verdict.line())
    failures = report.failures
    for check in failures:
        print(check.line())
    if args.regression_only:
        if failures:
            print(f"uvq-int8 verify: {len(failures)} regression limit(s) exceeded",
                  file=sys.stderr)
            return V.EXIT_THRESHOLD
        return 0
    inaccurate = _verdicts.failed(verdicts, "accuracy")
    if inaccurate:
        print(f"uvq-int8 verify: {len(inaccurate)} backend(s) failed accuracy: "
              + ", ".join(v.backend for v in inaccurate), file=sys.stderr)
        return V.EXIT_THRESHOLD
    return 0
