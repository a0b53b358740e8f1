"""Reach the shell of a run without a terminal: ``elektronn2-shell RUN_DIR``.

The trainer listens on a Unix socket ``RUN_DIR/shell.sock`` (owner-only, mode
0600; for run directories with long paths the socket lives in a private
temporary directory and ``RUN_DIR/shell.sock.path`` names it). An attached
client pauses training at the next step; its lines run in the
:class:`~elektronn2.training.shell.TrainingShell`; ``q`` or detaching resumes.

Protocol: one JSON object per line. Client -> trainer ``{"line": "..."}``;
trainer -> client ``{"output": "...", "prompt": "...", "action": null|"continue"|"kill"}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import ConfigError

logger = logging.getLogger('elektronn2')

SOCKET_NAME = 'shell.sock'
_MAX_UNIX_PATH = 100


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + '\n').encode())


def _lines(conn: socket.socket):
    """Decoded JSON messages from a connection until it closes."""
    reader = conn.makefile('r', encoding='utf-8')
    for raw in reader:
        yield json.loads(raw)


class RemoteShellServer:
    """Accepts shell clients on the run's socket in a background thread."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        path = self.run_dir / SOCKET_NAME
        self._tmpdir = None
        if len(str(path)) > _MAX_UNIX_PATH:
            self._tmpdir = tempfile.mkdtemp(prefix='e2shell-')
            path = Path(self._tmpdir) / SOCKET_NAME
            (self.run_dir / f"{SOCKET_NAME}.path").write_text(str(path))
        self.path = path
        if path.exists():
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._sock.listen(1)
        self._client: socket.socket | None = None
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
            if self._ready.is_set():  # one client at a time
                _send(conn, {'output': 'another shell is attached', 'prompt': '', 'action': 'continue'})
                conn.close()
                continue
            self._client = conn
            self._ready.set()

    def pending(self) -> bool:
        """Whether a client waits for the shell (checked between training steps)."""
        return self._ready.is_set()

    def serve(self, shell) -> str:
        """Run the attached client's session in the calling (training) thread."""
        conn = self._client
        action = None
        try:
            _send(conn, {'output': f"Training paused at step {shell.trainer.step}. 'help' lists "
                                   f"the shortcuts, 'q' continues, 'kill' stops.",
                         'prompt': shell.prompt, 'action': None})
            for message in _lines(conn):
                output, action = shell.handle(message.get('line', ''))
                _send(conn, {'output': output, 'prompt': shell.prompt, 'action': action})
                if action is not None:
                    break
        except (OSError, ValueError) as err:
            logger.warning("Shell client lost: %s", err)
        finally:
            conn.close()
            self._client = None
            self._ready.clear()
        shell.finish()
        logger.info("Shell detached (%s)", action or 'continue')
        return action or 'continue'

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        for path in (self.path, self.run_dir / f"{SOCKET_NAME}.path"):
            if path.exists():
                path.unlink()
        if self._tmpdir:
            os.rmdir(self._tmpdir)


def socket_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    pointer = run_dir / f"{SOCKET_NAME}.path"
    path = Path(pointer.read_text().strip()) if pointer.exists() else run_dir / SOCKET_NAME
    if not path.exists():
        raise ConfigError(f"No running training found in {str(run_dir)!r} (no {SOCKET_NAME}); "
                          f"is elektronn2-train running with this run directory?")
    return path


def main(argv: list[str] | None = None) -> int:
    """``elektronn2-shell RUN_DIR``: attach to the shell of a running training."""
    parser = argparse.ArgumentParser(prog='elektronn2-shell', description=main.__doc__)
    parser.add_argument('run_dir', help='run directory of a running elektronn2-train')
    args = parser.parse_args(argv)
    try:
        path = socket_path(Path(args.run_dir))
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
    except (ConfigError, OSError) as err:
        print(f"elektronn2-shell: {err}", file=sys.stderr)
        return 1
    print("Waiting for the training to pause at the next step ...", flush=True)
    read = _prompt_reader()
    messages = _lines(conn)
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


def _prompt_reader():
    """prompt_toolkit on a terminal, plain input() otherwise."""
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        session = PromptSession()
        return session.prompt
    return input


if __name__ == '__main__':
    sys.exit(main())
