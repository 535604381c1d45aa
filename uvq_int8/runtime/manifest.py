"""manifest.json: how every model file in a directory was made, and its sha256.

One manifest per model directory, merged across builds of different backends.
The schema lives here and only here (``FORMAT_VERSION``, ``FILE_FIELDS``,
``BUILD_FIELDS``), and so does reading it: ``load`` is the one reader. The
manifest is written atomically (``uvq_int8.util``), so an interrupted build never
leaves a truncated file under its final name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from uvq_int8.errors import ModelFilesError
from uvq_int8.util import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
MAX_BUILD_RECORDS = 20

# field -> JSON type(s); every file entry and build record must have exactly these.
FILE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "filename": str,
    "backend": str,
    "net": str,
    "recipe": str,
    "recipe_options": dict,
    "size": int,
    "sha256": str,
    "checkpoint": dict,           # {"path": str, "sha256": str}
    "built_at": str,              # ISO 8601, UTC
    "build_id": str,
    "tensors_by_dtype": dict,
    "constant_tensors_by_dtype": dict,
    "quantized_tensors_by_dtype": dict,
    "conv_weights_by_dtype": dict,
    "int4_conv_weights": int,
    "ops_by_name": dict,
    "inputs": list,               # [{IO_FIELDS}] in subgraph order
    "outputs": list,              # aggregation: score (output_0), then logit (output_1)
}
BUILD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "build_id": str,
    "started_at": str,
    "finished_at": str,
    "seconds": (int, float),
    "tools": dict,                # distribution -> version (or null), plus "python"
    "checkpoints": dict,          # net -> {"path", "sha256"}
    "calibration": (dict, type(None)),
    "peak_rss_bytes": dict,       # {"self", "children", "max", "concurrent"}
    "conversions": list,          # per net: seconds, peak RSS, max |tflite - torch| check
    "backends": list,
    "built": list,
    "skipped": list,
    "failed": list,
}
# Present only in some build records: the auto search (uvq_int8.convert.auto.AutoResult.as_dict()).
OPTIONAL_BUILD_FIELDS: dict[str, type | tuple[type, ...]] = {"auto": dict}
IO_FIELDS = ("index", "name", "signature_name", "role", "shape", "dtype", "scale", "zero_point")


class ManifestError(ModelFilesError):
    """A manifest that cannot be read or does not follow the schema."""


class ManifestVersionError(ManifestError):
    """A manifest written by a newer uvq-int8 (a format this one does not know)."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    """The parsed manifest: file entries by filename, and recent build records."""

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    builds: list[dict[str, Any]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "generator": "uvq-int8",
                "files": {k: self.files[k] for k in sorted(self.files)},
                "builds": self._kept_builds()}

    def _kept_builds(self) -> list[dict[str, Any]]:
        # The newest records, plus any older one a file still points to (its tool versions).
        referenced = {entry.get("build_id") for entry in self.files.values()}
        newest = len(self.builds) - MAX_BUILD_RECORDS
        return [b for i, b in enumerate(self.builds)
                if i >= newest or b.get("build_id") in referenced]

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=False) + "\n"

    def hashes(self) -> dict[str, str]:
        return {name: entry["sha256"] for name, entry in self.files.items()}


def validate(data: Any) -> list[str]:
    """Problems with a manifest's JSON (empty list: it follows the schema)."""
    if not isinstance(data, dict):
        return ["the manifest is not a JSON object"]
    problems: list[str] = []
    version = data.get("format_version")
    if not isinstance(version, int):
        problems.append("format_version is missing or not an integer")
    elif version > FORMAT_VERSION:
        problems.append(f"format_version {version} is newer than this uvq-int8 reads "
                        f"({FORMAT_VERSION}); upgrade uvq-int8")
    files = data.get("files")
    if not isinstance(files, dict):
        problems.append("files is missing or not an object")
        files = {}
    for name, entry in files.items():
        problems += [f"files[{name!r}]: {p}" for p in _check_fields(entry, FILE_FIELDS)]
        if isinstance(entry, dict) and entry.get("filename") not in (None, name):
            problems.append(f"files[{name!r}]: filename is {entry.get('filename')!r}")
        if isinstance(entry, dict) and isinstance(entry.get("checkpoint"), dict):
            problems += [f"files[{name!r}].checkpoint: {p}"
                         for p in _check_fields(entry["checkpoint"], {"path": str, "sha256": str})]
        for kind in ("inputs", "outputs"):
            for i, port in enumerate(entry.get(kind, []) if isinstance(entry, dict) else []):
                missing = [k for k in IO_FIELDS if not isinstance(port, dict) or k not in port]
                if missing:
                    problems.append(f"files[{name!r}].{kind}[{i}]: missing {', '.join(missing)}")
    builds = data.get("builds", [])
    if not isinstance(builds, list):
        problems.append("builds is not a list")
        builds = []
    for i, record in enumerate(builds):
        problems += [f"builds[{i}]: {p}" for p in _check_fields(record, BUILD_FIELDS)]
        if isinstance(record, dict):
            problems += [f"builds[{i}]: {key} has type {type(record[key]).__name__}"
                         for key, kind in OPTIONAL_BUILD_FIELDS.items()
                         if key in record and not isinstance(record[key], kind)]
    return problems


def _check_fields(obj: Any, schema: Mapping[str, type | tuple[type, ...]]) -> list[str]:
    if not isinstance(obj, dict):
        return ["not an object"]
    problems = []
    for key, kind in schema.items():
        if key not in obj:
            problems.append(f"missing {key}")
        elif not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            problems.append(f"{key} has type {type(obj[key]).__name__}")
    return problems


def manifest_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / MANIFEST_NAME


def load(model_dir: str | Path) -> Manifest:
    """The manifest in ``model_dir``; an empty one if there is none yet."""
    path = manifest_path(model_dir)
    if not path.is_file():
        return Manifest()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"manifest {path} is unreadable: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ManifestVersionError(f"manifest {path} has format_version {version}, newer than "
                                   f"this uvq-int8 reads ({FORMAT_VERSION}); upgrade uvq-int8")
    problems = validate(data)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ManifestError(f"manifest {path} is not valid: {'; '.join(problems[:3])}{more}")
    return Manifest(files=dict(data["files"]), builds=list(data.get("builds", [])),
                    format_version=data["format_version"])


def entries(model_dir: str | Path) -> dict[str, dict[str, Any]] | None:
    """filename -> file entry of the manifest in ``model_dir``; None when there is none."""
    if not manifest_path(model_dir).is_file():
        return None
    return load(model_dir).files


def save(manifest: Manifest, model_dir: str | Path) -> Path:
    """Validate and write atomically."""
    data = manifest.as_dict()
    problems = validate(data)
    if problems:  # a bug in the writer, never the user's doing
        raise ValueError("refusing to write an invalid manifest: " + "; ".join(problems[:5]))
    path = manifest_path(model_dir)
    return atomic_write_text(path, manifest.to_json())


def update(model_dir: str | Path, entries: Mapping[str, dict[str, Any]] = (),
           build: dict[str, Any] | None = None) -> Manifest:
    """Re-read the manifest, merge new file entries (and a build record), write it back.

    Re-reading first keeps entries that another build wrote in the meantime.
    """
    try:
        current = load(model_dir)
    except ManifestError:
        current = Manifest()  # the caller already decided to replace a broken manifest
    current.format_version = FORMAT_VERSION
    current.files.update({name: dict(entry) for name, entry in dict(entries).items()})
    if build is not None:
        current.builds.append(dict(build))
    save(current, model_dir)
    return current


def auto_record(manifest: Manifest, filename: str) -> dict[str, Any] | None:
    """The auto search record of the build that made ``filename`` (None if not an auto file)."""
    entry = manifest.files.get(filename) or {}
    if entry.get("recipe") != "auto":
        return None
    for record in reversed(manifest.builds):
        if record.get("build_id") == entry.get("build_id") and isinstance(record.get("auto"), dict):
            return record["auto"]
    return None


def file_entry(**values: Any) -> dict[str, Any]:
    """A file entry with exactly the schema's fields (a missing or extra field is a bug)."""
    missing = [k for k in FILE_FIELDS if k not in values]
    extra = [k for k in values if k not in FILE_FIELDS]
    if missing or extra:
        raise ValueError(f"file entry: missing {missing}, unexpected {extra}")
    return {k: values[k] for k in FILE_FIELDS}


def as_plain(obj: Any) -> Any:
    """Dataclasses/paths -> JSON-ready values."""
    if hasattr(obj, "__dataclass_fields__"):
        return as_plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): as_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
