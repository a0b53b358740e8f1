"""The interactive training shell (Ctrl+C during training, or ``elektronn2-shell RUN_DIR``).

Shortcuts: ``help``, ``q`` (continue), ``kill`` (save and stop), ``setlr X``,
``setmom X``, ``setwd X``, ``sethist N``, ``preview``, ``paramstats``,
``gradstats``, ``actstats``, ``debugbatch``, ``load PATH``. Anything else runs as
Python with ``model``, ``data``, ``trainer`` (also ``self``), ``batch``,
``exp_config``, ``np``, ``torch`` and ``nm`` in scope; exceptions are printed and
never end the training. Changes take effect at once; the batch workers are
restarted on leaving the shell so they see changed data settings.
"""
from __future__ import annotations

import codeop
import contextlib
import io
import traceback

import jedi
import numpy as np
import torch
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory

HELP = """\
Shortcuts:
  q                continue training          kill          save a checkpoint and stop
  setlr X          set the learning rate      setmom X      set the momentum
  setwd X          set the weight decay       sethist N     monitor every N steps
  preview          write preview images now   debugbatch    save a picture of the batch
  paramstats       parameter statistics       gradstats     gradient statistics (batch)
  actstats         activation statistics      load PATH     load parameters of a model file
  help             this text
Anything else is Python; in scope: model, data, trainer (self), batch, exp_config, np, torch, nm.
"""
PROMPT = 'elektronn2 >>> '


class TrainingShell:
    """Executes shell lines against a paused :class:`~elektronn2.training.trainer.Trainer`."""

    def __init__(self, trainer):
        import elektronn2.neuromancer as nm
        self.trainer = trainer
        self.namespace = {'model': trainer.model, 'data': trainer.data, 'trainer': trainer,
                          'self': trainer, 'batch': trainer.batch, 'exp_config': trainer.exp,
                          'np': np, 'torch': torch, 'nm': nm}
        self._pending = ''
        self.ran_code = False
        self._shortcuts = {
            'help': lambda arg: HELP, 'q': lambda arg: None, 'kill': lambda arg: None,
            'setlr': lambda arg: self._set('lr', arg), 'setmom': lambda arg: self._set('mom', arg),
            'setwd': lambda arg: self._set('wd', arg), 'sethist': self._sethist,
            'preview': lambda arg: f"wrote {[str(p) for p in trainer.preview()]}",
            'paramstats': lambda arg: trainer.model.paramstats(),
            'gradstats': lambda arg: trainer.model.gradstats(*self._batch()),
            'actstats': lambda arg: trainer.model.actstats(*self._batch()),
            'debugbatch': lambda arg: f"wrote {trainer.debug_batch()}",
            'load': self._load,
        }

    @property
    def prompt(self) -> str:
        return '... ' if self._pending else PROMPT

    def handle(self, line: str) -> tuple[str, str | None]:
        """Run one line; returns (output text, action) with action None, 'continue' or 'kill'."""
        word, _, arg = line.strip().partition(' ')
        if not self._pending and word in self._shortcuts:
            try:
                output = self._shortcuts[word](arg.strip())
            except Exception:
                return traceback.format_exc(), None
            action = {'q': 'continue', 'kill': 'kill'}.get(word)
            return ('' if output is None else str(output)), action
        return self._run_python(line), None

    def _run_python(self, line: str) -> str:
        source = self._pending + line
        try:
            code = codeop.compile_command(source, '<shell>', 'single')
        except (SyntaxError, OverflowError, ValueError, MemoryError, RecursionError):
            self._pending = ''  # (the last two: the compiler on very deeply nested code)
            return traceback.format_exc(limit=0)
        if code is None:  # incomplete: wait for more lines
            self._pending = source + '\n'
            return ''
        self._pending = ''
        self.ran_code = True
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            try:
                exec(code, self.namespace)
            except BaseException:  # SystemExit and Ctrl+C too: they end the line, not the training
                traceback.print_exc()
        return buffer.getvalue()

    def _set(self, key: str, arg: str) -> str:
        setattr(self.trainer.model, key, float(arg))
        return f"{key} = {getattr(self.trainer.model, key)}"

    def _sethist(self, arg: str) -> str:
        value = int(arg)
        if value < 1:
            raise ValueError(f"sethist needs a positive number of steps, got {value}")
        self.trainer.history_freq = value
        return f"history_freq = {value}"

    def _batch(self) -> tuple:
        if self.trainer.batch is None:
            self.trainer.batch = self.trainer.batches.next()
        return self.trainer.batch[:len(self.trainer.model.ordered_inputs([self.trainer.model.loss_node]))]

    def _load(self, path: str) -> str:
        from ..neuromancer import modelfile
        _, tensors = modelfile.read(path)
        params = self.trainer.model.all_params()
        missing = sorted(set(params) - set(tensors))
        if missing:
            raise ValueError(f"{path} does not hold parameters {missing} of this model")
        for key, value in tensors.items():
            if key in params:
                node, name = key.split('.', 1)
                self.trainer.model[node].set_param_values({name: value})
        return f"loaded parameters from {path}"

    def finish(self) -> None:
        """After the shell closes: workers see changed data settings."""
        if self.ran_code:
            self.trainer.restart_batches()

    # --- the local prompt -------------------------------------------------------------------
    def run_local(self) -> str:
        """Prompt on this terminal until q/kill (Ctrl+D continues); returns the action."""
        session = PromptSession(history=FileHistory(str(self.trainer.run_dir / '.shell_history')),
                                completer=NamespaceCompleter(self.namespace))
        print(f"\nTraining paused at step {self.trainer.step}. 'help' lists the shortcuts, "
              f"'q' continues, 'kill' stops.", flush=True)
        action = None
        while action is None:
            try:
                line = session.prompt(self.prompt)
            except KeyboardInterrupt:
                self._pending = ''
                continue
            except EOFError:
                action = 'continue'
                break
            output, action = self.handle(line)
            if output:
                print(output.rstrip('\n'), flush=True)
        self.finish()
        print(f"{'Stopping' if action == 'kill' else 'Continuing'} training.", flush=True)
        return action


class NamespaceCompleter(Completer):
    """prompt_toolkit completion of Python over the shell's namespace (jedi)."""

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def get_completions(self, document, complete_event):
        try:
            completions = jedi.Interpreter(document.text_before_cursor, [self.namespace]).complete()
        except Exception:  # jedi cannot parse every incomplete statement
            return
        for c in completions:
            yield Completion(c.name, start_position=-(len(c.name) - len(c.complete)))
