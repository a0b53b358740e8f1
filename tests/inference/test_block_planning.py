"""Blocks chosen from the net's footprint within a memory budget; liveness of values in a
graph function (the memory estimate the choice relies on)."""
import logging
import threading
import time
from functools import partial

import numpy as np
import psutil
import pytest

import elektronn2.neuromancer as nm
from elektronn2.data.sources import ArraySource
from elektronn2.inference import plan_prediction, predict_volume
from elektronn2.inference.memory import block_needs, choose_block_shape, region_macs
from elektronn2.inference.predictors import cached_predictor, load_model
from elektronn2.neuromancer.dense import evaluation_bytes, useful_macs_per_voxel
from elektronn2.neuromancer.traversal import release_schedule, topological_order


@pytest.fixture(scope='module')
def volume(fib25_raw):
    return fib25_raw[:20, 30:110, 20:100]


def planner(model, volume):
    source = ArraySource(volume)
    return partial(plan_prediction, model, source), source


def test_chosen_blocks_fit_the_budget_and_grow_with_it(boundary_model, volume):
    replan, source = planner(boundary_model, volume)
    small = replan((16, 16, 16))  # the block the choice starts from
    tight = sum(n.total for n in block_needs(small, source))
    plans = [choose_block_shape(replan, source, budget) for budget in (tight, 64 * tight)]
    for plan, budget in zip(plans, (tight, 64 * tight)):
        assert all(n.total <= budget for n in block_needs(plan, source))
    tight_plan, roomy_plan = plans
    # more memory: fewer, larger blocks and less recomputed context for the region
    assert len(roomy_plan.grid) < len(tight_plan.grid)
    assert region_macs(roomy_plan) < region_macs(tight_plan)
    assert len(roomy_plan.grid) == 1  # this small volume fits into one block


def test_default_blocks_predict_the_same_and_say_so(boundary_model, volume, caplog):
    with caplog.at_level(logging.INFO, logger='elektronn2'):
        chosen = predict_volume(boundary_model, volume)
    plan_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith('Plan:'))
    assert 'MAC per output voxel executed' in plan_line and 'per block task' in plan_line
    assert not [r for r in caplog.records if r.getMessage().startswith('Patch size ')]
    fixed = predict_volume(boundary_model, volume, block_shape=(8, 16, 16))
    np.testing.assert_allclose(chosen, fixed, rtol=1e-5, atol=2e-6)


def test_useful_work_counts_each_layer_once_per_position(boundary_model, unet_model):
    """A strided net densely evaluated: every layer at every position; a U-Net's lower
    levels at a fraction of the positions."""
    node = load_model(boundary_model).prediction_node
    convs = [n for n in topological_order([node]) if isinstance(n, nm.Conv)]
    assert useful_macs_per_voxel(node) == sum(
        c.n_f * c.parent.shape['f'] * np.prod(c.filter_shape) for c in convs)
    unet = load_model(unet_model).prediction_node
    full = sum(n.macs_per_input_position for n in topological_order([unet]))
    assert 0 < useful_macs_per_voxel(unet) < full


def test_values_are_released_after_their_last_consumer():
    inp = nm.Input((None, 1, 12, 12), 'b,f,y,x', name='raw')
    a = nm.Conv(inp, 2, (3, 3), name='a')
    b = nm.Conv(a, 2, (3, 3), name='b')
    c = nm.Conv(b, 2, (1, 1), name='c')
    merged = nm.Concat([nm.Crop(a, (1, 1), name='crop'), c], axis='f', name='merged')
    order = topological_order([merged])
    position = {n: i for i, n in enumerate(order)}
    schedule = release_schedule(order, [merged])
    when = {d: i for i, done in enumerate(schedule) for d in done}
    assert set(when) == set(order) - {merged}  # each value dropped once, the result kept
    for node in order:  # never before a consumer has used it
        assert all(when[p] >= position[node] for p in node.parents)
    x = np.random.default_rng(0).random((2, 1, 12, 12), dtype=np.float32)
    fn = merged.model.function([merged])
    assert np.allclose(fn.numpy(x)[0], merged(x))


def test_memory_estimate_of_an_mfp_block_is_close_to_measured(boundary_model, volume):
    """evaluation_bytes against the growth of the process's memory while one MFP block is
    predicted (within a factor 1.5 either way: allocator and thread pools vary)."""
    replan, _ = planner(boundary_model, volume)
    plan = replan((16, 64, 64))
    predictor = cached_predictor(plan.spec)
    block = plan.grid.block((0, 0, 0)).compute
    raw = np.zeros((1,) + predictor.input_box(block).shape, np.float32)
    predictor.predict(raw, block)  # warm-up: thread pools, caches
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)
    watcher = threading.Thread(target=watch)
    watcher.start()
    predictor.predict(raw + 0.5, block)
    done.set()
    watcher.join()
    estimate = evaluation_bytes(predictor.node, 1)
    grown = peak[0] - before
    assert grown < 1.5 * estimate + 2 ** 20, (grown, estimate)
