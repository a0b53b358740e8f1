"""``elektronn2-train CONFIG [--gpu auto|none|N] [--resume RUN_DIR] [--save-path DIR]
[--distributed]``.

Everything that can be wrong with a config (missing file, syntax error, no model,
contradicting batch size, missing data or preview files, unknown optimiser) is
reported before the run directory is created. Started by torchrun with several
processes, it trains data-parallel (see :mod:`.distributed`).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import zipfile
from pathlib import Path

from .. import __version__
from ..config import config as global_config
from ..errors import ConfigError, Error
from . import distributed
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
    """Console logging; ranks other than 0 of a distributed run report only errors."""
    handler = logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)
    fmt = '%(asctime)s %(levelname)s %(message)s' if rank == 0 else \
        f'%(asctime)s rank {rank} %(levelname)s %(message)s'
    handler.setFormatter(_ColourFormatter(fmt, '%H:%M:%S') if sys.stdout.isatty()
                         else logging.Formatter(fmt, '%H:%M:%S'))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.ERROR if rank else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _log_to_file(run_dir: Path) -> None:
    handler = logging.FileHandler(run_dir / 'train.log')
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
    logger.addHandler(handler)


def _device_from_gpu_flag(gpu: str) -> str:
    if gpu == 'auto':
        return 'auto'
    if gpu == 'none':
        return 'cpu'
    if gpu.isdigit():
        return f"cuda:{gpu}"
    raise ConfigError(f"--gpu {gpu!r}: use 'auto', 'none' or a GPU index")


def create_run_dir(save_path: str, save_name: str) -> Path:
    """save_path/save_name, or save_name-1, -2, ... if taken (never reuses a directory)."""
    parent = Path(save_path).expanduser()
    parent.mkdir(parents=True, exist_ok=True)
    candidate, i = parent / save_name, 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = parent / f"{save_name}-{i}"


def _backup_sources(config_path: Path, run_dir: Path) -> None:
    shutil.copy2(config_path, run_dir / 'config.py')
    package = Path(__file__).resolve().parents[1]
    with zipfile.ZipFile(run_dir / 'elektronn2-source.zip', 'w', zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(package.rglob('*.py')):
            zf.write(file, file.relative_to(package.parent))


def prepare(args, overrides: dict | None = None, parallel: SingleProcess | None = None) -> tuple:
    """Config, model, data, preview volume, run directory and resume state.

    ``args``: the parsed command line; ``overrides``: settings replacing the config's;
    ``parallel``: in data-parallel training, only the chief creates the run directory.
    The config's execution settings (precision, ...) apply before the model is built.
    """
    parallel = parallel or SingleProcess()
    from ..neuromancer import modelload
    from . import checkpoint
    from .experiment import ExperimentConfig, build_data, build_model
    from .preview import load_preview_volume
    overrides = dict(overrides or {})
    if args.save_path:
        overrides['save_path'] = args.save_path
    if args.resume:
        run_dir = Path(args.resume).expanduser()
        checkpoints = checkpoint.list_checkpoints(run_dir)
        if not checkpoints:
            raise ConfigError(f"--resume {str(run_dir)!r}: no checkpoint found in "
                              f"{str(run_dir / 'checkpoints')!r}")
        exp = ExperimentConfig(Path(args.config) if args.config else run_dir / 'config.py', overrides)
        exp.apply_execution_settings()
        model = modelload(checkpoints[-1] / 'model.mdl')
        state = checkpoint.load_state(checkpoints[-1])
    else:
        if not args.config:
            raise ConfigError("give a CONFIG file (or --resume RUN_DIR)")
        exp = ExperimentConfig(args.config, overrides)
        exp.apply_execution_settings()
        model, state, run_dir = build_model(exp), None, None
    data = build_data(exp, model)
    preview = load_preview_volume(exp.preview_data_path) if exp.preview_data_path else None
    if run_dir is None:
        if parallel.is_chief:
            run_dir = create_run_dir(exp.save_path, exp.save_name)
            _backup_sources(exp.path, run_dir)
        run_dir = parallel.from_chief(run_dir)
    return exp, model, data, preview, run_dir, state


def main(argv: list[str] | None = None) -> int:
    """Train a model as configured by CONFIG (an ELEKTRONN2-style Python config file)."""
    parser = argparse.ArgumentParser(prog='elektronn2-train', description=main.__doc__)
    parser.add_argument('config', nargs='?', help='config file (optional with --resume)')
    parser.add_argument('--gpu', default='auto', help="'auto' (default), 'none' or a GPU index")
    parser.add_argument('--resume', metavar='RUN_DIR', help='continue a run from its last checkpoint')
    parser.add_argument('--save-path', metavar='DIR', help='parent directory of the run directory')
    parser.add_argument('--distributed', action='store_true',
                        help='data-parallel training in the processes started by torchrun '
                             '(implied when torchrun starts several)')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    parser.add_argument('--version', action='version', version=f"elektronn2 {__version__}")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        parallel = distributed.start(args.distributed, args.gpu)
        if parallel.world_size == 1:
            global_config.device = _device_from_gpu_flag(args.gpu)
        setup_logging(args.verbose, parallel.rank)
        exp, model, data, preview, run_dir, state = prepare(args, parallel=parallel)
    except Error as err:
        print(f"elektronn2-train: error: {err}", file=sys.stderr)
        return 2
    from .remote_shell import RemoteShellServer
    from .trainer import Trainer
    try:
        if parallel.is_chief:
            _log_to_file(run_dir)
        logger.info("Run directory: %s (device %s, %d process%s)", run_dir,
                    global_config.torch_device, parallel.world_size,
                    'es' if parallel.world_size > 1 else '')
        logger.info("Model:\n%s", model.summary())
        trainer = Trainer(exp, model, data, run_dir, resume_state=state, preview_volume=preview,
                          parallel=parallel)
        if parallel.is_chief:
            trainer.remote = RemoteShellServer(run_dir)
        reason = trainer.run()
    finally:
        parallel.close()
    logger.info("Finished (%s); results in %s", reason, run_dir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
