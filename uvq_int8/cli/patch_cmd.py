"""``uvq-int8 patch UVQ_ROOT``: apply, check or revert the upstream patches."""

from __future__ import annotations

import argparse

from uvq_int8 import patching

# --check exits with this when the tree would change (0: nothing to do, 1: refused)
EXIT_WOULD_CHANGE = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        f"Patch a checkout of {patching.UPSTREAM_REPO} at {patching.UPSTREAM_COMMIT[:12]} so "
        "that UVQ1p5TFLite finds its model files through the uvq.backends registry and the "
        "UVQ_BACKEND / UVQ_MODEL_DIR / config-file settings, runs without TensorFlow, and "
        "uvq_inference.py gains --backend. Patches already applied are skipped; a tree that "
        "matches neither the original nor the patched files is refused.")
    p.epilog = (f"Exit status: 0 done or nothing to do, 1 refused, {EXIT_WOULD_CHANGE} "
                "--check found changes to make.")
    p.add_argument("uvq_root", metavar="UVQ_ROOT", help="the upstream checkout to patch")
    p.add_argument("--check", action="store_true",
                   help="report what would change, write nothing")
    p.add_argument("--revert", action="store_true",
                   help="take the patches out again, restoring the files byte for byte")


def run(args: argparse.Namespace) -> int:
    action = patching.revert if args.revert else patching.apply
    result = action(args.uvq_root, check=args.check)
    print(report(result, checked=args.check))
    if args.check and result.changes:
        return EXIT_WOULD_CHANGE
    return 0


def report(result: patching.Plan, checked: bool = False) -> str:
    """What happened (or, with ``checked``, would happen), one line per patch."""
    n = len(result.series)
    commit = patching.UPSTREAM_COMMIT[:7]
    lines = [f"{result.root}: {patching.UPSTREAM_REPO} {commit}; found {result.applied_before} "
             f"of {n} patches applied"]
    would = {"applied": "would apply", "reverted": "would revert"}
    width = max(len(name) for name, _ in result.steps)
    for name, status in result.steps:
        shown = would.get(status, status) if checked else status
        lines.append(f"  {name:<{width}}  {shown}")
    if result.changes:
        verb = "would change" if checked else "changed"
        files = []
        for path, data in sorted(result.writes.items()):
            if data is None:
                files.append(f"{path} (removed)")
            elif result.originals.get(path) is None:
                files.append(f"{path} (new)")
            else:
                files.append(path)
        lines.append(f"{verb}: " + ", ".join(files))
    else:
        state = "no patch applied" if result.action == "revert" else "all patches applied"
        lines.append(f"nothing to do: {state}")
    target = commit if result.action == "revert" else f"{commit} with the {n} patches"
    count = len(result.originals)
    if result.exact:
        verb = "would be" if checked else "are"
        lines.append(f"sha256: all {count} files {verb} byte-identical to {target}")
    else:
        lines.append(f"note: {', '.join(result.mismatched)} differ from {target} outside the "
                     "patched lines (local edits are kept as they are)")
    return "\n".join(lines)
