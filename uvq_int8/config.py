"""Effective settings and where each came from.

One precedence chain for every value: command-line flag, then environment
(``UVQ_BACKEND``, ``UVQ_MODEL_DIR``, ``UVQ_THREADS``, ``UVQ_DECODER``, ``UVQ_AUDIT``,
``UVQ_AUDIT_BUDGET``, ``UVQ_AUDIT_STRICT``), then the TOML config file
(``UVQ_CONFIG``, else ``$XDG_CONFIG_HOME/uvq/config.toml``), then the
default. The patched upstream host (patches/) follows the same chain for the
backend, model directory and threads, and accepts (ignores) the decoder and audit keys.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from uvq_int8.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_BACKEND = "UVQ_BACKEND"
ENV_MODEL_DIR = "UVQ_MODEL_DIR"
ENV_THREADS = "UVQ_THREADS"
ENV_DECODER = "UVQ_DECODER"
ENV_CONFIG = "UVQ_CONFIG"
DEFAULT_BACKEND = "float32"
# "pyav": uvq_int8.runtime.decode.pyav (packet-level, same frames); "ffmpeg": the command
# line (decode.ffmpeg_cli). uvq_int8.runtime.decode.DECODERS maps these names to decoders.
DECODERS = ("pyav", "ffmpeg")
DEFAULT_DECODER = "pyav"
ENV_AUDIT = "UVQ_AUDIT"
ENV_AUDIT_BUDGET = "UVQ_AUDIT_BUDGET"
ENV_AUDIT_STRICT = "UVQ_AUDIT_STRICT"
KEYS = ("backend", "model_dir", "threads", "decoder", "audit", "audit_budget", "audit_strict")
_ENV = {"backend": ENV_BACKEND, "model_dir": ENV_MODEL_DIR, "threads": ENV_THREADS,
        "decoder": ENV_DECODER, "audit": ENV_AUDIT, "audit_budget": ENV_AUDIT_BUDGET,
        "audit_strict": ENV_AUDIT_STRICT}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(UserError):
    pass


def user_config_file(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "uvq" / "config.toml"


def default_model_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where ``uvq-int8 build`` writes without --out or --uvq-root."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "uvq" / "models"


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "flag", "env UVQ_BACKEND", "config /path", "default"


@dataclass(frozen=True)
class Config:
    backend: Setting
    model_dir: Setting
    threads: Setting
    config_file: Path
    config_file_found: bool
    decoder: Setting = Setting(DEFAULT_DECODER, "default")
    # The runtime audit (runtime/audit.py): fraction of frames (0 = off), budget (None = report
    # only), and whether a contradicted promise fails the run.
    audit: Setting = Setting(0.0, "default")
    audit_budget: Setting = Setting(None, "default")
    audit_strict: Setting = Setting(False, "default")

    def as_rows(self) -> list[tuple[str, str, str]]:
        return [(key, str(getattr(self, key).value), getattr(self, key).source) for key in KEYS]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            key: {"value": _plain(getattr(self, key).value), "source": getattr(self, key).source}
            for key in KEYS
        }
        out["config_file"] = {"path": str(self.config_file), "exists": self.config_file_found}
        return out


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    data = data.get("uvq", data)  # a [uvq] table or top-level keys
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                          f"known keys are {', '.join(KEYS)}")
    return data


def _threads(value: Any, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"threads from {source} must be a whole number, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"threads from {source} must be at least 1, got {n}")
    return n


def _decoder(value: Any, source: str) -> str:
    name = str(value).strip().lower()
    if name not in DECODERS:
        raise ConfigError(f"decoder from {source} must be one of {', '.join(DECODERS)}, "
                          f"got {value!r}")
    return name


def _audit(value: Any, source: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"audit from {source} must be a fraction of frames, got "
                          f"{value!r}") from None
    if not 0 <= f <= 1:
        raise ConfigError(f"audit from {source} must be between 0 (off) and 1, got {f}")
    return f


def _audit_budget(value: Any, source: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"audit_budget from {source} must be a logit change, got "
                          f"{value!r}") from None
    if not f >= 0 or f == float("inf"):
        raise ConfigError(f"audit_budget from {source} must be a non-negative number, got {f}")
    return f


def _strict(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"audit_strict from {source} must be true or false, got {value!r}")


_PARSE = {"decoder": _decoder, "audit": _audit, "audit_budget": _audit_budget, "audit_strict": _strict}


def resolve(backend: str | None = None, model_dir: str | Path | None = None,
            threads: int | None = None, env: Mapping[str, str] | None = None,
            decoder: str | None = None, audit: float | None = None,
            audit_budget: float | None = None, audit_strict: bool | None = None) -> Config:
    """Apply the precedence chain. Arguments are the command-line flags (None = unset)."""
    env = os.environ if env is None else env
    explicit = env.get(ENV_CONFIG)
    cfg_path = Path(explicit).expanduser() if explicit else user_config_file(env)
    file_values: dict[str, Any] = {}
    found = cfg_path.is_file()
    if explicit and not found:
        raise ConfigError(f"{ENV_CONFIG} names {cfg_path}, which does not exist")
    if found:
        file_values = read_config_file(cfg_path)

    flags = {"backend": backend, "model_dir": model_dir, "threads": threads, "decoder": decoder,
             "audit": audit, "audit_budget": audit_budget, "audit_strict": audit_strict}
    defaults = {"backend": DEFAULT_BACKEND, "model_dir": default_model_dir(env),
                "threads": default_threads(), "decoder": DEFAULT_DECODER, "audit": 0.0,
                "audit_budget": None, "audit_strict": False}
    settings: dict[str, Setting] = {}
    for key in KEYS:
        if flags[key] not in (None, ""):
            setting = Setting(flags[key], "flag")
        elif env.get(_ENV[key]):
            setting = Setting(env[_ENV[key]], f"env {_ENV[key]}")
        elif key in file_values:
            value = file_values[key]
            if key == "model_dir":
                value = (cfg_path.parent / Path(str(value)).expanduser())
            setting = Setting(value, f"config {cfg_path}")
        else:
            setting = Setting(defaults[key], "default")
        settings[key] = setting

    settings["model_dir"] = Setting(Path(str(settings["model_dir"].value)).expanduser(),
                                    settings["model_dir"].source)
    settings["threads"] = Setting(_threads(settings["threads"].value, settings["threads"].source),
                                  settings["threads"].source)
    settings["backend"] = Setting(str(settings["backend"].value).strip(), settings["backend"].source)
    for key, parse in _PARSE.items():
        settings[key] = Setting(parse(settings[key].value, settings[key].source),
                                settings[key].source)
    return Config(settings["backend"], settings["model_dir"], settings["threads"], cfg_path, found,
                  decoder=settings["decoder"], audit=settings["audit"],
                  audit_budget=settings["audit_budget"], audit_strict=settings["audit_strict"])
