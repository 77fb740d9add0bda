#!/usr/bin/env python
"""Data-parallel training over MPI: a checkpointed MLP with BatchNorm on the digits, on N ranks.

Every rank builds the model, :class:`memsave.distributed.DataParallel` copies rank 0's
weights to the others, each rank trains on its own shard of every batch, and after each
backward the gradients (and BatchNorm's running statistics) are averaged over the ranks.
The hidden layers run under ``memsave.checkpoint_sequential``: checkpointing needs no
change for data parallelism.  At the end the ranks compare their models (they must be
identical) and rank 0 reports the test accuracy and the share of time spent communicating.

    pip install -e '.[mpi,examples]'                  # mpi4py + the mpich wheel, scikit-learn
    mpiexec -n 2 python examples/ddp_train.py         # --quick: 2 epochs, well under a minute
    python examples/ddp_train.py                      # the same script on 1 rank
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

import memsave as ms
import memsave.distributed as dist
import memsave.functions as F
from memsave import nn, optim


class Net(nn.Module):
    """64 pixels -> width (BatchNorm, relu) -> ``depth`` x (Linear, relu) -> 10 classes; the
    hidden stack runs as two segments, the first checkpointed."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(64, width), nn.BatchNorm(width), F.relu)
        self.body = nn.Sequential(*[layer for _ in range(depth)
                                    for layer in (nn.Linear(width, width), F.relu)])
        self.tail = nn.Linear(width, 10)

    def forward(self, x: np.ndarray) -> ms.Variable:
        h = ms.checkpoint_sequential(list(self.body), self.head(x), segments=2)
        return self.tail(h)


def load_digits(seed: int) -> tuple[np.ndarray, ...]:
    """The 1,797 8x8 digits (shipped with scikit-learn), split 75/25, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="batch size per rank (default: %(default)s)")
    parser.add_argument("--width", type=int, default=128, help="hidden width (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=8, help="hidden layers (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 2 epochs")
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs

    comm = dist.init()
    rank, size = dist.rank(), dist.size()
    # The ranks share this machine's cores: BLAS threads beyond that only wait on each other.
    threadpool_limits(max(1, (os.cpu_count() or 1) // size))
    x_train, x_test, y_train, y_test = load_digits(args.seed)
    ms.random.seed(args.seed + rank)      # the ranks start apart; DataParallel aligns them
    model = Net(args.width, args.depth)
    ddp = dist.DataParallel(model)
    opt = optim.Adam(ddp.parameters(), lr=args.lr)

    step_s = comm_s = 0.0
    steps = payload = 0
    if rank == 0:
        print(f"{size} rank{'s' if size > 1 else ''}, {args.batch} samples per rank per step")
    for epoch in range(epochs):
        losses = []
        for idx in dist.sharded_batches(len(x_train), args.batch, epoch=epoch, seed=args.seed):
            start = time.perf_counter()
            opt.zero_grad()
            loss = F.softmax_cross_entropy(ddp(x_train[idx]), y_train[idx])
            loss.backward()
            stats = ddp.allreduce_grads()
            opt.step()
            step_s += time.perf_counter() - start
            comm_s += stats.seconds
            payload, steps = stats.bytes, steps + 1
            losses.append(float(loss.array))
        mean_loss = float(np.mean(comm.allgather(float(np.mean(losses)))))
        if rank == 0:
            print(f"epoch {epoch + 1:>2}  loss {mean_loss:.4f}")

    state = model.state_dict()
    reference = comm.bcast(state, root=0)
    diff = max(comm.allgather(max(float(np.abs(state[k] - reference[k]).max()) for k in state)))
    if rank == 0:
        ddp.eval()
        with ms.no_grad():
            accuracy = float((ddp(x_test).array.argmax(axis=1) == y_test).mean())
        print(f"ranks agree: max |diff| = {diff:g}")
        print(f"test accuracy {accuracy:.1%}; all-reduce {payload / 2**20:.2f} MiB per step, "
              f"{comm_s / step_s:.1%} of {step_s / steps * 1e3:.1f} ms per step")
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
