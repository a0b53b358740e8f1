"""``elektronn2-predict`` and ``elektronn2-evaluate``: thin shells over the library.

elektronn2-predict MODEL INPUT OUTPUT [--key KEY] [--output-key KEY]
    [--block-shape Z Y X] [--workers N] [--scheduler ADDRESS] [--dtype float32|uint8]
    [--mfp auto|on|off] [--blend auto|off|constant|gaussian] [--overlap F] [--valid-only]

elektronn2-evaluate SEG GT [--seg-key KEY] [--gt-key KEY] [--ignore-gt ID ...]
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..errors import Error
from .blockwise import OUTPUT_DTYPES, predict_to_file
from .predictors import BLEND_CHOICES, MFP_CHOICES


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
    logger = logging.getLogger('elektronn2')
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-predict',
        description="Dense class probabilities (c, z, y, x) of a volume, block by block. "
                    "Resumes a zarr output left by a killed run with the same settings.")
    parser.add_argument('model', help="model file saved by Model.save")
    parser.add_argument('input', help="input volume: HDF5 file, zarr store or KNOSSOS directory")
    parser.add_argument('output', help="output: *.zarr (resumable, parallel) or *.h5")
    parser.add_argument('--key', help="dataset of the input (required for HDF5)")
    parser.add_argument('--output-key', default='probabilities', help="dataset of the output")
    parser.add_argument('--block-shape', type=int, nargs=3, default=(64, 64, 64),
                        metavar=('Z', 'Y', 'X'),
                        help="output voxels per block and zarr chunk (default 64 64 64); "
                             "larger blocks amortise the net's context, smaller ones need "
                             "less memory")
    parser.add_argument('--workers', type=int, default=1,
                        help="dask LocalCluster worker processes (1: run in this process)")
    parser.add_argument('--scheduler', help="address of a running dask scheduler")
    parser.add_argument('--dtype', choices=OUTPUT_DTYPES, default='float32')
    parser.add_argument('--mfp', choices=MFP_CHOICES, default='auto',
                        help="max-fragment pooling for strided nets (auto: fewer MACs wins)")
    parser.add_argument('--blend', choices=BLEND_CHOICES, default='auto',
                        help="blend overlapping windows (auto: for nets with 'same' padding)")
    parser.add_argument('--overlap', type=float, default=0.25, help="window overlap when blending")
    parser.add_argument('--valid-only', action='store_true',
                        help="predict only where the field of view lies inside the volume")
    parser.add_argument('--retries', type=int, default=2, help="retries of a failing block")
    parser.add_argument('--quiet', action='store_true', help="no progress bar")
    parser.add_argument('--verbose', '-v', action='store_true', help="log at INFO level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-predict``; returns the exit status."""
    args = predict_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        report = predict_to_file(
            args.model, args.input, args.output, input_key=args.key, output_key=args.output_key,
            block_shape=args.block_shape, mfp=args.mfp, blend=args.blend, overlap=args.overlap,
            valid_only=args.valid_only, dtype=args.dtype, workers=args.workers,
            scheduler=args.scheduler, retries=args.retries, progress=not args.quiet)
    except Error as err:
        print(f"elektronn2-predict: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.output}:{args.output_key}: {report.n_predicted} of {report.n_blocks} blocks "
          f"predicted ({report.n_resumed} done before), backend {report.backend}, blocks "
          f"{report.block_shape}: {report.voxels / 1e6:.2f} MVx in {report.seconds:.1f} s = "
          f"{report.mvx_per_s:.3f} MVx/s")
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-evaluate',
        description="Variation of information and adapted Rand error of a segmentation "
                    "against ground truth (both id volumes of equal shape).")
    parser.add_argument('seg', help="segmentation volume (HDF5, zarr, .npy, KNOSSOS)")
    parser.add_argument('gt', help="ground-truth volume")
    parser.add_argument('--seg-key', help="dataset of the segmentation")
    parser.add_argument('--gt-key', help="dataset of the ground truth")
    parser.add_argument('--ignore-gt', type=int, nargs='*', default=[0],
                        help="ground-truth ids whose voxels are not scored (default: 0)")
    return parser


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-evaluate``; prints the metrics."""
    from ..data.sources import open_source
    from .metrics import evaluate_sources
    args = evaluate_parser().parse_args(argv)
    _setup_logging(False)
    try:
        scores = evaluate_sources(open_source(args.seg, args.seg_key),
                                  open_source(args.gt, args.gt_key), ignore_gt=args.ignore_gt)
    except Error as err:
        print(f"elektronn2-evaluate: error: {err}", file=sys.stderr)
        return 2
    for name, value in scores.items():
        print(f"{name:<22} {value:.6f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
