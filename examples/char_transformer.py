#!/usr/bin/env python
"""A character-level Transformer on Shakespeare, blocks run by ``memsave.checkpoint_sequential``.

The model of ``memsave demo``, written out in full, with more steps and options.
It is trained twice from the same seed on the same batches: plainly, and with
``checkpoint_sequential(blocks, h, segments=...)``, which keeps only each
segment's input and recomputes the rest in backward.  Dropout is on by default:
the recomputation replays the same masks, so the loss curves still agree exactly.
At the end the checkpointed model writes a few lines of "Shakespeare".

Duration: the default run (two trainings of 80 steps) takes several minutes on a
2-core machine (514 s measured on a busy one); ``--quick`` (a tiny model, 3 steps)
takes about 3 s.  ``memsave demo`` is the one-minute version.

    python examples/char_transformer.py --quick          # a smoke test, seconds
    python examples/char_transformer.py                  # several minutes; --help for options
    python examples/char_transformer.py --segments 2 --steps 300 --sample 500
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import nn, optim
from memsave.memory import MiB, measure

TEXT = Path(ms.__file__).parent / "data" / "shakespeare.txt"


class CharTransformer(nn.Module):
    """Token and position embeddings, ``blocks`` Transformer blocks, LayerNorm, linear head.

    ``segments=None`` runs the blocks plainly; otherwise they run through
    ``memsave.checkpoint_sequential`` with that many segments (an int or ``"sqrt"``).
    """

    def __init__(self, vocab: int, width: int, heads: int, blocks: int, context: int,
                 dropout: float, segments: int | str | None) -> None:
        super().__init__()
        self.segments = segments
        self.tok = nn.Embedding(vocab, width, std=0.02)
        self.pos = nn.Embedding(context, width, std=0.02)
        self.blocks = nn.Sequential(*[nn.TransformerBlock(width, heads, dropout=dropout)
                                      for _ in range(blocks)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: np.ndarray) -> ms.Variable:
        h = self.tok(ids) + self.pos(np.arange(ids.shape[-1]))
        if self.segments is None:
            h = self.blocks(h)
        else:
            h = ms.checkpoint_sequential(self.blocks, h, segments=self.segments)
        return self.head(self.ln(h))


def batches(ids: np.ndarray, batch: int, context: int, seed: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Random windows of the text: inputs (batch, context) and the next characters."""
    rng = np.random.default_rng(seed)
    offsets = np.arange(context)
    while True:
        starts = rng.integers(0, len(ids) - context - 1, size=batch)[:, None] + offsets
        yield ids[starts], ids[starts + 1]


def train_step(model: CharTransformer, opt: optim.Optimizer, x: np.ndarray, y: np.ndarray) -> float:
    """Forward, cross-entropy over every position, backward, clipping, update; the loss."""
    opt.zero_grad()
    logits = model(x)
    loss = F.softmax_cross_entropy(F.reshape(logits, (-1, logits.shape[-1])), y.reshape(-1))
    loss.backward()
    nn.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()
    return float(loss.array)


def train(args: argparse.Namespace, ids: np.ndarray, vocab: int, segments: int | str | None,
          label: str) -> tuple[CharTransformer, list[float], float, int]:
    """Train from ``args.seed``: the model, the loss of each step, the median step time (s)
    and the peak bytes of one extra step (measured apart: tracemalloc slows things)."""
    ms.random.seed(args.seed)
    model = CharTransformer(vocab, args.width, args.heads, args.blocks, args.context,
                            args.dropout, segments)
    opt = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    data = batches(ids, args.batch, args.context, args.seed)
    losses, seconds = [], []
    bar = progress_bar(args.steps, label)
    for _ in range(args.steps):
        x, y = next(data)
        start = time.perf_counter()
        losses.append(train_step(model, opt, x, y))
        seconds.append(time.perf_counter() - start)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    state = model.state_dict()          # the measured step must not change the model we report
    x, y = next(data)
    opt.zero_grad()
    with measure() as m:
        train_step(model, opt, x, y)
    model.load_state_dict(state)
    return model, losses, statistics.median(seconds), m.peak


def progress_bar(total: int, label: str):
    """A tqdm bar on stderr if tqdm is installed, else None."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=label, unit="step", file=sys.stderr)


def sample(model: CharTransformer, vocab: Sequence[str], prompt: str, n: int, seed: int) -> str:
    """``n`` characters drawn from the model after ``prompt`` (evaluation mode, no graph)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = [index[ch] for ch in prompt if ch in index] or [0]
    rng = np.random.default_rng(seed)
    context = model.pos.vocab
    with ms.using_config("train", False), ms.no_grad():
        for _ in range(n):
            logits = model(np.array([ids[-context:]], dtype=np.int32)).array[0, -1]
            p = np.exp(logits - logits.max())
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return "".join(vocab[i] for i in ids)


def parse_segments(value: str) -> int | str:
    """``"sqrt"`` or a positive int."""
    if value == "sqrt":
        return value
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"segments must be 'sqrt' or a positive int, got {value}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The default run takes several minutes on a 2-core machine; --quick takes seconds.")
    add = parser.add_argument
    add("--steps", type=int, default=80, help="training steps per run (default: %(default)s)")
    add("--batch", type=int, default=16, help="sequences per batch (default: %(default)s)")
    add("--context", type=int, default=64, help="context length (default: %(default)s)")
    add("--blocks", type=int, default=6, help="Transformer blocks (default: %(default)s)")
    add("--width", type=int, default=128, help="model width (default: %(default)s)")
    add("--heads", type=int, default=4, help="attention heads (default: %(default)s)")
    add("--dropout", type=float, default=0.1, help="dropout ratio (default: %(default)s)")
    add("--segments", type=parse_segments, default="sqrt",
        help="checkpoint_sequential segments: 'sqrt' or an int (default: %(default)s)")
    add("--lr", type=float, default=3e-3, help="AdamW's learning rate (default: %(default)s)")
    add("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add("--sample", type=int, default=None,
        help="characters to generate at the end, 0 for none (default: 200; 20 with --quick)")
    add("--quick", action="store_true", help="a smoke test: a tiny model, 3 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.context, args.blocks, args.width = 3, 4, 16, 4, 32
    if args.sample is None:
        args.sample = 20 if args.quick else 200

    text = TEXT.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.array([index[ch] for ch in text], dtype=np.int32)
    print(f"{len(text):,} characters, {len(vocab)} distinct; {args.blocks} blocks, width "
          f"{args.width}, {args.heads} heads, context {args.context}, batch {args.batch}, "
          f"dropout {args.dropout}, segments {args.segments}, {args.steps} steps")
    if not args.quick:
        print("two trainings of this size take several minutes on a 2-core machine "
              "(--quick: seconds)", flush=True)
    _, plain_losses, plain_time, plain_peak = train(args, ids, len(vocab), None, "plain")
    ckpt, ckpt_losses, ckpt_time, ckpt_peak = train(args, ids, len(vocab), args.segments,
                                                    "checkpointed")

    every = max(1, args.steps // 10)
    print(f"{'step':>5}  {'plain loss':>10}  {'checkpointed loss':>17}")
    for step in sorted(set(range(0, args.steps, every)) | {args.steps - 1}):
        print(f"{step + 1:>5}  {plain_losses[step]:>10.4f}  {ckpt_losses[step]:>17.4f}")
    diff = float(np.abs(np.subtract(plain_losses, ckpt_losses)).max())
    agree = diff <= 1e-4
    print(f"losses {'agree' if agree else 'DIFFER'}: max |diff| = {diff:.2e}")
    print(f"peak memory of one training step: plain {plain_peak / MiB:.1f} MiB, "
          f"checkpointed {ckpt_peak / MiB:.1f} MiB ({ckpt_peak / plain_peak:.2f}x)")
    print(f"median step time: plain {1000 * plain_time:.0f} ms, checkpointed "
          f"{1000 * ckpt_time:.0f} ms ({ckpt_time / plain_time:.2f}x)")
    if args.sample:
        print("sample:\n" + sample(ckpt, vocab, "ROMEO:", args.sample, args.seed))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
