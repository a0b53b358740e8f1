"""The current model is scoped: per thread and per ``building()`` block."""
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest

import elektronn2.neuromancer as nm
from elektronn2.neuromancer.model import Model

N_THREADS = 2


@contextmanager
def interleaved():
    """Switch threads as often as possible, so that races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def in_threads(work, n: int = N_THREADS) -> list:
    """``work(i, barrier)`` run by ``n`` threads at once; their results in order."""
    barrier = threading.Barrier(n)
    with interleaved(), ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: work(i, barrier), range(n)))


def build_net(width: int) -> list:
    """A small 2-D net of several nodes in the current model; the nodes in build order."""
    nodes = [nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw')]
    for _ in range(4):
        nodes.append(nm.Conv(nodes[-1], width, (3, 3), print_repr=False))
    nodes.append(nm.Perceptron(nodes[-1], 2, flatten=True, activation_func='lin',
                               print_repr=False))
    nodes.append(nm.Softmax(nodes[-1], print_repr=False))
    return nodes


def test_threads_building_at_once_get_their_own_nodes(fresh_model):
    def work(i: int, barrier: threading.Barrier):
        barrier.wait()
        model = nm.model_manager.newmodel(f'thread{i}')
        nodes = build_net(width=3 + i)
        return model, nodes

    for _ in range(5):
        for model, nodes in in_threads(work):
            assert list(model.nodes.values()) == nodes
            assert all(n.model is model for n in nodes)
    assert nm.model_manager.current is fresh_model


def test_threads_building_in_scopes_get_their_own_nodes(fresh_model):
    def work(i: int, barrier: threading.Barrier):
        model = nm.model_manager.create(f'scoped{i}')
        barrier.wait()
        with nm.model_manager.building(model):
            return model, build_net(width=3 + i)

    for model, nodes in in_threads(work):
        assert list(model.nodes.values()) == nodes
    assert nm.model_manager.current is fresh_model and not fresh_model.nodes


def test_threads_loading_one_file_at_once_get_complete_models(fresh_model, tmp_path):
    nodes = build_net(width=4)
    reference = nm.model_manager.getmodel()
    reference.designate_nodes(input_node=nodes[0], prediction_node=nodes[-1])
    path = reference.save(tmp_path / 'net.mdl')
    x = np.random.default_rng(0).normal(size=(2, 1, 12, 12)).astype(np.float32)
    expected = reference.predict(x)

    def work(i: int, barrier: threading.Barrier):
        barrier.wait()
        loaded = nm.modelload(path)
        assert nm.model_manager.current is loaded  # it becomes the loader's current model
        return loaded

    for _ in range(3):
        models = in_threads(work)
        assert len({id(m) for m in models}) == N_THREADS
        for loaded in models:
            assert list(loaded.nodes) == list(reference.nodes)
            assert all(n.model is loaded for n in loaded.nodes.values())
            np.testing.assert_array_equal(loaded.predict(x), expected)
    assert nm.model_manager.current is reference


def test_modelload_make_current_false_leaves_the_current_model(fresh_model, tmp_path):
    nodes = build_net(width=3)
    fresh_model.designate_nodes(input_node=nodes[0], prediction_node=nodes[-1])
    path = fresh_model.save(tmp_path / 'net.mdl')
    loaded = nm.modelload(path, make_current=False)
    assert nm.model_manager.current is fresh_model and loaded is not fresh_model
    assert nm.modelload(path) is nm.model_manager.current


def test_building_restores_the_previous_model_after_an_error(fresh_model):
    other = nm.model_manager.create('other')
    with pytest.raises(RuntimeError):
        with nm.model_manager.building(other):
            nm.Input((None, 1, 12, 12), 'b,f,x,y', name='raw', print_repr=False)
            assert nm.model_manager.getmodel() is other
            raise RuntimeError('fails while building')
    assert nm.model_manager.current is fresh_model
    assert list(other.nodes) == ['raw'] and not fresh_model.nodes


def test_building_nests():
    outer, inner = nm.model_manager.create('outer'), nm.model_manager.create('inner')
    previous = nm.model_manager.current
    with nm.model_manager.building(outer):
        with nm.model_manager.building(inner):
            assert nm.model_manager.getmodel() is inner
        assert nm.model_manager.getmodel() is outer
    assert nm.model_manager.current is previous


def test_a_new_thread_starts_without_the_main_threads_model(fresh_model):
    def work():
        return nm.model_manager.current, nm.model_manager.getmodel()

    with ThreadPoolExecutor(1) as pool:
        before, got = pool.submit(work).result()
    assert before is None and isinstance(got, Model) and got is not fresh_model
    assert nm.model_manager.getmodel() is fresh_model
