#!/usr/bin/env python
"""An MLP on scikit-learn's handwritten digits, its deep part a ``@memsave.checkpointed`` method.

The model is trained twice from the same seed on the same batches: plainly (inside
``memsave.checkpointing(False)``, which turns every checkpoint into a plain call)
and checkpointed.  The loss curves must agree exactly, the checkpointed run's
training step must peak lower, and the test accuracy is reported (> 90%).

    pip install -e '.[examples]'       # scikit-learn: the digits ship with it, no download
    python examples/digits_mlp.py      # --help for options
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import nn, optim
from memsave.memory import MiB, measure


class DigitsMLP(nn.Module):
    """64 pixels -> ``width`` -> ``blocks`` residual blocks -> 10 classes.

    Each block is ``h + fc2(relu(fc1(relu(h))))`` with an inner width ``hidden``;
    :meth:`block` is checkpointed, so of each block only its input (``width`` wide) is
    kept, and its wider activations are recomputed in backward.
    """

    def __init__(self, width: int = 64, hidden: int = 256, blocks: int = 6) -> None:
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.fc1 = nn.Sequential(*[nn.Linear(width, hidden) for _ in range(blocks)])
        self.fc2 = nn.Sequential(*[nn.Linear(hidden, width) for _ in range(blocks)])
        self.out = nn.Linear(width, 10)

    @ms.checkpointed
    def block(self, h: ms.Variable, i: int) -> ms.Variable:
        """Residual block ``i`` (a non-array argument such as ``i`` passes through as is)."""
        return h + self.fc2[i](F.relu(self.fc1[i](F.relu(h))))

    def forward(self, x: np.ndarray) -> ms.Variable:
        h = self.inp(x)
        for i in range(len(self.fc1)):
            h = self.block(h, i)
        return self.out(F.relu(h))


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split (75/25, stratified) of the 1,797 8x8 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y))


def train_step(model: DigitsMLP, opt: optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """Forward, loss, backward and update on one batch; returns the loss."""
    opt.zero_grad()
    loss = F.softmax_cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.array)


def train(args: argparse.Namespace, x: np.ndarray, y: np.ndarray
          ) -> tuple[DigitsMLP, list[float], int]:
    """Train from ``args.seed``; returns the model, the mean loss of each epoch, and the
    peak bytes of one extra training step (measured apart: tracemalloc slows things)."""
    ms.random.seed(args.seed)
    model = DigitsMLP(args.width, args.hidden, args.blocks)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    curve = []
    for _ in range(args.epochs):
        order = rng.permutation(len(x))
        losses = [train_step(model, opt, x[idx], y[idx])
                  for idx in np.array_split(order, max(1, len(x) // args.batch))]
        curve.append(float(np.mean(losses)))
    # Measure on a copy of the state, so the measured step does not touch the model we report.
    state = model.state_dict()
    idx = rng.permutation(len(x))[:args.batch]
    opt.zero_grad()
    with measure() as m:
        train_step(model, opt, x[idx], y[idx])
    model.load_state_dict(state)
    return model, curve, m.peak


def accuracy(model: DigitsMLP, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` classified as ``y``."""
    with ms.no_grad():
        return float((model(x).array.argmax(axis=1) == y).mean())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--epochs", type=int, default=20, help="training epochs (default: %(default)s)")
    add("--batch", type=int, default=256, help="batch size (default: %(default)s)")
    add("--width", type=int, default=64, help="width between blocks (default: %(default)s)")
    add("--hidden", type=int, default=256, help="width inside a block (default: %(default)s)")
    add("--blocks", type=int, default=6,
        help="residual blocks, each a checkpointed method call (default: %(default)s)")
    add("--lr", type=float, default=3e-3, help="Adam's learning rate (default: %(default)s)")
    add("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add("--quick", action="store_true", help="a smoke test: 2 epochs, no accuracy requirement")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 2

    x_train, x_test, y_train, y_test = load_data(args.seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images; MLP 64-"
          f"{args.width}, {args.blocks} residual blocks of width {args.hidden}, "
          f"{args.epochs} epochs, batch {args.batch}")
    with ms.checkpointing(False):
        plain, plain_curve, plain_peak = train(args, x_train, y_train)
    ckpt, ckpt_curve, ckpt_peak = train(args, x_train, y_train)

    print(f"{'epoch':>5}  {'plain loss':>10}  {'checkpointed loss':>17}")
    for epoch, (a, b) in enumerate(zip(plain_curve, ckpt_curve), 1):
        print(f"{epoch:>5}  {a:>10.5f}  {b:>17.5f}")
    diff = float(np.abs(np.subtract(plain_curve, ckpt_curve)).max())
    agree = diff <= 1e-4
    print(f"losses {'agree' if agree else 'DIFFER'}: max |diff| = {diff:.2e}")
    print(f"peak memory of one training step: plain {plain_peak / MiB:.2f} MiB, "
          f"checkpointed {ckpt_peak / MiB:.2f} MiB ({ckpt_peak / plain_peak:.2f}x)")
    acc_plain, acc_ckpt = accuracy(plain, x_test, y_test), accuracy(ckpt, x_test, y_test)
    print(f"test accuracy: plain {acc_plain:.1%}, checkpointed {acc_ckpt:.1%}")
    if not args.quick and acc_ckpt <= 0.9:
        print("test accuracy is not above 90%", file=sys.stderr)
        return 1
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
