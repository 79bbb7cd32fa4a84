#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, a project virtualenv, the package.
# Sourced by scripts/serve.sh and .ci/run; safe to run again (it skips what is there).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v ngspice >/dev/null 2>&1; then
    echo "[setup] installing ngspice (Debian package)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ngspice >/dev/null
fi

# Test-only system packages, opt-in (.ci/run sets KNET_SETUP_TEST=1; serving never installs them):
# headless Chromium and its driver for the web-page tests (tests/test_service_ui.py).
if [ "${KNET_SETUP_TEST:-0}" = 1 ] && { ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromedriver ]; }; then
    echo "[setup] installing chromium and chromium-driver (Debian packages, tests only)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
STAMP=.venv/.knet-installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "[setup] installing Python packages (torch==2.13.0 CPU wheel, bentoml, …)"
    pip install -q --disable-pip-version-check -e ".[test]"
    touch "$STAMP"
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export BENTOML_DO_NOT_TRACK=True
export BENTOML_HOME="${BENTOML_HOME:-$ROOT/.bentoml}"
