#!/usr/bin/env bash
# The main job: set up everything on a fresh machine, import the shipped zoo into the BentoML
# model store, and serve it on http://127.0.0.1:${PORT:-3000} (Ctrl-C stops it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
knet store
exec knet serve --port "${PORT:-3000}"
