"""``elektronn2-profile MODEL [--in-sh SHAPE ...] [--n-sizes N] [--max-factor F]
[--batch-size N] [--forward-only] [--gpu auto|none|N] [--mpl-backend NAME] [--output CSV]``.

ELEKTRONN2's patch-size profiler, a thin shell over :mod:`elektronn2.utils.profiling`:
MODEL is a model file (``*.mdl``), a training checkpoint directory or a training config
(``*.py``, whose ``create_model()`` or ``model_load_path`` gives the model). The network
is timed at a range of valid patch sizes (or at the input shapes given by ``--in-sh``),
and the speeds are written to ``<MODEL>-Speed.csv`` and ``<MODEL>-Speed.png`` next to
MODEL, as ELEKTRONN2 did (``--output`` elsewhere). Torch is imported only when a profile
runs: ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import ast
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..config import config as global_config
from ..console import DefaultsHelpFormatter, add_device_options, run_script, use_mpl_backend
from ..errors import ConfigError
from .cli import device_from_gpu_flag, gpu_flag

PROG = 'elektronn2-profile'


def _shape(text: str) -> tuple[int, ...]:
    """argparse type of ``--in-sh``: a full input shape such as [1,1,23,185,185]."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not an input shape such as "
                                         f"[1,1,23,185,185] (positive integers)")
    return tuple(value)


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog=PROG, formatter_class=DefaultsHelpFormatter,
        description="Time a network's forward pass and training step at a range of valid "
                    "input patch sizes; write the speeds (output voxels per second) to a CSV "
                    "file and a plot.")
    result.add_argument('model', help="model file (*.mdl), training checkpoint directory or "
                                      "training config (*.py)")
    result.add_argument('--in-sh', '--in_sh', type=_shape, action='append', metavar='SHAPE',
                        help="profile just this input shape, in the input's axis order, e.g. "
                             "[1,1,23,185,185] (repeatable; the batch sizes must agree)")
    result.add_argument('--n-sizes', type=int, metavar='N', default=8, help="patch sizes to try")
    result.add_argument('--min-factor', type=float, metavar='F', default=1.0,
                        help="smallest patch size, times the input's size (per axis)")
    result.add_argument('--max-factor', type=float, metavar='F', default=4.0,
                        help="largest patch size, times the input's size (per axis)")
    result.add_argument('--batch-size', type=int, metavar='N', default=1, help="examples per evaluation")
    result.add_argument('--repeats', type=int, metavar='N', default=5, help="timed runs per size")
    result.add_argument('--warmup', type=int, metavar='N', default=2,
                        help="untimed runs per size first")
    result.add_argument('--forward-only', action='store_true', help="time no training step")
    add_device_options(result)
    result.add_argument('-o', '--output', metavar='CSV',
                        help="CSV file to write (default: MODEL-Speed.csv); the plot goes "
                             "next to it (.png)")
    result.add_argument('--quiet', action='store_true', help="no progress bar")
    result.add_argument('-v', '--verbose', action='store_true', help="log at INFO level")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-profile``; returns the exit status."""
    args = parser().parse_args(argv)
    return run_script(lambda: _profile(args), PROG)


def _profile(args: argparse.Namespace) -> int:
    use_mpl_backend(args.mpl_backend)
    logger = logging.getLogger('elektronn2')
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    global_config.device = device_from_gpu_flag(gpu_flag(args.gpu))
    from ..utils.profiling import candidate_patch_sizes, profile_patch_sizes
    model, optimiser, stem = _load(Path(args.model).expanduser())
    if args.in_sh:
        batch_size, sizes = _given_sizes(model, args.in_sh)
    else:
        batch_size = args.batch_size
        sizes = candidate_patch_sizes(model, args.n_sizes, args.max_factor, args.min_factor)
    profile = profile_patch_sizes(model, sizes, batch_size, args.repeats, args.warmup,
                                  not args.forward_only, optimiser, progress=not args.quiet)
    csv_path = Path(args.output).expanduser() if args.output else stem.with_name(
        f"{stem.name}-Speed.csv")
    profile.write_csv(csv_path)
    png_path = profile.plot(csv_path.with_suffix('.png'), title=f"{stem.name} on {profile.device}")
    _print_table(profile)
    print(f"wrote {csv_path} and {png_path}")
    return 0 if profile.fastest else 1


def _load(path: Path) -> tuple:
    """(model, optimiser name, path stem of the outputs) of a config or a model file."""
    if path.suffix == '.py':
        from .experiment import ExperimentConfig, build_model
        exp = ExperimentConfig(path)
        exp.apply_execution_settings()
        return build_model(exp), exp.optimiser, path.with_suffix('')
    from ..inference.blockwise import resolve_model_path
    from ..neuromancer.loading import modelload
    model_path = resolve_model_path(path)
    return modelload(model_path, make_current=False), 'Adam', model_path.with_suffix('')


def _given_sizes(model, shapes: list[tuple[int, ...]]) -> tuple[int, list[tuple[int, ...]]]:
    """(batch size, spatial sizes) of ``--in-sh`` shapes, checked against the input."""
    shape = model.input_node.shape
    for given in shapes:
        if len(given) != len(shape) or ('f' in shape.tags and shape['f'] is not None
                                        and given[shape.tag2index('f')] != shape['f']):
            expected = ', '.join('B' if n is None else str(n) for n in shape.shape)
            raise ConfigError(f"--in-sh {list(given)} does not fit the input "
                              f"{model.input_node.name!r}: give its axes "
                              f"{','.join(shape.tags)} as [{expected}] with other spatial sizes")
    batches = {given[shape.tag2index('b')] if shape.hasbatch else 1 for given in shapes}
    if len(batches) > 1:
        raise ConfigError(f"--in-sh shapes have different batch sizes {sorted(batches)}; "
                          f"profile one batch size at a time")
    return batches.pop(), [tuple(given[i] for i in shape.spatial_axes) for given in shapes]


def _print_table(profile) -> None:
    tags = ','.join(profile.tags)
    print(f"{'patch (' + tags + ')':>24} {'output voxels':>14} {'forward MVx/s':>14} "
          f"{'train MVx/s':>12}")
    for row in profile.rows:
        size = 'x'.join(map(str, row.patch_size))
        if row.forward_s is None:
            print(f"{size:>24}  {row.note}")
            continue
        train = f"{row.train_voxels_per_s / 1e6:12.4f}" if row.train_voxels_per_s else f"{'-':>12}"
        print(f"{size:>24} {row.output_voxels:>14} {row.forward_voxels_per_s / 1e6:14.4f} {train}")
    if profile.fastest:
        print(f"fastest forward: {'x'.join(map(str, profile.fastest.patch_size))}")


if __name__ == '__main__':
    sys.exit(main())
