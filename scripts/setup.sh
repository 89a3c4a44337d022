#!/usr/bin/env bash
# Set up (or reuse) the project's virtual environment in .venv: pinned torch, then the package with its
# test extras. Safe to run again: it only installs when pyproject.toml changed since the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP="$VENV/.installed-$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch and torchvision pinned together: other torch builds break torchvision's import (see README)
  "$VENV/bin/python" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
