#!/usr/bin/env bash
# Set up a working environment from nothing: system ffmpeg, a virtualenv in .venv,
# the CPU build of torch (installed first, so nothing pulls a CUDA build), and
# uvq-int8 with its build and test extras.
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

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Nothing to do when this venv was set up from these very files (a re-run is quick and
# changes nothing); any change to them sets it up again.
STAMP=.venv/.uvq-setup-stamp
WANT="$(cat setup.cfg scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && .venv/bin/python -m pip show -q uvq-int8 >/dev/null 2>&1; then
    echo "setup: up to date (.venv)"
    exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
# ray: the Ray Data engine and its tests; it brings pyarrow (Parquet results).
.venv/bin/python -m pip install -q -e ".[build,test,ray]"
echo "$WANT" > "$STAMP"
echo "setup: done (.venv)"
