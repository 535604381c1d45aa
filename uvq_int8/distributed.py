"""Scoring on a Ray cluster with Ray Data (the ``[ray]`` extra); not part of the runtime core.

``score_dataset`` maps a dataset of paths through an actor pool: each actor is a
``_Scorer`` that loads the models once and scores its batches with the same worker loop as
``uvq --jobs`` (``workers.run_worker``), so the output has the same rows, failures
included. Ray schedules the actors and restarts a dead one; its unfinished batches are
run again, so every path still ends with one row.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Iterator

from uvq_int8.batch import rows as _rows
from uvq_int8.batch import workers
from uvq_int8 import config as _config
from uvq_int8.errors import UserError
from uvq_int8.runtime import scoring


# "0" makes Ray treat the machine as a single node on 127.0.0.1 (ray_constants.ENABLE_RAY_CLUSTER).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayMissingError(UserError):
    """Ray is not installed."""


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissingError("Ray Data is not installed: pip install 'uvq-int8[ray]'") from None
    return ray


class _Scorer:
    """One Ray actor: the models loaded once, then one call per batch of paths."""

    def __init__(self, spec: workers.WorkerSpec):
        from uvq_int8.runtime import load_models

        self.spec = spec
        self.models = load_models(spec.backend, spec.model_dir, spec.threads)

    def __call__(self, paths_batch: dict[str, Any]):
        paths = iter([str(p) for p in paths_batch["path"]])
        rows: list[dict] = []
        workers.run_worker(self.spec, lambda: next(paths, None), rows.append, self.models)
        return _rows.rows_to_table(rows)


def make_spec(backend: str | None = None, model_dir: str | None = None,
              threads_per_actor: int | None = None,
              options: scoring.ScoreOptions = scoring.ScoreOptions(), audit: float = 0.0,
              audit_budget: float | None = None) -> workers.WorkerSpec:
    """Backend and model directory by the usual precedence (flag, env, config file);
    ``audit``: the fraction of frames also scored with float32 (runtime/audit.py)."""
    cfg = _config.resolve(backend=backend, model_dir=model_dir, threads=threads_per_actor)
    threads = threads_per_actor or (cfg.threads.value if cfg.threads.source != "default" else 1)
    # Actors share their node's cores: one ffmpeg thread each, beside the nets' threads.
    return workers.WorkerSpec(cfg.backend.value, str(cfg.model_dir.value), threads, options,
                            decode_threads=1, audit=audit, audit_budget=audit_budget)


def score_dataset(paths_or_dataset: Iterable[str] | Any, backend: str | None = None,
                  model_dir: str | None = None, concurrency: int = 1,
                  threads_per_actor: int | None = None,
                  options: scoring.ScoreOptions = scoring.ScoreOptions(),
                  spec: workers.WorkerSpec | None = None, batch_size: int = 1):
    """A lazy Ray dataset of result rows (``rows.COLUMNS``), one per input path.

    ``paths_or_dataset``: paths, or a Ray dataset with a ``path`` column. Each of the
    ``concurrency`` actors asks Ray for ``threads_per_actor`` CPUs (default 1) and runs
    the interpreter on that many threads. ``model_dir`` must be readable at the same path
    on every node. Call ``ray.init`` first to use a cluster; else Ray starts a local one.
    """
    ray = _ray()
    spec = spec or make_spec(backend, model_dir, threads_per_actor, options)
    if isinstance(paths_or_dataset, ray.data.Dataset):
        dataset = paths_or_dataset.select_columns(["path"])
    else:
        dataset = ray.data.from_items([{"path": str(p)} for p in paths_or_dataset])
    return dataset.map_batches(
        _Scorer, fn_constructor_kwargs={"spec": spec}, batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, int(concurrency))),
        # A dead actor (or every actor of a dead node) is restarted wherever the cluster has
        # its CPUs free, and the batches it had not finished run again on it: Ray Data's
        # defaults for actor pools (max_restarts=-1, max_task_retries=-1). They are not
        # passed here: map_batches takes them only through ray_remote_args, deprecated in
        # Ray 2.60 and due to go in 2.64. tests/test_distributed.py kills an actor and
        # tests/test_ray_cluster.py a node, so a change of default fails there. A restarted
        # actor needs spare CPUs: the pool keeps its size, so a cluster with none left
        # after losing a node waits for one (docs/production.md).
        num_cpus=spec.threads)


def once_per_path(rows: Iterable[dict], paths: list[str]) -> Iterator[dict]:
    """``rows`` with at most as many rows per path as ``paths`` lists it.

    A batch is one path (``batch_size=1``) and a retried batch's output replaces the lost
    one, so Ray gives each path one row; this guard keeps a second row of a path (a retry
    after its first row was already delivered) out of the results file all the same.
    """
    left: dict[str, int] = {}
    for path in paths:
        left[path] = left.get(path, 0) + 1
    for row in rows:
        if left.get(row["path"], 0) > 0:
            left[row["path"]] -= 1
            yield row


def iter_rows(paths: list[str], spec: workers.WorkerSpec, concurrency: int = 1,
              address: str | None = None, progress: bool = True) -> Iterator[dict]:
    """Rows as they finish, on the cluster at ``address`` (or a local Ray instance)."""
    if address is None:
        # A Ray instance of our own serves this machine only: Ray then binds and advertises
        # 127.0.0.1 instead of looking up the machine's routable address (Ray reads this
        # variable when it is imported).
        os.environ.setdefault(LOOPBACK_ENV, "0")
    ray = _ray()
    started_here = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"cannot start or join {where}: "
                            f"{str(exc).strip().splitlines()[-1]}") from None
        started_here = True
    if not progress:
        import logging

        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        dataset = score_dataset(paths, spec=spec, concurrency=concurrency)
        rows = (row for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None)
                for row in table.to_pylist())
        yield from once_per_path(rows, paths)
    finally:
        if started_here:
            ray.shutdown()
