#!/usr/bin/env bash
# Serena: set up (venv/ + pinned requirements incl. test tools) when needed, then run the whole test
# suite with the coverage gate, on two processes (pytest-xdist, whole files to one process; set
# SERENA_TEST_WORKERS, or pass -n 0 to run in one). Extra arguments go to pytest (e.g. -k golden).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source .ci/setup_env.sh requirements-test.txt || exit 1
"$SERENA_PYTHON" launch.py --exit
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$SERENA_PYTHON" -m pytest -n "${SERENA_TEST_WORKERS:-2}" --dist loadfile "$@"
