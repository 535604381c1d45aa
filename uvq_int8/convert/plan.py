"""Planning a build: check every input that can be checked cheaply, then decide per file
whether to build it (a file is skipped when its checkpoint sha256, recipe and recipe
options are unchanged and the file still has its recorded sha256). Writes nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from uvq_int8.backends import (ALL, NETS, Backend, BackendLike, UnknownBackendError, buildable,
                               buildable_backends, discover, get_backend, parse_spec)
from uvq_int8.convert import options as O
from uvq_int8.convert.options import (CALIBRATION_CONTENTS, BuildError, BuildOptions, BuildPlan,
                                    CheckpointMissingError, FileJob)
from uvq_int8.convert.sources import calibration_description, validation_description
from uvq_int8.errors import VideoError
from uvq_int8.runtime import manifest as mf
from uvq_int8.util import sha256_file


def resolve_backends(names: str | Sequence[str], include_auto: bool = True) -> list[Backend]:
    """``all``, a comma list or a sequence of names -> backends (``all``: registry order,
    see ``backends.buildable_backends``; it names ``auto`` only with ``include_auto``, i.e.
    when a logit budget was given)."""
    try:
        spec = parse_spec(names)
    except UnknownBackendError as exc:
        raise BuildError(str(exc)) from None
    if spec.mix is not None:
        given = names if isinstance(names, str) else ",".join(names)
        raise BuildError(f"build takes backend names, not a per-net mix ({given!r}); build "
                         f"the backends the mix names")
    available = discover()
    chosen: list[BackendLike] = []
    for item in spec.names:
        if item == ALL:
            chosen += buildable_backends(include_auto, available)
        else:
            chosen.append(get_backend(item, available))  # UnknownBackendError lists known ones
    unique: dict[str, BackendLike] = {}
    for backend in chosen:
        if not buildable(backend):
            raise BuildError(f"backend {backend.name!r} does not describe recipes "
                             f"uvq-int8 build can make")
        unique.setdefault(backend.name, backend)
    return list(unique.values())  # type: ignore[return-value]


def require_build_tools(find_spec: Callable[[str], Any] | None = None) -> None:
    """A clear error when the ``build`` extra is not installed (nothing is imported)."""
    find_spec = find_spec or importlib.util.find_spec
    missing = []
    for name in O.BUILD_MODULES:
        try:
            found = find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise BuildError(f"building needs {', '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         f"{O.BUILD_EXTRA_HINT}")


def _check_writable(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError(f"output directory {out_dir} exists and is not a directory")
    probe = out_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise BuildError(f"output directory {out_dir} cannot be created: {probe} is not a "
                         f"directory")
    try:
        fd, name = tempfile.mkstemp(prefix=".uvq-int8-write-test-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "" if probe == out_dir else f" (cannot create files in {probe})"
        raise BuildError(f"output directory {out_dir} is not writable{where}: "
                         f"{exc.strerror or exc}") from None


def _auto_options(options: BuildOptions, base: dict[str, Any],
                  refs: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The auto files' recipe options: everything the search's answer depends on."""
    from uvq_int8.convert.auto import AUTO_VERSION

    return {**base, "auto_version": AUTO_VERSION, "max_logit_delta": options.max_logit_delta,
            "validation": validation_description(options), "mixed": options.auto_mixed,
            # The choice for one net depends on the other nets too.
            "checkpoints": {net: refs[net]["sha256"] for net in NETS}}


def check_budget(budget: float) -> None:
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget >= 0):
        raise BuildError(f"--max-logit-delta must be a non-negative number, got {budget}")


def require_budget(budget: float | None) -> None:
    """The one refusal for ``auto`` without a budget (build and demo alike)."""
    if budget is None:
        raise BuildError("--backend auto needs --max-logit-delta D: the largest change of the "
                         "aggregation logit (score = 3 + 2*tanh(logit)) it may cost, e.g. 0.1")


def _check_auto_options(options: BuildOptions, wants_auto: bool) -> None:
    budget = options.max_logit_delta
    if budget is not None:
        check_budget(budget)
    if not wants_auto:
        return
    require_budget(budget)
    if options.validation_frames < 1:
        raise BuildError(f"--validation-frames must be at least 1, got "
                         f"{options.validation_frames}")
    from uvq_int8.runtime import promise

    fraction = options.promise_fraction
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise BuildError(f"--promise-fraction must be between 0 and 1, got {fraction}")
    if options.confirmation_looks < 1:
        raise BuildError(f"--confirmation-looks must be at least 1, got "
                         f"{options.confirmation_looks}")
    needed = promise.frames_needed(fraction)
    if options.confirmation_frames < needed:
        raise BuildError(f"--confirmation-frames {options.confirmation_frames} cannot support a "
                         f"{fraction:.0%} promise: it needs at least {needed} frames")
    calibration = {Path(v).expanduser().resolve() for v in options.calibration_videos}
    for video in options.validation_videos:
        video = Path(video).expanduser()
        if not video.is_file():
            raise VideoError(f"validation video not found: {video}")
        if video.resolve() in calibration:
            raise BuildError(f"{video} is both a calibration and a validation video; the "
                             f"search must measure on frames it did not calibrate on")


def plan_build(options: BuildOptions) -> BuildPlan:
    """Check inputs and decide, per file, whether to build it. Writes nothing."""
    from uvq_int8.convert import quantize

    backends = resolve_backends(options.backends,
                                include_auto=options.max_logit_delta is not None)
    _check_auto_options(options, any("auto" in b.recipes.values() for b in backends))
    checkpoints = {net: Path(options.checkpoints[net]).expanduser() for net in NETS}
    for net, path in checkpoints.items():
        if not path.is_file():
            raise CheckpointMissingError(f"{net} checkpoint not found: {path}"
                                         + (" (it is a directory)" if path.is_dir() else ""))
    int8 = options.int8
    if int8.ranges not in O.INT8_RANGE_METHODS:
        raise BuildError(f"--int8-ranges must be one of {', '.join(O.INT8_RANGE_METHODS)}, "
                         f"got {int8.ranges!r}")
    if not 50.0 < int8.percentile <= 100.0:
        raise BuildError(f"--int8-percentile must be above 50 and at most 100, got "
                         f"{int8.percentile:g}")
    if int8.refit not in O.INT8_REFITS:
        raise BuildError(f"--int8-refit must be one of {', '.join(O.INT8_REFITS)}, "
                         f"got {int8.refit!r}")
    if not (int8.refit_ridge > 0 and math.isfinite(int8.refit_ridge)):
        raise BuildError(f"--int8-refit-ridge must be a positive number, got "
                         f"{int8.refit_ridge!r}")
    if int8.bias_correction not in O.INT8_BIAS_CORRECTIONS:
        raise BuildError(f"--int8-bias-correction must be one of "
                         f"{', '.join(O.INT8_BIAS_CORRECTIONS)}, got {int8.bias_correction!r}")
    if options.calibration_frames < 1:
        raise BuildError(f"--calibration-frames must be at least 1, got "
                         f"{options.calibration_frames}")
    if options.calibration_content not in CALIBRATION_CONTENTS:
        raise BuildError(f"--calibration-content must be one of {', '.join(CALIBRATION_CONTENTS)}, "
                         f"got {options.calibration_content!r}")
    for video in options.calibration_videos:
        video = Path(video).expanduser()
        if not video.is_file():
            raise VideoError(f"calibration video not found: {video}")
    out_dir = Path(options.out_dir).expanduser()
    _check_writable(out_dir)

    notes: list[str] = []
    try:
        manifest = mf.load(out_dir)
    except mf.ManifestVersionError as exc:
        if not options.force:
            raise BuildError(f"{exc}, or use --force to replace it") from None
        notes.append(f"{exc}; --force: it will be replaced")
        manifest = mf.Manifest()
    except mf.ManifestError as exc:
        notes.append(f"{exc}; it will be replaced and every requested file rebuilt")
        manifest = mf.Manifest()

    refs = {net: {"path": str(path.resolve()), "sha256": sha256_file(path)}
            for net, path in checkpoints.items()}
    needs_calibration = any(quantize.get_recipe(b.recipes[net]).calibrated
                            for b in backends for net in NETS)
    calibration = calibration_description(options) if needs_calibration else None

    sha_cache: dict[Path, str | None] = {}

    def file_sha(path: Path) -> str | None:
        if path not in sha_cache:
            sha_cache[path] = sha256_file(path) if path.is_file() else None
        return sha_cache[path]

    jobs: list[FileJob] = []
    seen: dict[str, FileJob] = {}
    for backend in backends:
        for net, filename in backend.filenames().items():
            recipe = backend.recipes[net]
            recipe_calibration = calibration if quantize.get_recipe(recipe).calibrated else None
            opts = quantize.recipe_options(recipe, recipe_calibration, options.int8.as_options())
            if recipe == "auto":
                opts = _auto_options(options, opts, refs)
            if filename in seen:
                if (seen[filename].recipe, seen[filename].options) != (recipe, opts):
                    raise BuildError(f"backends {seen[filename].backend!r} and {backend.name!r} "
                                     f"both name {filename} but with different recipes")
                continue
            reason = _rebuild_reason(manifest.files.get(filename), out_dir / filename, net,
                                     recipe, opts, refs[net]["sha256"], options.force, file_sha)
            job = FileJob(backend.name, net, filename, recipe, opts, reason)
            seen[filename] = job
            jobs.append(job)

    auto_jobs = [j for j in jobs if j.recipe == "auto"]
    if any(j.reason for j in auto_jobs):
        # One search chooses for both backbones: their files are made together.
        for job in auto_jobs:
            job.reason = job.reason or "made together with the other auto files"

    float_sources: dict[str, Path] = {}
    if not options.force:
        float_opts = quantize.recipe_options("float32")
        for net in NETS:
            for name, entry in sorted(manifest.files.items()):
                path = out_dir / name
                if (entry.get("net") == net and entry.get("recipe") == "float32"
                        and _rebuild_reason(entry, path, net, "float32", float_opts,
                                            refs[net]["sha256"], False, file_sha) is None):
                    float_sources[net] = path
                    break
    return BuildPlan(options, out_dir, [b.name for b in backends], refs, jobs, manifest,
                     calibration, float_sources, notes)


def _rebuild_reason(entry: Mapping[str, Any] | None, path: Path, net: str, recipe: str,
                    options: Mapping[str, Any], checkpoint_sha: str, force: bool,
                    file_sha: Callable[[Path], str | None]) -> str | None:
    if force:
        return "forced"
    if entry is None:
        return "new" if not path.exists() else "not in the manifest"
    if entry.get("net") != net:
        return "manifest entry is for another net"
    if entry.get("checkpoint", {}).get("sha256") != checkpoint_sha:
        return "checkpoint changed"
    if entry.get("recipe") != recipe:
        return "recipe changed"
    recorded = dict(entry.get("recipe_options") or {})
    recorded.pop("choice", None)  # what the auto search chose, not an input to it
    if recorded != options:
        return "recipe options changed"
    if not path.is_file():
        return "file missing"
    if path.stat().st_size != entry.get("size") or file_sha(path) != entry.get("sha256"):
        return "file does not match its recorded sha256"
    return None
