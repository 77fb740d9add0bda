"""Run-time configuration: context managers, unknown fields, threads and asyncio (memsave/config.py)."""
import asyncio
import contextvars
import threading

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import config, enable_grad, is_grad_enabled, no_grad, using_config
from memsave.config import _DEFAULTS


def test_defaults():
    assert config.enable_backprop is True
    assert config.train is True
    assert config.checkpointing_enabled is True
    assert config.in_recompute is False
    assert is_grad_enabled() is True


def test_using_config_sets_and_restores():
    with using_config("train", False):
        assert config.train is False
        with using_config("train", True):
            assert config.train is True
        assert config.train is False
    assert config.train is True


def test_no_grad_and_enable_grad_nest():
    with no_grad():
        assert not is_grad_enabled() and config.enable_backprop is False
        with enable_grad():
            assert is_grad_enabled()
            with no_grad():
                assert not is_grad_enabled()
            assert is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()


@pytest.mark.parametrize("make", [lambda: using_config("train", False), no_grad,
                                  lambda: using_config("in_recompute", True)])
def test_config_is_restored_after_an_exception(make):
    before = repr(config)
    with pytest.raises(ZeroDivisionError), make():
        assert repr(config) != before
        _ = 1 / 0
    assert repr(config) == before


def test_enable_grad_restores_no_grad_after_exception():
    with no_grad():
        with pytest.raises(RuntimeError), enable_grad():
            raise RuntimeError
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_unknown_field_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="'enable_backpropp'"):
        _ = config.enable_backpropp
    with pytest.raises(AttributeError, match="'trian'"):
        config.trian = False
    with pytest.raises(AttributeError, match="'no_such_field'.*enable_backprop"), \
            using_config("no_such_field", 1):
        pass  # pragma: no cover
    assert not hasattr(config, "trian")


def test_attribute_assignment_sets_the_field():
    def body():
        config.train = False
        assert config.train is False
        assert "train=False" in repr(config)

    contextvars.copy_context().run(body)  # keep the assignment out of other tests
    assert config.train is True


def test_repr_lists_every_field():
    text = repr(config)
    for name in _DEFAULTS:
        assert f"{name}=" in text


def test_no_grad_affects_graph_building():
    x = ms.Variable(np.array([1.0]))
    with no_grad():
        assert F.tanh(x).creator is None
        with enable_grad():
            assert F.tanh(x).creator is not None
    assert F.tanh(x).creator is not None


def test_threads_each_see_their_own_config():
    n_threads, rounds = 8, 200
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker(i):
        backprop, train = bool(i % 2), bool(i // 2 % 2)
        try:
            with using_config("enable_backprop", backprop), using_config("train", train):
                for _ in range(rounds):
                    barrier.wait(timeout=10)
                    if (config.enable_backprop, config.train) != (backprop, train):
                        errors.append((i, config.enable_backprop, config.train))
                    if is_grad_enabled() != backprop:
                        errors.append((i, "is_grad_enabled"))
                    y = F.tanh(ms.Variable(np.array([0.5])))
                    if (y.creator is not None) != backprop:
                        errors.append((i, "graph"))
            if (config.enable_backprop, config.train) != (True, True):
                errors.append((i, "not restored"))
        except (AssertionError, threading.BrokenBarrierError) as e:  # pragma: no cover
            errors.append((i, repr(e)))
            barrier.abort()

    with no_grad():  # the main thread's setting must not leak into new threads
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not is_grad_enabled()
    assert errors == []


def test_new_thread_starts_from_defaults():
    seen = {}

    def worker():
        seen["values"] = (config.enable_backprop, config.train, config.in_recompute)

    with no_grad(), using_config("train", False), using_config("in_recompute", True):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["values"] == (True, True, False)


def test_asyncio_tasks_see_their_own_config():
    results = {}

    async def task(name, backprop, train, steps):
        with using_config("enable_backprop", backprop), using_config("train", train):
            for _ in range(steps):
                await asyncio.sleep(0)  # let the other tasks run in between
                assert (config.enable_backprop, config.train) == (backprop, train)
        results[name] = (config.enable_backprop, config.train)

    async def main():
        await asyncio.gather(task("a", False, True, 20), task("b", True, False, 15),
                             task("c", False, False, 10), task("d", True, True, 5))
        return (config.enable_backprop, config.train)

    assert asyncio.run(main()) == (True, True)
    assert results == {k: (True, True) for k in "abcd"}
