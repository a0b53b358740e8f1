"""``elektronn2-segment``: a thin shell over :mod:`.blockwise_segmentation`.

elektronn2-segment PREDICTION OUTPUT [--key KEY]
    [--channel C | --affinities [--nhood ...] [--affinity-channels C ...]]
    [--seed-threshold T] [--seed-erosion R] [--min-seed-size N] [--merge-threshold T]
    [--min-size N]
    [--edge-values boundary|affinities] [--block-shape Z Y X] [--workers N]
    [--scheduler ADDRESS] [--retries N] [--keep-work] [--unit UNIT]

Exit status 0 on success; 2 with ``elektronn2-segment: error: ...`` for refused arguments,
input or output; 130 after Ctrl+C (rerunning the same command resumes). Only argparse and
light modules are imported at the top: ``--help`` does not load the heavy modules.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..console import (
    EXIT_INTERRUPTED,
    DefaultsHelpFormatter,
    fraction,
    int_at_least,
    setup_command_logging,
)
from ..errors import Error


def segment_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-segment', formatter_class=DefaultsHelpFormatter,
        description="Segment a boundary or affinity prediction block by block into an "
                    "OME-Zarr group (levels 0, 1, ... downsampled by mode). The result does "
                    "not depend on the block shape or the number of workers. A killed run "
                    "resumes from OUTPUT.work when the same command is run again.")
    parser.add_argument('prediction', help="prediction (HDF5 or zarr), e.g. the output of "
                                           "elektronn2-predict: (c, z, y, x) or (z, y, x)")
    parser.add_argument('output', help="output OME-Zarr group (*.zarr)")
    parser.add_argument('--key', help="dataset of the prediction (default for zarr stores: "
                                      "probabilities when there is one)")
    parser.add_argument('--channel', type=int, default=-1, metavar='C',
                        help="boundary channel of class probabilities (-1: the last)")
    parser.add_argument('--affinities', action='store_true',
                        help="the prediction holds affinities (k, z, y, x), one channel per "
                             "--nhood offset")
    parser.add_argument('--nhood', type=int, nargs='+', metavar='OFFSET',
                        help="affinity offsets, 3 per channel (z y x ...); default: "
                             "-1 0 0  0 -1 0  0 0 -1")
    parser.add_argument('--affinity-channels', type=int, nargs='+', metavar='C',
                        help="the prediction channels holding the affinities, one per --nhood "
                             "offset (default: all channels); a two-class softmax per edge "
                             "keeps edge k in channel 2k + 1: 1 3 5 ...")
    parser.add_argument('--seed-threshold', type=fraction, default=0.5, metavar='T',
                        help="seeds: where 1 - boundary exceeds this, in [0, 1)")
    parser.add_argument('--seed-erosion', type=float, default=0.0, metavar='R',
                        help="erode the seeds' interior by a ball of this radius (voxels, up "
                             "to 16): two neurons joined by a gap in the boundary narrower "
                             "than 2R get a seed each")
    parser.add_argument('--min-seed-size', type=int_at_least(1), default=1, metavar='N',
                        help="smallest interior region (voxels) that is a seed")
    parser.add_argument('--merge-threshold', type=float, metavar='T',
                        help="mean-linkage merging while the mean contact boundary is below "
                             "this (default: no merging)")
    parser.add_argument('--min-size', type=int_at_least(0), default=0, metavar='N',
                        help="smaller segments join the neighbour behind their lowest pass")
    parser.add_argument('--edge-values', choices=('boundary', 'affinities'), default='boundary',
                        help="contact values for merging: mean boundary of the voxel pairs, or "
                             "1 - affinity of the edges (mean-affinity agglomeration; needs "
                             "--affinities)")
    parser.add_argument('--block-shape', type=int_at_least(1), nargs=3, default=(64, 64, 64),
                        metavar=('Z', 'Y', 'X'), help="voxels per block and output chunk")
    parser.add_argument('--workers', type=int_at_least(1), default=1, metavar='N',
                        help="dask LocalCluster worker processes (1: run in this process)")
    parser.add_argument('--scheduler', metavar='ADDRESS', help="address of a running dask scheduler")
    parser.add_argument('--retries', type=int_at_least(0), default=2, metavar='N',
                        help="retries of a block failing for other reasons than bad input")
    parser.add_argument('--keep-work', action='store_true',
                        help="keep OUTPUT.work (basins, graph) after the run")
    parser.add_argument('--unit', help="physical unit of the voxel size in the metadata "
                                       "(default: nanometer when the input has a resolution)")
    parser.add_argument('--quiet', action='store_true', help="no progress bars")
    parser.add_argument('--verbose', '-v', action='store_true', help="log at INFO level")
    return parser


def _nhood(values: list[int] | None) -> list[list[int]] | None:
    if values is None:
        return None
    if len(values) % 3:
        raise argparse.ArgumentTypeError(f"--nhood: {len(values)} numbers; give 3 per offset")
    return [values[i:i + 3] for i in range(0, len(values), 3)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-segment``; returns the exit status."""
    parser = segment_parser()
    args = parser.parse_args(argv)
    try:
        nhood = _nhood(args.nhood)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    setup_command_logging(args.verbose)
    from .blockwise_segmentation import segment_to_file
    from .executors import SerialExecutor, dask_cluster
    try:
        settings = dict(seed_threshold=args.seed_threshold, min_seed_size=args.min_seed_size,
                        merge_threshold=args.merge_threshold, min_size=args.min_size,
                        edge_values=args.edge_values, seed_erosion=args.seed_erosion)
        options = dict(input_key=args.key, block_shape=args.block_shape,
                       affinities=args.affinities, channel=args.channel, nhood=nhood,
                       affinity_channels=args.affinity_channels,
                       retries=args.retries, progress=not args.quiet,
                       keep_work=args.keep_work, unit=args.unit, **settings)
        if args.scheduler or args.workers > 1:
            with dask_cluster(args.scheduler, args.workers) as executor:
                report = segment_to_file(args.prediction, args.output, executor=executor,
                                         **options)
        else:
            report = segment_to_file(args.prediction, args.output, executor=SerialExecutor(),
                                     **options)
    except Error as err:
        print(f"elektronn2-segment: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elektronn2-segment: interrupted; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"{args.output}: {report.summary()}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
