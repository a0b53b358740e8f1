#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the demo: build, summarise and train a small CNN on
# MNIST, then report its test accuracy. Extra arguments go to elektronn2-demo
# (e.g. --steps 3000). MNIST is read from $ELEKTRONN2_DATA/mnist (default: ../shared/data
# next to the checkout if present, else ~/.cache/elektronn2/data, downloading it there;
# the rule of elektronn2.config.default_data_dir).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
exec "${ELEKTRONN2_VENV:-$repo/.venv}/bin/elektronn2-demo" "$@"
