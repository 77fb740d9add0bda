#!/usr/bin/env python
"""A small CNN on scikit-learn's 8x8 digits, each of its blocks ``memsave.checkpointed``.

The same network is built twice from the same seed: with plain blocks, and with
every block wrapped as ``memsave.checkpointed(block)`` (a transparent proxy:
parameters, ``state_dict``, ``train()/eval()`` still see the block).  Both are
trained on the same batches; the loss curves must agree exactly, and so must
BatchNorm's running statistics (a recomputed block does not update them twice).
In a network this small part of a step's peak is the convolutions' im2col
workspace, which checkpointing does not touch: the saving grows with depth.

    pip install -e '.[examples]'       # scikit-learn: the digits ship with it, no download
    python examples/digits_cnn.py      # --help for options
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


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (padding 1), each followed by BatchNorm and ReLU.

    A whole block is the unit worth checkpointing: it keeps one input and frees five
    arrays of the same size (a single Conv-BN-ReLU would free about what it keeps,
    and memsave would warn that it saves nothing).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, pad=1, bias=False)
        self.bn1 = nn.BatchNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, pad=1, bias=False)
        self.bn2 = nn.BatchNorm(cout)

    def forward(self, x: ms.Variable) -> ms.Variable:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)))


class DigitsCNN(nn.Module):
    """(N, 1, 8, 8) -> 2 blocks -> max-pool -> 1 block -> max-pool -> linear -> 10 classes."""

    def __init__(self, channels: int = 16, checkpoint: bool = False) -> None:
        super().__init__()
        c = channels
        wrap = ms.checkpointed if checkpoint else (lambda block: block)
        self.stage1 = nn.Sequential(wrap(ConvBlock(1, c)), wrap(ConvBlock(c, c)))
        self.stage2 = nn.Sequential(wrap(ConvBlock(c, 2 * c)))
        self.out = nn.Linear(2 * c * 2 * 2, 10)

    def forward(self, x: np.ndarray) -> ms.Variable:
        h = F.max_pooling_2d(self.stage1(x), 2)        # 8x8 -> 4x4
        h = F.max_pooling_2d(self.stage2(h), 2)        # 4x4 -> 2x2
        return self.out(F.reshape(h, (h.shape[0], -1)))


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split (75/25, stratified) of the 1,797 digits as (N, 1, 8, 8) images in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y))


def train_step(model: DigitsCNN, opt: optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """Forward, loss, backward and update on one batch; returns the loss."""
    opt.zero_grad()
    loss = F.softmax_cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.array)


def train(args: argparse.Namespace, checkpoint: bool, x: np.ndarray, y: np.ndarray
          ) -> tuple[DigitsCNN, list[float], int]:
    """Train from ``args.seed``; returns the model, the mean loss of each epoch, and the
    peak bytes of one extra training step (measured apart: tracemalloc slows things)."""
    ms.random.seed(args.seed)
    model = DigitsCNN(args.channels, checkpoint)
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


def accuracy(model: DigitsCNN, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` classified as ``y`` (evaluation mode: BatchNorm's running statistics)."""
    model.eval()
    with ms.no_grad():
        hits = (model(x).array.argmax(axis=1) == y).mean()
    model.train()
    return float(hits)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    add("--batch", type=int, default=64, help="batch size (default: %(default)s)")
    add("--channels", type=int, default=16,
        help="channels of the first stage; the second has twice as many (default: %(default)s)")
    add("--lr", type=float, default=3e-3, help="Adam's learning rate (default: %(default)s)")
    add("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add("--quick", action="store_true", help="a smoke test: 1 epoch, no accuracy requirement")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1

    x_train, x_test, y_train, y_test = load_data(args.seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images (1x8x8); CNN with "
          f"{args.channels}/{2 * args.channels} channels, {args.epochs} epochs, batch {args.batch}")
    plain, plain_curve, plain_peak = train(args, False, x_train, y_train)
    ckpt, ckpt_curve, ckpt_peak = train(args, True, x_train, y_train)

    print(f"{'epoch':>5}  {'plain loss':>10}  {'checkpointed loss':>17}")
    for epoch, (a, b) in enumerate(zip(plain_curve, ckpt_curve), 1):
        print(f"{epoch:>5}  {a:>10.5f}  {b:>17.5f}")
    diff = float(np.abs(np.subtract(plain_curve, ckpt_curve)).max())
    agree = diff <= 1e-4
    print(f"losses {'agree' if agree else 'DIFFER'}: max |diff| = {diff:.2e}")
    plain_stats, ckpt_stats = dict(plain.named_buffers()), dict(ckpt.named_buffers())
    stats_diff = max(float(np.abs(plain_stats[k] - ckpt_stats[k]).max()) for k in plain_stats)
    stats_agree = stats_diff <= 1e-4
    print(f"BatchNorm running statistics {'agree' if stats_agree else 'DIFFER'}: "
          f"max |diff| = {stats_diff:.2e}")
    print(f"peak memory of one training step: plain {plain_peak / MiB:.2f} MiB, "
          f"checkpointed {ckpt_peak / MiB:.2f} MiB ({ckpt_peak / plain_peak:.2f}x)")
    acc_plain, acc_ckpt = accuracy(plain, x_test, y_test), accuracy(ckpt, x_test, y_test)
    print(f"test accuracy: plain {acc_plain:.1%}, checkpointed {acc_ckpt:.1%}")
    if not args.quick and acc_ckpt <= 0.9:
        print("test accuracy is not above 90%", file=sys.stderr)
        return 1
    return 0 if agree and stats_agree else 1


if __name__ == "__main__":
    sys.exit(main())
