"""Pieces shared by ``digits_mlp.py`` and ``digits_cnn.py``: data, training, reporting.

Not an example itself.  A script run by path has its own directory on ``sys.path``,
so the examples import this module as ``from _digits import ...``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import nn, optim
from memsave.memory import MiB, measure


def load_split(seed: int, images: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split (75/25, stratified) of the 1,797 8x8 digits, pixels scaled to [0, 1].

    ``x`` is (N, 64) vectors, or (N, 1, 8, 8) images with ``images=True``; returns
    ``x_train, x_test, y_train, y_test``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images[:, None] if images else digits.data) / 16.0
    y = digits.target.astype(np.int32)
    return tuple(train_test_split(x.astype(np.float32), y, test_size=0.25,
                                  random_state=seed, stratify=y))


def parse_args(description: str, argv: Sequence[str] | None, *, epochs: int, batch: int,
               quick_epochs: int, model_options: Callable[[Callable[..., object]], None]
               ) -> argparse.Namespace:
    """The scripts' command line: ``--epochs --batch``, the model's own options (added by
    ``model_options(add)``), then ``--lr --seed --quick``; ``--quick`` sets ``quick_epochs``."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--epochs", type=int, default=epochs, help="training epochs (default: %(default)s)")
    add("--batch", type=int, default=batch, help="batch size (default: %(default)s)")
    model_options(add)
    add("--lr", type=float, default=3e-3, help="Adam's learning rate (default: %(default)s)")
    add("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add("--quick", action="store_true",
        help=f"a smoke test: {quick_epochs} epoch{'s' if quick_epochs != 1 else ''}, "
             "no accuracy requirement")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = quick_epochs
    return args


def train_step(model: nn.Module, opt: optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """Forward, loss, backward and update on one batch; returns the loss."""
    opt.zero_grad()
    loss = F.softmax_cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.array)


def train(build: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, *, epochs: int,
          batch: int, lr: float, seed: int) -> tuple[nn.Module, list[float], int]:
    """Seed, ``build()`` a model and train it with Adam; returns the model, the mean loss of
    each epoch, and the peak bytes of one extra training step (measured apart: tracemalloc
    slows things)."""
    ms.random.seed(seed)
    model = build()
    opt = optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    curve = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        losses = [train_step(model, opt, x[idx], y[idx])
                  for idx in np.array_split(order, max(1, len(x) // batch))]
        curve.append(float(np.mean(losses)))
    # Measure on a copy of the state, so the measured step does not touch the model we report.
    state = model.state_dict()
    idx = rng.permutation(len(x))[:batch]
    opt.zero_grad()
    with measure() as m:
        train_step(model, opt, x[idx], y[idx])
    model.load_state_dict(state)
    return model, curve, m.peak


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` classified as ``y``, in evaluation mode (BatchNorm's running
    statistics); the model is left in training mode."""
    model.eval()
    with ms.no_grad():
        hits = (model(x).array.argmax(axis=1) == y).mean()
    model.train()
    return float(hits)


def compare_losses(plain_curve: Sequence[float], ckpt_curve: Sequence[float]) -> bool:
    """Print both loss curves per epoch and whether they agree (within 1e-4); returns that."""
    print(f"{'epoch':>5}  {'plain loss':>10}  {'checkpointed loss':>17}")
    for epoch, (a, b) in enumerate(zip(plain_curve, ckpt_curve), 1):
        print(f"{epoch:>5}  {a:>10.5f}  {b:>17.5f}")
    diff = float(np.abs(np.subtract(plain_curve, ckpt_curve)).max())
    agree = diff <= 1e-4
    print(f"losses {'agree' if agree else 'DIFFER'}: max |diff| = {diff:.2e}")
    return agree


def finish(plain: nn.Module, ckpt: nn.Module, plain_peak: int, ckpt_peak: int,
           x_test: np.ndarray, y_test: np.ndarray, *, quick: bool, ok: bool) -> int:
    """Print the peak memory and the test accuracy of both runs; returns the exit code:
    1 if the checkpointed accuracy is not above 90% (unless ``quick``) or not ``ok``."""
    print(f"peak memory of one training step: plain {plain_peak / MiB:.2f} MiB, "
          f"checkpointed {ckpt_peak / MiB:.2f} MiB ({ckpt_peak / plain_peak:.2f}x)")
    acc_plain, acc_ckpt = accuracy(plain, x_test, y_test), accuracy(ckpt, x_test, y_test)
    print(f"test accuracy: plain {acc_plain:.1%}, checkpointed {acc_ckpt:.1%}")
    if not quick and acc_ckpt <= 0.9:
        print("test accuracy is not above 90%", file=sys.stderr)
        return 1
    return 0 if ok else 1
