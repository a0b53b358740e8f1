"""The command line as users meet it: data location, elektronn2-predict (Ctrl+C, resume,
--region, checkpoint directories, --help), elektronn2-view, fast imports, setup.sh."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

import elektronn2.neuromancer as nm
from elektronn2.config import default_data_dir
from elektronn2.inference import cli as predict_cli
from elektronn2.inference import predict_volume
from elektronn2.training import cli as train_cli
from elektronn2.utils import viewer

REPO = Path(__file__).resolve().parents[1]
#: elektronn2-predict with Python's Ctrl+C handler (a shell may start it with SIGINT ignored)
PREDICT = [sys.executable, '-c', 'import signal, sys; signal.signal(signal.SIGINT, '
                                 'signal.default_int_handler); from elektronn2.inference.cli '
                                 'import main; sys.exit(main())']


# --- data location ------------------------------------------------------------------------
def _checkout(root: Path, shared: bool) -> Path:
    """A checkout layout root/checkout/{pyproject.toml, elektronn2/} (+ root/shared/data)."""
    package = root / 'checkout' / 'elektronn2'
    package.mkdir(parents=True)
    (root / 'checkout' / 'pyproject.toml').write_text('')
    if shared:
        (root / 'shared' / 'data').mkdir(parents=True)
    return package


def test_data_dir_rule(tmp_path, monkeypatch):
    monkeypatch.delenv('ELEKTRONN2_DATA', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    with_shared = _checkout(tmp_path / 'a', shared=True)
    assert default_data_dir(with_shared) == str(tmp_path / 'a' / 'shared' / 'data')
    assert default_data_dir(_checkout(tmp_path / 'b', shared=False)) == \
        str(tmp_path / 'cache' / 'elektronn2' / 'data')
    monkeypatch.setenv('ELEKTRONN2_DATA', str(tmp_path / 'mine'))
    assert default_data_dir(with_shared) == str(tmp_path / 'mine')


def test_entry_points_find_shared_data_without_the_variable():
    env = {k: v for k, v in os.environ.items() if k != 'ELEKTRONN2_DATA'}
    found = subprocess.run([sys.executable, '-c', 'from elektronn2.config import config; '
                            'print(config.data_dir)'], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    shared = REPO.parent / 'shared' / 'data'
    assert found == (str(shared) if shared.is_dir() else default_data_dir(Path('/nonexistent')))


def test_evaluate_mnist_without_data_ends_in_one_message(tmp_path):
    env = dict(os.environ, ELEKTRONN2_DATA=str(tmp_path),
               ELEKTRONN2_DATA_URL='http://127.0.0.1:9')  # nothing listens: fails at once
    result = subprocess.run([sys.executable, str(REPO / 'examples' / 'evaluate_mnist.py')],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert result.stderr.startswith('evaluate_mnist.py: error: ')
    assert 'ELEKTRONN2_DATA ' in result.stderr


# --- elektronn2-predict ---------------------------------------------------------------------
@pytest.fixture(scope='module')
def exact(tmp_path_factory):
    """(model path, volume path): a valid-convolution net of output stride 1 (exact tiling)
    and a random 20 x 64 x 64 volume."""
    root = tmp_path_factory.mktemp('predict')
    nm.model_manager.newmodel('exact')
    inp = nm.Input((None, 1, 3, 11, 11), 'b,f,z,y,x', name='raw')
    probs = nm.Softmax(nm.Conv(nm.Conv(inp, 3, (1, 3, 3)), 2, (1, 3, 3), activation_func='lin'))
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, prediction_node=probs)
    model.save(root / 'exact.mdl')
    with h5py.File(root / 'vol.h5', 'w') as f:
        f['raw'] = np.random.default_rng(0).random((20, 64, 64), np.float32)
    return root / 'exact.mdl', root / 'vol.h5'


def _bar_starts(stderr: str) -> list[str]:
    """The 'done/total' of every tqdm bar render in ``stderr``."""
    return re.findall(r'predict:.*?(\d+/\d+)', stderr.replace('\r', '\n'))


def test_predict_ctrl_c_says_how_to_resume_and_the_rerun_counts_done_blocks(exact, tmp_path):
    model, volume = exact
    out = tmp_path / 'out.zarr'
    args = [str(model), str(volume), str(out), '--key', 'raw', '--block-shape', '4', '16', '16']
    process = subprocess.Popen(PREDICT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    markers = out / 'probabilities' / '.elektronn2_done'
    deadline = time.monotonic() + 120
    while not (markers.is_dir() and len(list(markers.iterdir())) >= 3):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert 'Traceback' not in stderr
    n_done = len(list(markers.iterdir()))
    assert stderr.splitlines()[-1] == (f"elektronn2-predict: interrupted after {n_done} of 80 "
                                       f"blocks; run the same command again to resume")
    rerun = subprocess.run(PREDICT + args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _bar_starts(rerun.stderr)[0] == f"{n_done}/80"
    assert f"({n_done} done before)" in rerun.stdout
    expected = predict_volume(model, h5py.File(volume)['raw'][()], block_shape=(20, 64, 64))
    np.testing.assert_allclose(zarr.open_array(str(out), path='probabilities')[:], expected,
                               atol=1e-6)


def test_predict_region_equals_that_box_of_the_whole_prediction(exact, tmp_path):
    model, volume = exact
    whole, part = tmp_path / 'whole.zarr', tmp_path / 'part.zarr'
    common = ['--key', 'raw', '--block-shape', '8', '64', '64', '--quiet']
    assert predict_cli.main([str(model), str(volume), str(whole), *common]) == 0
    assert predict_cli.main([str(model), str(volume), str(part), *common,
                             '--region', '3:17', '0:50', '29:64']) == 0
    cropped = zarr.open_array(str(part), path='probabilities')
    assert cropped.attrs['voxel_offset'] == [3, 0, 29]
    np.testing.assert_allclose(  # the same up to float rounding of other batch shapes
        cropped[:], zarr.open_array(str(whole), path='probabilities')[:, 3:17, 0:50, 29:64],
        atol=1e-6)


def test_predict_region_outside_the_volume_is_refused(exact, tmp_path, capsys):
    model, volume = exact
    assert predict_cli.main([str(model), str(volume), str(tmp_path / 'o.zarr'), '--key', 'raw',
                             '--region', '0:8', '0:64', '10:65']) == 2
    assert 'region [0:8, 0:64, 10:65) (--region' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_cli.main([str(model), str(volume), 'o.zarr', '--region', '5:5', '0:1', '0:1'])
    assert "needs 0 <= START < STOP" in capsys.readouterr().err


def test_predict_takes_a_training_checkpoint_directory(exact, tmp_path, capsys):
    model, volume = exact
    checkpoint = tmp_path / 'run' / 'checkpoints' / 'step-000001000'
    checkpoint.mkdir(parents=True)
    (checkpoint / 'model.mdl').write_bytes(model.read_bytes())
    assert predict_cli.main([str(checkpoint), str(volume), str(tmp_path / 'o.h5'), '--key', 'raw',
                             '--region', '0:4', '0:32', '0:32', '--quiet']) == 0
    assert predict_cli.main([str(tmp_path / 'run'), str(volume), str(tmp_path / 'p.h5'),
                             '--key', 'raw']) == 2
    assert 'training checkpoint directory (RUN/checkpoints/step-N/)' in capsys.readouterr().err


def test_help_has_defaults_and_no_rest_markup(capsys):
    text = ' '.join(predict_cli.predict_parser().format_help().split())
    assert '(default: 0.25)' in text and '(default: 1)' in text     # --overlap, --workers
    assert 'output values: float32 probabilities' in text           # --dtype
    helps = [text]
    for main in (train_cli.main, viewer.main):
        with pytest.raises(SystemExit):
            main(['--help'])
        helps.append(capsys.readouterr().out)
    from elektronn2 import demo
    from elektronn2.training import remote_shell
    for main in (demo.main, remote_shell.main):
        with pytest.raises(SystemExit):
            main(['--help'])
        helps.append(capsys.readouterr().out)
    assert not [h for h in helps if '``' in h or ':mod:' in h]


@pytest.mark.parametrize('module', ['elektronn2.inference.cli', 'elektronn2.training.cli',
                                    'elektronn2.utils.viewer'])
def test_command_modules_do_not_import_torch(module):
    """What makes ``--help`` fast (it took 2.5 s with torch imported)."""
    result = subprocess.run([sys.executable, '-c', f"import sys, {module}; "
                             f"print(sorted({{'torch', 'dask', 'elektronn2.neuromancer'}} & "
                             f"set(sys.modules)))"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '[]'


# --- elektronn2-view ------------------------------------------------------------------------
def test_view_saves_a_picture_of_a_cropped_prediction_without_a_display(exact, tmp_path,
                                                                          monkeypatch):
    model, volume = exact
    out = tmp_path / 'part.zarr'
    assert predict_cli.main([str(model), str(volume), str(out), '--key', 'raw', '--quiet',
                             '--region', '2:6', '10:50', '20:60']) == 0
    monkeypatch.delenv('DISPLAY', raising=False)
    png = tmp_path / 'view.png'
    assert viewer.main([str(volume), '--key', 'raw', '--overlay', str(out), '--z', '3',
                        '--save', str(png)]) == 0
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert viewer.main([str(volume), '--key', 'nope', '--save', str(png)]) == 2


# --- elektronn2-train ----------------------------------------------------------------------
def test_train_prints_the_model_once(tmp_path, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=1, history_freq=1,
                          preview_data_path=None, background_processes=0)
    assert train_cli.main([str(config), '--gpu', 'none']) == 0
    out = capsys.readouterr().out
    assert out.count("'raw'") == 0 and out.count('Model:') == 1
    assert re.search(r'^raw +Input ', out, re.MULTILINE)


# --- scripts/setup.sh ------------------------------------------------------------------------
def test_setup_skips_installs_when_up_to_date(tmp_path):
    """A venv whose stamp matches is left alone; any other is (re)installed."""
    venv = tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    python = venv / 'bin' / 'python'
    python.write_text('#!/bin/sh\necho "pip called: $*"\nexit 3\n')
    python.chmod(0o755)
    env = dict(os.environ, ELEKTRONN2_VENV=str(venv))
    first = subprocess.run(['bash', str(REPO / 'scripts' / 'setup.sh')], env=env,
                           capture_output=True, text=True)
    assert first.returncode == 3 and 'pip called' in first.stdout   # no stamp: installs
    wanted = subprocess.run("cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1",
                            shell=True, cwd=REPO, capture_output=True, text=True).stdout
    (venv / '.elektronn2-setup-stamp').write_text(wanted)
    second = subprocess.run(['bash', str(REPO / 'scripts' / 'setup.sh')], env=env,
                            capture_output=True, text=True)
    assert second.returncode == 0 and 'up to date' in second.stdout
