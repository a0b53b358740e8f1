"""ELEKTRONN2's commands and user defaults: elektronn2-profile, every console script the
original installed (with --help), ``elektronn2-train --mpl-backend`` and ``~/.elektronn2rc``."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import elektronn2.neuromancer as nm
from elektronn2.config import DefaultConfig, config, read_user_settings
from elektronn2.errors import ConfigError
from elektronn2.neuromancer.container import Model
from elektronn2.neuromancer.loading import rebuild_model
from elektronn2.training import cli
from elektronn2.training.experiment import ExperimentConfig
from elektronn2.utils import profiling

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the console scripts ELEKTRONN2's setup.py installed, with options its scripts took
ORIGINAL_SCRIPTS = {'elektronn2-train': ('--gpu', '--mpl-backend'),
                    'elektronn2-profile': ('--gpu', '--mpl-backend', '--in_sh')}


def _env(home: Path | None = None, **extra) -> dict:
    """The environment of a command: headless, no rc file unless ``home`` has one."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('DISPLAY', 'WAYLAND_DISPLAY', 'MPLBACKEND', 'ELEKTRONN2RC')}
    env.update(HOME=str(home or Path('/nonexistent')), PYTHONUNBUFFERED='1', **extra)
    return env


def _small_net(name: str = 'small'):
    """A 3-D net of valid convolutions (pooling 2 in x, y) with a loss, input 5 x 21 x 21."""
    nm.model_manager.newmodel(name)
    inp = nm.Input((None, 1, 5, 21, 21), 'b,f,z,x,y', name='raw')
    out = nm.Conv(inp, 3, (1, 4, 4), (1, 2, 2))
    out = nm.Conv(out, 2, (2, 3, 3), activation_func='lin')
    probs = nm.Softmax(out)
    target = nm.Input_like(probs, override_f=1, dtype='int16', name='target')
    loss = nm.AggregateLoss(nm.MultinoulliNLL(probs, target, target_is_sparse=True), name='loss')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target, loss_node=loss,
                          prediction_node=probs)
    return model


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A temporary HOME (the rc file is HOME/.elektronn2rc)."""
    path = tmp_path / 'home'
    path.mkdir()
    monkeypatch.setenv('HOME', str(path))
    monkeypatch.delenv('ELEKTRONN2RC', raising=False)
    return path


# --- elektronn2-profile ---------------------------------------------------------------------
def test_profile_snaps_to_valid_sizes_and_times_forward_and_training():
    model = _small_net()
    sizes = profiling.candidate_patch_sizes(model, n_sizes=3, max_factor=1.5)
    assert sizes[0] == (5, 21, 21) and len(sizes) == 3
    profile = profiling.profile_patch_sizes(model, [(5, 21, 21), (5, 22, 22), *sizes[1:]],
                                            repeats=1, warmup=0, progress=False)
    patches = [r.patch_size for r in profile.rows]
    assert (5, 22, 22) not in patches and len(set(patches)) == len(patches)
    for row in profile.rows:
        valid = rebuild_model(model, imposed_patch_size=row.patch_size, make_current=False)
        assert valid.input_node.shape.spatial_shape == row.patch_size
        assert row.output_size == valid.prediction_node.shape.spatial_shape
        assert row.forward_s > 0 and row.train_step_s > 0 and not row.note
        assert row.forward_voxels_per_s == pytest.approx(row.output_voxels / row.forward_s)
    assert model.iterations == 0    # the training steps ran on copies


def test_profile_ends_the_sweep_when_memory_runs_out(monkeypatch):
    model = _small_net()

    def out_of_memory(self, *batch, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(Model, 'trainingstep', out_of_memory)
    profile = profiling.profile_patch_sizes(model, [(5, 21, 21), (5, 29, 29)], repeats=1,
                                            warmup=0, progress=False)
    assert [(r.patch_size, r.note) for r in profile.rows] == [((5, 21, 21), 'out of memory')]
    assert profile.fastest is None


def test_profile_command_writes_csv_and_plot_for_a_model_file(tmp_path):
    _small_net().save(tmp_path / 'net.mdl')
    result = subprocess.run([BIN / 'elektronn2-profile', tmp_path / 'net.mdl', '--gpu', 'none',
                             '--n-sizes', '3', '--max-factor', '1.6', '--repeats', '1',
                             '--warmup', '0'], capture_output=True, text=True, env=_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'profile:' in result.stderr and '3/3' in result.stderr    # the progress bar
    with open(tmp_path / 'net-Speed.csv') as f:
        rows = list(csv.DictReader(f))
    assert [(r['z'], r['x'], r['y']) for r in rows][0] == ('5', '21', '21')
    assert all(float(r['forward_voxels_per_s']) > 0 and float(r['train_voxels_per_s']) > 0
               for r in rows)
    assert (tmp_path / 'net-Speed.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'fastest forward:' in result.stdout


def test_profile_command_takes_a_training_config_and_in_sh(tmp_path, write_config):
    config = write_config(tmp_path / 'exp.py', tmp_path / 'runs')
    out = tmp_path / 'speeds' / 'exp.csv'
    result = subprocess.run([BIN / 'elektronn2-profile', config, '--in_sh', '[2,1,5,37,37]',
                             '--in-sh', '[2,1,7,49,49]', '--forward-only', '--gpu', 'none',
                             '--repeats', '1', '--quiet', '-o', out], capture_output=True,
                            text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r['z'], r['x'], r['y'], r['batch_size']) for r in rows] == [
        ('5', '37', '37', '2'), ('7', '49', '49', '2')]
    assert rows[0]['train_step_s'] == '' and out.with_suffix('.png').is_file()
    assert not (tmp_path / 'runs').exists()     # profiling makes no run directory
    bad = subprocess.run([BIN / 'elektronn2-profile', config, '--in-sh', '[1,3,5,37,37]'],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr
    assert bad.stderr.startswith("elektronn2-profile: error: --in-sh [1, 3, 5, 37, 37] does not "
                                 "fit the input 'raw'")


# --- the console scripts of ELEKTRONN2 ------------------------------------------------------
@pytest.mark.parametrize('script', sorted(ORIGINAL_SCRIPTS))
def test_every_original_console_script_is_installed_and_answers_help(script):
    scripts = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']['scripts']
    assert script in scripts
    result = subprocess.run([BIN / script, '--help'], capture_output=True, text=True,
                            env=_env(), timeout=60)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {script}")
    for option in ORIGINAL_SCRIPTS[script]:
        assert option in result.stdout
    module, _ = scripts[script].split(':')
    loaded = subprocess.run([sys.executable, '-c', f"import sys, {module}; print(sorted("
                             f"{{'torch', 'matplotlib.pyplot'}} & set(sys.modules)))"],
                            capture_output=True, text=True, check=True, env=_env())
    assert loaded.stdout.strip() == '[]'


# --- elektronn2-train --mpl-backend ---------------------------------------------------------
def _backend_probe(tmp_path) -> tuple[Path, Path]:
    """A config that records matplotlib's backend when it is read (then is refused)."""
    record = tmp_path / 'backend.txt'
    config = tmp_path / 'probe.py'
    config.write_text(f"import sys as _sys\nimport matplotlib as _mpl\n"
                      f"_pyplot = 'matplotlib.pyplot' in _sys.modules\n"
                      f"open({str(record)!r}, 'w').write(f'{{_mpl.get_backend()}} {{_pyplot}}')\n"
                      f"def create_model():\n    pass\n")
    return config, record


@pytest.mark.parametrize('flag, backend', [(None, 'agg'), ('pdf', 'pdf'), ('qtagg', 'agg'),
                                           ('force-svg', 'svg')])
def test_train_sets_the_matplotlib_backend_before_pyplot(tmp_path, flag, backend):
    config, record = _backend_probe(tmp_path)
    args = [] if flag is None else ['--mpl-backend', flag]
    result = subprocess.run([BIN / 'elektronn2-train', config, '--gpu', 'none', *args],
                            capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 2 and 'data_class is missing' in result.stderr
    assert record.read_text().lower() == f"{backend} false"


def test_train_refuses_an_unknown_matplotlib_backend(tmp_path):
    config, record = _backend_probe(tmp_path)
    result = subprocess.run([BIN / 'elektronn2-train', config, '--mpl-backend', 'nope'],
                            capture_output=True, text=True, env=_env(), timeout=60)
    assert result.returncode == 2 and not record.exists()
    assert "--mpl-backend 'nope': 'nope' is not a matplotlib backend" in result.stderr


# --- ~/.elektronn2rc -------------------------------------------------------------------------
def _without(config: Path, *keys: str) -> Path:
    """``config`` with the settings ``keys`` left out (their defaults apply)."""
    config.write_text(''.join(line for line in config.read_text().splitlines(keepends=True)
                              if line.split(' =')[0] not in keys))
    return config


def test_user_defaults_lie_between_built_in_defaults_and_the_config(tmp_path, home, write_config,
                                                                    monkeypatch):
    config = _without(write_config(tmp_path / 'c.py', tmp_path, prev_save_h=1.5),
                      'save_path', 'param_save_it')
    (home / '.elektronn2rc').write_text("import os\nsave_path = '~/rc_runs'\nparam_save_it = 7\n"
                                        "prev_save_h = 2.5\ndevice = 'cpu'\nplot_on = False\n"
                                        "_scratch = 3\ndef helper():\n    pass\n")
    exp = ExperimentConfig(config)
    assert exp.save_path == str(home / 'rc_runs') and exp.param_save_it == 7
    assert exp.prev_save_h == 1.5 and exp.n_steps == 40     # the config's own values win
    assert cli.gpu_flag(None) == 'none' and cli.gpu_flag('1') == '1'
    rc = tmp_path / 'other_rc'
    rc.write_text("param_save_it = 9\ndevice = 2\n")
    monkeypatch.setenv('ELEKTRONN2RC', str(rc))
    assert ExperimentConfig(config).param_save_it == 9 and cli.gpu_flag(None) == '2'


def test_train_takes_its_defaults_from_the_rc_file(tmp_path, write_config):
    home = tmp_path / 'home'
    home.mkdir()
    (home / '.elektronn2rc').write_text("save_path = '~/from_rc'\nparam_save_it = 1\n"
                                        "device = 'cpu'\n")
    config = _without(write_config(tmp_path / 'c.py', tmp_path, n_steps=2, history_freq=1,
                                   preview_data_path=None, background_processes=0),
                      'save_path', 'param_save_it')
    result = subprocess.run([BIN / 'elektronn2-train', config], capture_output=True, text=True,
                            env=_env(home), timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    run = home / 'from_rc' / 'run'
    assert [p.name for p in sorted((run / 'checkpoints').iterdir())] == [
        'step-000000001', 'step-000000002']
    assert '(device cpu,' in result.stdout


@pytest.mark.parametrize('rc_text, message', [
    ("save_pth = '/tmp'\n", "unknown setting 'save_pth'; did you mean 'save_path'?"),
    ("prev_save_h = '3'\n", "prev_save_h='3' must be of type int or float, not str"),
    ("param_save_it = 0\n", "param_save_it=0 must be >= 1"),
    ("device = 'gpu'\n", "device='gpu' is invalid"),
    ("read_user_config = None\n", "unknown setting 'read_user_config'"),
    ("background_processes = 2.0\n", "background_processes=2.0 must be of type bool or int"),
])
def test_bad_rc_settings_are_refused_naming_file_and_key(tmp_path, home, write_config,
                                                         rc_text, message):
    (home / '.elektronn2rc').write_text(rc_text)
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(config)
    assert str(err.value).startswith(f"{home / '.elektronn2rc'}: ") and message in str(err.value)


def test_train_reports_a_bad_rc_file_in_one_line(tmp_path, write_config):
    home = tmp_path / 'home'
    home.mkdir()
    (home / '.elektronn2rc').write_text("n_step = 5\n")
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    result = subprocess.run([BIN / 'elektronn2-train', config, '--gpu', 'none'],
                            capture_output=True, text=True, env=_env(home), timeout=120)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.startswith(f"elektronn2-train: error: {home / '.elektronn2rc'}: unknown "
                                    f"setting 'n_step'")
    assert not (tmp_path / 'runs').exists()


def test_default_config_object_reads_the_same_checked_settings(tmp_path, home, monkeypatch):
    monkeypatch.setattr(config, 'device', config.device)
    (home / '.elektronn2rc').write_text(f"save_path = {str(tmp_path / 'r')!r}\ndevice = 0\n"
                                        f"loss_smoothing_length = 20\n")
    assert read_user_settings()['device'] == 'cuda:0'
    cfg = DefaultConfig()
    assert cfg.loss_smoothing_length == 20 and cfg.device == 'cuda:0' and config.device == 'cuda:0'
    (home / '.elektronn2rc').write_text("__init__ = None\nplot_on = 'yes'\n")
    with pytest.raises(ConfigError, match="plot_on='yes' must be of type bool"):
        DefaultConfig()
