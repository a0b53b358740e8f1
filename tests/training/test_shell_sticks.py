"""Shell changes stick (schedules continue from them), honest progress, shell polish."""
import argparse
import io
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pexpect
import pytest
from prompt_toolkit.document import Document

from elektronn2.training import checkpoint, cli
from elektronn2.training.remote_shell import HELLO, RemoteShellServer, _lines, remote_completion
from elektronn2.training.shell import ShellCompleter, TrainingShell
from elektronn2.training.status import StatusLine
from elektronn2.training.trainer import Trainer

PROMPT = 'elektronn2 >>>'
LINDEC = {'lr': {'lindec': [2000, 1e-3]}}   # from 1e-3 down to 0 at step 2000
STATUS = r'step +(\d+)/100000 +loss .*?lr (\d\.\d\de-\d\d)'


def _continued(step: int, paused_at: int, value: float) -> float:
    """lr of the 'lindec' schedule continuing from ``value`` set at step ``paused_at``."""
    return value * (2000 - step) / (2000 - paused_at)


def _history(run) -> list[tuple[int, float]]:
    rows = (run / 'history.csv').read_text().splitlines()[1:]
    return [(int(float(r.split(',')[0])), float(r.split(',')[7])) for r in rows]


def _expect_status_after(child, paused_at: int, value: float) -> None:
    """The next status line after step ``paused_at`` shows the continued lr."""
    while True:
        child.expect(STATUS)
        step, lr = int(child.match.group(1)), float(child.match.group(2))
        if step > paused_at:
            break
    assert lr == pytest.approx(_continued(step, paused_at, value), rel=6e-3), (step, lr)


def _wait_for_row_after(run, step: int) -> None:
    deadline = time.time() + 60
    while not any(s > step for s, _ in _history(run)):
        assert time.time() < deadline, 'no history row after the shell'
        time.sleep(0.2)


def _remote_shell(run, lines: str) -> subprocess.Popen:
    shell = subprocess.Popen([sys.executable, '-m', 'elektronn2.training.remote_shell', str(run)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    shell.stdin.write(lines)
    shell.stdin.close()
    return shell


def _output(shell: subprocess.Popen) -> str:
    out = shell.stdout.read()
    assert shell.wait(timeout=60) == 0, out
    return out


def test_setlr_sticks_under_lindec_in_both_shells(tmp_path, write_config, train_cmd):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000, history_freq=5,
                          param_save_it=100000, preview_data_path=None, schedules=LINDEC)
    run = tmp_path / 'runs' / 'run'
    cmd = train_cmd(config, '--gpu', 'none')
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR='1', PYTHONUNBUFFERED='1')
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, encoding='utf-8', timeout=60,
                          dimensions=(40, 250))
    child.logfile_read = open(tmp_path / 'session.log', 'w')
    try:  # the local shell: Ctrl+C, 'setl' TAB-completed, q
        child.expect(STATUS)
        child.sendcontrol('c')
        child.expect(r'Training paused at step (\d+)')
        local_at = int(child.match.group(1))
        child.expect(PROMPT)
        child.send('setl')
        child.send('\t')
        child.sendline(' 1e-4')
        child.expect(re.escape("lr = 0.0001 (the 'lindec' schedule now continues from it to "
                               "0 at step 2000)"))
        child.expect(PROMPT)
        child.sendline('q')
        child.expect('Training continues.')
        _expect_status_after(child, local_at, 1e-4)
        _wait_for_row_after(run, local_at)
        # elektronn2-shell: setlr 5e-5, q; then kill
        shell = _remote_shell(run, 'setlr 5e-5\nq\n')
        child.expect(r'Shell detached \(continue\)')
        out = _output(shell)
        remote_at = int(re.search(r'Training paused at step (\d+)', out).group(1))
        assert "lr = 5e-05 (the 'lindec' schedule now continues from it" in out
        assert out.rstrip().endswith('Training continues.'), out
        _expect_status_after(child, remote_at, 5e-5)
        _wait_for_row_after(run, remote_at)
        kill = _remote_shell(run, 'kill\n')
        assert 'Training saves a checkpoint and stops.' in _output(kill)
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0, (tmp_path / 'session.log').read_text()[-3000:]
    for step, lr in _history(run):
        if local_at < step <= remote_at:
            assert lr == pytest.approx(_continued(step, local_at, 1e-4), rel=1e-6), step
        elif step > remote_at:
            assert lr == pytest.approx(_continued(step, remote_at, 5e-5), rel=1e-6), step
    log = (run / 'train.log').read_text()
    assert f"INFO shell at step {local_at}: setlr 1e-4 -> lr = 0.0001 (the 'lindec'" in log
    assert f"INFO shell at step {remote_at}: setlr 5e-5 -> lr = 5e-05 (the 'lindec'" in log
    state = checkpoint.load_state(checkpoint.list_checkpoints(run)[-1])  # for --resume
    assert state['schedules']['lr'] == {'start_value': 5e-5, 'start_step': remote_at}


@pytest.fixture
def trainer(tmp_path, write_config):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', background_processes=0,
                          preview_data_path=None, schedules=LINDEC)
    args = argparse.Namespace(config=str(config), resume=None, save_path=None)
    exp, model, data, preview, run_dir, state = cli.prepare(args)
    trainer = Trainer(exp, model, data, run_dir, interactive=True)
    yield trainer
    trainer.batches.close()
    trainer.history.close()


def test_pause_is_not_training_time_and_python_changes_stick(trainer, monkeypatch):
    def shell_session(shell):
        time.sleep(1.0)
        shell.handle('model.lr = 0.002')
        return 'continue'
    monkeypatch.setattr(TrainingShell, 'run_local', shell_session)
    before = trainer.runtime
    trainer._pause()
    assert trainer.runtime - before < 0.5
    schedule, = trainer.schedules
    assert (schedule.start_step, schedule.start_value) == (0, 0.002)


def test_bad_shortcut_values_are_refused_in_one_line(trainer):
    shell = TrainingShell(trainer)
    for line in ('load /nonexistent.mdl', 'setlr abc', 'sethist 0', 'setmom 2', 'setlr nan',
                 'setwd -1', 'sethist 2.5'):
        output, action = shell.handle(line)
        assert output.startswith(f"{line.split()[0]}: ") and '\n' not in output, output
        assert 'Traceback' not in output and action is None
    assert shell.handle('setmom 2')[0] == ("setmom: '2' is not valid; the value must be a "
                                           "number in [0, 1)")
    assert shell.handle('load /nonexistent.mdl')[0] == ("load: Model file '/nonexistent.mdl' "
                                                        "does not exist")
    assert trainer.model.mom == 0.9 and trainer.history_freq == 10


def test_exit_and_quit_say_how_to_leave_and_keep_stdin_open(trainer):
    import sys
    shell = TrainingShell(trainer)
    for line in ('exit()', 'quit()', 'exit', 'quit'):
        output, action = shell.handle(line)
        assert "'q' to continue" in output and action is None, output
    assert not sys.stdin.closed


def test_hand_set_hyper_parameters_survive_a_rollback(trainer):
    shell = TrainingShell(trainer)
    shell.handle('setmom 0.5')
    shell.handle('setwd 0.01')
    shell.handle('setlr 0.01')
    trainer._recover_from_nonfinite(math.nan)
    m = trainer.model
    assert (m.mom, m.wd, m.lr) == (0.5, 0.01, 0.005)
    assert trainer.schedules[0].start_value == 0.005  # the schedule goes on from there


def test_shortcut_words_complete_locally_and_over_the_socket(trainer):
    shell = TrainingShell(trainer)
    completer = ShellCompleter(shell.complete)
    assert [c.text for c in completer.get_completions(Document('setl'), None)] == ['setlr']
    assert {'sethist', 'setmom', 'setwd'} <= {c.text for c in completer.get_completions(
        Document('se'), None)}
    server = RemoteShellServer(trainer.run_dir)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(server.path))
        conn.sendall((json.dumps(HELLO) + '\n').encode())
        deadline = time.time() + 10
        while not server.pending():
            assert time.time() < deadline
            time.sleep(0.05)
        actions = []
        serving = threading.Thread(target=lambda: actions.append(server.serve(shell)))
        serving.start()
        messages = _lines(conn)
        assert 'Training paused' in next(messages)['output']
        complete = remote_completion(conn, messages)
        assert complete('debugb') == [('debugbatch', -6)]
        assert complete('model.designa') == [('designate_nodes', -7)]
        for bad in ({'complete': 5}, {'complete': 'a', 'line': 'b'}):
            conn.sendall((json.dumps(bad) + '\n').encode())
            assert next(messages)['output'].startswith('error: ')
        conn.sendall(b'{"line": "q"}\n')
        assert next(messages) == {'output': 'Training continues.', 'prompt': '',
                                  'action': 'continue'}
        serving.join(10)
        assert actions == ['continue']
    finally:
        conn.close()
        server.close()


def test_shell_actions_go_to_train_log_only(trainer, capsys):
    cli.setup_logging(False)
    handler = cli._log_to_file(trainer.run_dir)
    TrainingShell(trainer).handle('setlr 1e-4')
    handler.close()
    log = (trainer.run_dir / 'train.log').read_text()
    assert ("INFO shell at step 0: setlr 1e-4 -> lr = 0.0001 (the 'lindec' schedule now "
            "continues from it to 0 at step 2000)") in log
    assert 'shell at step' not in capsys.readouterr().out


def test_log_records_clear_the_status_line(capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    terminal = Terminal()
    status = StatusLine(terminal)
    status.update('step 1/10', force=True)
    cli.setup_logging(False)
    logging.getLogger('elektronn2').info('a record')
    assert terminal.getvalue().startswith('\rstep 1/10') and terminal.getvalue().endswith('\n')
    assert 'a record' in capsys.readouterr().out


def test_honest_progress_and_resumed_status(trainer, tmp_path):
    text = trainer.status_text()
    assert 'nan' not in text and '0/40' in text and 'ETA -' in text
    for _ in range(2):
        trainer._train_one_step()
    text = trainer.status_text()
    assert re.search(r'2/40 .* [\d.]+ steps/s  ETA 0:\d\d:\d\d  data wait \d+%  step alone '
                     r'[\d.]+/s', text), text
    assert trainer.timer.steps_per_s < 1 / trainer.model.time_per_step  # the whole loop
    trainer.save_checkpoint()
    args = argparse.Namespace(config=None, resume=str(trainer.run_dir), save_path=None)
    exp, model, data, _, run_dir, state = cli.prepare(args)
    resumed = Trainer(exp, model, data, run_dir, resume_state=state)
    try:
        text = resumed.status_text()
        assert 'nan' not in text
        assert f"train_err {trainer.last_monitor['train_err']:.3f}" in text
    finally:
        resumed.batches.close()
        resumed.history.close()
