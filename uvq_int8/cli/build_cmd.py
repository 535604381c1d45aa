"""``uvq-int8 build``: parse, call ``uvq_int8.convert``, show progress and a size table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from uvq_int8.backends import NETS
from uvq_int8.convert import (CALIBRATION_CONTENTS, DEFAULT_CALIBRATION_CONTENT,
                            DEFAULT_CALIBRATION_FRAMES, DEFAULT_CONFIRMATION_FRAMES,
                            DEFAULT_CONFIRMATION_LOOKS, DEFAULT_VALIDATION_FRAMES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("checkpoints (per-net paths override the directories)")
    src.add_argument("--uvq-root", metavar="DIR",
                     help="a google/uvq clone: reads uvq1p5_pytorch/checkpoints/*.pth and writes "
                          "to DIR/models/tflite_models/uvq1.5/ unless --out is given")
    src.add_argument("--checkpoints", metavar="DIR",
                     help="directory with content_net.pth, distortion_net.pth, aggregation_net.pth")
    for net in NETS:
        src.add_argument(f"--{net}", metavar="PATH", help=f"the {net} net checkpoint")
    p.add_argument("--backend", default="all", metavar="NAMES",
                   help="'all' (default; includes auto only with --max-logit-delta) or a comma "
                        "list, e.g. float32,int8-static")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: DIR/models/tflite_models/uvq1.5 with "
                        "--uvq-root, else the configured model directory: UVQ_MODEL_DIR, the config "
                        "file, or ~/.local/share/uvq/models)")
    p.add_argument("--force", action="store_true",
                   help="rebuild every requested file, even when it is up to date")
    cal = p.add_argument_group("calibration (int8-static)")
    cal.add_argument("--calibration-videos", nargs="+", metavar="VIDEO", default=[],
                     help="videos to take calibration frames from (1 frame per second); "
                          "default: built-in clips, see --calibration-content")
    cal.add_argument("--calibration-frames", type=int, default=DEFAULT_CALIBRATION_FRAMES,
                     metavar="N", help=f"number of calibration frames "
                                       f"(default {DEFAULT_CALIBRATION_FRAMES})")
    cal.add_argument("--calibration-content", choices=CALIBRATION_CONTENTS,
                     default=DEFAULT_CALIBRATION_CONTENT,
                     help="built-in calibration frames when no --calibration-videos are given: "
                          "natural (default; short clips made from photographs bundled with "
                          "scikit-image, compressed, scaled, blurred) or synthetic (generated "
                          "patterns)")
    from uvq_int8.convert.options import (DEFAULT_INT8_BIAS_CORRECTION, DEFAULT_INT8_PERCENTILE,
                                          DEFAULT_INT8_RANGES, DEFAULT_INT8_REFIT,
                                          DEFAULT_INT8_REFIT_RIDGE, INT8_BIAS_CORRECTIONS,
                                          INT8_RANGE_METHODS, INT8_REFITS)

    cal.add_argument("--int8-ranges", choices=INT8_RANGE_METHODS, default=DEFAULT_INT8_RANGES,
                     help="how int8-static sets each activation's range: percentile "
                          f"(default; --int8-percentile of a histogram of the tensor over "
                          "every calibration frame), mse (the clipping range of least int8 "
                          "error) or minmax (the mean of per-frame min/max, the recipe before "
                          "0.2.0); docs/backends.md compares them")
    cal.add_argument("--int8-percentile", type=float, default=DEFAULT_INT8_PERCENTILE,
                     metavar="P", help=f"the share of values a percentile range holds "
                                       f"(default {DEFAULT_INT8_PERCENTILE:g})")
    cal.add_argument("--int8-bias-correction", choices=INT8_BIAS_CORRECTIONS,
                     default=DEFAULT_INT8_BIAS_CORRECTION,
                     help="correct int8-static's convolution biases for their mean error on "
                          "the calibration frames: none (default), depthwise (the 16 depthwise "
                          "convolutions) or all (81); one convolution at a time")
    cal.add_argument("--int8-refit", choices=INT8_REFITS, default=DEFAULT_INT8_REFIT,
                     help="refit int8-static's 1x1 convolutions by least squares, with the "
                          "int8 net's own inputs and float32's outputs on the calibration "
                          "frames, one convolution at a time (needs at least 2 frames): "
                          "none; lsq, one ridge (--int8-refit-ridge), a fit kept only if "
                          "better on the last quarter of the frames (recipe version 3); or "
                          "cv, each convolution's ridge chosen by cross-validation over 4 "
                          "folds of the frames, a fit kept only if its cross-validated error "
                          f"is lower (default {DEFAULT_INT8_REFIT})")
    cal.add_argument("--int8-refit-ridge", type=float, default=DEFAULT_INT8_REFIT_RIDGE,
                     metavar="R", help="how strongly --int8-refit lsq stays near the "
                                       "original weights (default "
                                       f"{DEFAULT_INT8_REFIT_RIDGE:g})")
    search = p.add_argument_group(
        "auto backend (--backend auto): the fastest configuration within a logit budget")
    search.add_argument("--max-logit-delta", type=float, metavar="D",
                        help="the budget: the per-frame change of the aggregation logit "
                             "(score = 3 + 2*tanh(logit), so the score moves at most 2*D) that "
                             "at least --promise-fraction of frames must stay within; required "
                             "for auto")
    search.add_argument("--validation-videos", nargs="+", metavar="VIDEO", default=[],
                        help="your own content, the real basis of the promise (1 frame per "
                             "second; not the calibration videos): split by video, the 1st, "
                             "3rd, ... for the search and the 2nd, 4th, ... for the "
                             "confirmation; default: natural clips made from photographs")
    search.add_argument("--validation-frames", type=int, default=DEFAULT_VALIDATION_FRAMES,
                        metavar="N", help=f"number of search frames "
                                          f"(default {DEFAULT_VALIDATION_FRAMES})")
    search.add_argument("--confirmation-frames", type=int, default=DEFAULT_CONFIRMATION_FRAMES,
                        metavar="N", help=f"number of confirmation frames, from images (or "
                                          f"videos) the search never saw; at least 19 for a "
                                          f"95%% promise (default "
                                          f"{DEFAULT_CONFIRMATION_FRAMES}: enough for 3 looks)")
    search.add_argument("--confirmation-looks", type=int, default=DEFAULT_CONFIRMATION_LOOKS,
                        metavar="L", help="how many candidates, fastest first, may be confirmed "
                                          "in turn before falling back to float32; each is "
                                          "tested at 1 - (1-P)/L, so the promise holds for "
                                          "the one kept (default "
                                          f"{DEFAULT_CONFIRMATION_LOOKS}; fewer when the "
                                          "confirmation frames support fewer)")
    search.add_argument("--promise-fraction", type=float, default=0.95, metavar="P",
                        help="the promise: at least this fraction of frames within D "
                             "(default 0.95)")
    search.add_argument("--no-mixed", dest="auto_mixed", action="store_false",
                        help="do not try int8 with some op groups left float (whole nets only)")
    search.add_argument("--no-sensitivity", dest="sensitivity", action="store_false",
                        help="skip the per-op-group sensitivity table unless the mixed search "
                             "needs it (saves minutes; the verify report then has no table)")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="conversions to run at once, one process each (default: 2 on 2+ cores)")
    p.add_argument("--threads", type=int, metavar="N", help="interpreter threads for calibration")
    p.add_argument("--quiet", action="store_true", help="no progress display and no table")
    p.add_argument("--json", action="store_true", help="print the build summary as JSON")


def run(args: argparse.Namespace) -> int:
    from uvq_int8 import convert as _convert

    checkpoints = _convert.resolve_checkpoints(args.uvq_root, args.checkpoints, args.content,
                                             args.distortion, args.aggregation)
    out_dir = Path(args.out).expanduser() if args.out else _convert.default_out_dir(args.uvq_root)
    extra: dict[str, Any] = {}
    if args.jobs is not None:
        if args.jobs < 1:
            raise _convert.BuildError(f"--jobs must be at least 1, got {args.jobs}")
        extra["jobs"] = args.jobs
    if args.threads is not None:
        if args.threads < 1:
            raise _convert.BuildError(f"--threads must be at least 1, got {args.threads}")
        extra["threads"] = args.threads
    options = _convert.BuildOptions(
        checkpoints=checkpoints, out_dir=out_dir, backends=args.backend, force=args.force,
        calibration_videos=[Path(v).expanduser() for v in args.calibration_videos],
        calibration_frames=args.calibration_frames,
        calibration_content=args.calibration_content, max_logit_delta=args.max_logit_delta,
        validation_videos=[Path(v).expanduser() for v in args.validation_videos],
        validation_frames=args.validation_frames, auto_mixed=args.auto_mixed,
        sensitivity=args.sensitivity, confirmation_frames=args.confirmation_frames,
        confirmation_looks=args.confirmation_looks,
        promise_fraction=args.promise_fraction,
        int8=_convert.Int8Settings(args.int8_ranges, args.int8_percentile,
                                   args.int8_bias_correction, args.int8_refit,
                                   args.int8_refit_ridge), **extra)
    if args.max_logit_delta is not None and not args.validation_videos:
        print("uvq-int8: warning: no --validation-videos: the auto choice and its promise rest "
              "on natural clips made from a few photographs, not on your content; give your "
              "own videos for a promise about them", file=sys.stderr)

    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 132))  # a log file: do not squeeze the table
    show_progress = not (args.quiet or args.json) and console.is_terminal
    reporter = RichReporter(console) if show_progress else NoteReporter()
    summary = _convert.build(options, reporter=reporter, raise_on_failure=False)

    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    elif not args.quiet:
        console.print(summary_table(summary))
        if summary.auto:
            from uvq_int8.convert.auto import describe

            console.print(describe(summary.auto))
        console.print(summary_line(summary))
    for failed in summary.failed:
        print(f"uvq-int8: error: {failed.filename}: {failed.reason}", file=sys.stderr)
    return 0 if summary.ok else 1


class NoteReporter:
    """No progress display; notes (e.g. a replaced manifest) still reach stderr."""

    def start(self, jobs) -> None:
        pass

    def status(self, filename: str, text: str) -> None:
        pass

    def done(self, result) -> None:
        pass

    def note(self, message: str) -> None:
        print(f"uvq-int8: warning: {message}", file=sys.stderr)

    def stop(self) -> None:
        pass


class RichReporter(NoteReporter):
    """One progress row per model file."""

    def __init__(self, console) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(SpinnerColumn(finished_text="[green]✓"),
                                 TextColumn("{task.fields[backend]:<17}"),
                                 TextColumn("{task.fields[file]:<36}"),
                                 TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[str, Any] = {}

    def start(self, jobs: Sequence) -> None:
        for job in jobs:
            state = "waiting" if job.reason else "up to date"
            self.tasks[job.filename] = self.progress.add_task(
                job.filename, total=1, backend=job.backend, file=job.filename, state=state,
                start=job.reason is not None)
        self.progress.start()

    def status(self, filename: str, text: str) -> None:
        task = self.tasks.get(filename)
        if task is not None:
            self.progress.update(task, state=text)

    def done(self, result) -> None:
        task = self.tasks.get(result.filename)
        if task is None:
            return
        state = {"built": "[green]built", "skipped": "[dim]up to date",
                 "failed": "[red]FAILED"}.get(result.status, result.status)
        self.progress.update(task, completed=1, state=state)
        self.progress.stop_task(task)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[yellow]warning:[/] {message}")

    def stop(self) -> None:
        self.progress.stop()


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.2f} MB"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{dtype} {n}" for dtype, n in sorted(counts.items())) or "-"


def summary_table(summary):
    from rich.table import Table

    table = Table(title=f"Model files in {summary.out_dir}")
    for name, justify in (("backend", "left"), ("file", "left"), ("status", "left"),
                          ("size", "right"), ("vs float32", "right"),
                          ("quantized tensors", "left"), ("int4 conv", "right")):
        table.add_column(name, justify=justify,  # type: ignore[arg-type]
                         no_wrap=name in ("backend", "file"))
    totals = summary.backend_totals()
    by_backend: dict[str, list] = {}
    for f in summary.files:
        by_backend.setdefault(f.backend, []).append(f)
    for backend, files in by_backend.items():
        for i, f in enumerate(files):
            ratio = f.ratio_to_float32
            status = {"failed": "[red]failed", "built": "[green]built"}.get(f.status, f.status)
            table.add_row(backend if i == 0 else "", f.filename, status, _mb(f.size),
                          "-" if ratio is None else f"x{ratio:.2f}",
                          _counts(f.quantized_tensors_by_dtype), str(f.int4_conv_weights or "-"))
        total = totals.get(backend, {})
        ratio = total.get("ratio_to_float32")
        table.add_row("", "[bold]total", "", f"[bold]{_mb(total.get('size'))}",
                      "-" if ratio is None else f"[bold]x{ratio:.2f}", "", "",
                      end_section=True)
    return table


def summary_line(summary) -> str:
    peak = summary.peak_rss_bytes
    from uvq_int8.convert import MEMORY_BOUND_BYTES

    memory = (f"peak memory {peak.get('concurrent', peak['max']) / 1e9:.2f} GB "
              f"(bound {MEMORY_BOUND_BYTES / 1e9:.0f} GB)")
    memory += (f" (build process {peak['self'] / 1e9:.2f} GB, largest conversion "
               f"{peak['children'] / 1e9:.2f} GB)")
    return (f"built {len(summary.built)}, up to date {len(summary.skipped)}, failed "
            f"{len(summary.failed)} in {summary.seconds:.1f} s; {memory}; "
            f"manifest {summary.manifest_path}")
