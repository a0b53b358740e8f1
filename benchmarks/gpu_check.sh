#!/bin/sh
# The GPU check (benchmarks/gpu_check.py): tests on CUDA, training and prediction timings,
# a Markdown section for benchmarks/RESULTS.md. Arguments go to gpu_check.py, e.g.
#   benchmarks/gpu_check.sh --quick            (a minute or two: does it work here?)
#   benchmarks/gpu_check.sh --output gpu.md    (the full check; the section also in gpu.md)
# PYTHON selects the interpreter (default: the checkout's .venv, else python3).
here=$(dirname "$0")
if [ -z "$PYTHON" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then PYTHON="$here/../.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$here/gpu_check.py" "$@"
