"""One data-parallel training run, launched by tests/test_distributed.py (under mpiexec or alone).

    python ddp_worker.py train OUT --checkpoint none|checkpointed|sequential [--batchnorm]
    python ddp_worker.py simulate OUT --ranks 2 --batchnorm      (one process plays the ranks)
    python ddp_worker.py fail
    python ddp_worker.py mismatch

``train`` trains a float64 MLP for two epochs with SGD (momentum) on the shards of a fixed
data set, a global batch of 16 split over the ranks (so 1 rank sees the concatenation of
the 2 ranks' batches), and every rank writes its final parameters and buffers to
OUT.rank<r>.npz.  Each rank initialises from a different seed: only the broadcast from
rank 0 makes the ranks agree.  ``simulate`` is the reference for BatchNorm, whose batch
statistics are per rank: one process runs each rank's shard in turn from the same state and
averages the gradients and running statistics itself.
"""
from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable

import numpy as np

import memsave as ms
import memsave.distributed as dist
import memsave.functions as F
from memsave import nn
from memsave.optim import SGD

GLOBAL_BATCH, SAMPLES, EPOCHS, SEED = 16, 64, 2, 7
# The model is tiny on purpose: its checkpoints exercise the code, they cannot save memory.
warnings.filterwarnings("ignore", category=ms.UselessCheckpointWarning)


def build(batchnorm: bool, checkpoint: str) -> tuple[nn.Module, Callable]:
    """The model and its forward; ``checkpoint`` chooses how its middle is checkpointed."""
    def linear(n_in: int, n_out: int) -> nn.Linear:
        return nn.Linear(n_in, n_out, dtype=np.float64)

    head = [linear(8, 16)] + ([nn.BatchNorm(16, dtype=np.float64)] if batchnorm else []) + [F.tanh]
    middle = nn.Sequential(linear(16, 16), F.tanh, linear(16, 16), F.tanh)
    if checkpoint == "checkpointed":
        middle = ms.checkpointed(middle)
    model = nn.Sequential(*head, middle, linear(16, 4))
    if checkpoint == "sequential":
        return model, lambda x: ms.checkpoint_sequential(list(model), x, segments=3)
    return model, model


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    return rng.standard_normal((SAMPLES, 8)), rng.integers(0, 4, SAMPLES)


def loss_of(forward: Callable, x: np.ndarray, t: np.ndarray) -> ms.Variable:
    return F.softmax_cross_entropy(forward(ms.Variable(x)), t)


def train(out: str, checkpoint: str, batchnorm: bool) -> None:
    dist.init()
    rank, size = dist.rank(), dist.size()
    ms.random.seed(100 + rank)                       # different on every rank on purpose
    model, forward = build(batchnorm, checkpoint)
    ddp = dist.DataParallel(model, bucket_bytes=2048)   # small buckets: several messages
    opt = SGD(ddp.parameters(), lr=0.2, momentum=0.9)
    x, t = data()
    for epoch in range(EPOCHS):
        for idx in dist.sharded_batches(SAMPLES, GLOBAL_BATCH // size, epoch=epoch, seed=SEED):
            opt.zero_grad()
            loss_of(forward, x[idx], t[idx]).backward()
            ddp.allreduce_grads()
            opt.step()
    np.savez(f"{out}.rank{rank}.npz", **model.state_dict())


def simulate(out: str, ranks: int, batchnorm: bool) -> None:
    ms.random.seed(100)
    model, forward = build(batchnorm, "none")
    opt = SGD(model.parameters(), lr=0.2, momentum=0.9)
    params = list(model.parameters())
    buffers = [a for a in model.buffers()]
    x, t = data()
    for epoch in range(EPOCHS):
        shards = [dist.sharded_batches(SAMPLES, GLOBAL_BATCH // ranks, epoch=epoch, seed=SEED,
                                       rank=r, size=ranks) for r in range(ranks)]
        for step_idx in zip(*shards):
            start = [b.copy() for b in buffers]
            grads = [np.zeros_like(p.array) for p in params]
            ends = [np.zeros_like(b) for b in buffers]
            for idx in step_idx:
                for b, s in zip(buffers, start):
                    b[...] = s
                opt.zero_grad()
                loss_of(forward, x[idx], t[idx]).backward()
                for g, p in zip(grads, params):
                    g += p.grad / ranks
                for e, b in zip(ends, buffers):
                    e += b / ranks
            for p, g in zip(params, grads):
                p.grad = g
            for b, e in zip(buffers, ends):
                b[...] = e
            opt.step()
    np.savez(f"{out}.rank0.npz", **model.state_dict())


def fail() -> None:
    """Rank 1 raises while rank 0 waits in a collective: without the abort, a hang."""
    dist.init()
    model = dist.DataParallel(nn.Linear(2, 2))
    if dist.rank() == 1:
        raise ValueError("deliberate failure on rank 1")
    model(np.ones((1, 2), dtype=np.float32)).sum().backward()
    model.allreduce_grads()


def mismatch() -> None:
    """Rank 1 builds a wider layer than rank 0."""
    dist.init()
    dist.DataParallel(nn.Linear(2, 3 + dist.rank()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "simulate", "fail", "mismatch"])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--checkpoint", default="none", choices=["none", "checkpointed", "sequential"])
    parser.add_argument("--batchnorm", action="store_true")
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    if args.mode == "train":
        train(args.out, args.checkpoint, args.batchnorm)
    elif args.mode == "simulate":
        simulate(args.out, args.ranks, args.batchnorm)
    elif args.mode == "fail":
        fail()
    else:
        mismatch()


if __name__ == "__main__":
    main()
