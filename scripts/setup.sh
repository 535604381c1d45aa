#!/usr/bin/env bash
# Set up a working environment from nothing: system ffmpeg, a virtualenv in .venv,
# the CPU build of torch (installed first, so nothing pulls a CUDA build), and
# uvq-int8 with its build, test and ray extras.
#
# Safe to run again: when .venv already holds what this version of the packaging asks
# for (a stamp records a hash of setup.cfg, pyproject.toml and this script), it changes
# nothing and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "setup: please install ffmpeg (ffmpeg and ffprobe on PATH)" >&2
        exit 1
    fi
fi

STAMP=.venv/.uvq-int8-setup
WANT=$(cat setup.cfg pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] &&
   .venv/bin/python -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in
       ('uvq_int8', 'torch', 'litert_torch', 'ai_edge_quantizer', 'skimage', 'av', 'pytest',
        'pytest_timeout', 'ray', 'pyarrow')))" 2>/dev/null; then
    echo "setup: already done (.venv)"
    exit 0
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# ray: the Ray Data engine and its tests; it brings pyarrow (Parquet results).
.venv/bin/python -m pip install -q -e ".[build,test,ray]"
echo "$WANT" > "$STAMP"
echo "setup: done (.venv)"
