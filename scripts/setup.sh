#!/usr/bin/env bash
# Create .venv (if missing) and install elektronn2 with its test dependencies.
# PyTorch is pinned to the CPU wheel 2.13.0 first; the project accepts any torch >=2.4,<3.
# The installs are skipped when the venv's stamp file holds the hash of pyproject.toml and
# this script, i.e. when the same elektronn2 and dependencies were installed there before
# (a fresh clone has no venv, hence no stamp: everything is installed).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${ELEKTRONN2_VENV:-$repo/.venv}"
stamp="$venv/.elektronn2-setup-stamp"
wanted="$(cat "$repo/pyproject.toml" "$repo/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    echo "elektronn2 in $venv is up to date (delete $stamp to reinstall)"
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e "$repo[dev]"
echo "$wanted" > "$stamp"
echo "elektronn2 installed in $venv"
