"""``elektronn2-segment`` and ``elektronn2-fit-edge-model``: thin shells over
:mod:`.blockwise_segmentation`.

elektronn2-segment PREDICTION OUTPUT [--key KEY]
    [--channel C | --affinities [--nhood ...] [--affinity-channels C ...]]
    [--seed-threshold T] [--seed-erosion R] [--min-seed-size N] [--merge-threshold T]
    [--edge-model MODEL.json] [--min-size N]
    [--edge-values boundary|affinities] [--block-shape Z Y X] [--workers N]
    [--scheduler ADDRESS] [--retries N] [--keep-work] [--unit UNIT]

elektronn2-fit-edge-model PREDICTION TRUTH MODEL.json [--key KEY] [--truth-key KEY]
    [--channel C | --affinities ...] [--seed-threshold T] [--seed-erosion R]
    [--min-seed-size N] [--block-shape Z Y X] [--l2 L]

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
    _add_input_and_seed_arguments(parser)
    parser.add_argument('--merge-threshold', type=float, metavar='T',
                        help="merging while the mean contact boundary is below this (mean "
                             "linkage), or with --edge-model while the model's probability "
                             "that a contact separates two neurons is below it (default: no "
                             "merging)")
    parser.add_argument('--edge-model', metavar='MODEL.json',
                        help="learned agglomeration with this edge model (fitted by "
                             "elektronn2-fit-edge-model with the same seed options)")
    parser.add_argument('--min-size', type=int_at_least(0), default=0, metavar='N',
                        help="smaller segments join the neighbour behind their lowest pass")
    parser.add_argument('--edge-values', choices=('boundary', 'affinities'), default='boundary',
                        help="contact values for merging: mean boundary of the voxel pairs, or "
                             "1 - affinity of the edges (mean-affinity agglomeration; needs "
                             "--affinities)")
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


def fit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-fit-edge-model', formatter_class=DefaultsHelpFormatter,
        description="Fit the edge model of the learned agglomeration (elektronn2-segment "
                    "--edge-model) on a prediction with ground-truth neuron ids: the "
                    "contacts of the watershed regions (with these seed options), as they "
                    "are and as the truth joins them. Reads both volumes into memory.")
    parser.add_argument('prediction', help="prediction (HDF5 or zarr) of a volume with "
                                           "ground truth, e.g. a training volume")
    parser.add_argument('truth', help="ground-truth neuron ids (HDF5 or zarr; 0: unlabelled), "
                                      "(z, y, x) as the prediction")
    parser.add_argument('model', help="the edge model to write (JSON)")
    _add_input_and_seed_arguments(parser)
    parser.add_argument('--truth-key', help="dataset of the ground truth")
    parser.add_argument('--l2', type=float, default=1.0, metavar='L',
                        help="L2 penalty of the logistic regression (scikit-learn's C = 1 / L)")
    parser.add_argument('--verbose', '-v', action='store_true', help="log at INFO level")
    return parser


def _add_input_and_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of both commands that say how to read the prediction and seed it."""
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
    parser.add_argument('--block-shape', type=int_at_least(1), nargs=3, default=(64, 64, 64),
                        metavar=('Z', 'Y', 'X'), help="voxels per block and output chunk")


def _nhood(values: list[int] | None) -> list[list[int]] | None:
    if values is None:
        return None
    if len(values) % 3:
        raise argparse.ArgumentTypeError(f"--nhood: {len(values)} numbers; give 3 per offset")
    return [values[i:i + 3] for i in range(0, len(values), 3)]


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None
           ) -> tuple[argparse.Namespace, list[list[int]] | None]:
    args = parser.parse_args(argv)
    try:
        nhood = _nhood(args.nhood)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    setup_command_logging(args.verbose)
    return args, nhood


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-segment``; returns the exit status."""
    args, nhood = _parse(segment_parser(), argv)
    from .blockwise_segmentation import segment_to_file
    from .executors import SerialExecutor, dask_cluster
    try:
        settings = dict(seed_threshold=args.seed_threshold, min_seed_size=args.min_seed_size,
                        merge_threshold=args.merge_threshold, min_size=args.min_size,
                        edge_values=args.edge_values, seed_erosion=args.seed_erosion,
                        edge_model=args.edge_model)
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


def fit_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-fit-edge-model``; returns the exit status."""
    args, nhood = _parse(fit_parser(), argv)
    from ..data.sources import open_source
    from .blockwise_segmentation import fit_edge_model, open_prediction
    from .outputs import truth_under
    try:
        prediction = open_prediction(args.prediction, args.key)
        truth = truth_under(prediction, open_source(args.truth, args.truth_key))
        model = fit_edge_model(prediction, truth,
                               args.block_shape, args.affinities, args.channel, nhood,
                               args.affinity_channels, args.l2,
                               seed_threshold=args.seed_threshold,
                               seed_erosion=args.seed_erosion, min_seed_size=args.min_seed_size)
        model.save(args.model)
    except (Error, OSError) as err:   # bad input, or the model file not writable
        print(f"elektronn2-fit-edge-model: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model}: edge model from {model.info['examples']} contacts "
          f"({100 * model.info['different_fraction']:.0f} % between different neurons)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
