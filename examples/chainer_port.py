#!/usr/bin/env python
"""A Chainer model that uses ``F.forget``, ported to memsave by changing one import.

``chainer.functions.forget(func, *xs)`` becomes ``memsave.forget(func, *xs)``: same
call, same results.  Each memsave line below carries the Chainer original in a
comment.  Two things Chainer's forget forbids work here: the forgotten function
draws random numbers (dropout; the mask is replayed exactly on recomputation),
and, not shown, double backprop through it.

The model is trained on a synthetic three-armed spiral (no download, no extra
package) twice from the same seed: plainly (``memsave.checkpointing(False)`` turns
every ``forget`` into a plain call) and with ``forget``.  The loss curves must
agree exactly; the peak memory of one training step is printed for each.

Duration: the default run (two trainings of 300 steps) took 496 s on a busy 2-core
machine (load average 9.5); ``--quick`` (10 steps) took 20 s there.

    python examples/chainer_port.py    # --help for options
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

import memsave as ms                            # import chainer
import memsave.functions as F                   # import chainer.functions as F
from memsave import forget                      # from chainer.functions import forget
from memsave import nn as L                     # import chainer.links as L
from memsave import optim                       # from chainer import optimizers
from memsave.memory import MiB, measure


class SpiralNet(L.Module):                      # class SpiralNet(chainer.Chain):
    """2 -> ``units`` -> ``depth`` forgotten blocks (Linear, ReLU, dropout) -> 3 classes."""

    def __init__(self, units: int, depth: int, dropout: float) -> None:
        super().__init__()                      # super().__init__()
        self.dropout = dropout                  # with self.init_scope():  (not needed)
        self.inp = L.Linear(2, units)           #     self.inp = L.Linear(2, units)
        self.hidden = L.Sequential(*[L.Linear(units, units) for _ in range(depth)])
        #   self.hidden = chainer.ChainList(*[L.Linear(units, units) for _ in range(depth)])
        self.out = L.Linear(units, 3)           #     self.out = L.Linear(units, 3)

    def block(self, h: ms.Variable, i: int) -> ms.Variable:
        # Identical in Chainer, except that there F.dropout inside forget is not allowed.
        return F.dropout(F.relu(self.hidden[i](h)), self.dropout)

    def forward(self, x: np.ndarray) -> ms.Variable:
        h = F.relu(self.inp(x))
        for i in range(len(self.hidden)):
            h = forget(lambda v, i=i: self.block(v, i), h)   # same line in Chainer
        return self.out(h)


def spirals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy points on three interleaved spiral arms, labels 0..2."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, size=n)
    r = rng.uniform(0.05, 1.0, size=n)
    theta = 4.0 * r + label * (2 * np.pi / 3) + rng.normal(0, 0.15, size=n)
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1).astype(np.float32)
    return x, label.astype(np.int32)


def train_step(model: SpiralNet, opt: optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """One update; returns the loss."""
    model.cleargrads()                          # model.cleargrads()
    loss = F.softmax_cross_entropy(model(x), y)  # loss = F.softmax_cross_entropy(model(x), y)
    loss.backward()                             # loss.backward()
    opt.step()                                  # optimizer.update()
    return float(loss.array)


def train(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
          ) -> tuple[SpiralNet, list[float], int]:
    """Train from ``args.seed``; the loss of every step, and the peak bytes of one more step."""
    ms.random.seed(args.seed)
    model = SpiralNet(args.units, args.depth, args.dropout)
    opt = optim.Adam(model.parameters(), lr=args.lr)   # opt = optimizers.Adam(alpha=lr)
    #                                                    opt.setup(model)
    rng = np.random.default_rng(args.seed)
    losses = []
    for _ in range(args.steps):
        idx = rng.integers(0, len(x), size=args.batch)
        losses.append(train_step(model, opt, x[idx], y[idx]))
    idx = rng.integers(0, len(x), size=args.batch)
    model.cleargrads()
    with measure() as m:
        train_step(model, opt, x[idx], y[idx])
    return model, losses, m.peak


def accuracy(model: SpiralNet, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction classified correctly, in evaluation mode (no dropout)."""
    # with chainer.using_config("train", False), chainer.no_backprop_mode():
    with ms.using_config("train", False), ms.no_grad():
        return float((model(x).array.argmax(axis=1) == y).mean())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    add("--batch", type=int, default=256, help="batch size (default: %(default)s)")
    add("--units", type=int, default=128, help="hidden width (default: %(default)s)")
    add("--depth", type=int, default=6, help="forgotten blocks (default: %(default)s)")
    add("--dropout", type=float, default=0.1,
        help="dropout ratio inside each forgotten block (default: %(default)s)")
    add("--lr", type=float, default=3e-3, help="Adam's learning rate (default: %(default)s)")
    add("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add("--quick", action="store_true", help="a smoke test: 10 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 10

    x, y = spirals(3000, args.seed)
    x_test, y_test = spirals(1000, args.seed + 1)
    print(f"spirals: {len(x)} training points, 3 classes; {args.depth} forgotten blocks of "
          f"{args.units} units, dropout {args.dropout}, {args.steps} steps, batch {args.batch}")
    with ms.checkpointing(False):
        plain, plain_losses, plain_peak = train(args, x, y)
    ckpt, ckpt_losses, ckpt_peak = train(args, x, y)

    every = max(1, args.steps // 10)
    print(f"{'step':>5}  {'plain loss':>10}  {'forget loss':>11}")
    for step in list(range(0, args.steps, every)) + [args.steps - 1]:
        print(f"{step + 1:>5}  {plain_losses[step]:>10.5f}  {ckpt_losses[step]:>11.5f}")
    diff = float(np.abs(np.subtract(plain_losses, ckpt_losses)).max())
    agree = diff <= 1e-4
    print(f"losses {'agree' if agree else 'DIFFER'}: max |diff| = {diff:.2e}")
    print(f"peak memory of one training step: plain {plain_peak / MiB:.2f} MiB, "
          f"forget {ckpt_peak / MiB:.2f} MiB ({ckpt_peak / plain_peak:.2f}x)")
    print(f"test accuracy: plain {accuracy(plain, x_test, y_test):.1%}, "
          f"forget {accuracy(ckpt, x_test, y_test):.1%}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
