"""``uvq-int8 demo``: the whole job on proxy weights, for a first run without checkpoints."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path,
                   help="keep proxy checkpoints, models and the clip here (default: a "
                        "temporary directory, removed afterwards)")
    p.add_argument("--backend", default="all",
                   help="backends to build and score: 'all' (default: what 'uvq-int8 build "
                        "--backend all' builds, so auto only with --max-logit-delta) or a "
                        "comma list; float32, the baseline, is always added")
    p.add_argument("--max-logit-delta", type=float, metavar="D",
                   help="also build the auto backend at this logit budget (a search of a few "
                        "minutes more); without it the demo leaves auto out")
    p.add_argument("--seconds", type=int, default=3, help="length of the synthetic clip (3)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads per net")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from uvq_int8.errors import UserError
    from uvq_int8.runtime.decode.probe import require_ffmpeg

    if args.seconds < 1:
        raise UserError(f"--seconds must be at least 1, got {args.seconds}")
    # Everything that can be refused is refused here, before any file is written.
    args.backends = demo_backends(args.backend, args.max_logit_delta)
    require_ffmpeg()
    err = Console(stderr=True)
    err.print(f"[bold red]uvq-int8 demo: {PROXY_BANNER}[/]")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _demo(args, args.workdir, err)
    with tempfile.TemporaryDirectory(prefix="uvq-int8-demo-") as tmp:
        return _demo(args, Path(tmp), err)


TABLE_TITLE = "uvq-int8 demo on PROXY weights"
PROXY_BANNER = ("these are seeded PROXY weights made by uvq-int8, NOT the official UVQ 1.5 "
                "weights: the scores below say nothing about video quality, only how the "
                "backends compare with each other.")


def demo_backends(spec: str, budget: float | None) -> list[str]:
    """The backends the demo builds and scores, float32 (the baseline) first.

    ``all`` is asked of ``build`` (``buildable_backends``), never kept here; unknown names
    and ``auto`` without a budget are refused before any work.
    """
    from uvq_int8 import convert as _convert
    from uvq_int8.backends import AUTO

    if spec.strip() == "all":
        names = [b.name for b in _convert.buildable_backends(include_auto=budget is not None)]
    else:
        names = [b.name for b in _convert.resolve_backends(spec)]
    if AUTO.name in names:
        _convert.require_budget(budget)
    if budget is not None:
        _convert.check_budget(budget)
    if "float32" in names:
        names.remove("float32")
    return ["float32", *names]  # the baseline every delta is measured against


def _demo(args: argparse.Namespace, workdir: Path, err) -> int:
    import numpy as np

    from uvq_int8 import convert as _convert
    from uvq_int8 import config as _config
    from uvq_int8.convert import proxy
    from uvq_int8 import runtime, synthetic
    from uvq_int8.cli.build_cmd import RichReporter, NoteReporter
    from uvq_int8.runtime.scoring import ScoreOptions, score_video

    backends = args.backends
    ckpt_dir = workdir / "proxy_checkpoints"
    if all((ckpt_dir / n).is_file() for n in proxy.CHECKPOINT_NAMES.values()):
        checkpoints = {net: ckpt_dir / name for net, name in proxy.CHECKPOINT_NAMES.items()}
    else:
        err.print("making seeded proxy checkpoints ...")
        checkpoints = proxy.make_proxy_checkpoints(ckpt_dir)

    model_dir = workdir / "models"
    show = not args.quiet and err.is_terminal
    reporter = RichReporter(err) if show else NoteReporter()
    _convert.build(_convert.BuildOptions(checkpoints=checkpoints, out_dir=model_dir,
                                     backends=backends, max_logit_delta=args.max_logit_delta),
                 reporter)

    clip = workdir / f"synthetic_{args.seconds}s.mp4"
    if not clip.is_file():
        synthetic.write_clip(clip, seconds=args.seconds)
    threads = _config.resolve(threads=args.threads).threads.value

    rows = []
    baseline = None
    for name in backends:
        models = runtime.load_models(name, model_dir, threads)
        started = time.perf_counter()
        result = score_video(str(clip), models, ScoreOptions(fps=1))
        seconds = time.perf_counter() - started
        logits = np.asarray(result["per_frame_logits"])
        if baseline is None:
            baseline = logits
        size = sum(p.stat().st_size for p in models.paths.values())
        rows.append({"backend": name, "model_bytes": size, "seconds": round(seconds, 3),
                     "score": result["uvq1p5_score"],
                     "logit_delta_max": float(np.max(np.abs(logits - baseline))),
                     "frames": len(logits)})

    if args.json:
        print(json.dumps({"proxy_weights": True, "warning": PROXY_BANNER, "clip": str(clip),
                          "threads": threads, "results": rows}, indent=2))
    else:
        _print_table(rows, threads)
    err.print(f"[bold red]reminder:[/] {PROXY_BANNER}")
    return 0


def _print_table(rows: list[dict], threads: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{TABLE_TITLE} ({rows[0]['frames']} frames, "
                        f"{threads} threads)")
    for col, justify in (("backend", "left"), ("model size", "right"), ("seconds", "right"),
                         ("score", "right"), ("logit delta vs float32", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(r["backend"], f"{r['model_bytes'] / 1e6:.1f} MB", f"{r['seconds']:.2f}",
                      f"{r['score']:.4f}", f"{r['logit_delta_max']:.4f}")
    # Wide enough for every column when stdout is a file or a pipe (rich's default is 80).
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=max(console.width, 100))
    console.print(table)
