"""The built wheel: every subpackage, and the patches from the top-level patches/ folder.

Builds a wheel from the files git would check out (so a file that .gitignore hides is
missing here too), installs it with --no-deps into a fresh venv that borrows this venv's
dependencies through a .pth line (offline and quick), and runs ``uvq-int8 patch --check``
from it.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _checkout(dest: Path) -> Path:
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listing):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    return dest


def test_setup_cfg_lists_every_package_folder():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "uvq_int8").rglob("__init__.py")}
    assert listed == found | {"uvq_int8.patches"}
    assert "uvq_int8.patches = patches" in cfg["options"]["package_dir"]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    tmp = tmp_path_factory.mktemp("wheel")
    src = _checkout(tmp / "src")
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("uvq_int8-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # A plain path line: this venv's packages (numpy, LiteRT, ...) without running its .pth
    # files, so the editable install of this checkout stays out.
    (site / "_borrowed_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv


def test_installed_wheel_carries_the_patches_and_runs_patch_check(wheel_venv, tmp_path):
    py = wheel_venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import uvq_int8, uvq_int8.runtime, uvq_int8.convert, uvq_int8.verify; "
            "from uvq_int8 import patching as P; "
            "print(uvq_int8.__file__); print(P.patch_dir()); "
            "print(*sorted(p.name for p in P.patch_dir().glob('*.patch')))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout.splitlines()
    assert Path(out[0]).is_relative_to(wheel_venv) and Path(out[1]).is_relative_to(wheel_venv)
    assert out[2].split() == sorted(p.name for p in (REPO / "patches").glob("*.patch"))
    for name in out[2].split():
        assert (Path(out[1]) / name).read_bytes() == (REPO / "patches" / name).read_bytes()

    empty = tmp_path / "not-uvq"
    empty.mkdir()
    result = subprocess.run([str(wheel_venv / "bin" / "uvq-int8"), "patch", "--check",
                             str(empty)], capture_output=True, text=True, env=env, cwd=tmp_path)
    # The series loaded from the wheel, and names the files it would patch.
    assert result.returncode == 1, result.stderr
    assert "not a madhuhegde/uvq checkout" in result.stderr
    assert "no patch files" not in result.stderr
