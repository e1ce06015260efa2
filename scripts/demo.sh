#!/usr/bin/env bash
# Sets up .venv and runs the main job on the built-in default: scikit-learn's digits, for a Pixel 8.
# Extra arguments go to `edgedistill compress` (e.g. --target iphone-15-pro, --force).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
.venv/bin/edgedistill compress --recipe digits --target pixel-8 --out runs/demo "$@"
echo "report: runs/demo/report.html"
