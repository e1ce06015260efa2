#!/usr/bin/env bash
# Creates .venv if missing and installs edgedistill with its pinned stack (sourced by demo.sh and test.sh).
# Reinstalls only when pyproject.toml (or EDGEDISTILL_VISION) changed since the last install.
# EDGEDISTILL_VISION=0: no timm/torchvision, torch's 1.5 GB CPU wheel instead of the 5 GB CUDA pair.
# EDGEDISTILL_EDGE=0: no ExecuTorch or LiteRT (the executorch and litert extras, about 1 GB; their formats and
# tests are then unavailable and skip).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.edgedistill-installed
vision=${EDGEDISTILL_VISION:-1}
edge=${EDGEDISTILL_EDGE:-1}
want="$(sha256sum pyproject.toml | cut -d' ' -f1) vision=$vision edge=$edge"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "$vision" = 1 ]; then
        # torchvision 0.28.0 exists only as a CUDA 13 build, which fails to import beside torch's CPU wheel; torch's
        # CUDA build of the same release runs on the CPU too. "===" rules out a local 2.13.0+cpu wheel, which "=="
        # would accept.
        .venv/bin/python -m pip install --quiet "torch===2.13.0" "torchvision==0.28.0"
        extras="test,vision"
    else
        # torch first and exact: pip takes the CPU wheel; a bare range would pull a multi-GB CUDA build.
        .venv/bin/python -m pip install --quiet "torch==2.13.0"
        extras="test"
    fi
    if [ "$edge" = 1 ]; then
        extras="$extras,executorch,litert"
    fi
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    if [ "$edge" = 1 ]; then
        # The LiteRT converter without its declared dependencies (pyproject.toml's litert extra says why).
        .venv/bin/python -m pip install --quiet --no-deps "litert-torch==0.10.0" "litert-converter==0.5.0" \
            "ai-edge-quantizer==0.10.0"
    fi
    echo "$want" > "$stamp"
fi
export TORCHAO_FORCE_SKIP_LOADING_SO_FILES=1 HF_HUB_OFFLINE=1 NNCF_EXTENSION_LOAD_TIMEOUT=300
