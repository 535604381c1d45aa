"""Shared fixtures. Golden data is used in place from ../shared/uvq_reference."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reference_dir() -> Path:
    env = os.environ.get("UVQ_REFERENCE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "uvq_reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    path = _reference_dir()
    if not (path / "golden_frames.npz").is_file():
        pytest.skip(f"reference data not found at {path} (set UVQ_REFERENCE_DIR)")
    return path


# Agreement with upstream's goldens, which were computed on an AVX-512 CPU. float32 sums in
# another order (AVX2 kernels, another batch size) differ in proportion to the magnitudes
# summed: the golden frames' distortion features peak at ~35 and moved by 1.06e-4 on an
# AVX2 EPYC (3e-6 of the peak). So the limit scales with the golden's peak magnitude,
# over an absolute floor. A real error is orders
# of magnitude larger: the fork's wrong patch tiling moved features by 12.9.
GOLDEN_ATOL = 1e-4
GOLDEN_RTOL = 1e-5


def golden_limit(want) -> float:
    """The largest absolute difference from a golden array that summation order explains."""
    import numpy as np

    return GOLDEN_ATOL + GOLDEN_RTOL * float(np.abs(np.asarray(want, np.float64)).max())


def assert_golden(got, want, what: str = "values") -> None:
    import numpy as np

    diff = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    assert diff <= golden_limit(want), f"{what}: max |diff| {diff:.3g} > {golden_limit(want):.3g}"


@pytest.fixture(scope="session")
def golden_close():
    """``golden_close(got, want, what)``: asserts agreement within ``golden_limit``."""
    return assert_golden


@pytest.fixture(scope="session")
def golden_limit_of():
    """``golden_limit_of(want)``: the limit ``golden_close`` holds ``want`` to."""
    return golden_limit


@pytest.fixture(scope="session")
def golden_frames(reference_dir):
    import numpy as np

    return dict(np.load(reference_dir / "golden_frames.npz"))


HOST_MODULE = "uvq1p5_pytorch/utils/uvq_backends.py"  # the host module patches/ adds


@pytest.fixture()
def host(tmp_path, clean_env):
    """The patched host's resolver, loaded from the patch into a fake checkout."""
    import importlib.util

    from uvq_int8 import patching

    fp = next(f for p in patching.load_series() for f in p.files if f.path == HOST_MODULE)
    path = tmp_path / "checkout" / HOST_MODULE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(fp.hunks[0].new))
    spec = importlib.util.spec_from_file_location("uvq_backends_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    """No UVQ_* variables and an empty per-user config/data home."""
    for key in list(os.environ):
        if key.startswith("UVQ_") and key != "UVQ_REFERENCE_DIR":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    return tmp_path


# --------------------------------------------------------------------------- the shared build

REFERENCE_CHECKPOINTS = {"content": "content_net_proxy.pth",
                         "distortion": "distortion_net_proxy.pth",
                         "aggregation": "aggregation_net.pth"}


def reference_checkpoints(reference_dir: Path) -> dict[str, Path]:
    return {net: reference_dir / name for net, name in REFERENCE_CHECKPOINTS.items()}


@pytest.fixture(scope="session")
def build_all(reference_dir, tmp_path_factory):
    """``--backend all`` built once per session from the reference checkpoints.

    Returns a namespace: ``path`` (the model directory), ``summary`` (BuildSummary),
    ``options`` (the BuildOptions used) and ``seconds``.
    """
    import time
    from types import SimpleNamespace

    for module in ("torch", "litert_torch", "ai_edge_quantizer"):
        pytest.importorskip(module)
    from uvq_int8 import convert

    out = tmp_path_factory.mktemp("build_all") / "uvq1.5"
    # The defaults a user gets, calibration included (16 synthetic frames).
    options = convert.BuildOptions(checkpoints=reference_checkpoints(reference_dir), out_dir=out,
                                 backends="all")
    started = time.perf_counter()
    summary = convert.build(options)
    return SimpleNamespace(path=out, summary=summary, options=options,
                           seconds=time.perf_counter() - started)


@pytest.fixture(scope="session")
def built_models(build_all) -> Path:
    """The directory holding every backend's files and manifest.json."""
    return build_all.path


def _make_plugin(root: Path, good: bool = True, broken: bool = True) -> Path:
    """A minimal installed distribution registering backends via uvq.backends."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "uvq_extra_backend.py").write_text(textwrap.dedent("""
        from uvq_int8.backends import Backend
        EXTRA = Backend("extra", "Test plugin: float32 files under another name.",
                        {"content": "float32", "distortion": "float32",
                         "aggregation": "float32"}, "_extra")
    """))
    dist = root / "uvq_extra_backend-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uvq-extra-backend\nVersion: 0.1\n")
    lines = ["[uvq.backends]"]
    if good:
        lines.append("extra = uvq_extra_backend:EXTRA")
    if broken:
        lines.append("broken = uvq_no_such_module:THING")
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def make_plugin():
    """``make_plugin(root, good=True, broken=True)``: a minimal installed distribution that
    registers backends through the ``uvq.backends`` entry points; returns its folder."""
    return _make_plugin


class _BuildHelpers:
    """What the build's tests share: checkpoint arguments, a failing command, a copy."""

    @staticmethod
    def ckpt_args(reference_dir: Path, **override: Path) -> list[str]:
        from uvq_int8.backends import NETS

        paths = {**reference_checkpoints(reference_dir), **override}
        return [arg for net in NETS for arg in (f"--{net}", str(paths[net]))]

    @staticmethod
    def fails(argv, capsys, *fragments) -> str:
        """Run ``uvq-int8 build ARGV``; assert exit 1, a one-line error with ``fragments``."""
        from uvq_int8.cli.main import main

        code = main(["build", *argv])
        err = capsys.readouterr().err
        assert code == 1, err
        for fragment in fragments:
            assert fragment in err, err
        assert "Traceback" not in err
        return err

    @staticmethod
    def copy_subset(src: Path, dest: Path, names) -> Path:
        """``names`` of a model directory, with its manifest, copied to ``dest``."""
        import shutil

        from uvq_int8.runtime import manifest as mf

        dest.mkdir(parents=True)
        for name in names:
            shutil.copy2(src / name, dest / name)
        shutil.copy2(src / mf.MANIFEST_NAME, dest / mf.MANIFEST_NAME)
        return dest


@pytest.fixture(scope="session")
def build_helpers() -> _BuildHelpers:
    return _BuildHelpers()
