"""Per-op overhead microbenchmark: a tiny MLP where dispatch, not arithmetic, dominates.

Workload TINY: batch 8, width 32, 8 x (Linear + tanh), loss ``sum(y * y) / batch``, plain
forward + backward + gradient zeroing (each framework's ``build(TINY, "none")`` step).
Reported: step time and step time per forward op, counting 3 ops per layer (matmul, bias
add, tanh) plus 3 for the loss (mul, sum, div) = 27.  The backward's ops are not counted
separately, so "per op" covers an op's forward and its backward.

Run each framework with its interpreter (torch and chainer from their venvs):

    python benchmarks/overhead.py --framework numpy --json
    benchmarks/.venvs/torch/bin/python benchmarks/overhead.py --framework torch --json
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time

from workload import TINY, Step, Workload

MODULES = {"numpy": "numpy_floor", "torch": "torch_bench", "chainer": "chainer_bench",
           "memsave": "memsave_bench"}
OPS_PER_LAYER = 3
LOSS_OPS = 3


def forward_ops(wl: Workload) -> int:
    """Forward ops of one step of ``wl``."""
    return OPS_PER_LAYER * wl.depth + LOSS_OPS


def block_times(step: Step, steps: int, blocks: int) -> list[float]:
    """Seconds per step of ``blocks`` blocks of ``steps`` consecutive steps each."""
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return times


def run(framework: str, steps: int, blocks: int, warmup: int) -> dict[str, object]:
    """Build ``framework``'s TINY step, warm it up and time it."""
    module = importlib.import_module(MODULES[framework])
    step = module.build(TINY, "none")
    block_times(step, warmup, 1)
    times = block_times(step, steps, blocks)
    ops = forward_ops(TINY)
    median = statistics.median(times)
    return {"framework": framework, "batch": TINY.batch, "width": TINY.width,
            "depth": TINY.depth, "ops_per_step": ops, "median_step_us": median * 1e6,
            "min_step_us": min(times) * 1e6, "us_per_op": median * 1e6 / ops,
            "versions": module.versions()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(MODULES), required=True)
    parser.add_argument("--steps", type=int, default=500, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks (median taken)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps first")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    result = run(args.framework, args.steps, args.blocks, args.warmup)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['framework']:8s} {result['median_step_us']:9.1f} us/step  "
              f"{result['us_per_op']:7.2f} us/op  ({result['ops_per_step']} ops/step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
