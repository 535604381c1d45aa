"""``uvq-int8 backends``: what is installed, and which model files exist."""

from __future__ import annotations

import argparse
import json
import logging

from uvq_int8 import backends as _backends
from uvq_int8 import config as _config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", help="directory to look for model files in "
                                       "(default: the configured model directory)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    cfg = _config.resolve(model_dir=args.model_dir)
    model_dir = cfg.model_dir.value
    warnings: list[str] = []
    found = _backends.discover(warn=warnings.append)
    rows = []
    for name, backend in found.items():
        paths = backend.model_paths(model_dir)
        present = {net: p.is_file() for net, p in paths.items()}
        rows.append({
            "name": name,
            "description": getattr(backend, "description", ""),
            "recipes": dict(getattr(backend, "recipes", {})),
            "files": {net: str(p) for net, p in paths.items()},
            "present": present,
            "ready": all(present.values()),
        })
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), "backends": rows, "warnings": warnings},
                         indent=2))
        return 0
    for message in warnings:
        logging.getLogger("uvq_int8").warning(message)
    table = Table(title=f"UVQ backends (model files in {model_dir})")
    for col in ("backend", "files", "description"):
        table.add_column(col)
    for row in rows:
        n = sum(row["present"].values())
        status = "ready" if row["ready"] else f"{n}/3 built"
        table.add_row(row["name"], status, row["description"])
    Console().print(table)
    return 0
