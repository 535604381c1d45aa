"""Small helpers every part of uvq-int8 shares: atomic writes, sha256, a quiet fd 2,
the usable cores, and what tools and machine a result was made with.

This is the only place that renames a temporary file into place or calls fsync;
everything that writes a file the user keeps goes through ``atomic_path`` (for a
tool that writes the file itself, such as ffmpeg) or ``atomic_writer``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import sys
import tempfile
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Iterator

TEMP_MARKER = ".uvq-tmp-"
# The SIMD features that decide int8 speed: XNNPACK's AVX-512 int8 kernels need bw and vl
# besides f, VNNI adds the int8 dot product, AMX the tile units; on ARM, asimddp (dot
# product) and i8mm (int8 matrix multiply).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                "amx_tile", "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def isa_name(features: Iterable[str]) -> str:
    """The instruction-set tier that int8 speed follows, from ``machine_info()["cpu_features"]``."""
    have = set(features)
    if {"amx_tile", "amx_int8"} <= have:
        return "amx"
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= have:
        return "avx512_vnni"
    if {"avx512f", "avx512bw", "avx512vl"} <= have:
        return "avx512"
    if "avx_vnni" in have and "avx2" in have:
        return "avx_vnni"
    if "avx2" in have:
        return "avx2"
    if "i8mm" in have:
        return "arm_i8mm"
    if "asimddp" in have:
        return "arm_dotprod"
    if "asimd" in have:
        return "arm_neon"
    return "generic"
# The distributions whose versions a build or a measurement records.
TOOL_DISTRIBUTIONS = ("uvq-int8", "numpy", "ai-edge-litert", "torch", "litert-torch",
                      "ai-edge-quantizer")


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was. The
    parent directory is created if needed. ``suffix`` keeps an extension for tools
    that choose a format by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}", suffix=suffix,
                                dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        # mkstemp makes the file private (0600); what we write is meant to be shared.
        try:
            perms = path.stat().st_mode & 0o777
        except OSError:
            perms = 0o644
        os.chmod(tmp, perms)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.filename is None:  # e.g. ENOSPC from write(): say which file it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """An open file (``mode`` "wb" or "w") that replaces ``path`` atomically on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_writer(path, "w") as fh:
        fh.write(text)
    return Path(path)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not all platforms allow opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- native output


@contextlib.contextmanager
def quiet_fd2(log: logging.Logger | None = None) -> Iterator[None]:
    """Send what native code writes to fd 2 (XNNPACK notices, absl logs, tqdm bars) to a
    scratch file meanwhile; with ``log``, pass it on at debug level afterwards.

    Python-level redirection cannot catch C++ writes to fd 2. Only stderr is taken:
    progress displays draw on stdout from other threads.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if log is not None:
                sink.seek(0)
                text = sink.read().decode(errors="replace").strip()
                if text:
                    log.debug("native output: %s", text)


# --------------------------------------------------------------------------- provenance


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def tool_versions(distributions: Iterable[str] = TOOL_DISTRIBUTIONS) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent), plus "python"."""
    out: dict[str, str | None] = {}
    for dist in distributions:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    out["python"] = platform.python_version()
    return out


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, tuple[str, ...]]:
    """(CPU model name, the ``CPU_FEATURES`` it has), read once from /proc/cpuinfo."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FEATURES if f in have]
    except OSError:
        pass
    return cpu, tuple(flags)


def machine_info() -> dict[str, Any]:
    """The CPU (model name and the SIMD features that decide int8 speed), cores, OS, and
    the versions of the tools that ran."""
    cpu, features = cpu_features()
    flags = list(features)
    versions = tool_versions()
    return {"cpu": cpu, "cpu_features": flags, "isa": isa_name(flags), "cores": os.cpu_count(),
            "machine": platform.machine(), "system": platform.system(),
            "platform": platform.platform(), "python": versions.pop("python"),
            "packages": versions}
