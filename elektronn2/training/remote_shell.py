"""Reach the shell of a run without a terminal: ``elektronn2-shell RUN_DIR``.

The trainer listens on a Unix socket ``RUN_DIR/shell.sock`` (owner-only, mode
0600; for run directories with long paths the socket lives in a private
temporary directory and ``RUN_DIR/shell.sock.path`` names it). An attached
client pauses training at the next step; its lines run in the
:class:`~elektronn2.training.shell.TrainingShell`; ``q`` or detaching resumes.

Protocol: one JSON object per line, UTF-8, at most :data:`MAX_MESSAGE` bytes. The client
opens with :data:`HELLO` within :data:`HELLO_TIMEOUT` seconds (a connection that says
nothing is dropped and never pauses training); the trainer answers, once paused, with a
greeting. Then client -> trainer ``{"line": "..."}`` (exactly this key, a string of at
most :data:`MAX_LINE` characters); trainer -> client ``{"output": "...", "prompt":
"...", "action": null|"continue"|"kill"}`` (the last reply, with an action, says what
the training does now). Or client -> trainer ``{"complete": "..."}`` (the line before
the cursor, same rules) -> ``{"completions": [[text, start_position], ...]}``: TAB
completion of shortcut words and Python names. A malformed message is answered with an
error output and the session goes on; one over :data:`MAX_MESSAGE` bytes ends the
session. Whatever a client sends, and however it leaves, training goes on (or stops
on ``kill``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from ..console import plain
from ..errors import ConfigError
from . import rundir
from .shell import FAREWELL, ShellCompleter

logger = logging.getLogger('elektronn2')

SOCKET_NAME = 'shell.sock'
POINTER_NAME = f"{SOCKET_NAME}.path"
HELLO = {'hello': 'elektronn2-shell'}
HELLO_TIMEOUT = 5.0             # seconds a new connection has to send HELLO
MAX_LINE = 64 * 1024            # characters of one shell line
MAX_MESSAGE = 16 * MAX_LINE     # bytes of one message (JSON escapes may lengthen a line)
REQUESTS = {'line', 'complete'}  # the keys of client messages in a session
_MAX_UNIX_PATH = 100
_TMP_PREFIX = 'e2shell-'


class _BadMessage(ValueError):
    """A client message that breaks the protocol (the session may go on)."""


class _TooLong(_BadMessage):
    """A message without newline within MAX_MESSAGE bytes (the session cannot go on)."""


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + '\n').encode())


def _send_quietly(conn: socket.socket, message: dict) -> None:
    """Send to a client that may be gone already."""
    try:
        _send(conn, message)
    except OSError:
        pass


def _lines(conn: socket.socket):
    """Decoded JSON messages from a connection until it closes (the client's reader)."""
    reader = conn.makefile('r', encoding='utf-8')
    for raw in reader:
        yield json.loads(raw)


class _Reader:
    """Raw newline-terminated messages of a client connection, each at most MAX_MESSAGE bytes."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self._buffer = b''

    def next(self) -> bytes | None:
        """The next message (without its newline), or None when the client has left;
        _TooLong when no newline comes within MAX_MESSAGE bytes."""
        while b'\n' not in self._buffer:
            if len(self._buffer) > MAX_MESSAGE:
                raise _TooLong(f"a message longer than {MAX_MESSAGE} bytes (or without newline)")
            chunk = self.conn.recv(65536)
            if not chunk:
                return None  # an unterminated last message is dropped
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b'\n')
        if len(raw) > MAX_MESSAGE:
            raise _TooLong(f"a message of {len(raw)} bytes; at most {MAX_MESSAGE}")
        return raw


def _decode(raw: bytes) -> object:
    try:
        return json.loads(raw.decode('utf-8'))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, nested too deeply
        raise _BadMessage(f"not a UTF-8 JSON message ({type(err).__name__}: {err}): "
                          f"{raw[:60]!r}") from None


def _request(raw: bytes) -> tuple[str, str]:
    """('line' or 'complete', the text) of a client message; _BadMessage says what is
    wrong with it."""
    message = _decode(raw)
    if not isinstance(message, dict) or len(message) != 1 or not set(message) <= REQUESTS:
        raise _BadMessage(f'expected {{"line": "..."}} or {{"complete": "..."}} and no other '
                          f'keys, got {raw[:60]!r}')
    (kind, text), = message.items()
    if not isinstance(text, str):
        raise _BadMessage(f'"{kind}" must be a string, got {type(text).__name__}')
    if len(text) > MAX_LINE:
        raise _BadMessage(f"a line of {len(text)} characters; at most {MAX_LINE}")
    return kind, text


def _handle(shell, line: str) -> tuple[str, str | None]:
    """``shell.handle(line)``; an exception in it is the output, never the training's end."""
    try:
        output, action = shell.handle(line)
        return str(output), action
    except Exception:
        logger.warning("Shell line %r failed", line[:80], exc_info=True)
        return traceback.format_exc(), None


def _completions(shell, text: str) -> list[tuple[str, int]]:
    """``shell.complete(text)``; none when it fails (completion must never end a session)."""
    try:
        return shell.complete(text)
    except Exception:
        logger.warning("Shell completion of %r failed", text[:80], exc_info=True)
        return []


class RemoteShellServer:
    """Accepts shell clients on the run's socket in a background thread.

    The caller owns the run directory (holds its lock), so a socket or pointer file
    found there at start is a dead trainer's leftover and is removed.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        _remove_leftovers(self.run_dir)
        path = self.run_dir / SOCKET_NAME
        self._tmpdir = None
        if len(str(path)) > _MAX_UNIX_PATH:
            self._tmpdir = tempfile.mkdtemp(prefix=_TMP_PREFIX)
            path = Path(self._tmpdir) / SOCKET_NAME
            (self.run_dir / POINTER_NAME).write_text(str(path))
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._sock.listen(1)
        self._client: tuple[socket.socket, _Reader] | None = None
        self._ready = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name='elektronn2-shell', daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                self._admit(conn)
            except Exception as err:  # OSError, timeout, _BadMessage: this client only
                logger.warning("Shell client refused: %s", err)
                _send_quietly(conn, {'output': f"error: {err}", 'prompt': '', 'action': 'continue'})
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        """Make ``conn`` the attached client once it has said HELLO."""
        if self._ready.is_set():  # one client at a time
            _send(conn, {'output': 'another shell is attached', 'prompt': '', 'action': 'continue'})
            conn.close()
            return
        conn.settimeout(HELLO_TIMEOUT)
        reader = _Reader(conn)
        raw = reader.next()
        if raw is None:
            raise _BadMessage("left without saying hello")
        if _decode(raw) != HELLO:
            raise _BadMessage(f"expected {json.dumps(HELLO)} first, got {raw[:60]!r}")
        conn.settimeout(None)
        self._client = (conn, reader)
        self._ready.set()

    def pending(self) -> bool:
        """Whether a client waits for the shell (checked between training steps)."""
        return self._ready.is_set()

    def serve(self, shell) -> str:
        """Run the attached client's session in the calling (training) thread; returns
        'continue' or 'kill' and never raises, whatever the client sends or does."""
        conn, reader = self._client
        action, farewell = None, None
        try:
            _send(conn, {'output': f"Training paused at step {shell.trainer.step}. 'help' lists "
                                   f"the shortcuts, 'q' continues, 'kill' stops.",
                         'prompt': shell.prompt, 'action': None})
            action, farewell = self._session(conn, reader, shell)
        except _TooLong as err:
            logger.warning("Shell client dropped: %s", err)
            farewell = {'output': f"error: {err}; detached", 'prompt': '', 'action': 'continue'}
        except OSError as err:
            logger.warning("Shell client lost: %s", err)
        except Exception:  # a failure here must not end the training
            logger.exception("Shell session failed")
        finally:
            self._client = None
            self._ready.clear()  # before the last reply: the client may attach again at once
            if farewell is not None:
                _send_quietly(conn, farewell)
            conn.close()
        shell.finish()
        logger.info("Shell detached (%s)", action or 'continue')
        return action or 'continue'

    @staticmethod
    def _session(conn: socket.socket, reader: _Reader, shell) -> tuple[str | None, dict | None]:
        """Lines until an action: ('continue' or 'kill', the reply to send last), or
        (None, None) when the client leaves."""
        while (raw := reader.next()) is not None:
            try:
                kind, text = _request(raw)
            except _BadMessage as err:
                logger.warning("Shell client sent a bad message: %s", err)
                _send(conn, {'output': f"error: {err}", 'prompt': shell.prompt, 'action': None})
                continue
            if kind == 'complete':
                _send(conn, {'completions': _completions(shell, text)})
                continue
            output, action = _handle(shell, text)
            if action is not None:
                farewell = '\n'.join(filter(None, [output.rstrip('\n'), FAREWELL[action]]))
                return action, {'output': farewell, 'prompt': '', 'action': action}
            _send(conn, {'output': output, 'prompt': shell.prompt, 'action': None})
        return None, None

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self._sock.close()
        client = self._client
        if client is not None:  # attached while the training ended
            _send_quietly(client[0], {'output': 'the training has ended', 'prompt': '',
                                      'action': 'continue'})
            client[0].close()
        for path in (self.path, self.run_dir / POINTER_NAME):
            path.unlink(missing_ok=True)
        if self._tmpdir:
            os.rmdir(self._tmpdir)


def _remove_leftovers(run_dir: Path) -> None:
    """A dead trainer's socket, pointer file and the private directory it names."""
    pointer = run_dir / POINTER_NAME
    if pointer.exists():
        old = Path(pointer.read_text(errors='replace').strip())
        if (old.name == SOCKET_NAME and old.parent.name.startswith(_TMP_PREFIX)
                and old.parent.parent == Path(tempfile.gettempdir()) and _is_socket(old)):
            old.unlink()
            os.rmdir(old.parent)
        pointer.unlink()
    (run_dir / SOCKET_NAME).unlink(missing_ok=True)


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def socket_path(run_dir: Path) -> Path:
    """Where the trainer of ``run_dir`` listens (its socket, or the one its pointer names)."""
    pointer = Path(run_dir) / POINTER_NAME
    return Path(pointer.read_text().strip()) if pointer.exists() else Path(run_dir) / SOCKET_NAME


def connect(run_dir: Path) -> socket.socket:
    """A connection to the shell of the trainer owning ``run_dir`` (HELLO sent);
    ConfigError says why there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{str(run_dir)!r} is not a directory; give the run directory of a "
                          f"running elektronn2-train")
    holder = rundir.owner(run_dir)
    if holder is None:  # whatever socket is left there, no live trainer listens on it
        raise ConfigError(f"No running training in {str(run_dir)!r}: no trainer holds its lock "
                          f"(it finished or died; 'elektronn2-train --resume {run_dir}' "
                          f"continues it from its last checkpoint)")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(socket_path(run_dir)))
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        raise ConfigError(f"The trainer of {str(run_dir)!r} ({holder}) has not opened its "
                          f"shell yet; try again in a moment") from None
    _send_quietly(conn, HELLO)  # refused already (another shell attached): its answer follows
    return conn


def main(argv: list[str] | None = None) -> int:
    """``elektronn2-shell RUN_DIR``: attach to the shell of a running training."""
    parser = argparse.ArgumentParser(prog='elektronn2-shell', description=plain(main.__doc__))
    parser.add_argument('run_dir', help='run directory of a running elektronn2-train')
    args = parser.parse_args(argv)
    try:
        conn = connect(Path(args.run_dir))
    except (ConfigError, OSError) as err:
        print(f"elektronn2-shell: {err}", file=sys.stderr)
        return 1
    print("Waiting for the training to pause at the next step ...", flush=True)
    messages = _lines(conn)
    read = _prompt_reader(remote_completion(conn, messages))
    for message in messages:
        if message['output']:
            print(message['output'].rstrip('\n'), flush=True)
        if message['action'] is not None:
            break
        try:
            line = read(message['prompt'])
        except (EOFError, KeyboardInterrupt):
            line = 'q'
        _send(conn, {'line': line})
    conn.close()
    return 0


def remote_completion(conn: socket.socket, messages) -> Callable[[str], list[tuple[str, int]]]:
    """``complete(text)`` asking the trainer over ``conn`` (``messages``: its replies)."""
    def complete(text: str) -> list[tuple[str, int]]:
        _send(conn, {'complete': text})
        return [(str(t), int(start)) for t, start in next(messages).get('completions', [])]
    return complete


def _prompt_reader(complete: Callable[[str], list[tuple[str, int]]]):
    """prompt_toolkit completing with ``complete`` on a terminal, plain input() otherwise."""
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        session = PromptSession(completer=ShellCompleter(complete))
        return session.prompt
    return input


if __name__ == '__main__':
    sys.exit(main())
