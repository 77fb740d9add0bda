"""Peak memory of a training step (forward, backward, SGD update) on workload W with the optimizer
applied after backward (``opt.step()``) or inside it (``opt.step_in_backward()``), plain and with
sqrt checkpointing.  Memory is live bytes above the step's start (tracemalloc), so it is exact.

    python benchmarks/step_in_backward.py --batch 256 2048
"""
from __future__ import annotations

import argparse

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import bench
from memsave.memory import MiB, measure
from memsave.optim import SGD


def peak(batch: int, depth: int, width: int, fused: bool, checkpointed: bool) -> int:
    rng = np.random.default_rng(0)
    Ws = [ms.Parameter((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
          for _ in range(depth)]
    layers = [lambda h, W=W: F.tanh(F.linear(h, W)) for W in Ws]
    x = ms.Variable(rng.standard_normal((batch, width)).astype(np.float32))
    opt = SGD(Ws, lr=1e-3, momentum=0.9)
    if fused:
        opt.step_in_backward()

    def step() -> None:
        h = ms.checkpoint_sequential(layers, x, segments="sqrt") if checkpointed else x
        if not checkpointed:
            for layer in layers:
                h = layer(h)
        bench.loss(h).backward()
        if not fused:
            opt.step()
            opt.zero_grad()

    step()                                   # momentum buffers exist from here on
    with measure() as m:
        step()
    return m.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    print("| batch | strategy | step() after backward | step_in_backward | ratio |")
    print("|---:|---|---:|---:|---:|")
    for batch in args.batch:
        for checkpointed in (False, True):
            usual = peak(batch, args.depth, args.width, False, checkpointed)
            fused = peak(batch, args.depth, args.width, True, checkpointed)
            print(f"| {batch} | {'sqrt' if checkpointed else 'none'} | {usual / MiB:.1f} MiB | "
                  f"{fused / MiB:.1f} MiB | {fused / usual:.2f} |")


if __name__ == "__main__":
    main()
