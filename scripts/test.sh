#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` runs only the slow tests.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
export ELEKTRONN2_DATA="${ELEKTRONN2_DATA:-$repo/../shared/data}"
cd "$repo"
exec "${ELEKTRONN2_VENV:-$repo/.venv}/bin/python" -m pytest "$@"
