"""Segment held-out FIB-25 with a trained boundary net and a seeded watershed; score it
(variation of information, adapted Rand error) against a thresholded-raw baseline.

    python examples/evaluate_fib25.py MODEL [MODEL ...] [--config CONFIG] [--json results.json]
        [--predictions FILE.npz] [--blockwise [--learned]] [--tta flips] [--gala]

z 200-249 of FIB-25 is the test volume of every FIB-25 example; the validation volume is
the validation cube of the model's training config (``--config``, else the ``config.py``
of the run directory the model lies in, else examples/unet3d_iso.py): z 100-159 for
unet3d_iso.py, z 160-199 for neuro3d_lite.py, neuro3d.py and unet3d_lite.py. The model
predicts from the validation volume's first slice to z 249 in one piece, with the raw
slices before as its context (not mirrored ones), and the two volumes are cut from it.
Both methods segment a boundary map with the same seeded watershed
(elektronn2.inference.segmentation.segment_boundaries):

* boundary net: the boundary probability the model predicts (elektronn2.inference); with
  several model files, an ensemble: the mean of their boundary probabilities (the first
  model's config gives the volumes);
* baseline: one minus the raw grey values (membranes are dark), scaled to [0, 1] by
  their 1st and 99th percentiles, i.e. seeds are thresholded raw data.

Both get the same choices, made on the validation volume (lowest VOI): Gaussian
smoothing of the map, the seeds (connected components of the confident interior, eroded
by a ball of radius 0 to 3 voxels, or h-maxima of its distance transform), the interior
threshold, the merge threshold of the mean-linkage agglomeration (or none), and the
smallest segment. The test volume is scored once with each method's choice; the JSON
file also lists the validation scores of every candidate. ``--predictions`` keeps the
prediction in a file and reuses it when it was made by the same model file (for the
same slices and ``--tta``: test-time augmentation over the flips of z, y and x).

``--blockwise`` segments as elektronn2-segment does
(elektronn2.inference.blockwise_segmentation): the test volume block by block (64^3
blocks), the validation candidates in one block (the result does not depend on the
blocks). Its watershed drains into steepest-descent basins of seeds that are connected
components of the (eroded) interior, so the candidates are those without smoothing and
with component seeds. The JSON file also gives the test scores of the whole-volume
flooding (segment_boundaries) with the chosen settings.

``--learned`` (with ``--blockwise``) adds the learned agglomeration to the boundary
net's candidates: for every seeding an edge model (elektronn2.inference.edge_model) is
fitted on the config's first training cube (z 0-99 for unet3d_iso.py, predicted by the
same model), and merging below a probability of 0.2 to 0.8 that a contact separates two
neurons competes with the mean linkage on the validation volume. The JSON file keeps
the chosen edge model.

``--gala`` also validates on the two labelled crops of gala's example data
(``fib_gala_small``: FlyEM medulla FIB-SEM like FIB-25, 50 x 100 x 200 voxels each, 2 MVx
together against the 3.75 MVx of z 100-159; predicted alone, mirrored beyond their
faces): every method's choice is then the lowest VOI of all validation volumes
together, the mean of their VOIs weighted by labelled voxels (the VOI of their union).
A few decisions (one false merge of two large neurons) decide the VOI of one 60-slice
volume; more volumes make the choice less a matter of chance.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from functools import partial
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import scipy.ndimage as ndi

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_CONFIG = EXAMPLES / 'unet3d_iso.py'
TEST = slice(200, 250)
SMOOTHING = (0.0, 1.0)
#: Component seeds (eroded or not) first: the only ones the blockwise segmentation has.
SEEDINGS = ({'seeds': 'components'}, {'seeds': 'components', 'seed_erosion': 1.0},
            {'seeds': 'components', 'seed_erosion': 2.0},
            {'seeds': 'components', 'seed_erosion': 3.0},
            {'seeds': 'distance', 'seed_h': 2.0}, {'seeds': 'distance', 'seed_h': 4.0})
N_COMPONENT_SEEDINGS = 4
SEED_THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99, 0.995)
MERGE_THRESHOLDS = (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
MIN_SIZES = (0, 200)
LEARNED_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
BLOCKWISE_BLOCK = (64, 64, 64)


def config_for(model_path: str, config: str | None = None,
               default: Path = DEFAULT_CONFIG) -> Path:
    """The model's training config: ``config``, else the run directory's config.py, else
    ``default``."""
    if config:
        return Path(config)
    run_config = Path(model_path).resolve().parent / 'config.py'
    return run_config if run_config.is_file() else default


def splits(config: Path) -> dict[str, slice]:
    """{'valid': z range of the config's validation cube, 'test': z 200-249, 'train': z
    range of its first training cube (absent if that is not whole FIB-25 slices)}."""
    from elektronn2.errors import ConfigError
    from elektronn2.training.experiment import ExperimentConfig
    data = ExperimentConfig(config).data_init_kwargs
    cubes = data.get('valid_cubes') or []
    cube = data['d_files'][cubes[0]] if len(cubes) == 1 else None
    if not _whole_slices(cube):
        raise ConfigError(f"{config}: the evaluation needs one validation cube that is a "
                          f"SubVolume of whole FIB-25 slices (data_init_kwargs['d_files'] and "
                          f"'valid_cubes'); found {cube!r}")
    valid = slice(cube.start[0], cube.start[0] + cube.shape[-3])
    if valid.stop > TEST.start:
        raise ConfigError(f"{config}: the validation cube z {valid.start}-{valid.stop - 1} "
                          f"reaches into the test volume z {TEST.start}-{TEST.stop - 1}")
    volumes = {'valid': valid, 'test': TEST}
    training = [c for i, c in enumerate(data['d_files']) if i not in cubes]
    if training and _whole_slices(training[0]):
        volumes['train'] = slice(training[0].start[0],
                                 training[0].start[0] + training[0].shape[-3])
    return volumes


def _whole_slices(cube) -> bool:
    return hasattr(cube, 'start') and cube.shape[-2:] == (250, 250)


def smoothed(volume: np.ndarray, sigma: float) -> np.ndarray:
    """float32 volume, Gaussian-smoothed with ``sigma`` (0: unchanged)."""
    volume = volume.astype(np.float32)
    return ndi.gaussian_filter(volume, sigma) if sigma else volume


def raw_boundary(raw: np.ndarray, sigma: float) -> np.ndarray:
    """The baseline's boundary map: one minus smoothed raw, scaled to [0, 1] by percentiles."""
    interior = smoothed(raw, sigma)
    low, high = np.percentile(interior, (1, 99))
    return 1 - np.clip((interior - low) / (high - low), 0, 1)


def settings_label(settings: dict) -> str:
    """Short text of a choice of settings, e.g. 'sigma 1.0, distance h 2.0 > 0.9, ...'."""
    seeds = settings['seeds'] + (f" h {settings['seed_h']}" if 'seed_h' in settings else '')
    if settings.get('seed_erosion'):
        seeds += f" eroded {settings['seed_erosion']}"
    merge = settings['merge_threshold']
    merging = '-' if merge is None else f"{'learned ' if 'edge_model' in settings else ''}{merge}"
    return (f"sigma {settings['sigma']}, {seeds} > {settings['seed_threshold']}, "
            f"merge {merging}, min {settings['min_size']}")


def gala_crops() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'gala_train': (raw, ids), 'gala_test': (raw, ids)}: fib_gala_small's two crops,
    (z, y, x) uint8 grey values and int64 neuron ids (0: boundary, not scored)."""
    from elektronn2.data.datasets import get_path
    with h5py.File(get_path('fib_gala_small') / 'fib_gala_small.h5', 'r') as f:
        return {f'gala_{crop}': (f[f'{crop}/raw'][:], f[f'{crop}/labels'][:].astype(np.int64))
                for crop in ('train', 'test')}


def score(segments: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """VOI (split, merge) and adapted Rand error of ``segments``, and their number."""
    from elektronn2.inference.metrics import Contingency, scores
    return {**scores(Contingency.of(segments, truth)), 'segments': int(segments.max())}


def candidates(boundary: np.ndarray, seedings: Sequence[dict] = SEEDINGS):
    """(settings, segments) for every choice of seeds, threshold, merging and min size.

    Runs each watershed once: merging and the size filter are the later steps of
    segment_boundaries, applied here to its watershed as it applies them, so every
    candidate equals ``segment_boundaries(boundary, **settings)``.
    """
    from elektronn2.errors import ConfigError
    from elektronn2.inference.segmentation import merge_segments, remove_small_segments, segment_boundaries
    for seeding, threshold in itertools.product(seedings, SEED_THRESHOLDS):
        try:
            watershed = segment_boundaries(boundary, seed_threshold=threshold,
                                           **seeding).astype(np.int64)
        except ConfigError:  # no seeds at this threshold
            continue
        for merge in MERGE_THRESHOLDS:
            merged = watershed if merge is None else merge_segments(watershed, boundary, merge)
            for min_size in MIN_SIZES:
                segments = remove_small_segments(merged, boundary, min_size) \
                    if min_size > 1 else merged
                yield ({**seeding, 'seed_threshold': threshold, 'merge_threshold': merge,
                        'min_size': min_size}, segments)


def blockwise_candidates(boundary: np.ndarray,
                         seedings: Sequence[dict] = SEEDINGS[:N_COMPONENT_SEEDINGS],
                         edge_models=None):
    """(settings, segments) for the same choices as :func:`candidates` (component seeds
    only), segmented as elektronn2-segment does: every candidate equals
    ``segment_volume(boundary, **settings)`` (without 'seeds'); the basins of each seeding
    and threshold are computed once for all merge thresholds and sizes (sweep_volume).

    ``edge_models``: a function of the seed settings that returns the path of an edge
    model fitted with them; then the learned agglomeration below each of
    LEARNED_THRESHOLDS is a candidate too (settings with 'edge_model')."""
    from elektronn2.errors import ConfigError
    from elektronn2.inference.blockwise_segmentation import sweep_volume
    for seeding, threshold in itertools.product(seedings, SEED_THRESHOLDS):
        fixed = {key: value for key, value in seeding.items() if key != 'seeds'}
        try:
            learned = edge_models(seed_threshold=threshold, **fixed) if edge_models else None
        except ConfigError:  # no seeds, or no contacts of both kinds, at this threshold
            learned = None
        sweep = [{'merge_threshold': merge, 'min_size': size, 'edge_model': None}
                 for merge, size in itertools.product(MERGE_THRESHOLDS, MIN_SIZES)]
        if learned:
            sweep += [{'merge_threshold': merge, 'min_size': size, 'edge_model': learned}
                      for merge, size in itertools.product(LEARNED_THRESHOLDS, MIN_SIZES)]
        results = sweep_volume(boundary, sweep, seed_threshold=threshold, edge_model=learned,
                               **fixed)
        try:
            first = next(results)
        except ConfigError:  # no seeds at this threshold
            continue
        for entry, segments in zip(sweep, itertools.chain([first], results)):
            if entry['edge_model'] is None:
                entry = {k: v for k, v in entry.items() if k != 'edge_model'}
            yield {**seeding, 'seed_threshold': threshold, **entry}, segments.astype(np.int64)


def pooled(scores: dict[str, dict], weights: dict[str, int]) -> dict[str, float]:
    """VOI (split, merge) of several volumes together: the means of their scores weighted
    by ``weights``, their labelled voxels (the conditional entropies of disjoint volumes
    add up so)."""
    total = sum(weights.values())
    return {key: sum(scores[name][key] * weights[name] for name in scores) / total
            for key in ('voi_split', 'voi_merge', 'voi')}


def validation_scores(candidates_of, maps: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                      validation: Sequence[str]):
    """(settings, {'valid': scores[, 'valid_volumes': {name: scores}]}) of every candidate
    ``candidates_of(map)`` gives for each of the ``validation`` volumes (one that has no
    seeds in some volume drops out); with several volumes 'valid' is :func:`pooled`."""
    table: dict[str, tuple[dict, dict]] = {}
    for name in validation:
        for settings, segments in candidates_of(maps[name]):
            key = json.dumps(settings, sort_keys=True)
            table.setdefault(key, (settings, {}))[1][name] = score(segments, truth[name])
    weights = {name: int(np.count_nonzero(truth[name])) for name in validation}
    for settings, scores in table.values():
        if len(scores) == len(validation):
            yield settings, ({'valid': scores[validation[0]]} if len(validation) == 1 else
                             {'valid': pooled(scores, weights), 'valid_volumes': scores})


def tuned_scores(boundaries: dict[float, dict[str, np.ndarray]],
                 truth: dict[str, np.ndarray], blockwise: bool = False,
                 learned: bool = False, validation: Sequence[str] = ('valid',)) -> dict:
    """The settings with the lowest validation VOI, and the test scores with them.

    ``boundaries``: smoothing sigma -> {'valid': map, 'test': map[, 'train': map], and
    the maps of further ``validation`` volumes}; ``validation``: the volumes the choice
    is made on (several: by their :func:`pooled` VOI).
    Returns {'settings', 'valid', 'test', 'all_valid'}: the choice, its scores, and the
    validation scores of every candidate; with ``blockwise`` the candidates are
    :func:`blockwise_candidates`, 'test' is the blockwise segmentation's and
    'test_whole_volume' the flooding's (segment_boundaries) with the same settings (not
    for a learned agglomeration, which only the blockwise segmentation has); with
    ``learned``, edge models fitted on the 'train' maps and ``truth['train']`` compete,
    and the chosen one is kept under 'edge_model'.
    """
    import tempfile

    from elektronn2.inference.segmentation import segment_boundaries
    with tempfile.TemporaryDirectory() as models:
        table = []
        for sigma, maps in boundaries.items():
            fitter = (partial(fit_edge_model_file, maps['train'], truth['train'], models)
                      if learned else None)
            candidates_of = (partial(blockwise_candidates, edge_models=fitter) if blockwise
                             else candidates)
            table += [{'settings': {'sigma': sigma, **settings}, **scores} for settings, scores
                      in validation_scores(candidates_of, maps, truth, validation)]
        best = dict(min(table, key=lambda row: row['valid']['voi']))
        settings = dict(best['settings'])
        sigma = settings.pop('sigma')
        if 'edge_model' not in settings:
            best['test'] = score(segment_boundaries(boundaries[sigma]['test'], **settings),
                                 truth['test'])
        if blockwise:
            from elektronn2.inference.blockwise_segmentation import segment_volume
            if 'test' in best:
                best['test_whole_volume'] = best['test']   # segment_boundaries' flooding
            settings.pop('seeds')
            best['test'] = score(segment_volume(boundaries[sigma]['test'], BLOCKWISE_BLOCK,
                                                **settings).astype(np.int64), truth['test'])
            best['test']['block_shape'] = list(BLOCKWISE_BLOCK)
        if 'edge_model' in settings:
            best['edge_model'] = json.loads(Path(settings['edge_model']).read_text())
    for row in table:
        if 'edge_model' in row['settings']:
            row['settings']['edge_model'] = 'learned'
    best['all_valid'] = table
    return best


def fit_edge_model_file(boundary: np.ndarray, truth: np.ndarray, directory: str,
                        **seeds) -> str:
    """The path of an edge model fitted on ``boundary`` and ``truth`` with ``seeds``
    (seed_threshold, seed_erosion), written into ``directory`` (once: a later call with
    the same seeds returns the same file)."""
    from elektronn2.inference.blockwise_segmentation import fit_edge_model
    path = Path(directory, '_'.join(f'{k}{v}' for k, v in sorted(seeds.items())) + '.json')
    if not path.exists():
        fit_edge_model(boundary, truth.astype(np.int64), **seeds).save(path)
    return str(path)


def predict_boundaries(model_paths: Sequence[str], raw: np.ndarray, first: int,
                       cache: str | None = None, tta: str = 'none') -> np.ndarray:
    """Boundary probability of z ``first``-249, the mean over the ``model_paths`` (one
    model, or an ensemble), each predicting with the raw data before as context (``tta``:
    test-time augmentation of elektronn2.inference.predict_volume).

    ``raw``: the whole FIB-25 volume. With ``cache``, a file written before by the
    same model files for the same slices and ``tta`` is reused, else the prediction is
    written to it.
    """
    from elektronn2.inference.predictors import model_digest
    digest = '+'.join(model_digest(path) for path in model_paths)
    if cache and Path(cache).exists():
        with np.load(cache) as stored:
            if (str(stored['model_sha256']) == digest and int(stored.get('first', 160)) == first
                    and str(stored.get('tta', 'none')) == tta):
                return stored['boundary']
    boundary = _predict_after_context(raw, first, model_paths, tta)[1]
    if cache:
        np.savez(cache, boundary=boundary, model_sha256=digest, first=first, tta=tta)
    return boundary


def _predict_after_context(raw: np.ndarray, first: int, model_paths: Sequence[str],
                           tta: str = 'none') -> np.ndarray:
    """(f, z, y, x) probabilities of z ``first``-249 of ``raw`` (the mean over the
    models), with the slices before as the models' context."""
    from elektronn2.inference import predict_volume
    from elektronn2.inference.ensemble import widest_context
    from elektronn2.inference.predictors import load_model
    from elektronn2.neuromancer.footprint import Footprint
    before, _ = widest_context([Footprint.of(load_model(path).prediction_node)
                                for path in model_paths])
    start = max(first - before[0], 0)
    return predict_volume(model_paths, raw[start:TEST.stop], tta=tta)[:, first - start:]


def evaluate(model_paths: str | Sequence[str], cache: str | None = None,
             blockwise: bool = False, config: str | None = None, tta: str = 'none',
             learned: bool = False, gala: bool = False) -> dict:
    """Test scores of the boundary net (one model file, or several: an ensemble whose
    boundary probabilities are averaged) and of the baseline, with the chosen settings
    (``blockwise``, ``config``, ``tta``, ``learned``, ``gala``: see the module docstring)."""
    from elektronn2.data.datasets import get_path
    from elektronn2.errors import ConfigError
    model_paths = [model_paths] if isinstance(model_paths, str) else list(model_paths)
    volumes = splits(config_for(model_paths[0], config))
    if not learned:
        volumes.pop('train', None)
    elif 'train' not in volumes or not blockwise:
        raise ConfigError("--learned needs --blockwise and a config whose first training cube "
                          "is a SubVolume of whole FIB-25 slices")
    with h5py.File(get_path('fib25_training_sample2') / 'fib25_training_sample2.h5', 'r') as f:
        raw = f['volumes/raw'][:]
        truth = {name: f['volumes/labels/neuron_ids'][z] for name, z in volumes.items()}
    first = min(z.start for z in volumes.values())
    predicted = predict_boundaries(model_paths, raw, first, cache, tta)
    net_maps = {name: predicted[z.start - first:z.stop - first] for name, z in volumes.items()}
    raws = {name: raw[z] for name, z in volumes.items() if name != 'train'}
    validation = ['valid']
    if gala:
        from elektronn2.inference import predict_volume
        for name, (crop, ids) in gala_crops().items():
            raws[name], truth[name] = crop, ids
            net_maps[name] = predict_volume(model_paths, crop, tta=tta)[1]
            validation.append(name)
    sigmas = (0.0,) if blockwise else SMOOTHING
    net = tuned_scores({s: {name: smoothed(p, s) for name, p in net_maps.items()}
                        for s in sigmas}, truth, blockwise, learned, validation)
    # the baseline: mean linkage as before
    baseline = tuned_scores({s: {name: raw_boundary(r, s) for name, r in raws.items()}
                             for s in sigmas}, truth, blockwise, validation=validation)
    return {'boundary_net': net, 'thresholded_raw': baseline,
            'validation_z': [volumes['valid'].start, volumes['valid'].stop - 1],
            'validation': validation}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', nargs='+',
                        help='boundary model trained on FIB-25 (e.g. unet3d_iso.py); several: '
                             'an ensemble, their boundary probabilities averaged')
    parser.add_argument('--config', help="its training config (for the validation cube); "
                                         "default: the run directory's config.py, else "
                                         "examples/unet3d_iso.py")
    parser.add_argument('--json', help='also write the results to this JSON file')
    parser.add_argument('--predictions', help='.npz file that keeps the prediction (reused '
                                              'when made by the same model file)')
    parser.add_argument('--tta', choices=('none', 'flips'), default='none',
                        help="test-time augmentation of the prediction: 'flips' averages "
                             "over the 8 flips of z, y and x (8 times the prediction time)")
    parser.add_argument('--blockwise', action='store_true',
                        help='segment the test volume block by block as elektronn2-segment does '
                             '(component seeds, no smoothing)')
    parser.add_argument('--learned', action='store_true',
                        help="with --blockwise: also the learned agglomeration, its edge models "
                             "fitted on the config's first training cube")
    parser.add_argument('--gala', action='store_true',
                        help="also validate on gala's two labelled FIB-SEM crops "
                             "(fib_gala_small), choosing by the VOI of all validation volumes")
    args = parser.parse_args(argv)
    results = evaluate(args.model, args.predictions, args.blockwise, args.config, args.tta,
                       args.learned, args.gala)
    print(f"{'method':<16} {'VOI split':>9} {'VOI merge':>9} {'VOI':>6} {'ARAND':>6} "
          f"{'segments':>8}  settings (chosen on valid)")
    for method in ('boundary_net', 'thresholded_raw'):
        result = results[method]
        test = result['test']
        print(f"{method:<16} {test['voi_split']:>9.3f} {test['voi_merge']:>9.3f} "
              f"{test['voi']:>6.3f} {test['adapted_rand_error']:>6.3f} {test['segments']:>8d}  "
              f"{settings_label(result['settings'])}")
    low, high = results['validation_z']
    extra = ''.join(f' + {name}' for name in results['validation'][1:])
    print(f"settings chosen on z {low}-{high}{extra}, scored on z {TEST.start}-{TEST.stop - 1}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
