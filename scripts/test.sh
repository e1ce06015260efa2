#!/usr/bin/env bash
# Sets up .venv and runs the test suite (about 22 minutes on 2 cores). Extra arguments go to pytest.
# `-m "not slow"` runs the fast lane (about 2 minutes); CI passes nothing and runs every test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
.venv/bin/python -m pytest -q "$@"
