"""examples/evaluate_isbi.py: membrane masks from labels and scoring on ISBI or another stack."""
import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import elektronn2.neuromancer as nm

SCRIPT = Path(__file__).resolve().parents[2] / 'examples' / 'evaluate_isbi.py'


@pytest.fixture
def evaluate_isbi():
    spec = importlib.util.spec_from_file_location('evaluate_isbi', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dark_is_membrane(tmp_path) -> Path:
    """A 2-D net whose membrane probability rises where the raw is dark."""
    inp = nm.Input((None, 1, 17, 17), 'b,f,x,y', name='raw')
    logits = nm.Conv(inp, 2, (3, 3), activation_func='lin', name='membrane')
    with torch.no_grad():  # membrane logit 5 - 12 * grey value of the centre pixel
        logits.params['w'].zero_()
        logits.params['w'][1, 0, 1, 1] = -12.0
        logits.params['b'][:] = torch.tensor([0.0, 5.0])
    probs = nm.Softmax(logits)
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    return model.save(tmp_path / 'dark.mdl')


def test_membrane_of_ids_marks_in_plane_id_changes_and_id_0(evaluate_isbi):
    ids = np.array([[[1, 1, 2, 2],
                     [1, 1, 2, 2],
                     [3, 3, 3, 0]]])
    expected = np.array([[[0, 1, 1, 0],
                          [1, 1, 1, 1],
                          [1, 1, 1, 1]]], bool)
    np.testing.assert_array_equal(evaluate_isbi.membrane_of(ids, None), expected)
    np.testing.assert_array_equal(evaluate_isbi.membrane_of(ids, 3), ids == 3)


def test_isbi_test_slices_and_another_stack(evaluate_isbi, dark_is_membrane, real_data, tmp_path):
    result = evaluate_isbi.evaluate(dark_is_membrane)
    assert result['threshold'] in evaluate_isbi.THRESHOLDS
    test = result['test']
    for name in ('f1', 'pixel_error', 'v_rand', 'v_info'):
        assert 0 < test[name] < 1
    per_slice = result['test_per_slice']  # slices of equal size: their mean is the whole
    assert list(per_slice) == ['25', '26', '27', '28', '29']
    assert np.mean([s['pixel_error'] for s in per_slice.values()]) == pytest.approx(
        test['pixel_error'])
    with h5py.File(real_data / 'em' / 'isbi2012.h5', 'r') as f:
        labelled = [np.mean(f['train/labels'][z] == 0) for z in range(25, 30)]
    assert [s['labelled_fraction'] for s in per_slice.values()] == pytest.approx(labelled)
    assert all(0 < s['predicted_fraction'] < 1 for s in per_slice.values())
    with h5py.File(real_data / 'em' / 'isbi2012.h5', 'r') as f:
        raw, labels = f['train/raw'][25:27, :96, :128], f['train/labels'][25:27, :96, :128]
    stack = tmp_path / 'stack.h5'
    with h5py.File(stack, 'w') as f:
        f['em'], f['membranes'] = raw, labels
    out = tmp_path / 'scores.json'
    assert evaluate_isbi.main([str(dark_is_membrane), '--threshold', '0.5', '--stack', str(stack),
                               '--raw-key', 'em', '--labels-key', 'membranes', '--zoom', '1.5',
                               '--json', str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores['threshold'] == 0.5 and scores['membrane_fraction'] == pytest.approx(
        np.mean(labels == 0))
    assert 0.5 < scores['scores']['f1'] < 1 and scores['scores']['pixel_error'] < 0.5


def test_a_missing_key_names_the_datasets(evaluate_isbi, tmp_path):
    stack = tmp_path / 'stack.h5'
    with h5py.File(stack, 'w') as f:
        f['volumes/raw'] = np.zeros((1, 8, 8), np.uint8)
    with pytest.raises(SystemExit, match=r"no dataset 'raw'; it has \['volumes/raw'\]"):
        evaluate_isbi.main(['model.mdl', '--threshold', '0.5', '--stack', str(stack)])
