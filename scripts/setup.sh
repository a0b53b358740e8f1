#!/usr/bin/env bash
# Create .venv (if missing) and install elektronn2 with its test dependencies.
# PyTorch is pinned to the CPU wheel 2.13.0 first; the project accepts any torch >=2.4,<3.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ELEKTRONN2_VENV:-$repo/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e "$repo[dev]"
echo "elektronn2 installed in $venv"
