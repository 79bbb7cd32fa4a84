#!/usr/bin/env bash
# The test command: set up everything on a fresh machine, then run the default test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m pytest -q -ra "$@"
