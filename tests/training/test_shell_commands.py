"""Every shell shortcut and Python execution against a real Trainer (in-process)."""
import argparse

import pytest
import torch

from elektronn2.training import cli
from elektronn2.training.shell import HELP, ShellCompleter, TrainingShell
from elektronn2.training.trainer import Trainer


@pytest.fixture
def trainer(tmp_path, write_config):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', background_processes=0)
    args = argparse.Namespace(config=str(config), resume=None, save_path=None)
    exp, model, data, preview, run_dir, state = cli.prepare(args)
    trainer = Trainer(exp, model, data, run_dir, preview_volume=preview, interactive=False)
    yield trainer
    trainer.batches.close()
    trainer.history.close()


def test_shortcuts(trainer, tmp_path):
    shell = TrainingShell(trainer)
    assert shell.handle('help') == (HELP, None)
    assert shell.handle('setlr 0.005') == ('lr = 0.005', None) and trainer.model.lr == 0.005
    assert shell.handle('setmom 0.8')[0] == 'mom = 0.8'
    assert shell.handle('setwd 0.01')[0] == 'wd = 0.01' and trainer.model.wd == 0.01
    assert shell.handle('sethist 7')[0] == 'history_freq = 7' and trainer.history_freq == 7
    assert 'positive number of steps' in shell.handle('sethist 0')[0]
    for word in ('paramstats', 'gradstats', 'actstats'):
        output, action = shell.handle(word)
        assert action is None and 'median|x|' in output and 'conv' in output
    output, _ = shell.handle('debugbatch')
    assert output.startswith('wrote') and list(trainer.run_dir.glob('debug_batch_step*.png'))
    output, _ = shell.handle('preview')
    assert list((trainer.run_dir / 'previews').glob('*.png'))
    path = tmp_path / 'other.mdl'
    trainer.model.save(path)
    w = trainer.model['conv'].params['w']
    with torch.no_grad():
        w.zero_()
    assert shell.handle(f'load {path}')[0] == f"loaded parameters from {path}"
    assert float(w.detach().abs().sum()) > 0
    assert shell.handle('q') == ('', 'continue') and shell.handle('kill') == ('', 'kill')


def test_python_with_namespace_multiline_and_errors(trainer):
    shell = TrainingShell(trainer)
    assert shell.handle('model.lr = 0.002')[0] == '' and trainer.model.lr == 0.002
    assert shell.handle('self is trainer and exp_config.batch_size')[0].strip() == '2'
    assert shell.handle('def double(v):') == ('', None) and shell.prompt == '... '
    assert shell.handle('    return 2 * v') == ('', None)
    assert shell.handle('') == ('', None) and shell.prompt != '... '
    assert shell.handle('print(double(21))')[0] == '42\n'
    assert 'ZeroDivisionError' in shell.handle('1/0')[0]
    assert 'SyntaxError' in shell.handle('def (')[0]
    shell.handle("data_batch = data.getbatch(1)")
    assert shell.namespace['data_batch'][0].shape == (1, 1, 5, 37, 37)
    trainer.batch_args['warp'] = 0.0
    shell.finish()  # Python ran: the workers restart with the changed settings
    assert trainer.batches.restart_count == 1


def test_completion_over_namespace(trainer):
    from prompt_toolkit.document import Document
    completer = ShellCompleter(TrainingShell(trainer).complete)
    names = [c.text for c in completer.get_completions(Document('model.designa'), None)]
    assert names == ['designate_nodes']
    names = [c.text for c in completer.get_completions(Document('trai'), None)]
    assert 'trainer' in names
