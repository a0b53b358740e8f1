"""A run directory belongs to one live trainer; leftovers of a killed run (stale socket,
interrupted or broken checkpoints) and malformed shell messages never break a run.

One background training (module scope) is attached to, refused a second trainer and
fed every kind of bad message, and must still finish with exit 0; a second one is
killed with -9 and resumed from its newest intact checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from elektronn2.errors import ConfigError
from elektronn2.training import checkpoint, cli, remote_shell, rundir
from elektronn2.training.remote_shell import HELLO, HELLO_TIMEOUT, MAX_LINE, MAX_MESSAGE, SOCKET_NAME

ENV = dict(os.environ, PYTHONUNBUFFERED='1')


# --- helpers ------------------------------------------------------------------------------
def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, 'w') as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=ENV)


def _wait_for(condition, what: str, proc: subprocess.Popen, log: Path,
              timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"trainer ended while waiting for {what}:\n{log.read_text()}"
        assert time.time() < deadline, f"no {what} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


class _Session:
    """A client of a trainer's shell socket that speaks raw bytes; attached (greeted),
    after waiting for the previous client's session to end."""

    def __init__(self, run: Path, timeout: float = 30):
        deadline = time.time() + timeout
        while True:
            self.conn = remote_shell.connect(run)
            self.conn.settimeout(60)
            self._replies = self.conn.makefile('rb')
            self.greeting = self.reply()
            if self.greeting['action'] is None:
                break
            assert self.greeting['output'] == 'another shell is attached' and time.time() < deadline
            self.close()
            time.sleep(0.1)
        self.step = int(re.search(r'paused at step (\d+)', self.greeting['output'])[1])

    def reply(self) -> dict | None:
        raw = self._replies.readline()
        return json.loads(raw) if raw else None

    def send(self, raw: bytes) -> None:
        self.conn.sendall(raw)

    def line(self, text: str) -> dict:
        self.send(json.dumps({'line': text}).encode() + b'\n')
        return self.reply()

    def close(self) -> None:
        self._replies.close()
        self.conn.close()


def _raw_socket(run: Path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(str(run / SOCKET_NAME))
    return conn


def _paused_step(run: Path) -> int:
    session = _Session(run)
    assert session.line('q')['action'] == 'continue'
    session.close()
    return session.step


def _trains_on(run: Path, after: int, timeout: float = 60) -> int:
    """The step of a later pause, once training has gone beyond step ``after``."""
    deadline = time.time() + timeout
    while (step := _paused_step(run)) <= after:
        assert time.time() < deadline, f"training stuck at step {step}"
        time.sleep(0.3)
    return step


# --- one live training, attached to, refused a second trainer, fed bad messages ------------
@pytest.fixture(scope='module')
def live(tmp_path_factory, write_config, train_cmd):
    """(process, run dir, log) of a background training with a checkpoint written."""
    tmp = tmp_path_factory.mktemp('live')
    config = write_config(tmp / 'c.py', tmp / 'runs', n_steps=100000, max_runtime=240,
                          history_freq=100000, param_save_it=10, preview_data_path=None)
    run, log = tmp / 'runs' / 'run', tmp / 'train.out'
    proc = _start(train_cmd(config, '--gpu', 'none'), log)
    _wait_for(lambda: (run / SOCKET_NAME).exists() and checkpoint.list_checkpoints(run),
              'socket and checkpoint', proc, log)
    yield proc, run, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize('how', ['--resume RUN_DIR', 'CONFIG --resume RUN_DIR (in-process)'])
def test_second_trainer_on_a_live_run_is_refused_untouched(live, how, guard, train, capsys):
    proc, run, _ = live
    session = _Session(run)  # paused: the first trainer writes nothing meanwhile
    with guard(run.parent):
        if how.startswith('--resume'):
            result = train('--resume', run, '--gpu', 'none', timeout=120)
            code, err = result.returncode, result.stderr
        else:
            code = cli.main([str(run / 'config.py'), '--resume', str(run), '--gpu', 'none'])
            err = capsys.readouterr().err
    assert code == 2, err
    assert f"pid {proc.pid}" in err and str(run) in err and 'in use by a live trainer' in err
    assert (run / SOCKET_NAME).exists() and session.line('21 * 2')['output'].strip() == '42'
    assert session.line('q')['action'] == 'continue'
    session.close()
    _trains_on(run, session.step)


def _line(text: str) -> bytes:
    return json.dumps({'line': text}).encode() + b'\n'


# message -> what the reply says (an error, or the traceback of the failed shell line)
BAD_MESSAGES = {
    'int line': (b'{"line": 123}\n', '"line" must be a string, got int'),
    'JSON list': (b'["q"]\n', 'no other keys'),
    'invalid JSON': (b'{"line": "q"\n', 'not a UTF-8 JSON message'),
    'non-UTF-8': (b'\xff\xfe{"line": "q"}\n', 'not a UTF-8 JSON message'),
    'extra key': (b'{"line": "q", "action": "kill"}\n', 'no other keys'),
    'over-long line': (_line('x' * (MAX_LINE + 1)), f"at most {MAX_LINE}"),
    'nested too deeply': (b'[' * 200000 + b']' * 200000 + b'\n', 'not a UTF-8 JSON message'),
    'shortcut refuses a bad value': (_line('setlr fast'), "setlr: 'fast' is not valid"),
    'Python raises': (_line('1 / 0'), 'ZeroDivisionError'),
    'compiler overflows': (_line('a.' * 30000 + 'b'), 'RecursionError'),
    'SystemExit': (_line('raise SystemExit(3)'), 'SystemExit'),
    'KeyboardInterrupt': (_line('raise KeyboardInterrupt'), 'KeyboardInterrupt'),
}


@pytest.mark.parametrize('case', BAD_MESSAGES)
def test_bad_message_is_answered_and_the_session_goes_on(live, case):
    _, run, log = live
    raw, expect = BAD_MESSAGES[case]
    session = _Session(run)
    session.send(raw)
    reply = session.reply()
    assert expect in reply['output'] and reply['action'] is None, reply
    if reply['output'].startswith('error: '):  # a protocol error: logged as well
        assert f"bad message: {reply['output'][7:]}" in log.read_text()
    assert session.line('print("still here")')['output'] == 'still here\n'
    assert session.line('q')['action'] == 'continue'
    session.close()
    _trains_on(run, session.step)


def _garbage_then_leave(run: Path) -> None:
    session = _Session(run)
    session.send(b'garbage\n{"line": ')
    session.close()


def _hello_then_leave(run: Path) -> None:
    conn = _raw_socket(run)
    conn.sendall(json.dumps(HELLO).encode() + b'\n')
    conn.close()


def _huge_without_newline(run: Path) -> None:
    session = _Session(run)
    try:
        session.send(b'x' * (2 * MAX_MESSAGE))
    except OSError:  # the trainer hangs up once it has read more than MAX_MESSAGE bytes
        pass
    try:
        reply = session.reply()
    except OSError:
        reply = None
    assert reply is None or ('error' in reply['output'] and reply['action'] == 'continue'), reply
    session.close()


def _no_hello(run: Path) -> None:
    conn = _raw_socket(run)
    conn.sendall(_line('q'))
    assert json.loads(conn.recv(4096))['output'].startswith('error: expected {"hello"')
    conn.close()


def _silent(run: Path) -> None:
    conn = _raw_socket(run)
    conn.settimeout(HELLO_TIMEOUT + 30)
    started = time.time()
    # dropped (without ever pausing the training) once HELLO_TIMEOUT has passed
    assert json.loads(conn.recv(4096))['output'] == 'error: timed out'
    assert time.time() - started >= HELLO_TIMEOUT - 0.5
    conn.close()


# a client that leaves abruptly or misbehaves before attaching: training goes on
BAD_CLIENTS = {'garbage, then leaves': _garbage_then_leave, 'hello, then leaves': _hello_then_leave,
               'huge message without newline': _huge_without_newline,
               'no hello': _no_hello, 'silent': _silent}


@pytest.mark.parametrize('case', BAD_CLIENTS)
def test_bad_client_never_stops_the_training(live, case):
    proc, run, _ = live
    before = _paused_step(run)
    BAD_CLIENTS[case](run)
    _trains_on(run, before)
    assert proc.poll() is None


def test_training_survives_them_all_and_finishes(live):
    proc, run, log = live
    session = _Session(run)
    assert session.line('kill')['action'] == 'kill'
    session.close()
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert (run / 'model-final.mdl').exists() and not (run / SOCKET_NAME).exists()
    assert 'Training ends (kill)' in log.read_text()
    assert rundir.owner(run) is None


# --- kill -9, leftovers and --resume --------------------------------------------------------
def test_kill_9_then_resume_falls_back_cleans_up_and_finishes(tmp_path, write_config, train_cmd,
                                                               train, capsys):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000, max_runtime=240,
                          history_freq=100000, param_save_it=2, preview_data_path=None)
    run, log = tmp_path / 'runs' / 'run', tmp_path / 'train.out'
    proc = _start(train_cmd(config, '--gpu', 'none'), log)
    _wait_for(lambda: len(checkpoint.list_checkpoints(run)) >= 2 and (run / SOCKET_NAME).exists(),
              'two checkpoints', proc, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert rundir.owner(run) is None  # the kernel released the dead trainer's lock
    # a stale socket: the client says clearly that no trainer runs, and how to continue
    assert (run / SOCKET_NAME).exists() and remote_shell.main([str(run)]) == 1
    err = capsys.readouterr().err
    assert 'No running training' in err and f"--resume {run}" in err
    # an interrupted save, and a newest checkpoint that lost its state
    leftover = run / 'checkpoints' / '.tmp-interrupted'
    leftover.mkdir()
    (leftover / 'model.mdl').write_bytes(b'half')
    *_, intact, newest = checkpoint.list_checkpoints(run)
    (newest / 'state.json').unlink()
    step = int(intact.name.split('-')[1])
    resume_config = write_config(tmp_path / 'more.py', tmp_path / 'runs', n_steps=step + 2,
                                 history_freq=100000, param_save_it=1000, preview_data_path=None)
    result = train(resume_config, '--resume', run, '--gpu', 'none', timeout=240)
    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    assert f"Skipping broken checkpoint {newest}" in result.stdout
    assert f"Resuming from {intact}" in result.stdout
    assert f"Resumed {run} at step {step}" in result.stdout
    assert not leftover.exists() and (run / 'model-final.mdl').exists()
    assert list(newest.parent.glob(f"{newest.name}.broken-*"))  # kept for inspection
    assert [c.name for c in checkpoint.list_checkpoints(run)][-1] == f"step-{step + 2:09d}"


# --- in-process: the lock, checkpoint lists and fallbacks, client messages ---------------
def test_lock_is_exclusive_named_and_released(tmp_path):
    with rundir.RunDirLock(tmp_path):
        assert rundir.owner(tmp_path) == f"pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(ConfigError, match=rf"{tmp_path}.*in use.*pid {os.getpid()}"):
            with rundir.RunDirLock(tmp_path):
                pass
        ready, tell = os.pipe()
        child = os.fork()
        if child == 0:  # a forked child (still alive below) must not keep the lock
            os.write(tell, b'1')
            time.sleep(60)
            os._exit(0)
        os.read(ready, 1)
        os.close(ready)
        os.close(tell)
    try:
        assert rundir.owner(tmp_path) is None
        with rundir.RunDirLock(tmp_path):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    with pytest.raises(ConfigError, match='does not exist'):
        with rundir.RunDirLock(tmp_path / 'nothere'):
            pass


def test_list_checkpoints_ignores_other_names(tmp_path):
    root = tmp_path / 'checkpoints'
    for name in ('step-000000002', 'step-10', 'step-abc', 'step-', 'step-12x', '.tmp-abc',
                 'step-000000003.broken-17', 'other'):
        (root / name).mkdir(parents=True)
    (root / 'step-000000005').write_text('a file, not a checkpoint')
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ['step-000000002', 'step-10']


def _tiny_checkpoints(run: Path, steps=(1, 2, 3)) -> list[Path]:
    import elektronn2.neuromancer as nm
    inp = nm.Input((None, 3), 'b,f', name='raw')
    out = nm.Perceptron(inp, 2, activation_func='lin')
    target = nm.Input_like(out, name='target')
    model = nm.model_manager.getmodel()
    model.designate_nodes(input_node=inp, target_node=target,
                          loss_node=nm.AggregateLoss(nm.SquaredLoss(out, target)))
    model.trainingstep(np.random.rand(4, 3).astype(np.float32),
                       np.random.rand(4, 2).astype(np.float32))
    return [checkpoint.save(run, model, {'step': step}) for step in steps]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


BREAKAGES = {
    'no state.json': lambda ckpt: (ckpt / 'state.json').unlink(),
    'corrupt state.json': lambda ckpt: (ckpt / 'state.json').write_text('{"step": '),
    'corrupt tensors': lambda ckpt: _truncate(ckpt / 'tensors.safetensors'),
    'truncated model': lambda ckpt: _truncate(ckpt / 'model.mdl'),
}


@pytest.fixture
def warnings_logged():
    """The 'elektronn2' warnings logged during a test."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('elektronn2')
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize('breakage', BREAKAGES)
def test_resume_falls_back_from_a_broken_newest_checkpoint(tmp_path, breakage, warnings_logged):
    first, second, newest = _tiny_checkpoints(tmp_path)
    BREAKAGES[breakage](newest)
    path, model, state = checkpoint.load_newest(tmp_path)
    assert path == second and state['step'] == 2 and model.loss_node is not None
    assert any(str(newest) in w for w in warnings_logged), warnings_logged
    assert checkpoint.list_checkpoints(tmp_path) == [first, second]
    assert len(list(tmp_path.glob('checkpoints/step-000000003.broken-*'))) == 1


def test_no_intact_checkpoint_is_a_clean_error(tmp_path, write_config, capsys):
    run = tmp_path / 'run'
    run.mkdir()
    checkpoints = _tiny_checkpoints(run, steps=(1, 2))
    write_config(run / 'config.py', tmp_path)
    (checkpoints[0] / 'state.json').unlink()
    _truncate(checkpoints[1] / 'tensors.safetensors')
    (run / 'checkpoints' / '.tmp-left').mkdir()
    assert cli.main(['--resume', str(run), '--gpu', 'none']) == 2
    err = capsys.readouterr().err
    assert f"no intact checkpoint in {str(run / 'checkpoints')!r}" in err
    assert 'step-000000001' in err and 'step-000000002' in err
    assert checkpoint.list_checkpoints(run) == checkpoints  # nothing set aside
    assert not (run / 'checkpoints' / '.tmp-left').exists() and rundir.owner(run) is None


def _stale_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays; nothing listens: like after kill -9


@pytest.mark.parametrize('lock_file', [True, False], ids=['free lock', 'no lock file'])
def test_stale_socket_says_no_training_runs(tmp_path, lock_file, capsys):
    if lock_file:
        with rundir.RunDirLock(tmp_path):
            pass
    _stale_socket(tmp_path / SOCKET_NAME)
    assert remote_shell.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"No running training in {str(tmp_path)!r}" in err and '--resume' in err
    assert 'Connection refused' not in err


def test_client_of_a_starting_trainer_is_told_to_wait(tmp_path, capsys):
    with rundir.RunDirLock(tmp_path):
        _stale_socket(tmp_path / SOCKET_NAME)  # the live trainer has not replaced it yet
        assert remote_shell.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and 'has not opened its shell yet' in err


def test_server_removes_a_dead_trainers_socket_and_pointer(tmp_path):
    old_dir = Path(tempfile.mkdtemp(prefix='e2shell-'))
    _stale_socket(old_dir / SOCKET_NAME)
    (tmp_path / f"{SOCKET_NAME}.path").write_text(str(old_dir / SOCKET_NAME))
    with rundir.RunDirLock(tmp_path):
        server = remote_shell.RemoteShellServer(tmp_path)
        try:
            assert not old_dir.exists() and not (tmp_path / f"{SOCKET_NAME}.path").exists()
            assert server.path == tmp_path / SOCKET_NAME
            conn = remote_shell.connect(tmp_path)
            deadline = time.time() + 10
            while not server.pending():
                assert time.time() < deadline
                time.sleep(0.05)
            conn.close()
        finally:
            server.close()
    assert not (tmp_path / SOCKET_NAME).exists()


def test_client_of_a_pointer_to_a_vanished_socket(tmp_path, capsys):
    (tmp_path / f"{SOCKET_NAME}.path").write_text('/tmp/e2shell-gone/shell.sock')
    assert remote_shell.main([str(tmp_path)]) == 1
    assert 'No running training' in capsys.readouterr().err
