"""``elektronn2-train CONFIG [--gpu auto|none|N] [--resume RUN_DIR] [--save-path DIR]
[--distributed] [--mpl-backend auto|NAME|force-NAME]``.

Without ``--gpu``, the ``device`` of the user's rc file (``~/.elektronn2rc``) decides, else
'auto'. ``--mpl-backend`` sets matplotlib's backend before anything imports pyplot.

Everything that can be wrong with a config (missing file, syntax error, no model,
contradicting batch size, missing data or preview files, unknown optimiser) is
reported before the run directory is created. A run directory belongs to one live
trainer: it holds the directory's lock (:mod:`.rundir`) until it ends, so a second
trainer or a ``--resume`` of a live run is refused before it touches anything.
Started by torchrun with several processes, it trains data-parallel (see
:mod:`.distributed`).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..config import config as global_config
from ..config import read_user_settings
from ..console import add_device_options, use_mpl_backend
from ..errors import ConfigError, Error
from .rundir import RunDirLock, backup_sources, create_run_dir
from .status import ConsoleFilter

if TYPE_CHECKING:  # torch and the trainer are imported when needed: --help stays fast
    from .distributed import SingleProcess

logger = logging.getLogger('elektronn2')

_COLOURS = {logging.DEBUG: '\033[2m', logging.INFO: '', logging.WARNING: '\033[33m',
            logging.ERROR: '\033[31m', logging.CRITICAL: '\033[1;31m'}


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        colour = _COLOURS.get(record.levelno, '')
        return f"{colour}{text}\033[0m" if colour else text


def setup_logging(verbose: bool, rank: int = 0) -> None:
    """Console logging (never into the status line; shell actions only into train.log);
    ranks other than 0 of a distributed run report only errors."""
    handler = logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)
    fmt = '%(asctime)s %(levelname)s %(message)s' if rank == 0 else \
        f'%(asctime)s rank {rank} %(levelname)s %(message)s'
    handler.setFormatter(_ColourFormatter(fmt, '%H:%M:%S') if sys.stdout.isatty()
                         else logging.Formatter(fmt, '%H:%M:%S'))
    handler.addFilter(ConsoleFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if rank else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _log_to_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / 'train.log')
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
    logger.addHandler(handler)
    return handler


@contextlib.contextmanager
def _node_reprs_muted():
    """INFO records (each node's repr as it is built) left out while the model is
    built: its summary is logged once afterwards."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _log_fatal(handler: logging.Handler | None, err: BaseException) -> None:
    """``err`` with its traceback into train.log only (the console gets one line)."""
    if handler is not None:
        handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                                         "Training stopped: %s", (err,),
                                         (type(err), err, err.__traceback__)))


def gpu_flag(gpu: str | None) -> str:
    """``--gpu`` as 'auto', 'none' or a GPU index; without it, the ``device`` of the user's
    rc file (a GPU index, 'auto', 'cpu' or 'cuda:N'), else 'auto'. ELEKTRONN2's 'false'
    means 'none'."""
    if gpu is None:
        device = read_user_settings().get('device') or 'auto'
        gpu = {'cpu': 'none', 'cuda': '0'}.get(device, device.removeprefix('cuda:'))
    flag = gpu.strip().lower()
    if flag in ('auto', 'none') or flag.isdigit():
        return flag
    if flag == 'false':
        return 'none'
    raise ConfigError(f"--gpu {gpu!r}: use 'auto', 'none' or a GPU index")


def device_from_gpu_flag(gpu: str) -> str:
    """The :attr:`elektronn2.config.Config.device` of a :func:`gpu_flag` value."""
    return {'auto': 'auto', 'none': 'cpu'}.get(gpu, f"cuda:{gpu}")


def prepare(args, overrides: dict | None = None, parallel: SingleProcess | None = None,
            hold: contextlib.ExitStack | None = None) -> tuple:
    """Config, model, data, preview volume, run directory and resume state.

    ``args``: the parsed command line; ``overrides``: settings replacing the config's;
    ``parallel``: in data-parallel training, only the chief creates and locks the run
    directory; ``hold``: receives the run directory's lock (:class:`.RunDirLock`), for
    the caller to keep while it trains; without it the lock is kept only while preparing.
    A resume starts from the newest intact checkpoint. The config's execution settings
    (precision, ...) apply before the model is built.
    """
    if hold is None:
        with contextlib.ExitStack() as hold:
            return prepare(args, overrides, parallel, hold)
    from . import checkpoint
    from .distributed import SingleProcess
    parallel = parallel or SingleProcess()
    from .experiment import ExperimentConfig, build_data, build_model, check_schedule_targets
    from .preview import load_preview_volume
    overrides = dict(overrides or {})
    if args.save_path:
        overrides['save_path'] = args.save_path
    if args.resume:
        run_dir = Path(args.resume).expanduser()
        if not checkpoint.list_checkpoints(run_dir):  # not a run directory: leave it alone
            raise ConfigError(f"--resume {str(run_dir)!r}: no checkpoint found in "
                              f"{str(run_dir / 'checkpoints')!r}")
        if parallel.is_chief:  # before anything in the run directory changes
            hold.enter_context(RunDirLock(run_dir))
            checkpoint.remove_temporaries(run_dir)
        exp = ExperimentConfig(Path(args.config) if args.config else run_dir / 'config.py', overrides)
        exp.apply_execution_settings()
        _, model, state = checkpoint.load_newest(run_dir, set_aside_broken=parallel.is_chief)
    else:
        if not args.config:
            raise ConfigError("give a CONFIG file (or --resume RUN_DIR)")
        exp = ExperimentConfig(args.config, overrides)
        exp.check_save_path()
        exp.apply_execution_settings()
        with _node_reprs_muted():
            model, state, run_dir = build_model(exp), None, None
    check_schedule_targets(exp, model)
    data = build_data(exp, model)
    preview = (load_preview_volume(exp.preview_data_path, model, exp.preview_kwargs)
               if exp.preview_data_path else None)
    if run_dir is None:
        if parallel.is_chief:
            run_dir = create_run_dir(exp.save_path, exp.save_name)
            hold.enter_context(RunDirLock(run_dir))
            backup_sources(exp.path, run_dir)
        run_dir = parallel.from_chief(run_dir)
    return exp, model, data, preview, run_dir, state


def main(argv: list[str] | None = None) -> int:
    """Train a model as configured by CONFIG (an ELEKTRONN2-style Python config file)."""
    parser = argparse.ArgumentParser(prog='elektronn2-train', description=main.__doc__)
    parser.add_argument('config', nargs='?', help='config file (optional with --resume)')
    parser.add_argument('--resume', metavar='RUN_DIR', help='continue a run from its last checkpoint')
    parser.add_argument('--save-path', metavar='DIR', help='parent directory of the run directory')
    parser.add_argument('--distributed', action='store_true',
                        help='data-parallel training in the processes started by torchrun '
                             '(implied when torchrun starts several)')
    add_device_options(parser)
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    parser.add_argument('--version', action='version', version=f"elektronn2 {__version__}")
    args = parser.parse_args(argv)
    try:
        use_mpl_backend(args.mpl_backend)
    except ConfigError as err:
        parser.error(str(err))
    setup_logging(args.verbose)
    with contextlib.ExitStack() as hold:  # the run directory's lock, held until main returns
        return _train(args, hold)


def _train(args: argparse.Namespace, hold: contextlib.ExitStack) -> int:
    """Prepare and run the training of ``main``; 2 for a config error, 1 for an error
    that ends the training (diverged, bad data), logged to ``train.log`` as well."""
    from . import distributed
    try:
        gpu = gpu_flag(args.gpu)
        parallel = distributed.start(args.distributed, gpu)
        if parallel.world_size == 1:
            global_config.device = device_from_gpu_flag(gpu)
        setup_logging(args.verbose, parallel.rank)
        exp, model, data, preview, run_dir, state = prepare(args, parallel=parallel, hold=hold)
    except Error as err:
        print(f"elektronn2-train: error: {err}", file=sys.stderr)
        return 2
    from .remote_shell import RemoteShellServer
    from .trainer import Trainer
    file_log = _log_to_file(run_dir) if parallel.is_chief else None
    try:
        logger.info("Run directory: %s (device %s, %d process%s)", run_dir,
                    global_config.torch_device, parallel.world_size,
                    'es' if parallel.world_size > 1 else '')
        logger.info("Model:\n%s", model.summary())
        trainer = Trainer(exp, model, data, run_dir, resume_state=state, preview_volume=preview,
                          parallel=parallel)
        if parallel.is_chief:
            trainer.remote = RemoteShellServer(run_dir)
        reason = trainer.run()
    except Error as err:
        _log_fatal(file_log, err)
        print(f"elektronn2-train: error: {err}", file=sys.stderr)
        return 1
    except BaseException as err:
        _log_fatal(file_log, err)
        raise
    finally:
        parallel.close()
    logger.info("Finished (%s); results in %s", reason, run_dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
