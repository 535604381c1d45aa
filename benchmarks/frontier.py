"""The speed/accuracy frontier of uvq-int8's model configurations, in one run.

Run by hand (not a test; shared machines are noisy):

    .venv/bin/python benchmarks/frontier.py --checkpoints DIR --work DIR \\
        [--budgets 3.0,0.3,0.02] [--markdown FILE] [--json FILE]

It builds every backend once into WORK/models, then one auto model set per logit
budget (WORK/auto-B, seeded with WORK/models' float32 files so nothing is converted
again), and measures each configuration (the whole-net backends, the two half
mixes with one static-int8 backbone, and auto at each budget) two ways:

- accuracy against float32 from the same run: the aggregation logit change on the
  golden frames plus the 1-fps frames of both sample videos, and on the speed clip;
- speed: `uvq`'s end-to-end scoring of a 1080p30 H.264 clip (load time excluded),
  in rounds over all configurations; each round gives float32 seconds / config
  seconds, and the median of those ratios is reported.

The table it prints is the frontier table of docs/backends.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import bench_e2e  # run_backend: the same timing as bench_e2e (this folder is on sys.path)
import common
from uvq_int8.backends import RECIPES
from uvq_int8.util import machine_info

HERE = Path(__file__).resolve().parent
BASE_CONFIGS = ("float32", "fp16", "int8-weight-only", "int8", "int4", "int8-static",
                "content=int8-static,distortion=float32,aggregation=float32",
                "content=float32,distortion=int8-static,aggregation=float32")
DEFAULT_REFERENCE = HERE.parents[1] / "shared" / "uvq_reference"


def _words(recipe) -> str:
    """What a recipe does to a backbone, in the words of the table."""
    return RECIPES[recipe].label if recipe in RECIPES else str(recipe)


def say(text: str) -> None:
    print(f"[frontier {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Config:
    """One row: a backend spec on one model directory."""

    name: str  # the table's first column
    label: str  # the name with what auto chose
    backend: str
    model_dir: Path
    content: str
    distortion: str
    budget: float | None = None
    auto: dict | None = None  # the build's auto record (choices, measured delta)
    size_bytes: int = 0
    logit_delta_max: float = float("nan")
    logit_delta_mean: float = float("nan")
    clip_logit_delta_max: float = float("nan")
    seconds: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return float(np.median(self.seconds)) if self.seconds else float("nan")

    @property
    def median_ratio(self) -> float:
        return float(np.median(self.ratios)) if self.ratios else float("nan")


# --------------------------------------------------------------------------- building


def build(checkpoints: Path, out: Path, extra: list[str]) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "uvq_int8", "build", "--checkpoints", str(checkpoints),
           "--out", str(out), "--quiet", *extra]
    say("running " + " ".join(cmd[1:]))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"build failed ({done.returncode}): {' '.join(cmd)}\n"
                         f"{done.stderr.strip() or done.stdout.strip()}")
    return time.perf_counter() - started


def auto_config(auto_dir: Path, budget: float) -> Config:
    from uvq_int8 import backends as B
    from uvq_int8.runtime import manifest as mf

    manifest = mf.load(auto_dir)
    paths = B.get_backend("auto").model_paths(auto_dir)
    record = mf.auto_record(manifest, paths["content"].name) or {}
    labels = record.get("labels", {})
    words = {}
    for net in ("content", "distortion"):
        choice = record.get("choices", {}).get(net) or \
            manifest.files.get(paths[net].name, {}).get("recipe_options", {}).get("choice") or {}
        words[net] = _choice_words(choice) if choice else labels.get(net, "?")
    label = (f"auto (budget {budget:g}): content {labels.get('content', '?')}, "
             f"distortion {labels.get('distortion', '?')}")
    return Config(f"auto (budget {budget:g})", label, "auto", auto_dir, words["content"],
                  words["distortion"], budget,
                  {k: record.get(k) for k in ("labels", "choices", "measured",
                                              "modelled_speedup", "validation_frames",
                                              "max_logit_delta", "seconds")})


def _choice_words(choice: dict) -> str:
    text = _words(choice.get("recipe"))
    if choice.get("range_merge"):
        extra = [f"{choice['range_merge']} ranges"]
        if choice.get("float_groups"):
            extra.append("float: " + _compact_groups(choice["float_groups"]))
        text += " (" + "; ".join(extra) + ")"
    return text


def _compact_groups(groups: list[str]) -> str:
    """stem, block1, block2, block3, block5, tail -> stem, block1-3, block5, tail."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            out.append(f"block{run[0]}" + (f"-{run[-1]}" if len(run) > 1 else ""))
            run.clear()

    for group in groups:
        number = group[len("block"):] if group.startswith("block") else ""
        if number.isdigit() and (not run or int(number) == run[-1] + 1):
            run.append(int(number))
            continue
        flush()
        if number.isdigit():
            run.append(int(number))
        else:
            out.append(group)
    flush()
    return ", ".join(out)


def base_config(spec: str, models: Path) -> Config:
    from uvq_int8 import backends as B

    recipes = B.get_backend(spec).recipes
    return Config(spec, spec, spec, models,
                  _words(recipes["content"]),
                  _words(recipes["distortion"]))


def model_size(config: Config) -> int:
    from uvq_int8 import backends as B

    paths = B.get_backend(config.backend).model_paths(config.model_dir)
    return sum(Path(p).stat().st_size for p in paths.values())


# --------------------------------------------------------------------------- accuracy


def accuracy_frames(reference: Path) -> tuple[list[np.ndarray], list[str]]:
    """The golden frames plus the 1-fps frames of both sample videos, decoded once."""
    from uvq_int8.runtime import decode

    frames = list(np.load(reference / "golden_frames.npz")["frames_uint8"])
    names = [f"golden_frames[{i}]" for i in range(len(frames))]
    for name in ("sample_landscape.mp4", "sample_portrait.mp4"):
        path = reference / name
        decoded = list(decode.uvq_frames(str(path), fps=1))
        frames += decoded
        names += [f"{name}@{i}s" for i in range(len(decoded))]
    return frames, names


def frame_logits(config: Config, frames: list[np.ndarray], threads: int) -> np.ndarray:
    from uvq_int8 import runtime
    from uvq_int8.runtime.scoring import score_frames

    models = runtime.load_models(config.backend, config.model_dir, threads)
    return np.asarray(score_frames(models, frames)[0], dtype=np.float64)


# --------------------------------------------------------------------------- output


def markdown(results: dict, configs: list[Config]) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {m['cpu']} ({m['cores']} cores), {results['threads']} "
        f"interpreter threads; speed: `uvq` end to end on a {results['seconds']} s 1080p30 H.264 "
        f"clip (testsrc2 + noise, {results['clip_frames']} frames scored at 1 fps), load time "
        f"excluded, {results['rounds']} rounds over all configurations, median of the per-round "
        f"ratio float32 s / configuration s. Accuracy: aggregation logit change against float32 "
        f"on {results['accuracy_frames']} frames ({results['accuracy_frames_desc']}). "
        f"Content and distortion weights are the seeded random proxies of "
        f"shared/uvq_reference (only the aggregation head is trained), so the deltas compare "
        f"configurations with each other; they are not the official weights' errors. "
        f"Auto budgets are searched on {results['validation_frames']} synthetic validation "
        f"frames.",
        "",
        "| configuration | content | distortion | logit Δ max (mean), golden + sample videos "
        "| logit Δ max on the 20 s clip | size MB (3 files) | end-to-end s | vs float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if results["seconds"] != 20:
        lines[2] = lines[2].replace("the 20 s clip", f"the {results['seconds']} s clip")
    for c in configs:
        lines.append(
            f"| {c.name} | {c.content} | {c.distortion} | {c.logit_delta_max:.4f} "
            f"({c.logit_delta_mean:.4f}) | {c.clip_logit_delta_max:.4f} | "
            f"{c.size_bytes / 1e6:.1f} | {c.median_seconds:.2f} | {c.median_ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def config_json(c: Config) -> dict:
    data = asdict(c)
    data["model_dir"] = str(c.model_dir)
    data["median_seconds"] = c.median_seconds
    data["median_ratio"] = c.median_ratio
    return data


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python benchmarks/frontier.py --checkpoints ckpt/ "
               "--work /tmp/frontier --markdown frontier.md --json frontier.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, required=True, metavar="DIR",
                        help="directory with content_net.pth, distortion_net.pth, "
                             "aggregation_net.pth")
    parser.add_argument("--reference-dir", type=Path, metavar="DIR",
                        default=Path(os.environ.get("UVQ_REFERENCE_DIR", DEFAULT_REFERENCE)),
                        help="folder with golden_frames.npz, sample_landscape.mp4, "
                             "sample_portrait.mp4 (env UVQ_REFERENCE_DIR)")
    parser.add_argument("--work", type=Path, required=True, metavar="DIR",
                        help="model sets go to WORK/models and WORK/auto-B, the clip to "
                             "WORK/clips; reused when up to date")
    parser.add_argument("--budgets", default="3.0,0.3,0.02", metavar="D,D,...",
                        help="comma list of --max-logit-delta budgets, one auto build each")
    parser.add_argument("--validation-frames", type=int, default=8, metavar="N",
                        help="held-out frames of each auto search")
    parser.add_argument("--seconds", type=int, default=20, metavar="S",
                        help="length of the speed clip")
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="interpreter threads")
    parser.add_argument("--rounds", type=int, default=2, metavar="N",
                        help="speed rounds, each over all configurations")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write all figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    work = args.work.expanduser().resolve()
    models = work / "models"
    build_seconds = {"all": build(args.checkpoints, models, ["--backend", "all"])}
    configs = [base_config(spec, models) for spec in BASE_CONFIGS]
    for budget in budgets:
        auto_dir = work / f"auto-{budget:g}"
        common.seed_models(models, auto_dir)
        build_seconds[f"auto-{budget:g}"] = build(
            args.checkpoints, auto_dir,
            ["--backend", "auto", "--max-logit-delta", f"{budget:g}",
             "--validation-frames", str(args.validation_frames)])
        configs.append(auto_config(auto_dir, budget))
        say(f"{configs[-1].label} (search's own logit Δ max "
            f"{(configs[-1].auto.get('measured') or {}).get('logit_delta_max', float('nan')):.4f})")
    for c in configs:
        c.size_bytes = model_size(c)

    frames, frame_names = accuracy_frames(args.reference_dir)
    say(f"accuracy on {len(frames)} frames")
    reference = frame_logits(configs[0], frames, args.threads)
    for c in configs:
        delta = np.abs(frame_logits(c, frames, args.threads) - reference)
        c.logit_delta_max, c.logit_delta_mean = float(delta.max()), float(delta.mean())
        say(f"{c.name}: logit Δ max {c.logit_delta_max:.4f} (mean {c.logit_delta_mean:.4f})")

    clip = common.make_test_clip(work / "clips" / f"testsrc2_1080p30_{args.seconds}s.mp4",
                               args.seconds)
    clip_frames = 0
    for r in range(args.rounds):
        # Every other round runs in reverse, so a change in the machine's load during
        # a round does not always land on the same configurations.
        order = configs if r % 2 == 0 else configs[::-1]
        runs = {}
        for c in order:
            runs[c.name] = bench_e2e.run_backend(clip, c.backend, c.model_dir, args.threads)
            c.seconds.append(runs[c.name]["seconds"])
            say(f"round {r + 1} {c.name}: {c.seconds[-1]:.2f} s")
        base = runs[configs[0].name]
        clip_frames = len(base["logits"])
        for c in configs:
            c.ratios.append(base["seconds"] / runs[c.name]["seconds"])
            delta = float(np.max(np.abs(np.subtract(runs[c.name]["logits"], base["logits"]))))
            c.clip_logit_delta_max = delta if r == 0 else max(c.clip_logit_delta_max, delta)

    results = {
        "machine": machine_info(), "date": _dt.date.today().isoformat(), "threads": args.threads,
        "rounds": args.rounds, "seconds": args.seconds, "clip": str(clip),
        "clip_frames": clip_frames, "budgets": budgets,
        "validation_frames": args.validation_frames, "accuracy_frames": len(frames),
        "accuracy_frames_desc": "2 golden frames, 1-fps frames of sample_landscape.mp4 and "
                                "sample_portrait.mp4",
        "accuracy_frame_names": frame_names, "checkpoints": str(args.checkpoints),
        "build_seconds": build_seconds, "weights": "proxy content/distortion, real aggregation",
        "configs": [config_json(c) for c in configs],
    }
    results["total_seconds"] = time.perf_counter() - started
    table = markdown(results, configs)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    say(f"done in {results['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
