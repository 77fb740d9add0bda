"""Hand-written NumPy forward/backward of workload W: the floor the frameworks are compared to.

Checkpointing is done by hand.  The network is cut into segments; a checkpointed segment
keeps only its input during the forward pass and recomputes its activations right before
its backward.  The strategies map onto segments as follows:

    none  one segment of all layers, not recomputed
    each  one segment per layer, every one recomputed              (2 x depth layer forwards)
    sqrt  ``segments`` segments, all but the last recomputed; the last segment's activations
          are kept from the forward pass as PyTorch's checkpoint_sequential does -- the same
          peak for fewer recomputations                       (2 x depth - segment_size)

Memory is measured with tracemalloc (NumPy reports its data buffers to it).

    python benchmarks/numpy_floor.py --strategy sqrt --repeats 5 --json
    python benchmarks/numpy_floor.py --check      # gradients of the 3 strategies agree
"""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np
from workload import (
    STRATEGIES,
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

Array = np.ndarray
Params = tuple[list[Array], list[Array]]
#: (dL/dW, dL/db) per layer, in layer order.
Grads = list[tuple[Array, Array]]

CHECK_RTOL = 1e-5
COUNTER = LayerCounter()


def layer_forward(h: Array, weight: Array, bias: Array) -> Array:
    """``tanh(h @ weight.T + bias)`` with a single new buffer."""
    COUNTER.tick()
    a = h @ weight.T
    a += bias
    return np.tanh(a, out=a)


def layer_backward(h_in: Array, h_out: Array, g_out: Array, weight: Array,
                   need_input_grad: bool) -> tuple[Array | None, tuple[Array, Array]]:
    """(dL/dh_in or None, (dL/dW, dL/db)) of one layer given dL/dh_out."""
    d = h_out * h_out
    np.subtract(1.0, d, out=d)
    d *= g_out
    g_in = d @ weight if need_input_grad else None
    return g_in, (d.T @ h_in, d.sum(axis=0))


def forward_range(h: Array, params: Params, start: int, stop: int) -> list[Array]:
    """Activations ``[h, h_start+1, ..., h_stop]`` of layers ``start..stop-1``."""
    weights, biases = params
    acts = [h]
    for i in range(start, stop):
        acts.append(layer_forward(acts[-1], weights[i], biases[i]))
    return acts


def forward_dropping(h: Array, params: Params, start: int, stop: int) -> Array:
    """Output of layers ``start..stop-1``, keeping no intermediate activation."""
    weights, biases = params
    for i in range(start, stop):
        h = layer_forward(h, weights[i], biases[i])
    return h


def backward_range(acts: list[Array], g: Array, params: Params, start: int,
                   grads: Grads) -> Array | None:
    """Backpropagate ``g`` through layers ``start..`` whose activations are ``acts``.

    ``acts`` is consumed (emptied) so every activation is freed as soon as it is used.
    Writes each layer's parameter gradients into ``grads`` and returns dL/d(acts[0]),
    or None for the network input.
    """
    weights, _ = params
    for i in range(start + len(acts) - 2, start - 1, -1):
        h_out = acts.pop()
        g, grads[i] = layer_backward(acts[-1], h_out, g, weights[i], need_input_grad=i > 0)
    acts.clear()
    return g


def segment_plan(wl: Workload, strategy: str) -> tuple[int, bool]:
    """(layers per segment, whether the last segment is recomputed too) for ``strategy``."""
    plans = {"none": (wl.depth, False), "each": (1, True), "sqrt": (wl.segment_size, False)}
    return plans[strategy]


def loss_and_grad(y: Array) -> tuple[float, Array]:
    """Loss ``sum(y * y) / batch`` and its gradient ``2 y / batch``."""
    batch = y.shape[0]
    return float(np.vdot(y, y)) / batch, y * (2.0 / batch)


def train_step(params: Params, x: Array, wl: Workload, strategy: str) -> tuple[float, Grads]:
    """Forward, loss and backward of ``wl`` under ``strategy``; returns (loss, grads)."""
    size, recompute_last = segment_plan(wl, strategy)
    starts = list(range(0, wl.depth, size))
    checkpointed = starts if recompute_last else starts[:-1]
    grads: Grads = [None] * wl.depth  # type: ignore[list-item]  # filled by backward_range
    seg_inputs = []
    h = x
    for start in checkpointed:
        seg_inputs.append(h)
        h = forward_dropping(h, params, start, start + size)
    if recompute_last:
        loss, g = loss_and_grad(h)
    else:
        kept = forward_range(h, params, starts[-1], wl.depth)
        loss, g = loss_and_grad(kept[-1])
        g = backward_range(kept, g, params, starts[-1], grads)
    del h
    for start in reversed(checkpointed):
        acts = forward_range(seg_inputs.pop(), params, start, start + size)
        g = backward_range(acts, g, params, start, grads)
    return loss, grads


def build(wl: Workload, strategy: str) -> Step:
    """A step closure on ``wl``'s parameters and input; its gradients are dropped."""
    weights, biases, x = init_arrays(wl)
    params = (weights, biases)
    return lambda: train_step(params, x, wl, strategy)


def relative_error(a: Array, b: Array) -> float:
    """``max|a - b| / max|a|``."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def check(wl: Workload) -> bool:
    """Print and check that every strategy's loss and gradients match ``none``'s."""
    weights, biases, x = init_arrays(wl)
    params = (weights, biases)
    ref_loss, ref_grads = train_step(params, x, wl, "none")
    ok = True
    for strategy in STRATEGIES:
        forwards = COUNTER.count
        loss, grads = train_step(params, x, wl, strategy)
        forwards = COUNTER.count - forwards
        err = max(relative_error(r, g) for ref, got in zip(ref_grads, grads)
                  for r, g in zip(ref, got))
        passed = err <= CHECK_RTOL and abs(loss - ref_loss) <= CHECK_RTOL * abs(ref_loss)
        ok &= passed
        print(f"{strategy:5s} loss {loss:.6f}  layer forwards {forwards:4d}  "
              f"max grad rel err vs none {err:.2e}  {'ok' if passed else 'FAIL'}")
    return ok


def versions() -> dict[str, str]:
    """Python and NumPy versions."""
    return base_versions()


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="check that the strategies' gradients agree, then exit")
    args = parser.parse_args()
    if args.check:
        return 0 if check(W) else 1
    tracemalloc.start()
    step = build(W, args.strategy)
    emit(run_benchmark("numpy", args.strategy, step, COUNTER, tracemalloc_peak, args.repeats,
                       versions()), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
