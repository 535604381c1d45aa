"""Batch scoring on the command line: ``uvq LIST|DIR|- ...`` and ``uvq-int8 batch``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from uvq_int8 import batch, rows
from uvq_int8 import config as _config
from uvq_int8.errors import UserError

FORMAT_HELP = ("write one row per video (path, file size and sha256 of its first MiB, score, "
               "per-frame scores/logits, frame indices and source-frame times, pooled "
               "statistics, backend, model hashes, seconds, warnings, error) as JSON lines, "
               "CSV or Parquet. Without --format, batch output is upstream's headerless "
               "'basename,score' lines, which cannot tell two files of the same name apart "
               "(--resume then matches by basename)")
JOBS_HELP = ("worker processes, each loading the models once (default 1: score in this "
             "process); threads per worker default to max(1, cores // N)")


def add_batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=rows.FORMATS, help=FORMAT_HELP)
    p.add_argument("--jobs", type=int, default=None, metavar="N", help=JOBS_HELP)


def wants_batch(args: argparse.Namespace) -> bool:
    return bool(args.format or args.jobs) or batch.is_batch_input(args.input)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``uvq-int8 batch``: the same batch scoring, on this machine or on a Ray cluster."""
    p.add_argument("input", help="a .txt list of videos, a directory (searched recursively for "
                                 f"{', '.join(batch.VIDEO_EXTENSIONS)}), or - for a list on stdin")
    p.add_argument("--output", required=True, help="results file")
    p.add_argument("--format", choices=rows.FORMATS, default="jsonl",
                   help="results format (default jsonl); one row per video, failures included")
    p.add_argument("--resume", action="store_true",
                   help="keep good rows of unchanged files already in --output; score the rest "
                        "and retry failed ones")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: --jobs worker processes here; ray: a Ray Data actor pool "
                        "(needs the [ray] extra)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local: " + JOBS_HELP + "; ray: actors (default 1)")
    p.add_argument("--address", help="ray: the cluster to join (e.g. 127.0.0.1:6379); "
                                     "default: start a Ray instance in this process")
    p.add_argument("--backend", help="backend name or per-net mix (see 'uvq-int8 backends')")
    p.add_argument("--model-dir", "--model_dir", dest="model_dir",
                   help="directory holding the backend's model files and manifest.json; with "
                        "--engine ray it must be readable at this path on every node")
    p.add_argument("--threads", type=int, help="interpreter threads per worker")
    # score_cmd imports this module
    from uvq_int8.cli.score_cmd import add_audit_arguments, add_decoder_argument

    add_decoder_argument(p)
    p.add_argument("--fps", type=int, default=1,
                   help="frames per second to sample; -1 scores every frame (default 1)")
    p.add_argument("--transpose", action="store_true", help="rotate every video 90 degrees")
    p.add_argument("--no-auto-transpose", action="store_true",
                   help="do not rotate portrait videos automatically")
    p.add_argument("--ffmpeg-path", "--ffmpeg_path", dest="ffmpeg_path", default="ffmpeg")
    p.add_argument("--ffprobe-path", "--ffprobe_path", dest="ffprobe_path", default="ffprobe")
    add_audit_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _config_of(args: argparse.Namespace) -> _config.Config:
    from uvq_int8.cli.score_cmd import _config_of

    return _config_of(args)


def _spec(args: argparse.Namespace) -> batch.WorkerSpec:
    from uvq_int8.cli.score_cmd import _options

    jobs = max(1, args.jobs or 1)
    cfg = _config_of(args)
    threads = cfg.threads.value
    if cfg.threads.source == "default":
        threads = batch.default_threads_per_worker(jobs)
    return batch.WorkerSpec(cfg.backend.value, str(cfg.model_dir.value), threads, _options(args),
                            decode_threads=batch.decode_threads_per_worker(jobs, threads),
                            audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)


def _paths(spec: str) -> list[str]:
    paths = list(dict.fromkeys(batch.collect_inputs(spec)))  # each path once, in order
    if not paths:
        raise UserError(f"{spec}: no videos found")
    return paths


def _score(args: argparse.Namespace, paths: list[str],
           writer, engine: Callable[[list[str], Callable[[dict], None]], None]) -> int:
    from uvq_int8.cli.score_cmd import _progress
    from uvq_int8.runtime.audit import EXIT_AUDIT_EXCEEDED, warning

    todo = [p for p in paths if p not in writer.done]
    skipped = len(paths) - len(todo)
    failures: list[dict] = []
    exceeded: list[str] = []

    with _progress(not args.quiet) as progress:
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
    return EXIT_AUDIT_EXCEEDED if exceeded and _config_of(args).audit_strict.value else 0


def _writer(args: argparse.Namespace, paths: list[str]):
    if args.format:
        return rows.RowWriter(args.output, args.format, paths, resume=args.resume)
    return rows.LegacyWriter(args.output, paths, resume=args.resume)


def run_uvq(args: argparse.Namespace) -> int:
    """``uvq`` given a list, a directory, stdin, ``--format`` or ``--jobs``."""
    if not args.output:
        raise UserError("--output must be given when scoring a list or directory of videos "
                        "(or with --format/--jobs)")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    paths = _paths(args.input) if batch.is_batch_input(args.input) else [args.input]
    spec = _spec(args)
    writer = _writer(args, paths)
    jobs = args.jobs or 1
    return _score(args, paths, writer,
                  lambda todo, on_row: batch.score_paths(todo, spec, jobs, on_row))


def run(args: argparse.Namespace) -> int:
    """``uvq-int8 batch``."""
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.engine == "local" and args.address:
        raise UserError("--address needs --engine ray")
    paths = _paths(args.input)
    if args.engine == "local":
        spec = _spec(args)
        writer = rows.RowWriter(args.output, args.format, paths, resume=args.resume)
        jobs = args.jobs or 1
        return _score(args, paths, writer,
                      lambda todo, on_row: batch.score_paths(todo, spec, jobs, on_row))
    from uvq_int8 import distributed
    from uvq_int8.cli.score_cmd import _options

    cfg = _config_of(args)
    spec = distributed.make_spec(args.backend, args.model_dir, args.threads, _options(args),
                                 audit=cfg.audit.value, audit_budget=cfg.audit_budget.value)
    writer = rows.RowWriter(args.output, args.format, paths, resume=args.resume)

    def ray_engine(todo: list[str], on_row: Callable[[dict], None]) -> None:
        if not todo:
            return
        for row in distributed.iter_rows(todo, spec, concurrency=args.jobs or 1,
                                         address=args.address, progress=not args.quiet):
            on_row(row)

    return _score(args, paths, writer, ray_engine)
