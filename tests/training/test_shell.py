"""The interactive shell under a real pseudo-terminal (pexpect)."""

import pexpect

from elektronn2.training import checkpoint

PROMPT = 'elektronn2 >>>'


def test_ctrl_c_shell_setlr_continue_and_kill(tmp_path, trainer_in_terminal):
    child = trainer_in_terminal()
    try:
        child.expect(r'step +\d+/\d+ +loss')
        child.sendcontrol('c')
        child.expect('Training paused at step')
        child.expect(PROMPT)
        child.sendline('setlr 0.0001')
        child.expect('lr = 0.0001')
        child.expect(PROMPT)
        child.sendline('print(model.lr)')
        child.expect(r'(?<![\d.])0\.0001\r\n')
        child.expect(PROMPT)
        child.sendline('1/0')  # errors are shown and do not end the training
        child.expect('ZeroDivisionError')
        child.expect(PROMPT)
        child.send('print(mode')  # TAB completes names from the namespace (jedi)
        child.send('\t')
        child.sendline('.lr * 2)')
        child.expect(r'(?<![\d.])0\.0002\r\n')
        child.expect(PROMPT)
        child.sendline('q')
        child.expect('Training continues.')
        child.expect(r'lr 1\.00e-04')
        child.sendcontrol('c')
        child.expect(PROMPT)
        child.sendline('kill')
        child.expect('Training saves a checkpoint and stops.')
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0, (tmp_path / 'session.log').read_text()[-3000:]
    run = tmp_path / 'runs' / 'run'
    ckpts = checkpoint.list_checkpoints(run)
    assert len(ckpts) == 1 and (run / 'model-final.mdl').exists()
    state = checkpoint.load_state(ckpts[0])
    assert state['optimisers']['hyper_params']['lr'] == 0.0001
    assert 'Training ends (kill)' in (run / 'train.log').read_text()
