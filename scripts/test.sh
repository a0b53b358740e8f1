#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` runs only the slow tests. The data directory is
# found as by every entry point (elektronn2.config.default_data_dir).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "${ELEKTRONN2_VENV:-$repo/.venv}/bin/python" -m pytest "$@"
