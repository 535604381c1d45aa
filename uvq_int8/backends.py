"""Backends: the one table of built-in backends and recipes, the registry, and specs.

A backend is a small immutable description. Every backend, ours included, is found
through the ``uvq.backends`` entry-point group; an entry point resolves to an object
with ``name``, ``description``, ``recipes`` and ``model_paths(model_dir) ->
{"content": Path, "distortion": Path, "aggregation": Path}`` (docs/plugins.md).

Everything uvq-int8 knows about a built-in backend is one row of ``BUILTIN_BACKENDS``
(in the manner of pyiqa's ``default_model_configs``): its description, recipe, file
suffix, whether ``--backend all`` of ``build`` names it, and the default limits
``verify`` holds it to. Everything about a recipe is one row of ``RECIPES``.
``parse_spec`` is the one reader of ``--backend`` values.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from uvq_int8.errors import UserError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "uvq.backends"
NETS = ("content", "distortion", "aggregation")
ALL = "all"


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """How a file is made from the float32 one, in ai-edge-quantizer's vocabulary."""

    name: str
    description: str
    label: str                   # short words for tables and the auto search's choices
    quantized_dtype: str | None  # what the recipe must leave in the file (None: nothing)
    options: Mapping[str, Any] = field(default_factory=dict)  # recorded in the manifest
    calibrated: bool = False     # needs calibration frames


_AIEQ = {"tool": "ai-edge-quantizer"}
_CHANNELWISE = {**_AIEQ, "granularity": "channelwise"}
RECIPES: Mapping[str, Recipe] = MappingProxyType({r.name: r for r in (
    Recipe("float32", "no quantization", "float32", None, {"tool": "litert-torch"}),
    Recipe("fp16_weights", "float16 weights, dequantized at load; float32 compute", "fp16",
           "float16", {**_AIEQ, "algorithm": "float_casting", "weights": "float16",
                       "explicit_dequantize": True}),
    Recipe("dynamic_wi8_afp32", "int8 channelwise weights; activations quantized on the fly "
           "(dynamic range)", "int8 dynamic", "int8",
           {**_CHANNELWISE, "weights": "int8", "activations": "dynamic int8"}),
    Recipe("weight_only_wi8_afp32", "int8 channelwise weights dequantized to float; float32 "
           "compute", "int8 weights", "int8",
           {**_CHANNELWISE, "weights": "int8", "activations": "float32",
            "explicit_dequantize": True}),
    Recipe("dynamic_wi4_afp32", "int4 channelwise convolution and FC weights; float "
           "activations", "int4 weights", "int4",
           {**_CHANNELWISE, "weights": "int4", "activations": "dynamic"}),
    Recipe("static_wi8_ai8", "int8 weights and int8 activations from calibration (full "
           "integer)", "int8", "int8",
           {**_CHANNELWISE, "weights": "int8", "activations": "int8",
            "calibration_mode": "profiler", "range_merge": "mean"}, calibrated=True),
    # What auto makes is decided per build by a measured search (uvq_int8.convert.auto); the
    # file's manifest entry records the choice under recipe_options["choice"].
    Recipe("auto", "chosen per build by measurement: float32, fp16 weights, full-integer "
           "int8 or int8 with named op groups float (uvq-int8 build --max-logit-delta)",
           "auto", None, {"tool": "uvq-int8 auto search", "candidates": "float32, "
                          "fp16_weights, static_wi8_ai8 per range merge, static_wi8_ai8 "
                          "with float op groups"}, calibrated=True),
)})


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class VerifyLimits:
    """verify's default limits for a backend, and the measurements they rest on.

    Logit limits are ~1.5x the largest delta measured, cosine limits allow about twice
    the largest shortfall from 1 (docs/backends.md has the runs).
    """

    logit: float
    logit_seen: float
    content_cosine: float
    content_seen: float
    distortion_cosine: float
    distortion_seen: float
    reference: str = "float32"


# When ``uvq-int8 build --backend all`` names a backend.
IN_ALL_ALWAYS = "always"
IN_ALL_WITH_BUDGET = "with a logit budget"  # --max-logit-delta given

_FLOAT_HEAD = {"aggregation": "float32"}
BUILTIN_BACKENDS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "float32": {
        "description": "Reference: float32 weights and compute.",
        "recipe": "float32", "suffix": "", "in_all": IN_ALL_ALWAYS,
        # The baseline, held to PyTorch when the checkpoints are available; 1e-3 leaves
        # room for other CPUs' float summation order.
        "verify": VerifyLimits(1e-3, 1.6e-5, 0.9999, 1.0, 0.9999, 1.0, reference="pytorch")},
    "fp16": {
        "description": "float16 weights: half the download, float32 speed and accuracy.",
        "recipe": "fp16_weights", "suffix": "_fp16", "in_all": IN_ALL_ALWAYS,
        "verify": VerifyLimits(0.02, 0.0136, 0.999, 0.99994, 0.999, 0.99998)},
    "int8": {
        "description": "The old guide's INT8: dynamic-range int8 weights (x0.29 size; slower "
                       "than float32 on x86 XNNPACK).",
        "recipe": "dynamic_wi8_afp32", "suffix": "_int8", "in_all": IN_ALL_ALWAYS,
        "verify": VerifyLimits(0.75, 0.507, 0.8, 0.909, 0.95, 0.978)},
    "int8-weight-only": {
        "description": "int8 weights, float activations and compute.",
        "recipe": "weight_only_wi8_afp32", "suffix": "_int8_wo", "in_all": IN_ALL_ALWAYS,
        "verify": VerifyLimits(0.85, 0.567, 0.95, 0.981, 0.98, 0.995)},
    "int4": {
        "description": "int4 convolution weights (smallest download), float activations.",
        "recipe": "dynamic_wi4_afp32", "suffix": "_int4", "in_all": IN_ALL_ALWAYS,
        "verify": VerifyLimits(2.75, 1.82, 0.2, 0.350, 0.75, 0.888)},
    "int8-static": {
        "description": "Calibrated full-integer int8 backbones (fastest on CPU); float "
                       "aggregation head.",
        "recipe": "static_wi8_ai8", "per_net": _FLOAT_HEAD, "suffix": "_int8_static",
        "in_all": IN_ALL_ALWAYS,
        # Natural calibration, percentile ranges and the 1x1 refit (recipe version 3): far
        # from float32 on verify's synthetic frames, closer on photographs (docs/backends.md).
        "verify": VerifyLimits(5.25, 3.42, 0.05, 0.147, 0.35, 0.670)},
    "auto": {
        "description": "The fastest configuration whose measured logit change is within a "
                       "budget (uvq-int8 build --backend auto --max-logit-delta D).",
        "recipe": "auto", "per_net": _FLOAT_HEAD, "suffix": "_auto",
        "in_all": IN_ALL_WITH_BUDGET,
        # Held to its own build's budget (uvq_int8.verify.thresholds.auto_thresholds).
        "verify": None},
})


# --------------------------------------------------------------------------- backends


@runtime_checkable
class BackendLike(Protocol):
    name: str
    description: str

    def model_paths(self, model_dir: str | Path) -> dict[str, Path]: ...


def model_filename(net: str, suffix: str = "") -> str:
    return f"{net}_net{suffix}.tflite"


@dataclass(frozen=True)
class Backend:
    """One set of three model files, each made by a named recipe."""

    name: str
    description: str
    recipes: Mapping[str, str]
    suffix: str = ""

    def __post_init__(self) -> None:
        missing = [n for n in NETS if n not in self.recipes]
        if missing:
            raise ValueError(f"backend {self.name!r} has no recipe for {', '.join(missing)}")
        object.__setattr__(self, "recipes", MappingProxyType(dict(self.recipes)))

    def filenames(self) -> dict[str, str]:
        return {net: model_filename(net, self.suffix) for net in NETS}

    def model_paths(self, model_dir: str | Path) -> dict[str, Path]:
        root = Path(model_dir).expanduser()
        return {net: root / name for net, name in self.filenames().items()}

    @property
    def calibrated(self) -> bool:
        """Whether building it needs calibration frames."""
        return any(RECIPES[r].calibrated for r in self.recipes.values() if r in RECIPES)


@dataclass(frozen=True)
class MixedBackend:
    """Per-net choice, e.g. ``content=fp16,distortion=int8-static,aggregation=float32``."""

    parts: Mapping[str, BackendLike]

    @property
    def name(self) -> str:
        return ",".join(f"{net}={self.parts[net].name}" for net in NETS)

    @property
    def description(self) -> str:
        return "per-net mix: " + self.name

    @property
    def recipes(self) -> dict[str, str]:
        return {net: getattr(self.parts[net], "recipes", {}).get(net, "?") for net in NETS}

    def model_paths(self, model_dir: str | Path) -> dict[str, Path]:
        return {net: Path(self.parts[net].model_paths(model_dir)[net]) for net in NETS}


def builtin(name: str) -> Backend:
    """The built-in backend of a ``BUILTIN_BACKENDS`` row."""
    row = BUILTIN_BACKENDS[name]
    per_net = row.get("per_net", {})
    return Backend(name, row["description"],
                   {net: per_net.get(net, row["recipe"]) for net in NETS}, row["suffix"])


# The objects the entry points in setup.cfg name (a test checks setup.cfg against the
# table). Built-ins are found through the entry points like any third-party backend.
FLOAT32 = builtin("float32")
FP16 = builtin("fp16")
INT8 = builtin("int8")
INT8_WEIGHT_ONLY = builtin("int8-weight-only")
INT4 = builtin("int4")
INT8_STATIC = builtin("int8-static")
AUTO = builtin("auto")
BUILTIN_ORDER = tuple(BUILTIN_BACKENDS)


class UnknownBackendError(UserError):
    pass


def discover(warn=None) -> dict[str, BackendLike]:
    """Load every ``uvq.backends`` entry point; a broken one is a warning, not fatal."""
    warn = warn or log.warning
    found: dict[str, BackendLike] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, BackendLike):
                obj = obj()
            if not isinstance(obj, BackendLike):
                raise TypeError("object lacks name/description/model_paths")
        except Exception as exc:  # a third-party plugin must not take the host down
            warn(f"backend entry point {ep.name!r} ({ep.value}) is broken and was skipped: {exc}")
            continue
        found[ep.name] = obj
    order = {name: i for i, name in enumerate(BUILTIN_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class BackendSpec:
    """A parsed ``--backend`` value: a list of names (``all`` included) or a per-net mix."""

    names: tuple[str, ...] = ()
    mix: Mapping[str, str] | None = None  # net -> backend name

    @property
    def is_mix(self) -> bool:
        return self.mix is not None


def parse_spec(text: str | Sequence[str]) -> BackendSpec:
    """The one reader of backend specs: ``int8``, ``fp16,int8``, ``all`` or a per-net mix
    ``content=A,distortion=B,aggregation=C`` (each net once, all three).

    A value that mixes a list of names with a per-net mix is an error: the comma would
    mean two things at once. A sequence of values (``--backend a --backend b``) is read
    as one comma list.
    """
    raw = text if isinstance(text, str) else ",".join(text)
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise UnknownBackendError("no backend given; name one (e.g. float32), a comma list, "
                                  "'all', or a per-net mix content=A,distortion=B,aggregation=C")
    with_net = [item for item in items if "=" in item]
    if not with_net:
        return BackendSpec(tuple(dict.fromkeys(items)))
    if len(with_net) != len(items):
        names = ", ".join(repr(i) for i in items if "=" not in i)
        raise UnknownBackendError(
            f"backend {raw!r} mixes a list of backends ({names}) with a per-net mix; give "
            f"either names (int8,fp16) or one mix content=A,distortion=B,aggregation=C")
    mix: dict[str, str] = {}
    for item in items:
        net, _, name = (part.strip() for part in item.partition("="))
        if net not in NETS:
            raise UnknownBackendError(f"unknown net {net!r} in {raw!r}; nets are "
                                      f"{', '.join(NETS)}")
        if net in mix:
            raise UnknownBackendError(f"backend mix {raw!r} names the {net} net twice")
        if not name:
            raise UnknownBackendError(f"backend mix {raw!r} gives no backend for {net}")
        mix[net] = name
    missing = [n for n in NETS if n not in mix]
    if missing:
        raise UnknownBackendError(
            f"backend mix {raw!r} does not say which backend to use for {', '.join(missing)}")
    return BackendSpec(mix=MappingProxyType(mix))


def get_backend(spec: str, available: Mapping[str, BackendLike] | None = None) -> BackendLike:
    """One backend: a name, or a per-net mix ``content=A,distortion=B,aggregation=C``."""
    available = discover() if available is None else available
    parsed = parse_spec(spec)
    if parsed.mix is not None:
        return MixedBackend(MappingProxyType(
            {net: _lookup(name, available) for net, name in parsed.mix.items()}))
    if len(parsed.names) != 1:
        raise UnknownBackendError(f"{spec!r} names {len(parsed.names)} backends; one is "
                                  f"needed here (a name or a per-net mix)")
    return _lookup(parsed.names[0], available)


def _lookup(name: str, available: Mapping[str, BackendLike]) -> BackendLike:
    if name in available:
        return available[name]
    hint = difflib.get_close_matches(name, list(available), n=1)
    msg = f"unknown backend {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    msg += "; known backends: " + ", ".join(available)
    raise UnknownBackendError(msg)


# --------------------------------------------------------------------------- "all"


def buildable(backend: Any) -> bool:
    """Whether ``uvq-int8 build`` can make a backend's files (its recipes are ours)."""
    recipes = getattr(backend, "recipes", None)
    return (hasattr(backend, "filenames") and isinstance(recipes, Mapping)
            and all(recipes.get(net) in RECIPES for net in NETS))


def buildable_backends(include_auto: bool,
                       available: Mapping[str, BackendLike] | None = None) -> list[BackendLike]:
    """What ``all`` means to ``build`` (and the demo): every registered backend whose
    recipes uvq-int8 can make, in registry order; a row whose ``in_all`` rule is "with a
    logit budget" (auto) only with ``include_auto``, i.e. when a budget was given."""
    available = discover() if available is None else available
    out = []
    for name, backend in available.items():
        rule = BUILTIN_BACKENDS.get(name, {}).get("in_all", IN_ALL_ALWAYS)
        if buildable(backend) and (rule == IN_ALL_ALWAYS or include_auto):
            out.append(backend)
    return out


def backends_with_files(model_dir: str | Path,
                        available: Mapping[str, BackendLike] | None = None) -> list[BackendLike]:
    """What ``all`` means to ``verify``: every registered backend with at least one of its
    files in ``model_dir``, in registry order (one with only some files fails at load,
    naming them)."""
    available = discover() if available is None else available
    return [b for b in available.values()
            if any(Path(p).is_file() for p in b.model_paths(model_dir).values())]
