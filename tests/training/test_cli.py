"""elektronn2-train end to end in real subprocesses: outputs, and errors before any run dir."""
import elektronn2.neuromancer as nm
from elektronn2.training import checkpoint, cli


def test_trains_3d_boundary_net_and_writes_run_directory(tmp_path, barrier_file, write_config, train):
    config = write_config(tmp_path / 'aniso.py', tmp_path / 'runs')
    result = train(config, '--gpu', 'none')
    assert result.returncode == 0, result.stderr + result.stdout
    run = tmp_path / 'runs' / 'run'
    names = {p.name for p in run.iterdir()}
    assert {'config.py', 'train.log', 'history.csv', 'loss.png', 'errors.png', 'timeline.png',
            'tensorboard', 'checkpoints', 'previews', 'model-final.mdl',
            'elektronn2-source.zip'} <= names
    assert (run / 'config.py').read_text() == config.read_text()
    assert list((run / 'tensorboard').glob('events.out.tfevents.*'))
    assert list((run / 'previews').glob('preview_step*_class1.png'))
    steps = [int(line.split(',')[0]) for line in (run / 'history.csv').read_text().splitlines()[1:]]
    assert steps == [1, 10, 20, 30, 40]
    valid_err = [float(line.split(',')[6]) for line in (run / 'history.csv').read_text().splitlines()[1:]]
    assert all(0 <= v <= 1 for v in valid_err)
    ckpts = checkpoint.list_checkpoints(run)
    assert [c.name for c in ckpts] == ['step-000000020', 'step-000000040']
    model = nm.modelload(run / 'model-final.mdl')
    assert model.iterations == 40
    assert 'Training ends (n_steps) at step 40' in (run / 'train.log').read_text()


def test_second_run_gets_a_fresh_directory(tmp_path, barrier_file, write_config, train):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=2,
                          preview_data_path=None, background_processes=0)
    (tmp_path / 'runs' / 'run').mkdir(parents=True)
    (tmp_path / 'runs' / 'run' / 'keep.txt').write_text('mine')
    assert train(config, '--gpu', 'none').returncode == 0
    assert (tmp_path / 'runs' / 'run' / 'keep.txt').read_text() == 'mine'
    assert (tmp_path / 'runs' / 'run-1' / 'history.csv').exists()


def _config_error(capsys, tmp_path, config, *, expect):
    """The CLI (in-process, for speed) exits with 2, names the problem, creates no run dir."""
    assert cli.main([str(config), '--gpu', 'none']) == 2
    err = capsys.readouterr().err
    assert expect in err, err
    assert not (tmp_path / 'runs').exists() or not any((tmp_path / 'runs').iterdir())


def test_missing_config_file(tmp_path, capsys):
    _config_error(capsys, tmp_path, tmp_path / 'nope.py', expect="does not exist")


def test_syntax_error_names_line(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text() + '\nn_steps = = 3\n')
    _config_error(capsys, tmp_path, config, expect=f"line {len(config.read_text().splitlines())}")


def test_no_model(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text().replace('def create_model', 'def make_model'))
    _config_error(capsys, tmp_path, config, expect='define create_model() or set model_load_path')


def test_batch_size_contradicts_model(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', batch_size=3)
    config.write_text(config.read_text().replace(
        "nm.Input((None, 1, 5, 37, 37), 'b,f,z,x,y', name='raw')",
        "nm.Input((2, 1, 5, 37, 37), 'b,f,z,x,y', name='raw', hardcoded_shape=True)"))
    _config_error(capsys, tmp_path, config, expect='batch_size=3, but the model')


def test_missing_data_file(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs')
    config.write_text(config.read_text().replace("'gala_barriers.h5', 'raw')", "'missing.h5', 'raw')", 1))
    _config_error(capsys, tmp_path, config, expect='missing.h5')


def test_missing_preview_file(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs',
                          preview_data_path=str(tmp_path / 'nothere.h5'))
    _config_error(capsys, tmp_path, config, expect='nothere.h5')


def test_unknown_optimiser(tmp_path, barrier_file, write_config, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', optimiser='Adamm')
    _config_error(capsys, tmp_path, config, expect="unknown optimiser 'Adamm'")
