"""Workloads W, cnn and transformer in memsave, with ``ms.checkpoint`` and
``ms.checkpoint_sequential``.

    none  plain forward + backward
    each  ``ms.checkpoint(layer, h, weight, bias)`` around every layer
    sqrt  ``ms.checkpoint_sequential(layers, x, segments=segments)``

cnn and transformer are ``memsave.bench``'s workloads, run by its own ``step`` (what
``memsave bench cnn`` measures), at the sizes of workload.py's CNN and TRANSFORMER.

Memory is measured with ``memsave.memory.measure()``, whose ``.peak`` is taken to be the
peak live bytes above the level at the start of the ``with`` block.  Run with an
interpreter where memsave is installed (``pip install -e .``):

    python benchmarks/memsave_bench.py --strategy sqrt --json
    python benchmarks/memsave_bench.py --workload cnn --strategy each --json
"""
from __future__ import annotations

import sys
from collections.abc import Callable

from workload import (
    BLOCK_WORKLOADS,
    WORKLOADS,
    BlockWorkload,
    LayerCounter,
    Step,
    W,
    Workload,
    base_versions,
    bench_parser,
    emit,
    init_arrays,
    run_benchmark,
)

import memsave as ms
import memsave.bench
import memsave.functions as F
import memsave.memory

COUNTER = LayerCounter()
Params = list[tuple[ms.Variable, ms.Variable]]


def layer(h: ms.Variable, weight: ms.Variable, bias: ms.Variable) -> ms.Variable:
    """Linear + tanh; counts its forwards."""
    COUNTER.tick()
    return F.tanh(F.linear(h, weight, bias))


def bound_layer(weight: ms.Variable, bias: ms.Variable) -> Callable[[ms.Variable], ms.Variable]:
    """:func:`layer` with its parameters fixed, for ``checkpoint_sequential``."""
    return lambda h: layer(h, weight, bias)


def run_model(params: Params, x: ms.Variable, wl: Workload, strategy: str) -> ms.Variable:
    """Output of the layers of ``params`` on ``x`` under ``strategy``."""
    if strategy == "sqrt":
        return ms.checkpoint_sequential([bound_layer(w, b) for w, b in params], x,
                                        segments=wl.segments)
    h = x
    for weight, bias in params:
        if strategy == "each":
            h = ms.checkpoint(layer, h, weight, bias)
        else:
            h = layer(h, weight, bias)
    return h


def build(wl: Workload, strategy: str) -> Step:
    """A step closure on ``wl``'s parameters: forward, loss, backward, cleargrad."""
    weights, biases, x_np = init_arrays(wl)
    params = [(ms.Variable(w), ms.Variable(b)) for w, b in zip(weights, biases)]
    x = ms.Variable(x_np, requires_grad=False)

    def step() -> None:
        y = run_model(params, x, wl, strategy)
        loss = F.sum(y * y) / wl.batch
        loss.backward()
        for weight, bias in params:
            weight.cleargrad()
            bias.cleargrad()

    return step


class BlockCounter(LayerCounter):
    """Reads the layer forwards that a ``memsave.bench`` workload counts itself."""

    def __init__(self, workload: memsave.bench.Workload) -> None:
        super().__init__()
        self.workload = workload

    def count_during(self, step: Step) -> int:
        start = self.workload.forwards
        step()
        return self.workload.forwards - start


def build_blocks(wl: BlockWorkload, strategy: str) -> tuple[Step, LayerCounter]:
    """``memsave.bench``'s step on its ``wl.name`` workload at ``wl``'s sizes."""
    workload = memsave.bench.make_workload(wl.name, depth=wl.depth, width=wl.width,
                                           batch=wl.batch, seq=wl.seq, seed=wl.seed)
    return (lambda: memsave.bench.step(workload, strategy)), BlockCounter(workload)


def measured_peak(step: Step) -> int:
    """Peak live bytes of ``step`` as reported by ``memsave.memory.measure()``."""
    with memsave.memory.measure() as usage:
        step()
    return int(usage.peak)


def versions() -> dict[str, str]:
    """Python, NumPy and memsave versions."""
    return {**base_versions(), "memsave": ms.__version__}


def main() -> int:
    args = bench_parser(__doc__.splitlines()[0], WORKLOADS).parse_args()
    if args.workload == "mlp":
        step, counter = build(W, args.strategy), COUNTER
    else:
        step, counter = build_blocks(BLOCK_WORKLOADS[args.workload], args.strategy)
    emit(run_benchmark("memsave", args.strategy, step, counter, measured_peak, args.repeats,
                       versions(), args.workload), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
