"""``elektronn2-queue``: run a list of training configs as devices become free.

Each config runs as a command, by default ``elektronn2-train {config} --gpu {gpu}``
(``{gpu}`` is the GPU index, or ``none`` on a CPU slot; ``{python}`` is this Python). A job
starts when a GPU is free (``nvidia-smi``: little memory used, low utilisation, not given to
another job of the queue) or else when a CPU slot is free (``psutil``: load and available
memory). On one machine :class:`TrainingQueue` starts the processes itself; for several
hosts :func:`submit_to_cluster` sends each job to a running ``dask.distributed`` scheduler,
whose workers wait for a free device on their own host (``pip install
'elektronn2[distributed]'``; start one worker per host, with as many threads as jobs it
may run at once).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Sequence

import psutil

from ..errors import ConfigError
from .optional import import_optional

logger = logging.getLogger('elektronn2')

DEFAULT_COMMAND = 'elektronn2-train {config} --gpu {gpu}'


@dataclass(frozen=True)
class GpuStatus:
    """One line of ``nvidia-smi``: memory in MiB, utilisation in percent."""
    index: int
    memory_used: float
    memory_total: float
    utilisation: float


def query_gpus() -> list[GpuStatus]:
    """The GPUs reported by ``nvidia-smi`` (none when it is missing or fails)."""
    if shutil.which('nvidia-smi') is None:
        return []
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=index,memory.used,memory.total,'
                              'utilization.gpu', '--format=csv,noheader,nounits'],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as err:
        logger.warning("nvidia-smi failed (%s); treating this host as having no GPU", err)
        return []
    gpus = []
    for line in out.strip().splitlines():
        fields = [f.strip() for f in line.split(',')]
        try:
            gpus.append(GpuStatus(int(fields[0]), float(fields[1]), float(fields[2]),
                                  float(fields[3])))
        except (ValueError, IndexError):
            logger.warning("Cannot parse nvidia-smi line %r; GPU skipped", line)
    return gpus


@dataclass(frozen=True)
class Limits:
    """When a device counts as free.

    max_gpu_memory: fraction of a GPU's memory in use; max_gpu_utilisation: percent;
    max_load: 1-minute load average per CPU core; min_free_memory_gb: available RAM.
    """
    max_gpu_memory: float = 0.1
    max_gpu_utilisation: float = 20.0
    max_load: float = 1.0
    min_free_memory_gb: float = 2.0


class DeviceAllocator:
    """Hands out free devices ('gpu N' or 'cpu') and takes them back; thread-safe.

    Args:
        gpus: 'auto' (all GPUs nvidia-smi reports), 'none', or GPU indices.
        cpu_slots: jobs that may run on the CPU at once (default: 0 if there are GPUs, else 1).
        limits: thresholds for free GPUs and CPU.
        gpu_query: returns the GPU status (default :func:`query_gpus`).
    """

    def __init__(self, gpus: str | Sequence[int] = 'auto', cpu_slots: int | None = None,
                 limits: Limits = Limits(), gpu_query: Callable[[], list[GpuStatus]] = query_gpus):
        self.limits = limits
        self.gpu_query = gpu_query
        if gpus == 'none':
            self.gpus: list[int] = []
        elif gpus == 'auto':
            self.gpus = [g.index for g in gpu_query()]
        else:
            self.gpus = [int(g) for g in gpus]
        self.cpu_slots = (0 if self.gpus else 1) if cpu_slots is None else int(cpu_slots)
        if not self.gpus and self.cpu_slots < 1:
            raise ConfigError(f"No GPU to use (gpus={gpus!r}) and cpu_slots={cpu_slots}; "
                              f"allow CPU jobs with cpu_slots >= 1 (--cpu-slots 1)")
        self._claimed_gpus: set[int] = set()
        self._cpu_jobs = 0
        self._lock = threading.Lock()

    def _gpu_is_free(self, gpu: GpuStatus) -> bool:
        return (gpu.index in self.gpus and gpu.index not in self._claimed_gpus
                and gpu.memory_used <= self.limits.max_gpu_memory * gpu.memory_total
                and gpu.utilisation <= self.limits.max_gpu_utilisation)

    def _cpu_is_free(self) -> bool:
        if self._cpu_jobs >= self.cpu_slots:
            return False
        load = psutil.getloadavg()[0] / (psutil.cpu_count() or 1)
        free_gb = psutil.virtual_memory().available / 2 ** 30
        return load <= self.limits.max_load and free_gb >= self.limits.min_free_memory_gb

    def acquire(self) -> str | None:
        """A free device, now marked busy ('gpu N' or 'cpu'), or None."""
        with self._lock:
            if self.gpus and len(self._claimed_gpus) < len(self.gpus):
                for gpu in self.gpu_query():
                    if self._gpu_is_free(gpu):
                        self._claimed_gpus.add(gpu.index)
                        return f"gpu {gpu.index}"
            if self._cpu_is_free():
                self._cpu_jobs += 1
                return 'cpu'
        return None

    def release(self, device: str) -> None:
        with self._lock:
            if device == 'cpu':
                self._cpu_jobs -= 1
            else:
                self._claimed_gpus.discard(int(device.split()[1]))


def build_command(template: str, config: str, device: str) -> list[str]:
    """The argument list of ``template`` for one config on one device.

    The template is split like a shell line, then ``{config}``, ``{gpu}`` and ``{python}``
    are filled in each word (literal braces are doubled: ``{{`` and ``}}``).
    """
    values = {'config': config, 'gpu': 'none' if device == 'cpu' else device.split()[1],
              'python': sys.executable}
    try:
        return [token.format(**values) for token in shlex.split(template)]
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"Command template {template!r} is invalid ({err!r}); it may use "
                          f"the placeholders {{config}}, {{gpu}} and {{python}}") from None


@dataclass
class Job:
    """One config's run: where, how it ended, how long it took."""
    config: str
    command: tuple[str, ...] = ()
    host: str = ''
    device: str = ''
    returncode: int | None = None
    seconds: float | None = None
    log_path: str | None = None


def _prepare(job: Job, index: int, device: str, command: str,
             log_dir: str | os.PathLike | None) -> IO[str] | None:
    """Fill in how and where ``job`` runs; return its open log file (None: output inherited)."""
    job.command = tuple(build_command(command, job.config, device))
    job.host, job.device = socket.gethostname(), device
    logger.info("Starting %s on %s, %s: %s", job.config, job.host, device, shlex.join(job.command))
    if log_dir is None:
        return None
    path = Path(log_dir) / f"{index:03d}_{Path(job.config).stem}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    job.log_path = str(path)
    return open(path, 'w')


class TrainingQueue:
    """Runs configs on this machine, each when a device is free.

    Args:
        configs: config files, started in this order.
        command: template, see :func:`build_command`.
        allocator: which devices may be used (default ``DeviceAllocator()``).
        log_dir: where each job's output goes (``NNN_<config>.log``); default: inherited.
        poll_interval: seconds between checks for finished jobs and free devices.
    """

    def __init__(self, configs: Sequence[str], command: str = DEFAULT_COMMAND,
                 allocator: DeviceAllocator | None = None, log_dir: str | os.PathLike | None = None,
                 poll_interval: float = 10.0):
        self.jobs = [Job(str(c)) for c in configs]
        self.command = command
        build_command(command, 'config', 'cpu')          # a bad template fails here, not later
        self.allocator = allocator or DeviceAllocator()
        self.log_dir = log_dir
        self.poll_interval = poll_interval

    def _start(self, index: int, job: Job,
               device: str) -> tuple[subprocess.Popen, float, IO[str] | None]:
        log = _prepare(job, index, device, self.command, self.log_dir)
        process = subprocess.Popen(job.command, stdout=log,
                                   stderr=subprocess.STDOUT if log else None)
        return process, time.monotonic(), log

    def run(self) -> list[Job]:
        """Run all jobs; return them with return codes and durations."""
        pending = deque(enumerate(self.jobs))
        running: dict[int, tuple] = {}
        while pending or running:
            for index, (process, started, log) in list(running.items()):
                if process.poll() is None:
                    continue
                job = self.jobs[index]
                job.returncode, job.seconds = process.returncode, time.monotonic() - started
                if log:
                    log.close()
                self.allocator.release(job.device)
                del running[index]
                logger.info("Finished %s on %s: exit code %d after %.1f s", job.config,
                            job.device, job.returncode, job.seconds)
            while pending:
                device = self.allocator.acquire()
                if device is None:
                    break
                index, job = pending.popleft()
                running[index] = self._start(index, job, device)
            if pending or running:
                time.sleep(self.poll_interval)
        return self.jobs


# --- several hosts: dask.distributed ---------------------------------------------------------
_worker_allocators: dict[tuple, DeviceAllocator] = {}
_worker_lock = threading.Lock()


def run_when_free(config: str, command: str, gpus, cpu_slots: int | None, limits: Limits,
                  poll_interval: float, log_dir: str | None, index: int) -> Job:
    """Wait for a free device on this host, then run one config (a dask task)."""
    key = (tuple(gpus) if not isinstance(gpus, str) else gpus, cpu_slots, limits)
    with _worker_lock:
        if key not in _worker_allocators:
            _worker_allocators[key] = DeviceAllocator(gpus, cpu_slots, limits)
        allocator = _worker_allocators[key]
    while (device := allocator.acquire()) is None:
        time.sleep(poll_interval)
    job = Job(config)
    log = _prepare(job, index, device, command, log_dir)
    started = time.monotonic()
    try:
        job.returncode = subprocess.run(job.command, stdout=log,
                                        stderr=subprocess.STDOUT if log else None).returncode
    finally:
        allocator.release(device)
        if log:
            log.close()
    job.seconds = time.monotonic() - started
    return job


def submit_to_cluster(configs: Sequence[str], scheduler, command: str = DEFAULT_COMMAND,
                      gpus: str | Sequence[int] = 'auto', cpu_slots: int | None = None,
                      limits: Limits = Limits(), log_dir: str | None = None,
                      poll_interval: float = 10.0) -> list[Job]:
    """Run configs on the workers of a dask.distributed scheduler (address or Client).

    Each worker picks a free device on its own host as :class:`TrainingQueue` does
    (``gpus``, ``cpu_slots`` and ``limits`` apply per host); ``log_dir`` is a path on the
    worker hosts. Blocks until all jobs ended; returns them in the order of ``configs``.
    """
    distributed = import_optional('distributed', 'dask[distributed]', 'distributed',
                                  'Submitting jobs to a dask cluster')
    build_command(command, 'config', 'cpu')              # a bad template fails here, not later
    own_client = isinstance(scheduler, str)
    with (distributed.Client(scheduler) if own_client
          else contextlib.nullcontext(scheduler)) as client:
        futures = [client.submit(run_when_free, str(config), command, gpus, cpu_slots, limits,
                                 poll_interval, log_dir, i, pure=False,
                                 key=f"elektronn2-train-{i:03d}-{Path(config).stem}")
                   for i, config in enumerate(configs)]
        logger.info("Submitted %d jobs to %s", len(futures), client.scheduler.address)
        for future in distributed.as_completed(futures):
            job = future.result()
            logger.info("Finished %s on %s, %s: exit code %d after %.1f s", job.config, job.host,
                        job.device, job.returncode, job.seconds)
        return [f.result() for f in futures]


# --- command line ---------------------------------------------------------------------------
def _parse_gpus(text: str) -> str | list[int]:
    if text in ('auto', 'none'):
        return text
    try:
        return [int(g) for g in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus {text!r}: use 'auto', 'none' or indices "
                                         f"like 0,1") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='elektronn2-queue', description='Run training configs, each when a GPU or a CPU '
        'slot is free, here or on the workers of a dask.distributed scheduler.')
    parser.add_argument('configs', nargs='+', help='training config files')
    parser.add_argument('--command', default=DEFAULT_COMMAND,
                        help="command template with {config}, {gpu}, {python} "
                             "(default: %(default)s)")
    parser.add_argument('--gpus', type=_parse_gpus, default='auto',
                        help="'auto' (all GPUs), 'none', or indices like 0,1 (default: auto)")
    parser.add_argument('--cpu-slots', type=int, default=None,
                        help='jobs on the CPU at once (default: 0 with GPUs, else 1)')
    parser.add_argument('--scheduler', help='address of a dask.distributed scheduler to use '
                                            'instead of this machine, e.g. tcp://host:8786')
    parser.add_argument('--log-dir',
                        help="a log file per job here (default: output to this terminal)")
    parser.add_argument('--poll', type=float, default=10.0, help='seconds between checks')
    defaults = Limits()
    parser.add_argument('--max-gpu-memory', type=float, default=defaults.max_gpu_memory,
                        help='a GPU is free below this fraction of used memory (%(default)s)')
    parser.add_argument('--max-gpu-utilisation', type=float, default=defaults.max_gpu_utilisation,
                        help='... and below this utilisation in percent (%(default)s)')
    parser.add_argument('--max-load', type=float, default=defaults.max_load,
                        help='a CPU slot is free below this load average per core (%(default)s)')
    parser.add_argument('--min-free-memory', type=float, default=defaults.min_free_memory_gb,
                        help='... and with this much available RAM in GB (%(default)s)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``elektronn2-queue``; exit code 1 if any job failed."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    limits = Limits(args.max_gpu_memory, args.max_gpu_utilisation, args.max_load,
                    args.min_free_memory)
    try:
        if args.scheduler:
            jobs = submit_to_cluster(args.configs, args.scheduler, args.command, args.gpus,
                                     args.cpu_slots, limits, args.log_dir, args.poll)
        else:
            allocator = DeviceAllocator(args.gpus, args.cpu_slots, limits)
            jobs = TrainingQueue(args.configs, args.command, allocator, args.log_dir,
                                 args.poll).run()
    except ConfigError as err:
        print(f"elektronn2-queue: {err}", file=sys.stderr)
        return 2
    width = max(len('config'), *(len(j.config) for j in jobs))
    print(f"{'config'.ljust(width)}  host / device                 exit  seconds")
    for job in jobs:
        print(f"{job.config.ljust(width)}  {(job.host + ' / ' + job.device).ljust(28)}  "
              f"{job.returncode:4d}  {job.seconds:7.1f}")
    return 0 if all(j.returncode == 0 for j in jobs) else 1


if __name__ == '__main__':
    sys.exit(main())
