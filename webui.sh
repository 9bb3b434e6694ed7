#!/usr/bin/env bash
# Serena: set up (venv/ + pinned requirements) when needed, then run launch.py with the given flags.
#   ./webui.sh                 serve the UI and API on http://127.0.0.1:7860
#   ./webui.sh --nowebui       serve the API alone on 127.0.0.1:7861
#   ./webui.sh --exit          only set up
#   ./webui.sh generate ...    generate from the command line (see README)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=.ci/setup_env.sh
source .ci/setup_env.sh requirements.txt || exit 1
exec "$SERENA_PYTHON" launch.py "$@"
