"""Membrane scores of a trained ISBI 2012 model: held-out slices 25-29, or any labelled stack.

    python examples/evaluate_isbi.py MODEL [--tta dihedral] [--threshold T] [--json FILE]
    python examples/evaluate_isbi.py baseline     (thresholded raw: membranes are dark)
    python examples/evaluate_isbi.py MODEL --stack FILE.h5 --raw-key RAW --labels-key LABELS \\
        [--membrane-value 0 | --ids] [--zoom F] [--z A:B]

isbi2d.py trains on slices 0-21 and validates on 22-24 of the labelled ISBI 2012 stack.
The model predicts whole slices (mirrored at the borders, blockwise with
elektronn2.inference, optionally averaged over flips and rotations: ``--tta``); a pixel
is membrane where the membrane probability exceeds the threshold. Unless given, the
threshold is the one with the best membrane F1 on the validation slices 22-24. Scores:
pixel error (the fraction of misclassified pixels) and membrane F1 at that threshold, and
the ISBI challenge's V_rand and V_info (foreground-restricted, after thinning, best over
the thresholds 0.0-1.0) and its "pixel error" (1 - the best F-score of the cell pixels,
the U-Net paper's 0.0611; elektronn2.inference.isbi_metrics); for the ISBI test slices
also each slice's pixel scores with its fractions of labelled and predicted membrane.

The model ``baseline`` stands for the membrane map 1 - raw, scaled to [0, 1] by the 1st
and 99th percentiles of each stack (a threshold on the raw grey values).

``--stack`` judges the model on another membrane-labelled EM stack (z, y, x) with the
threshold chosen on the ISBI validation slices: labels are membrane where they equal
``--membrane-value``, or, with ``--ids``, where a 4-neighbour in the slice has another
id (or the id is 0). ``--zoom F`` resamples the slices by F before the prediction (and
the probabilities back), e.g. 2.5 for 10 nm pixels (ISBI's are about 4 nm).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

VALID, TEST = slice(22, 25), slice(25, 30)
BASELINE = 'baseline'
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.91, 0.05), 2))


def pixel_scores(membrane: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1, accuracy and pixel error of boolean membrane predictions."""
    hits = np.count_nonzero(membrane & truth)
    precision = hits / max(np.count_nonzero(membrane), 1)
    recall = hits / max(np.count_nonzero(truth), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = float(np.mean(membrane == truth))
    return {'precision': float(precision), 'recall': float(recall), 'f1': float(f1),
            'accuracy': accuracy, 'pixel_error': 1 - accuracy}


def slice_scores(membrane: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """:func:`pixel_scores` of one slice with the fractions of labelled and predicted
    membrane pixels (how thick the labels draw membranes, and how thick the net does)."""
    return {**pixel_scores(membrane, truth), 'labelled_fraction': float(truth.mean()),
            'predicted_fraction': float(membrane.mean())}


def predict_membrane(model_path: str, raw: np.ndarray, tta: str = 'none',
                     zoom: float = 1.0) -> np.ndarray:
    """Membrane probability (z, y, x) of grey-value slices (z, y, x), each slice resampled
    in-plane by ``zoom`` for the net and back."""
    if model_path == BASELINE:
        low, high = np.percentile(raw, (1, 99))
        return np.clip((high - raw.astype(np.float32)) / (high - low), 0, 1)
    from elektronn2.inference import predict_volume
    shape = raw.shape
    if zoom != 1:
        raw = ndimage.zoom(raw, (1, zoom, zoom), order=1)
    membrane = predict_volume(model_path, raw, block_shape=(1, 256, 256), tta=tta)[1]
    if zoom != 1:  # back to the stack's pixels, exactly its shape
        membrane = ndimage.zoom(membrane, [n / m for n, m in zip(shape, membrane.shape)], order=1)
    return np.clip(membrane, 0, 1)


def scores(membrane: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    """Pixel scores at ``threshold`` and the challenge's V_rand / V_info of the map."""
    from elektronn2.inference.isbi_metrics import isbi_scores
    challenge = isbi_scores(membrane, truth)
    result = pixel_scores(membrane > threshold, truth)
    for name in ('v_rand', 'v_info'):
        result[name] = challenge[f'best_{name}']
        result[f'{name}_threshold'] = challenge[f'best_{name}_threshold']
    result['challenge_pixel_error'] = challenge['challenge_pixel_error']
    return result


def best_threshold(membrane: np.ndarray, truth: np.ndarray) -> float:
    """The threshold of THRESHOLDS with the best membrane F1."""
    return float(max(THRESHOLDS, key=lambda t: pixel_scores(membrane > t, truth)['f1']))


def isbi_slices(z: slice) -> tuple[np.ndarray, np.ndarray]:
    """Raw slices and their membrane masks from the labelled ISBI 2012 stack."""
    from elektronn2.data.datasets import get_path
    with h5py.File(get_path('isbi2012') / 'isbi2012.h5', 'r') as f:
        return f['train/raw'][z], f['train/labels'][z] == 0


def membrane_of(labels: np.ndarray, membrane_value: int | None) -> np.ndarray:
    """Membrane mask: ``labels == membrane_value``, or (None) in-plane id changes and id 0."""
    if membrane_value is not None:
        return labels == membrane_value
    membrane = labels == 0
    for axis in (1, 2):
        change = np.diff(labels, axis=axis) != 0
        lower = [slice(None)] * 3
        upper = [slice(None)] * 3
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        membrane[tuple(lower)] |= change
        membrane[tuple(upper)] |= change
    return membrane


def evaluate(model_path: str, threshold: float | None = None, tta: str = 'none',
             stack: dict | None = None) -> dict:
    """Scores on ISBI slices 25-29 (``stack`` None) or on another stack (see main)."""
    result: dict = {'model': str(model_path), 'tta': tta}
    if threshold is None:
        raw, truth = isbi_slices(VALID)
        threshold = best_threshold(predict_membrane(model_path, raw, tta), truth)
        result['threshold_chosen_on'] = 'ISBI slices 22-24 (best membrane F1)'
    result['threshold'] = threshold
    if stack is None:
        raw, truth = isbi_slices(TEST)
        membrane = predict_membrane(model_path, raw, tta)
        result['test'] = scores(membrane, truth, threshold)
        result['test_at_0.5'] = pixel_scores(membrane > 0.5, truth)
        result['test_per_slice'] = {str(z): slice_scores(membrane[i] > threshold, truth[i])
                                    for i, z in enumerate(range(TEST.start, TEST.stop))}
        return result
    with h5py.File(stack['file'], 'r') as f:
        for key in (stack['raw_key'], stack['labels_key']):
            if not isinstance(f.get(key), h5py.Dataset):
                raise SystemExit(f"{stack['file']}: no dataset {key!r}; it has "
                                 f"{sorted(_datasets(f))}")
        raw = f[stack['raw_key']][stack['z']]
        labels = f[stack['labels_key']][stack['z']]
    if raw.shape != labels.shape or raw.ndim != 3:
        raise SystemExit(f"{stack['file']}: raw {raw.shape} and labels {labels.shape} must be "
                         f"stacks (z, y, x) of the same shape")
    truth = membrane_of(labels, stack['membrane_value'])
    membrane = predict_membrane(model_path, raw, tta, stack['zoom'])
    result['stack'] = {k: str(v) for k, v in stack.items()}
    result['membrane_fraction'] = float(truth.mean())
    result['scores'] = scores(membrane, truth, threshold)
    return result


def _datasets(group: h5py.Group) -> list[str]:
    """Paths of all datasets in an HDF5 group."""
    names: list[str] = []
    group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset)
                     else None)
    return names


def z_range(text: str) -> slice:
    start, _, stop = text.partition(':')
    return slice(int(start) if start else None, int(stop) if stop else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help="model file trained by examples/isbi2d.py, or 'baseline'")
    parser.add_argument('--threshold', type=float,
                        help='membrane probability threshold (default: best F1 on slices 22-24)')
    parser.add_argument('--tta', choices=('none', 'flips', 'dihedral'), default='none',
                        help='test-time augmentation (default: none)')
    parser.add_argument('--json', help='also write the scores to this JSON file')
    other = parser.add_argument_group('another stack')
    other.add_argument('--stack', help='HDF5 file with raw slices and membrane labels')
    other.add_argument('--raw-key', default='raw')
    other.add_argument('--labels-key', default='labels')
    other.add_argument('--membrane-value', type=int, default=0,
                       help='label value of membranes (default 0)')
    other.add_argument('--ids', action='store_true',
                       help='labels are object ids: membrane where the id changes in-plane')
    other.add_argument('--zoom', type=float, default=1.0,
                       help='in-plane resampling factor for the net (default 1)')
    other.add_argument('--z', type=z_range, default=slice(None), help='slices A:B')
    args = parser.parse_args(argv)
    stack = None
    if args.stack:
        stack = {'file': args.stack, 'raw_key': args.raw_key, 'labels_key': args.labels_key,
                 'membrane_value': None if args.ids else args.membrane_value,
                 'zoom': args.zoom, 'z': args.z}
    result = evaluate(args.model, args.threshold, args.tta, stack)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    from elektronn2.console import run_script
    sys.exit(run_script(main, Path(__file__).name))
