"""elektronn2-queue with a harmless stand-in for elektronn2-train: devices, logs, dask."""
import os
import socket
import stat
import sys

import pytest

from elektronn2.errors import ConfigError
from elektronn2.utils import queue
from elektronn2.utils.queue import (
    DeviceAllocator,
    GpuStatus,
    Limits,
    TrainingQueue,
    build_command,
    query_gpus,
    submit_to_cluster,
)

#: Records its arguments and start/end times next to the config; exits 3 for 'fail' configs.
STAND_IN = ('{python} -c "import sys, time; t0 = time.time(); time.sleep(0.3); '
            "open(sys.argv[1] + '.ran', 'w').write(' '.join([str(t0), str(time.time())] + sys.argv[2:])); "
            "print('training', sys.argv[1]); sys.exit(3 if 'fail' in sys.argv[1] else 0)\" "
            '{config} --gpu {gpu}')
ANY_LOAD = Limits(max_load=1e9, min_free_memory_gb=0)


def configs(tmp_path, names):
    paths = []
    for name in names:
        path = tmp_path / f"{name}.py"
        path.write_text("n_steps = 1\n")
        paths.append(str(path))
    return paths


def ran(config):
    start, end, *args = open(config + '.ran').read().split()
    return float(start), float(end), args


def max_concurrent(intervals):
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def fake_gpus(*statuses):
    return lambda: [GpuStatus(*s) for s in statuses]


def test_build_command_fills_placeholders_and_refuses_unknown_ones():
    assert build_command('elektronn2-train {config} --gpu {gpu}', 'my cfg.py', 'gpu 2') == \
        ['elektronn2-train', 'my cfg.py', '--gpu', '2']
    assert build_command('{python} train.py {config} --gpu {gpu}', 'a.py', 'cpu') == \
        [sys.executable, 'train.py', 'a.py', '--gpu', 'none']
    with pytest.raises(ConfigError, match=r'placeholders \{config\}, \{gpu\} and \{python\}'):
        build_command('train {cfg}', 'a.py', 'cpu')


def test_query_gpus_parses_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    assert query_gpus() == []
    fake = tmp_path / 'nvidia-smi'
    fake.write_text('#!/bin/sh\necho "0, 120, 16280, 3"\necho "1, 15000, 16280, 97"\necho "garbage"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    assert query_gpus() == [GpuStatus(0, 120.0, 16280.0, 3.0), GpuStatus(1, 15000.0, 16280.0, 97.0)]


def test_allocator_gives_free_unclaimed_gpus_then_cpu_slots():
    allocator = DeviceAllocator('auto', cpu_slots=1, limits=ANY_LOAD, gpu_query=fake_gpus(
        (0, 100, 16000, 0), (1, 12000, 16000, 0), (2, 100, 16000, 95), (3, 50, 16000, 5)))
    assert allocator.gpus == [0, 1, 2, 3]
    assert [allocator.acquire() for _ in range(4)] == ['gpu 0', 'gpu 3', 'cpu', None]
    allocator.release('gpu 3')
    allocator.release('cpu')
    assert allocator.acquire() == 'gpu 3'
    assert allocator.acquire() == 'cpu'
    only_one = DeviceAllocator([1], limits=ANY_LOAD, gpu_query=fake_gpus((0, 0, 1, 0), (1, 0, 1, 0)))
    assert (only_one.cpu_slots, only_one.acquire(), only_one.acquire()) == (0, 'gpu 1', None)


def test_cpu_slot_waits_for_load_and_memory():
    busy = DeviceAllocator('none', cpu_slots=4, limits=Limits(max_load=-1))
    assert busy.acquire() is None
    no_memory = DeviceAllocator('none', cpu_slots=4, limits=Limits(max_load=1e9,
                                                                    min_free_memory_gb=1e9))
    assert no_memory.acquire() is None


def test_no_device_at_all_is_a_config_error():
    with pytest.raises(ConfigError, match='--cpu-slots 1'):
        DeviceAllocator('none', cpu_slots=0)


def test_queue_runs_configs_on_cpu_slots_with_logs(tmp_path, caplog):
    paths = configs(tmp_path, ['a', 'b', 'fail_c', 'd'])
    allocator = DeviceAllocator('none', cpu_slots=2, limits=ANY_LOAD)
    with caplog.at_level('INFO', logger='elektronn2'):
        jobs = TrainingQueue(paths, STAND_IN, allocator, tmp_path / 'logs', poll_interval=0.05).run()
    assert [j.returncode for j in jobs] == [0, 0, 3, 0]
    assert all(j.device == 'cpu' and j.host == socket.gethostname() for j in jobs)
    assert all(ran(p)[2] == ['--gpu', 'none'] for p in paths)
    assert max_concurrent([ran(p)[:2] for p in paths]) == 2
    assert open(jobs[1].log_path).read().strip() == f"training {paths[1]}"
    assert sum('Starting' in r.message for r in caplog.records) == 4
    assert any('fail_c.py on cpu: exit code 3' in r.message for r in caplog.records)


def test_queue_spreads_jobs_over_free_gpus(tmp_path):
    paths = configs(tmp_path, ['a', 'b', 'c'])
    allocator = DeviceAllocator('auto', limits=ANY_LOAD, gpu_query=fake_gpus(
        (0, 10, 8000, 0), (1, 7000, 8000, 99), (2, 10, 8000, 1)))
    jobs = TrainingQueue(paths, STAND_IN, allocator, poll_interval=0.05).run()
    assert [j.device for j in jobs][:2] == ['gpu 0', 'gpu 2'] and jobs[2].device in ('gpu 0', 'gpu 2')
    assert [ran(p)[2][1] for p in paths] == [d.split()[1] for d in (j.device for j in jobs)]
    assert max_concurrent([ran(p)[:2] for p in paths]) == 2
    assert ran(paths[2])[0] >= min(ran(p)[1] for p in paths[:2]), 'the third waited for a GPU'


def test_main_runs_the_queue_and_reports(tmp_path, capsys):
    paths = configs(tmp_path, ['x', 'y'])
    args = ['--command', STAND_IN, '--gpus', 'none', '--cpu-slots', '2', '--max-load', '1e9',
            '--min-free-memory', '0', '--poll', '0.05', '--log-dir', str(tmp_path / 'logs')]
    assert queue.main(paths + args) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ['config', 'host'] and len(table) == 3
    assert all(line.split()[-2] == '0' for line in table[1:])
    assert sorted(os.listdir(tmp_path / 'logs')) == ['000_x.log', '001_y.log']
    assert queue.main(configs(tmp_path, ['fail']) + args) == 1
    assert queue.main(paths + ['--gpus', 'none', '--cpu-slots', '0']) == 2
    with pytest.raises(SystemExit):
        queue.main(paths + ['--gpus', 'first'])


def test_submit_to_a_dask_scheduler(tmp_path):
    distributed = pytest.importorskip(
        'distributed', reason="dask.distributed not installed (pip install 'dask[distributed]')")
    paths = configs(tmp_path, ['p', 'q', 'fail_r'])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            jobs = submit_to_cluster(paths, client, STAND_IN, gpus='none', cpu_slots=2,
                                     limits=ANY_LOAD, log_dir=str(tmp_path / 'logs'),
                                     poll_interval=0.05)
        assert queue.main([paths[0], '--scheduler', cluster.scheduler_address, '--command',
                           STAND_IN, '--gpus', 'none', '--cpu-slots', '1', '--max-load', '1e9',
                           '--min-free-memory', '0', '--poll', '0.05']) == 0
    assert [j.config for j in jobs] == paths
    assert [j.returncode for j in jobs] == [0, 0, 3]
    assert all(j.host == socket.gethostname() and j.device == 'cpu' for j in jobs)
    assert all(ran(p)[2] == ['--gpu', 'none'] for p in paths)
    assert max_concurrent([ran(p)[:2] for p in paths]) <= 2
    assert open(jobs[0].log_path).read().strip() == f"training {paths[0]}"
