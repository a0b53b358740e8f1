"""``elektronn2-convert``: old model files in today's format.

elektronn2-convert OLD NEW
    An ELEKTRONN2 ``.mdl`` file (a pickle, gzip-compressed or not) -> a model file of
    today's format (graph.json + params.safetensors; a directory if NEW ends with '/').
elektronn2-convert OLD NEW --v1-config CONFIG
    An ELEKTRONN v1 parameter file (``MixedConvNN.saveParameters``) -> the model that
    CONFIG (a v1 or elektronn2 training config) builds, with those parameters.

Old files are read without running anything from them (see
:mod:`elektronn2.neuromancer.oldpickle`). Exit status 0, or 2 with
``elektronn2-convert: error: ...`` for a refused file. Torch is imported only when a
conversion runs.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..console import DefaultsHelpFormatter, plain, run_script

PROG = 'elektronn2-convert'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, formatter_class=DefaultsHelpFormatter,
                                description=plain(__doc__.split('\n\n')[0]))
    p.add_argument('old', help='the ELEKTRONN2 .mdl file or ELEKTRONN v1 parameter file')
    p.add_argument('new', help="where to write the converted model (a directory if it ends "
                               "with '/', else a zip file)")
    p.add_argument('--v1-config', metavar='CONFIG',
                   help='for a v1 parameter file: the training config whose network it belongs to')
    p.add_argument('-v', '--verbose', action='store_true', help='log what is converted')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-convert``; returns the exit status."""
    args = parser().parse_args(argv)
    return run_script(lambda: _convert(args), PROG)


def _convert(args: argparse.Namespace) -> int:
    logger = logging.getLogger('elektronn2')
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    from ..errors import ModelFileError
    from ..legacy.v1params import load_v1_parameters
    from ..neuromancer.loading import modelload
    from ..neuromancer.oldmodels import is_old_model_file
    from .experiment import ExperimentConfig, build_model
    old = Path(args.old).expanduser()
    if not is_old_model_file(old):
        raise ModelFileError(f"{str(old)!r} is not an old (pickled) model or parameter file"
                             + ('' if old.exists() else ': it does not exist'))
    if args.v1_config:
        model = build_model(ExperimentConfig(args.v1_config))
        load_v1_parameters(model, old)
    else:
        model = modelload(old, make_current=False)
    out = model.save(args.new)
    print(f"wrote {out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
