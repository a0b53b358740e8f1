"""elektronn2-shell attaches to a training without a terminal through an owner-only socket."""
import os
import stat
import subprocess
import sys
import time

from elektronn2.training import checkpoint
from elektronn2.training.remote_shell import SOCKET_NAME


def test_attach_change_lr_detach_and_socket_is_private(tmp_path, write_config, train_cmd):
    config = write_config(tmp_path / 'c.py', tmp_path / 'runs', n_steps=100000, history_freq=10,
                          param_save_it=100000, preview_data_path=None, max_runtime=240)
    run = tmp_path / 'runs' / 'run'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    log = open(tmp_path / 'train.out', 'w')
    trainer = subprocess.Popen(train_cmd(config, '--gpu', 'none'), stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        sock = run / SOCKET_NAME
        deadline = time.time() + 120
        while not (sock.exists() and (run / 'history.csv').exists()) and time.time() < deadline:
            time.sleep(0.2)
        assert sock.exists(), (tmp_path / 'train.out').read_text()
        mode = stat.S_IMODE(os.stat(sock).st_mode)
        assert mode & 0o077 == 0, oct(mode)  # not connectable by group or others
        shell = subprocess.run([sys.executable, '-m', 'elektronn2.training.remote_shell', str(run)],
                               input='setlr 0.00025\nprint("lr is", model.lr)\nq\n',
                               capture_output=True, text=True, timeout=120, env=env)
        assert shell.returncode == 0, shell.stderr
        assert 'Training paused at step' in shell.stdout
        assert 'lr = 0.00025' in shell.stdout and 'lr is 0.00025' in shell.stdout
        # training resumed with the new learning rate: a later history row shows it
        deadline = time.time() + 120
        while time.time() < deadline:
            rows = (run / 'history.csv').read_text().splitlines()[1:]
            if rows and float(rows[-1].split(',')[7]) == 0.00025:
                break
            time.sleep(0.5)
        else:
            raise AssertionError('the new lr never appeared in the history')
        assert trainer.poll() is None  # still training after detaching
        kill = subprocess.run([sys.executable, '-m', 'elektronn2.training.remote_shell', str(run)],
                              input='kill\n', capture_output=True, text=True, timeout=120, env=env)
        assert kill.returncode == 0
        assert trainer.wait(timeout=120) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
        log.close()
    assert checkpoint.list_checkpoints(run) and not sock.exists()
    missing = subprocess.run([sys.executable, '-m', 'elektronn2.training.remote_shell', str(run)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and 'No running training' in missing.stderr
