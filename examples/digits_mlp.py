#!/usr/bin/env python
"""An MLP on scikit-learn's handwritten digits, its deep part a ``@memsave.checkpointed`` method.

The model is trained twice from the same seed on the same batches: plainly (inside
``memsave.checkpointing(False)``, which turns every checkpoint into a plain call)
and checkpointed.  The loss curves must agree exactly, the checkpointed run's
training step must peak lower, and the test accuracy is reported (> 90%).

    pip install -e '.[examples]'       # scikit-learn: the digits ship with it, no download
    python examples/digits_mlp.py      # --help for options

Duration: ``--quick`` (2 epochs) took 43 s on a busy 2-core machine; the default 20 epochs
take about ten times as long.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import numpy as np
from _digits import compare_losses, finish, load_split, parse_args, train

import memsave as ms
import memsave.functions as F
from memsave import nn


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


def main(argv: Sequence[str] | None = None) -> int:
    def model_options(add: Callable[..., object]) -> None:
        add("--width", type=int, default=64, help="width between blocks (default: %(default)s)")
        add("--hidden", type=int, default=256, help="width inside a block (default: %(default)s)")
        add("--blocks", type=int, default=6,
            help="residual blocks, each a checkpointed method call (default: %(default)s)")

    args = parse_args(__doc__.splitlines()[0], argv, epochs=20, batch=256, quick_epochs=2,
                      model_options=model_options)
    x_train, x_test, y_train, y_test = load_split(args.seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images; MLP 64-"
          f"{args.width}, {args.blocks} residual blocks of width {args.hidden}, "
          f"{args.epochs} epochs, batch {args.batch}")

    def run() -> tuple[nn.Module, list[float], int]:
        return train(lambda: DigitsMLP(args.width, args.hidden, args.blocks), x_train, y_train,
                     epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)

    with ms.checkpointing(False):
        plain, plain_curve, plain_peak = run()
    ckpt, ckpt_curve, ckpt_peak = run()

    agree = compare_losses(plain_curve, ckpt_curve)
    return finish(plain, ckpt, plain_peak, ckpt_peak, x_test, y_test, quick=args.quick, ok=agree)


if __name__ == "__main__":
    sys.exit(main())
