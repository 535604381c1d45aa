"""``uvq-int8 config``: every effective setting and where it came from."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", help="as 'uvq --backend': shows how a flag would win")
    p.add_argument("--model-dir", help="as 'uvq --model-dir'")
    p.add_argument("--threads", type=int, help="as 'uvq --threads'")
    p.add_argument("--decoder", help="as 'uvq --decoder'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from uvq_int8 import config as _config

    cfg = _config.resolve(backend=args.backend, model_dir=args.model_dir, threads=args.threads,
                          decoder=args.decoder)
    if args.json:
        print(json.dumps(cfg.as_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="uvq-int8 configuration (flag > environment > config file > default)")
    for col in ("setting", "value", "source"):
        table.add_column(col)
    for key, value, source in cfg.as_rows():
        table.add_row(key, value, source)
    state = "found" if cfg.config_file_found else "not present"
    table.caption = f"config file: {cfg.config_file} ({state})"
    Console().print(table)
    return 0
