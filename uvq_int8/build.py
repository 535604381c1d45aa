"""``uvq-int8 build``: checkpoints -> each backend's three .tflite files + manifest.json.

The order of work:

1. ``plan_build`` checks every input that can be checked cheaply (backend
   names, checkpoint paths, calibration videos, the output directory, the
   manifest) and decides per file: build or skip. A file is skipped when its
   checkpoint sha256, recipe and recipe options are unchanged and the file
   still has its recorded sha256.
2. ``build`` then checks the checkpoints' contents (strict load), decodes
   calibration videos, and only then converts: each net that needs it goes
   through litert-torch once, in its own process (two at a time), and every
   other recipe is derived from that float32 file with ai-edge-quantizer.
3. Each file is checked (a quantizing recipe that quantized nothing is an
   error), written atomically and recorded in the manifest at once, so an
   interrupted build keeps what it finished.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from uvq_int8 import manifest as mf
from uvq_int8.backends import (ALL, NETS, Backend, BackendLike, UnknownBackendError,
                                all_for_build, buildable, discover, get_backend, parse_spec)
from uvq_int8.errors import UserError, VideoError
from uvq_int8.util import atomic_write_bytes, sha256_bytes, sha256_file, tool_versions

CHECKPOINT_NAMES = {net: f"{net}_net.pth" for net in NETS}
UVQ_ROOT_CHECKPOINTS = Path("uvq1p5_pytorch") / "checkpoints"
UVQ_ROOT_MODELS = Path("models") / "tflite_models" / "uvq1.5"
DEFAULT_CALIBRATION_FRAMES = 16
DEFAULT_VALIDATION_FRAMES = 8  # held-out frames the auto search measures on
# What a build may hold at once (this process plus conversion workers): the design target
# for the 8 GB edge boxes and CI runners we build on. Going past it is reported, not fatal.
MEMORY_BOUND_BYTES = 4_000_000_000
BUILD_EXTRA_HINT = "pip install 'uvq-int8[build]'"
BUILD_MODULES = ("torch", "litert_torch", "ai_edge_quantizer")
# Conversions run first for the slowest net, so the quick ones fill in beside it.
CONVERSION_ORDER = ("distortion", "content", "aggregation")


class BuildError(UserError):
    """Bad build input (named in the message) or a failed build step."""


class CheckpointMissingError(BuildError):
    pass


# --------------------------------------------------------------------------- inputs


def resolve_checkpoints(uvq_root: str | Path | None = None,
                        checkpoints: str | Path | None = None,
                        content: str | Path | None = None,
                        distortion: str | Path | None = None,
                        aggregation: str | Path | None = None) -> dict[str, Path]:
    """Checkpoint path per net: per-net paths override --checkpoints/--uvq-root.

    The one resolution of checkpoint options, for build and verify alike: --uvq-root
    and --checkpoints together are an error, and every net must get a path.
    """
    if uvq_root and checkpoints:
        raise BuildError("give --uvq-root or --checkpoints, not both")
    base: Path | None = None
    if uvq_root:
        root = Path(uvq_root).expanduser()
        if not root.is_dir():
            raise BuildError(f"--uvq-root {root} is not a directory (expected a clone of "
                             f"google/uvq holding {UVQ_ROOT_CHECKPOINTS}/)")
        base = root / UVQ_ROOT_CHECKPOINTS
    elif checkpoints:
        base = Path(checkpoints).expanduser()
        if not base.is_dir():
            raise BuildError(f"--checkpoints {base} is not a directory")
    given = {"content": content, "distortion": distortion, "aggregation": aggregation}
    paths: dict[str, Path] = {}
    for net in NETS:
        if given[net]:
            paths[net] = Path(given[net]).expanduser()
        elif base is not None:
            paths[net] = base / CHECKPOINT_NAMES[net]
    missing = [net for net in NETS if net not in paths]
    if missing:
        raise BuildError(f"no {missing[0]} checkpoint given (nets without one: "
                         f"{', '.join(missing)}): use --uvq-root DIR, --checkpoints DIR or "
                         f"--content/--distortion/--aggregation PATH")
    return paths


def default_out_dir(uvq_root: str | Path | None = None) -> Path:
    """The fork's model directory inside --uvq-root, else the configured model directory.

    Without --uvq-root the build writes where ``uvq`` will look (UVQ_MODEL_DIR, the
    config file, else the per-user data directory), so the two never disagree.
    """
    if uvq_root:
        return Path(uvq_root).expanduser() / UVQ_ROOT_MODELS
    from uvq_int8.config import resolve

    return resolve().model_dir.value


def resolve_backends(names: str | Sequence[str], include_auto: bool = True) -> list[Backend]:
    """``all``, a comma list or a sequence of names -> backends (``all``: registry order,
    see ``backends.all_for_build``; it names ``auto`` only with ``include_auto``, i.e.
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
            chosen += all_for_build(include_auto, available)
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
    for name in BUILD_MODULES:
        try:
            found = find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise BuildError(f"building needs {', '.join(missing)}, which "
                         f"{'is' if len(missing) == 1 else 'are'} not installed: "
                         f"{BUILD_EXTRA_HINT}")


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


# --------------------------------------------------------------------------- options


FrameSource = Callable[[int], Iterable[Any]]


@dataclass(frozen=True)
class BuildOptions:
    """Everything one build needs; ``build`` and the CLI share it."""

    checkpoints: Mapping[str, Path]
    out_dir: Path
    backends: str | Sequence[str] = "all"
    force: bool = False
    calibration_videos: Sequence[Path] = ()
    calibration_frames: int = DEFAULT_CALIBRATION_FRAMES
    # Conversions run in parallel, one process each (each ~0.8 GB peak).
    jobs: int = field(default_factory=lambda: max(1, min(2, os.cpu_count() or 1)))
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    # Replaces the built-in synthetic frames (API users, tests): n -> uint8 [1080,1920,3] frames.
    frame_source: FrameSource | None = None
    frame_source_name: str = "custom"
    # --backend auto: the largest logit change allowed on the held-out frames, and those
    # frames (1-fps frames of validation videos, else the built-in validation set).
    max_logit_delta: float | None = None
    validation_videos: Sequence[Path] = ()
    validation_frames: int = DEFAULT_VALIDATION_FRAMES
    validation_source: FrameSource | None = None
    validation_source_name: str = "custom"
    # Grow int8/float mixes from the per-op-group sensitivity table when full int8 is over
    # budget; the table is measured for the manifest and the verify report either way.
    auto_mixed: bool = True
    sensitivity: bool = True


@dataclass
class FileJob:
    backend: str
    net: str
    filename: str
    recipe: str
    options: dict[str, Any]
    reason: str | None  # why it is (re)built; None: up to date, skipped


@dataclass
class BuildPlan:
    options: BuildOptions
    out_dir: Path
    backends: list[str]
    checkpoints: dict[str, dict[str, str]]   # net -> {"path", "sha256"}
    jobs: list[FileJob]
    manifest: mf.Manifest
    calibration: dict[str, Any] | None
    float_sources: dict[str, Path]           # net -> current float32 file to derive from
    notes: list[str] = field(default_factory=list)

    @property
    def to_build(self) -> list[FileJob]:
        return [j for j in self.jobs if j.reason is not None]

    @property
    def to_skip(self) -> list[FileJob]:
        return [j for j in self.jobs if j.reason is None]

    @property
    def auto_jobs(self) -> list[FileJob]:
        return [j for j in self.to_build if j.recipe == "auto"]

    @property
    def nets_to_convert(self) -> list[str]:
        nets = {j.net for j in self.to_build}
        if self.auto_jobs:  # the search measures against all three float32 nets
            nets = set(NETS)
        return [n for n in CONVERSION_ORDER if n in nets and n not in self.float_sources]


@dataclass
class FileResult:
    backend: str
    net: str
    filename: str
    recipe: str
    status: str                 # "built", "skipped" or "failed"
    reason: str | None = None   # why built, or why it failed
    size: int | None = None
    sha256: str | None = None
    float32_size: int | None = None
    quantized_tensors_by_dtype: dict[str, int] = field(default_factory=dict)
    int4_conv_weights: int = 0

    @property
    def ratio_to_float32(self) -> float | None:
        if self.size is None or not self.float32_size:
            return None
        return self.size / self.float32_size

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio_to_float32"] = self.ratio_to_float32
        return out


@dataclass
class BuildSummary:
    out_dir: Path
    manifest_path: Path
    files: list[FileResult]
    seconds: float
    peak_rss_bytes: dict[str, int]
    conversions: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    build_id: str | None = None
    auto: dict[str, Any] | None = None  # the auto search's record, when it ran

    @property
    def built(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "built"]

    @property
    def skipped(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def backend_totals(self) -> dict[str, dict[str, Any]]:
        totals: dict[str, dict[str, Any]] = {}
        for f in self.files:
            t = totals.setdefault(f.backend, {"size": 0, "float32_size": 0, "complete": True})
            if f.size is None or not f.float32_size:
                t["complete"] = False
                continue
            t["size"] += f.size
            t["float32_size"] += f.float32_size
        for t in totals.values():
            t["ratio_to_float32"] = (t["size"] / t["float32_size"]
                                     if t["complete"] and t["float32_size"] else None)
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "build_id": self.build_id,
            "out_dir": str(self.out_dir),
            "manifest": str(self.manifest_path),
            "seconds": round(self.seconds, 2),
            "peak_rss_bytes": self.peak_rss_bytes,
            "built": len(self.built), "skipped": len(self.skipped), "failed": len(self.failed),
            "conversions": self.conversions,
            "calibration": self.calibration,
            "auto": self.auto,
            "files": [f.as_dict() for f in self.files],
            "backends": self.backend_totals(),
        }


class Reporter(Protocol):
    """Progress callbacks; all are called from the building thread."""

    def start(self, jobs: Sequence[FileJob]) -> None: ...

    def status(self, filename: str, text: str) -> None: ...

    def done(self, result: FileResult) -> None: ...

    def note(self, message: str) -> None: ...

    def stop(self) -> None: ...


class NullReporter:
    def start(self, jobs: Sequence[FileJob]) -> None:
        pass

    def status(self, filename: str, text: str) -> None:
        pass

    def done(self, result: FileResult) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


# --------------------------------------------------------------------------- planning


def _calibration_description(options: BuildOptions) -> dict[str, Any]:
    n = options.calibration_frames
    if options.calibration_videos:
        videos = []
        for path in options.calibration_videos:
            path = Path(path).expanduser()
            videos.append({"name": path.name, "sha256": sha256_file(path)})
        return {"source": "videos", "frames": n, "fps": 1, "videos": videos}
    if options.frame_source is not None:
        return {"source": options.frame_source_name, "frames": n}
    return {"source": "synthetic", "frames": n,
            "generator": "uvq_int8.synthetic.calibration_frames"}


def _validation_description(options: BuildOptions) -> dict[str, Any]:
    n = options.validation_frames
    if options.validation_videos:
        paths = [Path(v).expanduser() for v in options.validation_videos]
        videos = [{"name": p.name, "sha256": sha256_file(p)} for p in paths]
        return {"source": "videos", "frames": n, "fps": 1, "videos": videos}
    if options.validation_source is not None:
        return {"source": options.validation_source_name, "frames": n}
    return {"source": "synthetic", "frames": n,
            "generator": "uvq_int8.synthetic.validation_frames"}


def _auto_options(options: BuildOptions, base: dict[str, Any],
                  refs: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The auto files' recipe options: everything the search's answer depends on."""
    from uvq_int8.auto import AUTO_VERSION

    return {**base, "auto_version": AUTO_VERSION, "max_logit_delta": options.max_logit_delta,
            "validation": _validation_description(options), "mixed": options.auto_mixed,
            # The choice for one net depends on the other nets too.
            "checkpoints": {net: refs[net]["sha256"] for net in NETS}}


def _check_auto_options(options: BuildOptions, wants_auto: bool) -> None:
    budget = options.max_logit_delta
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget)
                                   and budget >= 0):
        raise BuildError(f"--max-logit-delta must be a non-negative number, got {budget}")
    if not wants_auto:
        return
    if budget is None:
        raise BuildError("--backend auto needs --max-logit-delta D: the largest change of the "
                         "aggregation logit (score = 3 + 2*tanh(logit)) it may cost, e.g. 0.1")
    if options.validation_frames < 1:
        raise BuildError(f"--validation-frames must be at least 1, got "
                         f"{options.validation_frames}")
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
    from uvq_int8 import quantize

    backends = resolve_backends(options.backends,
                                include_auto=options.max_logit_delta is not None)
    _check_auto_options(options, any("auto" in b.recipes.values() for b in backends))
    checkpoints = {net: Path(options.checkpoints[net]).expanduser() for net in NETS}
    for net, path in checkpoints.items():
        if not path.is_file():
            raise CheckpointMissingError(f"{net} checkpoint not found: {path}"
                                         + (" (it is a directory)" if path.is_dir() else ""))
    if options.calibration_frames < 1:
        raise BuildError(f"--calibration-frames must be at least 1, got "
                         f"{options.calibration_frames}")
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
    calibration = _calibration_description(options) if needs_calibration else None

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
            opts = quantize.recipe_options(recipe, recipe_calibration)
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


# --------------------------------------------------------------------------- building


class _MemorySampler:
    """Peak of (this process + running conversion processes) RSS, sampled from /proc.

    getrusage gives each process's own peak; this gives what the machine had to hold.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.children: set[int] = set()
        self.peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int | str) -> int:
        try:
            with open(f"/proc/{pid}/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def sample(self) -> None:
        with self._lock:
            pids = list(self.children)
        total = self._rss("self") + sum(self._rss(pid) for pid in pids)
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "_MemorySampler":
        if os.path.exists("/proc/self/statm"):
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def add(self, pid: int) -> None:
        with self._lock:
            self.children.add(pid)

    def remove(self, pid: int) -> None:
        with self._lock:
            self.children.discard(pid)


def _peak_rss(sampler: _MemorySampler | None) -> dict[str, int]:
    from uvq_int8.convert import peak_rss_bytes

    own, kids = peak_rss_bytes(), peak_rss_bytes(children=True)
    out = {"self": own, "children": kids, "max": max(own, kids)}
    if sampler is not None and sampler.peak:
        out["concurrent"] = sampler.peak
    return out


def _validate_checkpoints(plan: BuildPlan, nets: Iterable[str]) -> None:
    """Strict load of each checkpoint that will be converted (imports torch)."""
    from uvq_int8 import nets as torch_nets

    for net in nets:
        core = torch_nets.load_core(net, plan.options.checkpoints[net])  # CheckpointError
        del core


class _FrameStore:
    """Calibration frames kept on disk, one .npy each, so memory holds one at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.paths: list[Path] = []

    def add(self, frame) -> None:
        import numpy as np

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BuildError(f"calibration frames must be uint8 [H,W,3], got {frame.dtype} "
                             f"{list(frame.shape)}")
        path = self.directory / f"frame{len(self.paths):04d}.npy"
        np.save(path, frame)
        self.paths.append(path)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Any]:
        import numpy as np

        for path in self.paths:
            yield np.load(path)


def _decode_videos(videos: Sequence[Path], n: int, store: _FrameStore) -> list[dict[str, Any]]:
    """Up to ``n`` 1-fps frames from the start of each video, shared out evenly."""
    try:
        from uvq_int8 import video as video_mod
    except ImportError:
        raise BuildError("decoding calibration videos needs uvq_int8.video, which is not "
                         "available in this install") from None
    used = []
    for i, path in enumerate(videos):
        path = Path(path).expanduser()
        quota = math.ceil((n - len(store)) / (len(videos) - i))
        taken = 0
        if quota > 0:
            frames = video_mod.uvq_frames(path, fps=1)
            try:
                for frame in frames:
                    if not frame.any():
                        continue  # upstream pads a short decode with black frames
                    store.add(frame)
                    taken += 1
                    if taken >= quota:
                        break
            finally:
                close = getattr(frames, "close", None)
                if close:
                    close()
        used.append({"path": str(path.resolve()), "frames": taken})
    if not len(store):
        raise VideoError("no frames could be decoded from the calibration videos: "
                         + ", ".join(str(v) for v in videos))
    return used


def _frame_source(options: BuildOptions) -> FrameSource:
    """The calibration frame generator, resolved before any conversion starts."""
    if options.frame_source is not None:
        return options.frame_source
    try:
        from uvq_int8.synthetic import calibration_frames
    except ImportError as exc:
        raise BuildError(f"the built-in calibration frames are not available ({exc}); "
                         f"give --calibration-videos") from None
    return calibration_frames


def _io_ports(net: str, info) -> tuple[list[dict], list[dict]]:
    from uvq_int8.convert import INPUT_ROLES, OUTPUT_ROLES

    def ports(items, roles, prefix):
        out = []
        for position, port in enumerate(items):
            # The signature names (args_N / output_N) carry the export's order.
            name = port.signature_name or f"{prefix}{position}"
            digits = "".join(ch for ch in name if ch.isdigit())
            order = int(digits) if digits else position
            role = roles[order] if order < len(roles) else None
            out.append({"index": port.index, "name": port.name,
                        "signature_name": port.signature_name, "role": role,
                        "shape": list(port.shape), "dtype": port.dtype,
                        "scale": port.scale, "zero_point": port.zero_point})
        return out

    return (ports(info.inputs, INPUT_ROLES[net], "args_"),
            ports(info.outputs, OUTPUT_ROLES[net], "output_"))


def _check_ports(net: str, filename: str, inputs: list[dict], outputs: list[dict]) -> None:
    from uvq_int8.convert import OUTPUT_ROLES
    from uvq_int8.quantize import QuantizationError

    roles = [p["role"] for p in outputs]
    if roles != list(OUTPUT_ROLES[net]):
        # Hosts such as the fork read output_details()[0] as the score.
        raise QuantizationError(f"{filename}: outputs are {roles} in subgraph order, "
                                f"expected {list(OUTPUT_ROLES[net])}")


class _Builder:
    def __init__(self, plan: BuildPlan, reporter: Reporter, tmp: Path,
                 sampler: _MemorySampler) -> None:
        self.plan = plan
        self.reporter = reporter
        self.tmp = tmp
        self.sampler = sampler
        self.build_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self.results: dict[str, FileResult] = {}
        self.conversions: list[dict[str, Any]] = []
        self.frames: _FrameStore | None = None
        self.source: FrameSource | None = None
        self.calibration_record: dict[str, Any] | None = None
        self.float32_sizes: dict[str, int] = {}
        self.float_paths: dict[str, Path] = dict(plan.float_sources)
        self.ranges: dict[str, Any] = {}  # net -> auto.FrameRanges, shared by the recipes
        self.auto_record: dict[str, Any] | None = None
        self.validation: list[Any] | None = None  # held-out frames of the auto search

    # -- frames ---------------------------------------------------------------

    def prepare_frames(self) -> None:
        """Resolve the frame sources; decode calibration and validation videos now, before
        converting, so a broken video stops the build before its slow part."""
        options = self.plan.options
        if self.plan.auto_jobs and options.validation_videos:
            self.validation = self.validation_frames()
        if not any(j.options.get("calibration") for j in self.plan.to_build):
            return
        if not options.calibration_videos:
            self.source = _frame_source(options)
            return
        self.frames = _FrameStore(self.tmp)
        used = _decode_videos(options.calibration_videos, options.calibration_frames, self.frames)
        self.calibration_record = {**self.plan.calibration, "videos_used": used,
                                   "frames_used": len(self.frames)}

    def ensure_frames(self) -> _FrameStore:
        if self.frames is not None:
            return self.frames
        options = self.plan.options
        self.frames = _FrameStore(self.tmp)
        source = self.source or _frame_source(options)
        for i, frame in enumerate(source(options.calibration_frames)):
            if i >= options.calibration_frames:
                break
            self.frames.add(frame)
        if not len(self.frames):
            raise BuildError("the calibration frame source gave no frames")
        self.calibration_record = {**(self.plan.calibration or {}),
                                   "frames_used": len(self.frames)}
        return self.frames

    # -- per net --------------------------------------------------------------

    def convert(self, net: str) -> Path:
        from uvq_int8.convert import convert_in_subprocess

        out = self.tmp / f"{net}_net.float32.tflite"
        threads = 1 if self.plan.options.jobs > 1 else self.plan.options.threads
        result = convert_in_subprocess(net, self.plan.options.checkpoints[net], out,
                                       self.tmp / f"{net}.convert.log", threads=threads,
                                       on_start=self.sampler.add, on_exit=self.sampler.remove)
        record = asdict(result)
        record.pop("path")  # a temp file, gone after the build
        self.conversions.append(record)
        return out

    def make_files(self, net: str, float_path: Path) -> None:
        from uvq_int8 import quantize
        from uvq_int8.tflite_info import read_model_info

        float_model = float_path.read_bytes()
        self.float_paths[net] = float_path
        self.float32_sizes[net] = len(float_model)
        # auto files wait for every net's float32 file: see make_auto.
        jobs = [j for j in self.plan.to_build if j.net == net and j.recipe != "auto"]
        # float32 copies first: they are ready at once; the calibrated recipe is slowest.
        jobs.sort(key=lambda j: (j.recipe != "float32", quantize.get_recipe(j.recipe).calibrated))
        calibration_result = None
        for job in jobs:
            recipe = quantize.get_recipe(job.recipe)
            try:
                if recipe.calibrated and calibration_result is None:
                    calibration_result = self.frame_ranges(net, job.filename,
                                                           float_model).merged("mean")
                self.reporter.status(job.filename, "quantizing" if recipe.quantized_dtype
                                     else "writing")
                data = quantize.quantize_model(job.recipe, float_model,
                                               calibration_result if recipe.calibrated else None)
                info = read_model_info(data)
                quantize.check_quantized(job.recipe, info)
                inputs, outputs = _io_ports(net, info)
                _check_ports(net, job.filename, inputs, outputs)
            except quantize.QuantizationError as exc:
                self._finish(FileResult(job.backend, net, job.filename, job.recipe, "failed",
                                        str(exc), float32_size=len(float_model)))
                continue
            self._write(job, data, info, inputs, outputs)

    def frame_ranges(self, net: str, filename: str, float_model: bytes):
        """Per-frame activation ranges of ``net`` on the calibration frames (computed once)."""
        from uvq_int8 import auto
        from uvq_int8 import frames as F
        from uvq_int8.tflite_info import read_model_info

        if net in self.ranges:
            return self.ranges[net]
        store = self.ensure_frames()
        total = len(store)
        signature_input = read_model_info(float_model).inputs[0].signature_name or "args_0"
        started = time.perf_counter()

        def samples():
            for i, frame in enumerate(store):
                self.reporter.status(filename, f"calibrating {i + 1}/{total}")
                content, patches = F.net_inputs(frame)
                yield {signature_input: content if net == "content" else patches}
                self.sampler.sample()

        ranges = auto.calibrate_per_frame(float_model, samples(),
                                          threads=self.plan.options.threads)
        record = self.calibration_record if self.calibration_record is not None else {}
        record.setdefault("nets", {})[net] = {
            "frames": ranges.frames, "tensors": len(ranges.names),
            "seconds": round(time.perf_counter() - started, 2),
            # How much the ranges swing between frames: why the merge matters.
            "range_spread_max": round(ranges.spread_max(), 3)}
        self.calibration_record = record
        self.ranges[net] = ranges
        return ranges

    # -- auto -----------------------------------------------------------------

    def validation_frames(self) -> list[Any]:
        options = self.plan.options
        n = options.validation_frames
        if options.validation_videos:
            store = _FrameStore(self.tmp / "validation")
            store.directory.mkdir(exist_ok=True)
            _decode_videos(options.validation_videos, n, store)
            return list(store)
        if options.validation_source is not None:
            frames = list(itertools.islice(options.validation_source(n), n))
        else:
            from uvq_int8.synthetic import validation_frames

            frames = list(validation_frames(n))
        if not frames:
            raise BuildError("the validation frame source gave no frames")
        return frames

    def make_auto(self) -> None:
        """Search for the fastest configuration within the budget, then write its files."""
        from uvq_int8 import auto, quantize
        from uvq_int8 import sensitivity as S
        from uvq_int8.tflite_info import read_model_info

        options = self.plan.options
        jobs = {j.net: j for j in self.plan.auto_jobs}

        def say(text: str) -> None:
            for job in jobs.values():
                self.reporter.status(job.filename, text)
            self.sampler.sample()

        if self.validation is None:
            say("making validation frames")
            self.validation = self.validation_frames()
        frames = self.validation
        float_models = {net: self.float_paths[net].read_bytes() for net in S.BACKBONES}
        ranges = {net: self.frame_ranges(net, jobs[net].filename, float_models[net])
                  for net in S.BACKBONES}
        say(f"measuring the float32 reference on {len(frames)} validation frames")
        held = S.HeldOut(self.float_paths, frames, options.threads)
        try:
            result = auto.search(float_models, ranges, held, float(options.max_logit_delta),
                                 mixed=options.auto_mixed, sensitivity=options.sensitivity,
                                 progress=say)
        except quantize.QuantizationError as exc:
            for job in jobs.values():
                self._finish(FileResult(job.backend, job.net, job.filename, job.recipe,
                                        "failed", f"auto search: {exc}",
                                        float32_size=self.float32_sizes.get(job.net)))
            return
        self.auto_record = result.as_dict()
        for net, job in jobs.items():
            choice = result.choices[net]
            try:
                say(f"writing {choice.label}")
                data = auto.make_model(choice, float_models[net], ranges[net])
                info = read_model_info(data)
                auto.check_choice(choice, info)
                inputs, outputs = _io_ports(net, info)
                _check_ports(net, job.filename, inputs, outputs)
            except quantize.QuantizationError as exc:
                self._finish(FileResult(job.backend, net, job.filename, job.recipe, "failed",
                                        str(exc), float32_size=len(float_models[net])))
                continue
            options_with_choice = {**job.options, "choice": result.recipe_options(net)}
            self._write(job, data, info, inputs, outputs, options_with_choice)

    def _write(self, job: FileJob, data: bytes, info, inputs: list[dict],
               outputs: list[dict], recipe_options: dict[str, Any] | None = None) -> None:
        out_path = self.plan.out_dir / job.filename
        atomic_write_bytes(out_path, data)
        sha = sha256_bytes(data)
        entry = mf.file_entry(
            filename=job.filename, backend=job.backend, net=job.net, recipe=job.recipe,
            recipe_options=job.options if recipe_options is None else recipe_options,
            size=len(data), sha256=sha,
            checkpoint=dict(self.plan.checkpoints[job.net]), built_at=mf.utc_now(),
            build_id=self.build_id, tensors_by_dtype=info.tensors_by_dtype,
            constant_tensors_by_dtype=info.constant_tensors_by_dtype,
            quantized_tensors_by_dtype=info.quantized_tensors_by_dtype,
            conv_weights_by_dtype=info.conv_weights_by_dtype,
            int4_conv_weights=info.int4_conv_weights, ops_by_name=info.ops_by_name,
            inputs=inputs, outputs=outputs)
        mf.update(self.plan.out_dir, {job.filename: entry})
        self._finish(FileResult(job.backend, job.net, job.filename, job.recipe, "built",
                                job.reason, len(data), sha, self.float32_sizes.get(job.net),
                                dict(info.quantized_tensors_by_dtype), info.int4_conv_weights))

    def stop_workers(self) -> None:
        import signal

        with self.sampler._lock:
            pids = list(self.sampler.children)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _finish(self, result: FileResult) -> None:
        self.results[result.filename] = result
        self.reporter.done(result)


def _skipped_result(job: FileJob, entry: Mapping[str, Any], float_size: int | None) -> FileResult:
    return FileResult(job.backend, job.net, job.filename, job.recipe, "skipped", "up to date",
                      entry.get("size"), entry.get("sha256"), float_size,
                      dict(entry.get("quantized_tensors_by_dtype", {})),
                      int(entry.get("int4_conv_weights", 0)))


def build(options: BuildOptions, reporter: Reporter | None = None,
          raise_on_failure: bool = True) -> BuildSummary:
    """Build (or skip, when up to date) every file of the requested backends."""
    started = time.perf_counter()
    started_at = mf.utc_now()
    reporter = reporter or NullReporter()
    plan = plan_build(options)
    for note in plan.notes:
        reporter.note(note)

    if plan.to_build:
        require_build_tools()
        _validate_checkpoints(plan, plan.nets_to_convert)

    reporter.start(plan.jobs)
    for job in plan.to_skip:
        reporter.done(_skipped_result(job, plan.manifest.files[job.filename], None))
    try:
        with tempfile.TemporaryDirectory(prefix="uvq-int8-build-") as tmp, \
                _MemorySampler() as sampler:
            builder = _Builder(plan, reporter, Path(tmp), sampler)
            if plan.to_build:
                builder.prepare_frames()  # a broken video stops the build before conversion
                plan.out_dir.mkdir(parents=True, exist_ok=True)
                _run(plan, builder)
    finally:
        reporter.stop()

    results = _collect_results(plan, builder)
    peak = _peak_rss(sampler)
    held = peak.get("concurrent", peak["max"])
    if plan.to_build and held > MEMORY_BOUND_BYTES:
        reporter.note(f"the build held {held / 1e9:.2f} GB at its peak, over the "
                      f"{MEMORY_BOUND_BYTES / 1e9:.0f} GB bound; use --jobs 1 or fewer "
                      f"--calibration-frames")
    summary = BuildSummary(plan.out_dir, mf.manifest_path(plan.out_dir), results,
                           time.perf_counter() - started, peak, builder.conversions,
                           builder.calibration_record, builder.build_id if plan.to_build else None,
                           builder.auto_record)
    if plan.to_build:
        record = {
            "build_id": builder.build_id, "started_at": started_at, "finished_at": mf.utc_now(),
            "seconds": round(summary.seconds, 2), "tools": tool_versions(),
            "checkpoints": plan.checkpoints, "calibration": builder.calibration_record,
            "peak_rss_bytes": peak, "conversions": builder.conversions,
            "backends": plan.backends,
            "built": [f.filename for f in summary.built],
            "skipped": [f.filename for f in summary.skipped],
            "failed": [f.filename for f in summary.failed],
        }
        if builder.auto_record is not None:
            record["auto"] = builder.auto_record
        mf.update(plan.out_dir, build=record)
    if raise_on_failure and summary.failed:
        raise BuildError("; ".join(f"{f.filename}: {f.reason}" for f in summary.failed))
    return summary


def _run(plan: BuildPlan, builder: _Builder) -> None:
    to_convert = plan.nets_to_convert
    for net in to_convert:
        for job in plan.to_build:
            if job.net == net:
                builder.reporter.status(job.filename, "waiting for the float32 conversion")
    with ThreadPoolExecutor(max_workers=max(1, plan.options.jobs)) as pool:
        futures: dict[Future, str] = {pool.submit(builder.convert, net): net for net in to_convert}
        try:
            if to_convert and any(j.options.get("calibration") for j in plan.to_build):
                builder.ensure_frames()  # the main thread is free while the workers convert
            # Nets with a current float32 file need no conversion: derive their files now.
            for net in NETS:
                if net in plan.float_sources and any(j.net == net for j in plan.to_build):
                    builder.make_files(net, plan.float_sources[net])
            pending = dict(futures)
            while pending:
                done = _wait_any(pending)
                net = pending.pop(done)
                builder.make_files(net, done.result())  # re-raises a conversion error
            if plan.auto_jobs:
                builder.make_auto()
        except BaseException:
            for future in futures:
                future.cancel()
            builder.stop_workers()  # else the pool would wait for running conversions
            raise


def _wait_any(pending: Mapping[Future, str]) -> Future:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    # Prefer the net that finished first in CONVERSION_ORDER for a stable order.
    return min(done, key=lambda f: CONVERSION_ORDER.index(pending[f]))


def _collect_results(plan: BuildPlan, builder: _Builder) -> list[FileResult]:
    float_sizes = dict(builder.float32_sizes)
    for net, path in plan.float_sources.items():
        float_sizes.setdefault(net, path.stat().st_size)
    for entry in plan.manifest.files.values():
        net = entry.get("net")
        if (entry.get("recipe") == "float32" and net in NETS
                and entry.get("checkpoint", {}).get("sha256") == plan.checkpoints[net]["sha256"]):
            float_sizes.setdefault(net, entry["size"])
    results = []
    for job in plan.jobs:
        if job.filename in builder.results:
            result = builder.results[job.filename]
            if result.float32_size is None:
                result.float32_size = float_sizes.get(job.net)
        elif job.reason is None:
            result = _skipped_result(job, plan.manifest.files[job.filename],
                                     float_sizes.get(job.net))
        else:  # interrupted before this file was reached
            result = FileResult(job.backend, job.net, job.filename, job.recipe, "failed",
                                "not built")
        results.append(result)
    return results
