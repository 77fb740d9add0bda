"""Workload W in Chainer on the CPU (NumPy backend), with ``F.forget`` for checkpointing.

    none  plain forward + backward
    each  ``F.forget`` around every layer
    sqrt  ``F.forget`` around each of the ``segments`` segments (the last one included,
          so every layer runs twice: 2 x depth forwards)

Memory is measured with tracemalloc (Chainer's arrays are NumPy arrays).  Run inside the
chainer venv (see setup_venvs.sh):

    benchmarks/.venvs/chainer/bin/python benchmarks/chainer_bench.py --strategy sqrt --json
"""
from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable

import chainer
import chainer.functions as F
from workload import (
    LayerCounter,
    Step,
    W,
    Workload,
    base_versions,
    bench_parser,
    emit,
    init_arrays,
    run_benchmark,
    tracemalloc_peak,
)

COUNTER = LayerCounter()
Params = list[tuple[chainer.Parameter, chainer.Parameter]]
#: A run of layers and its parameters, flat: (weight0, bias0, weight1, bias1, ...).
Unit = tuple[Callable[..., chainer.Variable], tuple[chainer.Parameter, ...]]


def layer(h: chainer.Variable, weight: chainer.Variable,
          bias: chainer.Variable) -> chainer.Variable:
    """Linear + tanh; counts its forwards."""
    COUNTER.tick()
    return F.tanh(F.linear(h, weight, bias))


def run_layers(h: chainer.Variable, *flat_params: chainer.Variable) -> chainer.Variable:
    """Layers applied in order, their (weight, bias) pairs given flat."""
    for weight, bias in zip(flat_params[::2], flat_params[1::2]):
        h = layer(h, weight, bias)
    return h


def units(params: Params, wl: Workload, strategy: str) -> list[Unit]:
    """The runs of layers that ``strategy`` applies one after another."""
    size = {"none": wl.depth, "each": 1, "sqrt": wl.segment_size}[strategy]
    return [(run_layers, tuple(p for pair in params[i:i + size] for p in pair))
            for i in range(0, wl.depth, size)]


def run_model(model: list[Unit], x: chainer.Variable, strategy: str) -> chainer.Variable:
    """Output of ``model`` on ``x``, each unit under ``F.forget`` unless ``strategy`` is none.

    The parameters are passed to ``F.forget`` as inputs: it only backpropagates into its
    inputs, so parameters captured by a closure would get no gradient.
    """
    h = x
    for fn, flat_params in model:
        h = fn(h, *flat_params) if strategy == "none" else F.forget(fn, h, *flat_params)
    return h


def build(wl: Workload, strategy: str) -> Step:
    """A step closure on ``wl``'s parameters: forward, loss, backward, cleargrads."""
    weights, biases, x_np = init_arrays(wl)
    params = [(chainer.Parameter(w), chainer.Parameter(b)) for w, b in zip(weights, biases)]
    x = chainer.Variable(x_np, requires_grad=False)
    model = units(params, wl, strategy)

    def step() -> None:
        y = run_model(model, x, strategy)
        loss = F.sum(y * y) / wl.batch
        loss.backward()
        for weight, bias in params:
            weight.cleargrad()
            bias.cleargrad()

    return step


def versions() -> dict[str, str]:
    """Python, NumPy and Chainer versions."""
    return {**base_versions(), "chainer": chainer.__version__}


def main() -> int:
    args = bench_parser(__doc__.splitlines()[0]).parse_args()
    tracemalloc.start()
    step = build(W, args.strategy)
    emit(run_benchmark("chainer", args.strategy, step, COUNTER, tracemalloc_peak, args.repeats,
                       versions()), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
