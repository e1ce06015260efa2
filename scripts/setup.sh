#!/usr/bin/env bash
# Creates .venv if missing and installs edgedistill with its pinned stack (sourced by demo.sh and test.sh).
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.edgedistill-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch first and exact: pip takes the CPU wheel; a bare range would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    echo "$want" > "$stamp"
fi
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 HF_HUB_OFFLINE=1 NNCF_EXTENSION_LOAD_TIMEOUT=300
