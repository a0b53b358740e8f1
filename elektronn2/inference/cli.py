"""``elektronn2-predict`` and ``elektronn2-evaluate``: thin shells over the library.

elektronn2-predict MODEL [MODEL ...] INPUT OUTPUT [--key KEY] [--output-key KEY]
    [--block-shape Z Y X] [--workers N] [--scheduler ADDRESS] [--dtype float32|uint8]
    [--mfp auto|on|off] [--blend auto|off|constant|gaussian] [--overlap F] [--valid-only]
    [--region Z0:Z1 Y0:Y1 X0:X1] [--retries N] [--precision auto|fp32|bf16|fp16]
    [--tta none|flips|dihedral]

Exit status 0 on success; 2 with ``elektronn2-predict: error: ...`` on stderr for bad
arguments (argparse) and for refused input, model or output (elektronn2's errors);
130 after Ctrl+C, with one line saying how many blocks are done and how to resume.

Only argparse and light modules are imported at the top: ``--help`` does not load torch.

elektronn2-evaluate SEG GT [--seg-key KEY] [--gt-key KEY] [--ignore-gt ID ...]
    [--block-shape Z Y X] (an OME-Zarr group is read at its full-resolution level; a
    segmentation of a --region is scored against that box of the ground truth)
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..config import CHOICES
from ..console import EXIT_INTERRUPTED, DefaultsHelpFormatter, fraction, int_at_least, setup_command_logging
from ..errors import Error
from .options import BLEND_CHOICES, MFP_CHOICES, OUTPUT_DTYPES, TTA_CHOICES


def _span(text: str) -> tuple[int, int]:
    """argparse type: ``START:STOP`` with 0 <= START < STOP."""
    try:
        start, stop = (int(t) for t in text.split(':'))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:STOP (two integers)") from None
    if not 0 <= start < stop:
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 <= START < STOP")
    return start, stop


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-predict', formatter_class=DefaultsHelpFormatter,
        description="Dense class probabilities (c, z, y, x) of a volume, block by block. "
                    "Resumes a zarr output left by a killed run with the same settings. "
                    "Refuses (exit status 2) an input that is not numeric, holds NaN/Inf "
                    "or is smaller than the network's field of view, and outputs where "
                    "something else already is. Ctrl+C stops after saying how many "
                    "blocks are done; rerunning the same command resumes a zarr output.")
    parser.add_argument('model', nargs='+',
                        help="model file saved by Model.save, or a training checkpoint "
                             "directory (RUN/checkpoints/step-N/, whose model.mdl is used); "
                             "several: an ensemble, the mean of their probabilities (the "
                             "models must agree in input channels and output features)")
    parser.add_argument('input', help="input volume: HDF5 file, zarr store or KNOSSOS directory")
    parser.add_argument('output', help="output: *.zarr (resumable, parallel) or *.h5")
    parser.add_argument('--key', help="dataset of the input (required for HDF5)")
    parser.add_argument('--output-key', default='probabilities', help="dataset of the output")
    parser.add_argument('--block-shape', type=int_at_least(1), nargs=3, default=None,
                        metavar=('Z', 'Y', 'X'),
                        help="output voxels per block and zarr chunk, each 1 or more; "
                             "larger blocks amortise the net's context, smaller "
                             "ones need less memory: a shape whose blocks would not fit into "
                             "the available memory (estimated) is refused with a suggestion "
                             "(default: the largest blocks within 40%% of the machine's "
                             "memory per worker; --verbose shows the plan)")
    parser.add_argument('--workers', type=int_at_least(1), default=1,
                        help="dask LocalCluster worker processes, 1 or more (1: run in this "
                             "process); each runs one block at a time with cores/N torch "
                             "threads")
    parser.add_argument('--scheduler', help="address of a running dask scheduler")
    parser.add_argument('--dtype', choices=OUTPUT_DTYPES, default='float32',
                        help="output values: float32 probabilities, or uint8 as "
                             "round(p * 255) (a quarter of the size)")
    parser.add_argument('--mfp', choices=MFP_CHOICES, default='auto',
                        help="auto: rebuild the net with an input patch of one block (with "
                             "max-fragment pooling if it is strided) when that needs fewer "
                             "MACs than tiling its saved patch; on: max-fragment pooling; "
                             "off: tile the saved patch")
    parser.add_argument('--blend', choices=BLEND_CHOICES, default='auto',
                        help="blend overlapping windows (auto: for nets with 'same' padding)")
    parser.add_argument('--overlap', type=fraction, default=0.25,
                        help="window overlap when blending, in [0, 1)")
    parser.add_argument('--valid-only', action='store_true',
                        help="predict only where the field of view lies inside the volume")
    parser.add_argument('--region', type=_span, nargs=3, metavar=('Z0:Z1', 'Y0:Y1', 'X0:X1'),
                        help="predict only this box of the input (voxels, stops exclusive); "
                             "the output holds just the box, its attribute voxel_offset "
                             "records (Z0, Y0, X0)")
    parser.add_argument('--retries', type=int_at_least(0), default=2,
                        help="retries of a block failing for other reasons than bad input, "
                             "0 or more")
    parser.add_argument('--precision', choices=CHOICES['precision'],
                        help="arithmetic of the network: fp32 (exact), bf16 or fp16 "
                             "autocast (faster where the hardware computes it natively: bf16 "
                             "on recent CPUs and GPUs, fp16 on GPUs; probabilities differ "
                             "from fp32 by ~1e-3 on average, up to ~0.1), auto (fp32 for "
                             "prediction); default: "
                             "elektronn2's config.precision ($ELEKTRONN2_PRECISION, else "
                             "auto). The output stays float32 (or uint8); a resumed run "
                             "must use the same precision")
    parser.add_argument('--tta', choices=TTA_CHOICES, default='none',
                        help="test-time augmentation: the mean of the network's outputs over "
                             "all flips of its spatial axes (flips: 4 for a 2-D net, 8 for "
                             "3-D), also with y and x transposed (dihedral: the in-plane "
                             "90-degree rotations, twice as many; needs a net alike along y "
                             "and x). Costs that many times the work, little memory; each "
                             "output channel is averaged as a scalar map (not for vector or "
                             "affinity channels). A resumed run must use the same tta")
    parser.add_argument('--quiet', action='store_true', help="no progress bar")
    parser.add_argument('--verbose', '-v', action='store_true', help="log at INFO level")
    return parser


def _interrupted_message(n_done: int, n_blocks: int, resumable: bool) -> str:
    """The one line printed after Ctrl+C."""
    how = ("run the same command again to resume" if resumable else
           "the HDF5 output was not kept; a *.zarr output can be resumed")
    return f"elektronn2-predict: interrupted after {n_done} of {n_blocks} blocks; {how}"


def _abandon_pending_writes() -> None:
    """After Ctrl+C: zarr's I/O event loop may still hold the write of the interrupted
    block, and asyncio reports such a task ("Task was destroyed but it is pending!") when
    the process ends. That block has no done-marker and is predicted again on resume, so
    the report is noise after the one-line message: silence asyncio's logger."""
    logging.getLogger('asyncio').setLevel(logging.CRITICAL + 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-predict``; returns the exit status."""
    args = predict_parser().parse_args(argv)
    setup_command_logging(args.verbose)
    from .blockwise import PredictionInterrupted, predict_to_file
    from .geometry import Box
    region = Box(*zip(*args.region)) if args.region else None
    try:
        report = predict_to_file(
            args.model, args.input, args.output, input_key=args.key, output_key=args.output_key,
            block_shape=args.block_shape, mfp=args.mfp, blend=args.blend, overlap=args.overlap,
            valid_only=args.valid_only, dtype=args.dtype, workers=args.workers,
            scheduler=args.scheduler, retries=args.retries, progress=not args.quiet,
            region=region, precision=args.precision, tta=args.tta)
    except Error as err:
        print(f"elektronn2-predict: error: {err}", file=sys.stderr)
        return 2
    except PredictionInterrupted as stop:
        _abandon_pending_writes()
        print(_interrupted_message(stop.n_done, stop.n_blocks, stop.resumable), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # before the first block: nothing written yet
        _abandon_pending_writes()
        print("elektronn2-predict: interrupted before any block was predicted",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{args.output}:{args.output_key}: {report.n_predicted} of {report.n_blocks} blocks "
          f"predicted ({report.n_resumed} done before), backend {report.backend}, blocks "
          f"{report.block_shape}: {report.voxels / 1e6:.2f} MVx in {report.seconds:.1f} s = "
          f"{report.mvx_per_s:.3f} MVx/s")
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-evaluate', formatter_class=DefaultsHelpFormatter,
        description="Variation of information and adapted Rand error of a segmentation "
                    "against ground truth (both id volumes of equal shape), from a "
                    "contingency table summed over blocks (equal to the in-memory result). A "
                    "smaller segmentation with a voxel_offset attribute (of a prediction of "
                    "a --region) is scored against that box of the ground truth.")
    parser.add_argument('seg', help="segmentation volume (HDF5, zarr, .npy, KNOSSOS; an "
                                    "OME-Zarr group of elektronn2-segment)")
    parser.add_argument('gt', help="ground-truth volume")
    parser.add_argument('--seg-key', help="dataset of the segmentation")
    parser.add_argument('--gt-key', help="dataset of the ground truth")
    parser.add_argument('--ignore-gt', type=int, nargs='*', default=[0],
                        help="ground-truth ids whose voxels are not scored")
    parser.add_argument('--block-shape', type=int_at_least(1), nargs=3, default=(64, 256, 256),
                        metavar=('Z', 'Y', 'X'),
                        help="voxels read at a time; the scores do not depend on it")
    parser.add_argument('--quiet', action='store_true', help="no progress bar")
    return parser


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-evaluate``; prints the metrics."""
    from ..data.sources import open_source
    from .metrics import evaluate_sources
    from .ome_zarr import level_key
    from .outputs import offset_in
    args = evaluate_parser().parse_args(argv)
    setup_command_logging(False)
    try:
        seg = open_source(args.seg, args.seg_key or level_key(args.seg))
        gt = open_source(args.gt, args.gt_key or level_key(args.gt))
        scores = evaluate_sources(seg, gt, ignore_gt=args.ignore_gt,
                                  block_shape=args.block_shape, progress=not args.quiet,
                                  offset=offset_in(seg, gt.shape))
    except Error as err:
        print(f"elektronn2-evaluate: error: {err}", file=sys.stderr)
        return 2
    for name, value in scores.items():
        print(f"{name:<22} {value:.6f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
