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

Duration: ``--quick`` (1 epoch) took 15 s on a busy 2-core machine; the default 4 epochs
take about four times as long.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np
from _digits import compare_losses, finish, load_split, parse_args, train

import memsave as ms
import memsave.functions as F
from memsave import nn


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


def main(argv: Sequence[str] | None = None) -> int:
    def model_options(add: Callable[..., object]) -> None:
        add("--channels", type=int, default=16,
            help="channels of the first stage; the second has twice as many (default: %(default)s)")

    args = parse_args(__doc__.splitlines()[0], argv, epochs=4, batch=64, quick_epochs=1,
                      model_options=model_options)
    x_train, x_test, y_train, y_test = load_split(args.seed, images=True)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images (1x8x8); CNN with "
          f"{args.channels}/{2 * args.channels} channels, {args.epochs} epochs, batch {args.batch}")

    def run(checkpoint: bool) -> tuple[nn.Module, list[float], int]:
        return train(lambda: DigitsCNN(args.channels, checkpoint), x_train, y_train,
                     epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)

    plain, plain_curve, plain_peak = run(False)
    ckpt, ckpt_curve, ckpt_peak = run(True)

    agree = compare_losses(plain_curve, ckpt_curve)
    plain_stats, ckpt_stats = dict(plain.named_buffers()), dict(ckpt.named_buffers())
    stats_diff = max(float(np.abs(plain_stats[k] - ckpt_stats[k]).max()) for k in plain_stats)
    stats_agree = stats_diff <= 1e-4
    print(f"BatchNorm running statistics {'agree' if stats_agree else 'DIFFER'}: "
          f"max |diff| = {stats_diff:.2e}")
    return finish(plain, ckpt, plain_peak, ckpt_peak, x_test, y_test, quick=args.quick,
                  ok=agree and stats_agree)


if __name__ == "__main__":
    sys.exit(main())
