"""Batch scoring on the command line: ``uvq LIST|DIR|- ...`` and ``uvq-int8 batch``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from uvq_int8 import batch
from uvq_int8 import config as _config
from uvq_int8.batch import inputs, rows, workers
from uvq_int8.cli import common
from uvq_int8.errors import UserError

def add_arguments(p: argparse.ArgumentParser) -> None:
    """``uvq-int8 batch``: the same batch scoring, on this machine or on a Ray cluster."""
    p.add_argument("input", help="a .txt list of videos, a directory (searched recursively for "
                                 f"{', '.join(batch.VIDEO_EXTENSIONS)}), or - for a list on stdin")
    p.add_argument("--output", required=True, help="results file")
    p.add_argument("--format", choices=batch.FORMATS, default="jsonl",
                   help="results format (default jsonl); one row per video, failures included")
    p.add_argument("--resume", action="store_true",
                   help="keep good rows of unchanged files already in --output; score the rest "
                        "and retry failed ones")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: --jobs worker processes here; ray: a Ray Data actor pool "
                        "(needs the [ray] extra)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local: " + common.JOBS_HELP + "; ray: actors (default 1)")
    p.add_argument("--address", help="ray: the cluster to join (e.g. 127.0.0.1:6379); "
                                     "default: start a Ray instance in this process")
    p.add_argument("--backend", help="backend name or per-net mix (see 'uvq-int8 backends')")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir",
                   help="directory holding the backend's model files and manifest.json; with "
                        "--engine ray it must be readable at this path on every node")
    p.add_argument("--threads", type=int, help="interpreter threads per worker")
    common.add_decoder_argument(p)
    common.add_fps_argument(p)
    common.add_segment_argument(p)
    p.add_argument("--transpose", action="store_true", help="rotate every video 90 degrees")
    p.add_argument("--no-auto-transpose", action="store_true",
                   help="do not rotate portrait videos automatically")
    p.add_argument("--ffmpeg-path", "--ffmpeg_path", dest="ffmpeg_path", default="ffmpeg")
    p.add_argument("--ffprobe-path", "--ffprobe_path", dest="ffprobe_path", default="ffprobe")
    common.add_audit_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _spec(args: argparse.Namespace, cfg: _config.Config) -> workers.WorkerSpec:
    jobs = max(1, args.jobs or 1)
    threads = cfg.threads.value
    if cfg.threads.source == "default":
        threads = workers.default_threads_per_worker(jobs)
    return workers.WorkerSpec(cfg.backend.value, str(cfg.model_dir.value), threads,
                              common.score_options(args, cfg),
                              decode_threads=workers.decode_threads_per_worker(jobs, threads),
                              audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)


def _paths(spec: str) -> list[str]:
    paths = list(dict.fromkeys(inputs.collect_inputs(spec)))  # each path once, in order
    if not paths:
        raise UserError(f"{spec}: no videos found")
    return paths


def _score(args: argparse.Namespace, cfg: _config.Config, paths: list[str],
           writer, engine: Callable[[list[str], Callable[[dict], None]], None]) -> int:
    from uvq_int8.runtime.audit import EXIT_AUDIT_EXCEEDED, warning

    todo = [p for p in paths if p not in writer.done]
    skipped = len(paths) - len(todo)
    failures: list[dict] = []
    exceeded: list[str] = []

    with common.progress(not args.quiet) as progress:
        task = progress.add_task("videos", total=len(todo))

        def on_row(row: dict) -> None:
            writer.write(row)
            if row.get("error") is not None:
                failures.append(row)
            audit = json.loads(row["audit"]) if row.get("audit") else None
            if audit and audit.get("exceeded"):
                exceeded.append(warning(audit, row["path"]))
            progress.advance(task)

        try:
            engine(todo, on_row)
        finally:
            writer.close()
    out = args.output
    scored = len(todo) - len(failures)
    print(f"scored {scored} of {len(paths)} videos"
          + (f" ({skipped} already in {out})" if skipped else "")
          + (f", {len(failures)} failed" if failures else "") + f"; results in {out}",
          file=sys.stderr)
    for row in failures:
        print(f"uvq: failed: {row['path']}: {row['error']}", file=sys.stderr)
    for message in exceeded:
        print(message, file=sys.stderr)
    if failures:
        return 1
    return EXIT_AUDIT_EXCEEDED if exceeded and cfg.audit_strict.value else 0


def _writer(args: argparse.Namespace, paths: list[str]):
    if args.format:
        return rows.RowWriter(args.output, args.format, paths, resume=args.resume)
    return rows.LegacyWriter(args.output, paths, resume=args.resume)


def run_uvq(args: argparse.Namespace, cfg: _config.Config) -> int:
    """``uvq`` given a list, a directory, stdin, ``--format`` or ``--jobs``; ``cfg`` is the
    command's resolved configuration."""
    if not args.output:
        raise UserError("--output must be given when scoring a list or directory of videos "
                        "(or with --format/--jobs)")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    paths = _paths(args.input) if batch.is_batch_input(args.input) else [args.input]
    spec = _spec(args, cfg)
    writer = _writer(args, paths)
    jobs = args.jobs or 1
    return _score(args, cfg, paths, writer,
                  lambda todo, on_row: workers.score_paths(todo, spec, jobs, on_row))


def run(args: argparse.Namespace) -> int:
    """``uvq-int8 batch``."""
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.engine == "local" and args.address:
        raise UserError("--address needs --engine ray")
    paths = _paths(args.input)
    cfg = common.resolve(args)
    if args.engine == "local":
        spec = _spec(args, cfg)
        writer = rows.RowWriter(args.output, args.format, paths, resume=args.resume)
        jobs = args.jobs or 1
        return _score(args, cfg, paths, writer,
                      lambda todo, on_row: workers.score_paths(todo, spec, jobs, on_row))
    from uvq_int8 import distributed

    spec = distributed.make_spec(args.backend, args.model_dir, args.threads,
                                 common.score_options(args, cfg),
                                 audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
    writer = rows.RowWriter(args.output, args.format, paths, resume=args.resume)

    def ray_engine(todo: list[str], on_row: Callable[[dict], None]) -> None:
        if not todo:
            return
        for row in distributed.iter_rows(todo, spec, concurrency=args.jobs or 1,
                                         address=args.address, progress=not args.quiet):
            on_row(row)

    return _score(args, cfg, paths, writer, ray_engine)
