"""Segment held-out FIB-25 blockwise from the affinities of a trained net; score it
(variation of information, adapted Rand error) against the thresholded-raw baseline.

    python examples/evaluate_fib25_affinities.py MODEL [--config CONFIG] [--json FILE]
        [--predictions FILE.npz] [--block-shape Z Y X] [--baseline] [--quick]

For affinity nets trained on FIB-25 (examples/affinities_fib25.py: z 0-159 train, z
160-199 validate, z 200-249 test). The validation volume is the training config's
validation cube (as in examples/evaluate_fib25.py); the model predicts from its first
slice to z 249 in one piece, with the raw slices before as its context. The
affinity offsets come from the training config's ``data_batch_args['affinity_offsets']``
(in the network's axis order; default: nearest neighbours): ``--config``, else the
``config.py`` of the run directory the model lies in, else
examples/affinities_fib25.py. A net with a two-class Softmax per edge gives the
affinity of edge k in channel 2k + 1; a sigmoid net in channel k.

The segmentation is the library call behind ``elektronn2-segment``
(:func:`elektronn2.inference.blockwise_segmentation.segment_volume`, blocks of 64^3 by
default; the result does not depend on the blocks): a boundary map from the
affinities (1 - the mean affinity of the edges touching each voxel), basins of its
watershed seeded where the boundary is below ``1 - seed_threshold``, then
mean-affinity agglomeration (``edge_values='affinities'``: the contact of two
segments is the mean affinity of the nearest-neighbour edges between them, Lee et
al. 2017) below ``merge_threshold``, and segments under ``min_size`` voxels
absorbed. Chosen on the validation volume by lowest VOI: which edges make the
boundary map (the three nearest, or all, long-range included), the seed threshold,
the merge threshold and the smallest segment. The test volume is scored once with
the choice. VOI is in bits (split = H(segments | truth), merge = H(truth | segments));
neuron id 0 is left out.

The baseline figures are those of docs/results.rst (examples/evaluate_fib25.py:
thresholded raw data, test VOI 2.43; the unet3d_iso boundary net, 1.62);
``--baseline`` recomputes the thresholded-raw one (about 25 minutes). ``--quick``
tries a few candidates only (a smoke test of the script, not a result).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_CONFIG = EXAMPLES / 'affinities_fib25.py'
#: The candidate settings: every combination is tried on the validation volume.
GRID = {'edges': ('nearest', 'all'), 'seed_threshold': (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
        'merge_threshold': (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6), 'min_size': (0, 200)}
QUICK_GRID = {'edges': ('nearest',), 'seed_threshold': (0.5, 0.9),
              'merge_threshold': (None, 0.3), 'min_size': (0,)}
#: Test scores of docs/results.rst (examples/evaluate_fib25.py), for comparison.
DOCUMENTED = {
    'thresholded_raw': {'voi': 2.43, 'voi_split': 1.40, 'voi_merge': 1.04,
                        'adapted_rand_error': 0.407, 'segments': 65},
    'boundary_net_unet3d_iso': {'voi': 1.62, 'voi_split': 0.61, 'voi_merge': 1.02,
                                'adapted_rand_error': 0.255, 'segments': 84},
}


def _fib25():
    """The boundary evaluation (examples/evaluate_fib25.py): SPLITS, score, baseline."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    import evaluate_fib25
    return evaluate_fib25


def config_for(model_path: str, config: str | None = None) -> Path:
    """The training config that holds the affinity offsets (see the module docstring)."""
    return _fib25().config_for(model_path, config, DEFAULT_CONFIG)


def data_offsets(offsets_net, spatial_tags) -> np.ndarray:
    """(k, n_spatial) offsets in the network's axis order -> (k, 3) in (z, y, x)."""
    offsets_net = np.asarray(offsets_net, int)
    zyx = np.zeros((len(offsets_net), 3), int)
    for i, tag in enumerate(spatial_tags):
        zyx[:, 'zyx'.index(tag)] = offsets_net[:, i]
    return zyx


def model_offsets(model, config: Path) -> np.ndarray:
    """The (k, 3) (z, y, x) offsets of the model's affinity channels, from its config."""
    from elektronn2.training.experiment import ExperimentConfig
    tags = model.prediction_node.shape.spatial_tags
    offsets = ExperimentConfig(config).data_batch_args.get('affinity_offsets')
    if offsets is None:
        offsets = -np.eye(len(tags), dtype=int)
    offsets = data_offsets(offsets, tags)
    affinity_channels(model, len(offsets))  # the model predicts that many edges
    return offsets


def affinity_channels(model, n_edges: int) -> np.ndarray:
    """Indices of the prediction channels that hold the affinities of the ``n_edges`` edges."""
    from elektronn2.errors import ConfigError
    pred = model.prediction_node
    n_f = pred.shape['f']
    if pred.class_count == 2 and getattr(pred, 'n_indep', 1) == n_edges:
        return np.arange(1, 2 * n_edges, 2)  # (not connected, connected) per edge
    if pred.class_count is None and n_f == n_edges:
        return np.arange(n_edges)
    raise ConfigError(f"The model's prediction {pred.name!r} has {n_f} channels; an affinity "
                      f"net of {n_edges} edges predicts {n_edges} sigmoid channels or a "
                      f"two-class Softmax per edge ({2 * n_edges} channels)")


def predict_affinities(model_path: str, model, n_edges: int, raw: np.ndarray, first: int,
                       cache: str | None = None) -> np.ndarray:
    """Affinities (k, z, y, x) of the ``n_edges`` edges of ``model`` (loaded from
    ``model_path``) in z ``first``-249, predicted with the raw data before as context.
    ``raw``: the whole FIB-25 volume; ``cache``: an .npz file reused when made by the same
    model file for these slices."""
    from elektronn2.inference import predict_volume
    from elektronn2.inference.predictors import model_digest
    from elektronn2.neuromancer.footprint import Footprint
    digest = model_digest(model_path)
    if cache and Path(cache).exists():
        with np.load(cache) as stored:
            if str(stored['model_sha256']) == digest and int(stored.get('first', 160)) == first:
                return stored['affinities']
    start = max(first - Footprint.of(model.prediction_node).context[0][0], 0)
    predicted = predict_volume(model_path, raw[start:_fib25().TEST.stop])
    affinities = np.ascontiguousarray(predicted[affinity_channels(model, n_edges),
                                                first - start:])
    if cache:
        np.savez(cache, affinities=affinities, model_sha256=digest, first=first)
    return affinities


def edge_set(offsets: np.ndarray, which: str) -> np.ndarray:
    """Indices of the edges a boundary map is made from: the three nearest or all."""
    if which == 'all':
        return np.arange(len(offsets))
    rows = [tuple(r) for r in offsets.tolist()]
    nearest = [tuple(-int(a == axis) for a in range(3)) for axis in range(3)]
    missing = [step for step in nearest if step not in rows]
    if missing:
        from elektronn2.errors import ConfigError
        raise ConfigError(f"The affinity offsets {rows} lack the nearest neighbours {missing} "
                          f"(z, y, x) that the segmentation floods along")
    return np.array([rows.index(step) for step in nearest])


def settings_label(settings: dict) -> str:
    merge = settings['merge_threshold']
    return (f"{settings['edges']} edges, seeds > {settings['seed_threshold']}, merge "
            f"{'-' if merge is None else merge}, min {settings['min_size']}")


def segment(affinities: np.ndarray, offsets: np.ndarray, settings: dict,
            block_shape) -> np.ndarray:
    """The blockwise segmentation of ``affinities`` with ``settings`` (edges, seed and
    merge thresholds, min_size)."""
    from elektronn2.inference.blockwise_segmentation import segment_volume
    chosen = edge_set(offsets, settings['edges'])
    return segment_volume(affinities[chosen], block_shape, affinities=True,
                          nhood=offsets[chosen].tolist(), edge_values='affinities',
                          seed_threshold=settings['seed_threshold'],
                          merge_threshold=settings['merge_threshold'],
                          min_size=settings['min_size'])


def candidates(grid: dict) -> list[dict]:
    """Every combination of the values of ``grid`` (setting name -> values)."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def tuned_scores(affinities: dict[str, np.ndarray], offsets: np.ndarray,
                 truth: dict[str, np.ndarray], block_shape, grid: dict = GRID) -> dict:
    """The settings with the lowest validation VOI among the candidates of ``grid`` and
    the test scores with them: {'settings', 'valid', 'test', 'all_valid'} (candidates
    without seeds are left out)."""
    from elektronn2.errors import ConfigError
    score, table = _fib25().score, []
    for settings in candidates(grid):
        try:
            segments = segment(affinities['valid'], offsets, settings, block_shape)
        except ConfigError:  # no seeds at this threshold
            continue
        table.append({'settings': settings, 'valid': score(segments, truth['valid'])})
    if not table:
        raise ConfigError("No candidate setting found seeds in the validation volume: the "
                          "predicted affinities stay below every seed threshold")
    best = dict(min(table, key=lambda row: row['valid']['voi']))
    best['test'] = score(segment(affinities['test'], offsets, best['settings'], block_shape),
                         truth['test'])
    best['all_valid'] = table
    return best


def evaluate(model_path: str, config: str | None = None, cache: str | None = None,
             block_shape=(64, 64, 64), baseline: bool = False, grid: dict = GRID) -> dict:
    """Test scores of the affinity net (settings chosen on validation) and the baselines."""
    import h5py

    from elektronn2.data.datasets import get_path
    from elektronn2.inference.predictors import load_model
    fib25 = _fib25()
    config_path = config_for(model_path, config)
    model = load_model(model_path)
    offsets = model_offsets(model, config_path)
    volumes = fib25.splits(config_path)
    with h5py.File(get_path('fib25_training_sample2') / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][:]
        truth = {name: f['volumes/labels/neuron_ids'][z] for name, z in volumes.items()}
    first = volumes['valid'].start
    predicted = predict_affinities(model_path, model, len(offsets), raw, first, cache)
    maps = {name: predicted[:, z.start - first:z.stop - first]
            for name, z in volumes.items()}
    net = tuned_scores(maps, offsets, truth, block_shape, grid)
    results = {'affinity_net': {**net, 'model': str(model_path), 'config': str(config_path),
                                'offsets_zyx': offsets.tolist(),
                                'block_shape': list(block_shape) if block_shape else None}}
    if baseline:
        computed = fib25.tuned_scores(
            {s: {name: fib25.raw_boundary(raw[z], s) for name, z in volumes.items()}
             for s in fib25.SMOOTHING}, truth)
        results['thresholded_raw'] = {**computed, 'settings_label':
                                      fib25.settings_label(computed['settings'])}
    else:
        results['thresholded_raw'] = {'test': DOCUMENTED['thresholded_raw'],
                                      'source': 'docs/results.rst'}
    results['boundary_net_unet3d_iso'] = {'test': DOCUMENTED['boundary_net_unet3d_iso'],
                                          'source': 'docs/results.rst'}
    reference = results['thresholded_raw']['test']['voi']
    results['affinity_net']['voi_change_vs_thresholded_raw'] = \
        net['test']['voi'] / reference - 1
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='affinity model trained on FIB-25 (affinities_fib25.py)')
    parser.add_argument('--config', help='its training config (for the affinity offsets); '
                                         'default: the run directory\'s config.py, else '
                                         'examples/affinities_fib25.py')
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--predictions', help='.npz file that keeps the affinities (reused '
                                              'when made by the same model file)')
    parser.add_argument('--block-shape', type=int, nargs=3, default=(64, 64, 64),
                        metavar=('Z', 'Y', 'X'), help='segmentation blocks (default 64^3)')
    parser.add_argument('--baseline', action='store_true',
                        help='recompute the thresholded-raw baseline (about 25 minutes)')
    parser.add_argument('--quick', action='store_true',
                        help='a few candidate settings only (smoke test, not a result)')
    args = parser.parse_args(argv)
    results = evaluate(args.model, args.config, args.predictions, tuple(args.block_shape),
                       args.baseline, QUICK_GRID if args.quick else GRID)
    print(f"{'method':<24} {'VOI split':>9} {'VOI merge':>9} {'VOI':>6} {'ARAND':>6} "
          f"{'segments':>8}  settings (chosen on valid)")
    for method, result in results.items():
        test = result['test']
        settings = (settings_label(result['settings']) if method == 'affinity_net'
                    else result.get('settings_label', result.get('source', '')))
        print(f"{method:<24} {test['voi_split']:>9.3f} {test['voi_merge']:>9.3f} "
              f"{test['voi']:>6.3f} {test['adapted_rand_error']:>6.3f} {test['segments']:>8d}  "
              f"{settings}")
    change = results['affinity_net']['voi_change_vs_thresholded_raw']
    print(f"test VOI of the affinity net vs thresholded raw: {100 * change:+.1f} %"
          + (" (quick: a few candidates only)" if args.quick else ''))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
