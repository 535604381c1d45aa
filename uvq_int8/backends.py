"""Backends: what each model set is, and the registry that finds them.

A backend is a small immutable description. Every backend, ours included,
is found through the ``uvq.backends`` entry-point group; an entry point
resolves to an object with ``name``, ``description``, ``recipes`` and
``model_paths(model_dir) -> {"content": Path, "distortion": Path,
"aggregation": Path}`` (the contract in docs/plugins.md).
"""

from __future__ import annotations

import difflib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Protocol, runtime_checkable

if sys.version_info >= (3, 10):
    from importlib.metadata import entry_points
else:  # pragma: no cover
    from importlib_metadata import entry_points

from uvq_int8.errors import UserError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "uvq.backends"
NETS = ("content", "distortion", "aggregation")

# Recipe names say what they do, in ai-edge-quantizer's vocabulary.
RECIPES = {
    "float32": "no quantization",
    "fp16_weights": "float16 weights, dequantized at load; float32 compute",
    "dynamic_wi8_afp32": "int8 channelwise weights; activations quantized on the fly (dynamic range)",
    "weight_only_wi8_afp32": "int8 channelwise weights dequantized to float; float32 compute",
    "dynamic_wi4_afp32": "int4 channelwise convolution and FC weights; float activations",
    "static_wi8_ai8": "int8 weights and int8 activations from calibration (full integer)",
    "auto": "chosen per build by measurement: float32, fp16 weights, full-integer int8 or "
            "int8 with named op groups float (uvq-int8 build --max-logit-delta)",
}


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


def _uniform(name: str, description: str, recipe: str, suffix: str, **per_net: str) -> Backend:
    return Backend(name, description, {net: per_net.get(net, recipe) for net in NETS}, suffix)


# The objects the entry points in setup.cfg name. Built-ins are found through
# the entry points like any third-party backend.
FLOAT32 = _uniform("float32", "Reference: float32 weights and compute.", "float32", "")
FP16 = _uniform("fp16", "float16 weights: half the download, float32 speed and accuracy.",
                "fp16_weights", "_fp16")
INT8 = _uniform("int8", "The old guide's INT8: dynamic-range int8 weights "
                "(x0.29 size; slower than float32 on x86 XNNPACK).", "dynamic_wi8_afp32", "_int8")
INT8_WEIGHT_ONLY = _uniform("int8-weight-only", "int8 weights, float activations and compute.",
                            "weight_only_wi8_afp32", "_int8_wo")
INT4 = _uniform("int4", "int4 convolution weights (smallest download), float activations.",
                "dynamic_wi4_afp32", "_int4")
INT8_STATIC = _uniform("int8-static", "Calibrated full-integer int8 backbones (fastest on CPU); "
                       "float aggregation head.", "static_wi8_ai8", "_int8_static",
                       aggregation="float32")
AUTO = _uniform("auto", "The fastest configuration whose measured logit change is within a "
                "budget (uvq-int8 build --backend auto --max-logit-delta D).", "auto", "_auto",
                aggregation="float32")
BUILTIN_ORDER = ("float32", "fp16", "int8", "int8-weight-only", "int4", "int8-static", "auto")


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


def get_backend(spec: str, available: Mapping[str, BackendLike] | None = None) -> BackendLike:
    """A backend by name, or a per-net mix ``content=A,distortion=B,aggregation=C``."""
    available = discover() if available is None else available
    spec = spec.strip()
    if "=" in spec:
        parts: dict[str, BackendLike] = {}
        for item in spec.split(","):
            net, _, name = item.partition("=")
            net, name = net.strip(), name.strip()
            if net not in NETS:
                raise UnknownBackendError(
                    f"unknown net {net!r} in {spec!r}; nets are {', '.join(NETS)}")
            parts[net] = _lookup(name, available)
        missing = [n for n in NETS if n not in parts]
        if missing:
            raise UnknownBackendError(
                f"backend mix {spec!r} does not say which backend to use for {', '.join(missing)}")
        return MixedBackend(MappingProxyType(parts))
    return _lookup(spec, available)


def _lookup(name: str, available: Mapping[str, BackendLike]) -> BackendLike:
    if name in available:
        return available[name]
    hint = difflib.get_close_matches(name, list(available), n=1)
    msg = f"unknown backend {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    msg += "; known backends: " + ", ".join(available)
    raise UnknownBackendError(msg)
