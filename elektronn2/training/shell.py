"""The interactive training shell (Ctrl+C during training, or ``elektronn2-shell RUN_DIR``).

Shortcuts: ``help``, ``q`` (continue), ``kill`` (save and stop), ``setlr X``,
``setmom X``, ``setwd X``, ``sethist N``, ``preview``, ``paramstats``,
``gradstats``, ``actstats``, ``debugbatch``, ``load PATH``, ``sf [NODE]`` (a picture
of a node's filters) and ``ip`` (IPython, in the trainer's terminal). Anything else runs as
Python with ``model``, ``data``, ``trainer`` (also ``self``), ``batch``,
``exp_config``, ``np``, ``torch`` and ``nm`` in scope; exceptions are printed and
never end the training; a shortcut with a bad value answers with one line. Changes
take effect at once, and a variable that a schedule drives continues from the value
set here (the shortcut says how); the batch workers are restarted on leaving the
shell so they see changed data settings. Every line is recorded in ``train.log``
with the step. TAB completes shortcut words and Python names. The module imports
little at first, so that ``elektronn2-shell`` (which uses :class:`ShellCompleter`)
starts fast.
"""
from __future__ import annotations

import codeop
import contextlib
import io
import logging
import traceback
from collections.abc import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory

from .. import neuromancer as nm
from ..errors import ConfigError, Error, ModelFileError
from ..neuromancer import modelfile
from ..utils.introspection import plot_filters
from .experiment import OPTIMISER_RANGES
from .status import TRAIN_LOG_ONLY

HELP = """\
Shortcuts:
  q                continue training          kill          save a checkpoint and stop
  setlr X          set the learning rate      setmom X      set the momentum
  setwd X          set the weight decay       sethist N     monitor every N steps
  preview          write preview images now   debugbatch    save a picture of the batch
  paramstats       parameter statistics       gradstats     gradient statistics (batch)
  actstats         activation statistics      load PATH     load parameters of a model file
  sf [NODE]        picture of NODE's filters  ip            an IPython shell (same variables)
  help             this text
Anything else is Python; in scope: model, data, trainer (self), batch, exp_config, np, torch, nm.
TAB completes shortcuts and Python names.
"""
PROMPT = 'elektronn2 >>> '
#: what the shell says when it closes, by action
FAREWELL = {'continue': 'Training continues.', 'kill': 'Training saves a checkpoint and stops.'}
HISTORY_FREQ_RANGE = (lambda v: v >= 1, 'a positive number of steps (an integer >= 1)')
action_log = logging.getLogger(TRAIN_LOG_ONLY)


class _LeaveHint:
    """``exit`` and ``quit`` in the shell: a hint instead of Python's, which would close
    standard input (and with it the trainer's terminal)."""

    def __repr__(self) -> str:
        return "Use 'q' to continue training or 'kill' to save a checkpoint and stop"

    def __call__(self, *args) -> None:
        print(repr(self))


class TrainingShell:
    """Executes shell lines against a paused :class:`~elektronn2.training.trainer.Trainer`."""

    def __init__(self, trainer):
        import numpy as np
        import torch

        self.trainer = trainer
        self.namespace = {'model': trainer.model, 'data': trainer.data, 'trainer': trainer,
                          'self': trainer, 'batch': trainer.batch, 'exp_config': trainer.exp,
                          'np': np, 'torch': torch, 'nm': nm,
                          'exit': _LeaveHint(), 'quit': _LeaveHint()}
        self._pending = ''
        self.ran_code = False
        self.local = False  # on the trainer's own terminal (run_local), not over a socket
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
            'sf': self._show_filters,
            'ip': self._ipython,
        }

    @property
    def prompt(self) -> str:
        return '... ' if self._pending else PROMPT

    def handle(self, line: str) -> tuple[str, str | None]:
        """Run one line; returns (output text, action) with action None, 'continue' or 'kill'."""
        output, action = self._handle(line)
        if line.strip():
            said = output.strip() or FAREWELL.get(action, '(no output)')
            action_log.info("shell at step %d: %s -> %s", self.trainer.step, line.strip(),
                            said.partition('\n')[0][:200])
        return output, action

    def _handle(self, line: str) -> tuple[str, str | None]:
        word, _, arg = line.strip().partition(' ')
        if not self._pending and word in self._shortcuts:
            try:
                output = self._shortcuts[word](arg.strip())
            except (Error, OSError) as err:  # a bad value or file: one line
                return f"{word}: {err}", None
            except Exception:
                return traceback.format_exc(), None
            action = {'q': 'continue', 'kill': 'kill'}.get(word)
            return ('' if output is None else str(output)), action
        return self._run_python(line), None

    def complete(self, text: str) -> list[tuple[str, int]]:
        """Completions of ``text`` (the line before the cursor): shortcut words at the
        start of a line, then Python names (jedi); each (completion, start position
        relative to the cursor)."""
        import jedi
        word = text.lstrip()
        shortcuts = ([w for w in self._shortcuts if w.startswith(word)]
                     if word and ' ' not in word and not self._pending else [])
        try:
            names = jedi.Interpreter(text, [self.namespace]).complete()
        except Exception:  # jedi cannot parse every incomplete statement
            names = []
        return [(w, -len(word)) for w in shortcuts] + [
            (c.name, -(len(c.name) - len(c.complete))) for c in names if c.name not in shortcuts]

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
        valid, description = OPTIMISER_RANGES[key]
        value = _parse(arg, float, valid, f"a number {description}")
        note = self.trainer.set_by_hand(key, value)
        return f"{key} = {self.trainer.get_variable(key)}" + (f" ({note})" if note else '')

    def _sethist(self, arg: str) -> str:
        self.trainer.history_freq = _parse(arg, int, *HISTORY_FREQ_RANGE)
        return f"history_freq = {self.trainer.history_freq}"

    def _batch(self) -> tuple:
        if self.trainer.batch is None:
            self.trainer.batch = self.trainer.batches.next()
        return self.trainer.batch[:len(self.trainer.model.ordered_inputs([self.trainer.model.loss_node]))]

    def _load(self, path: str) -> str:
        _, tensors = modelfile.read(path)
        params = self.trainer.model.all_params()
        missing = sorted(set(params) - set(tensors))
        if missing:
            raise ModelFileError(f"{path} does not hold parameters {missing} of this model")
        for key, value in tensors.items():
            if key in params:
                node, name = key.split('.', 1)
                self.trainer.model[node].set_param_values({name: value})
        return f"loaded parameters from {path}"

    def _show_filters(self, name: str) -> str:
        """Save ``filters_<NODE>.png`` (a mosaic of the node's filters) in the run
        directory; without a name, of the first node with convolution filters."""
        model = self.trainer.model
        with_filters = [n for n, node in model.nodes.items()
                        if 'w' in node.params and node.params['w'].ndim >= 3]
        if not name:
            if not with_filters:
                raise ConfigError("the model has no node with convolution filters")
            name = with_filters[0]
        elif name not in with_filters:
            raise ConfigError(f"{name!r} is not a node with convolution filters; nodes with "
                              f"filters: {', '.join(with_filters) or 'none'}")
        return f"wrote {plot_filters(model[name], self.trainer.run_dir / f'filters_{name}.png')}"

    def _ipython(self, arg: str) -> str:
        """An embedded IPython shell over this shell's variables, until it exits."""
        if not self.local:
            return "ip: IPython runs only in the trainer's own terminal, not over elektronn2-shell"
        try:
            from IPython.terminal.embed import InteractiveShellEmbed
        except ImportError:
            return ("ip: IPython is not installed (pip install ipython); this shell runs "
                    "Python as well")
        self.ran_code = True
        hints = {k: self.namespace.pop(k) for k in ('exit', 'quit')}  # IPython's own leave it
        try:
            InteractiveShellEmbed(user_ns=self.namespace, exit_msg='',
                                  banner1="IPython with the trainer's variables; exit (or "
                                          "Ctrl+D) returns to the training shell.\n")()
        finally:
            self.namespace.update(hints)
        return 'Back in the training shell.'

    def finish(self) -> None:
        """After the shell closes: workers see changed data settings."""
        if self.ran_code:
            self.trainer.restart_batches()

    # --- the local prompt -------------------------------------------------------------------
    def run_local(self) -> str:
        """Prompt on this terminal until q/kill (Ctrl+D continues); returns the action."""
        session = PromptSession(history=FileHistory(str(self.trainer.run_dir / '.shell_history')),
                                completer=ShellCompleter(self.complete))
        self.local = True
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
        print(FAREWELL[action], flush=True)
        return action


def _parse(arg: str, kind: type, valid: Callable, description: str) -> float:
    """``arg`` as ``kind`` within ``valid``; a one-line ConfigError otherwise."""
    try:
        value = kind(arg)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise ConfigError(f"{arg!r} is not valid; the value must be {description}")
    return value


class ShellCompleter(Completer):
    """prompt_toolkit completion by ``complete(text before the cursor)`` -> (completion,
    start position) pairs (:meth:`TrainingShell.complete`, or over the socket)."""

    def __init__(self, complete: Callable[[str], list[tuple[str, int]]]):
        self.complete = complete

    def get_completions(self, document, complete_event):
        for text, start in self.complete(document.text_before_cursor):
            yield Completion(text, start_position=start)
