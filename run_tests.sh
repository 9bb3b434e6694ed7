#!/usr/bin/env bash
# Serena: set up (venv/ + pinned requirements incl. test tools) when needed, then run the whole test
# suite with the coverage gate. Extra arguments go to pytest (e.g. ./run_tests.sh -k golden).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source .ci/setup_env.sh requirements-test.txt || exit 1
"$SERENA_PYTHON" launch.py --exit
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
exec "$SERENA_PYTHON" -m pytest "$@"
