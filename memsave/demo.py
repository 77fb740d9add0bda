"""``memsave demo``: a character-level Transformer trained plain and with checkpointing.

The same model, from the same seed, on the same batches, is trained three ways:

``plain``
    every intermediate array is kept for the backward pass;
``each block``
    every :class:`~memsave.nn.TransformerBlock` is wrapped with
    :func:`memsave.checkpointed`, so only block inputs are kept;
``sqrt``
    :func:`memsave.checkpoint_sequential` with ``segments="sqrt"``.

Checkpointing recomputes exactly, so the three loss curves must agree; the table
shows what each strategy costs in step time (min, median and max over the timed
steps) and saves in peak memory.  The default size finishes in well under a minute
on a 2-core machine; :data:`FULL` is the larger run of ``memsave demo --full``.

>>> cfg = DemoConfig(steps=1, batch=2, seq=8, blocks=2, width=16, heads=2)
>>> results = [run_strategy(s, cfg, progress=False) for s in STRATEGIES]
>>> max_loss_difference(results) <= LOSS_TOLERANCE
True
"""
from __future__ import annotations

import gc
import math
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import backend, bench, nn, optim
from memsave.memory import MiB, measure

__all__ = ["STRATEGIES", "LOSS_TOLERANCE", "FULL", "DemoConfig", "StrategyResult", "DemoError",
           "load_text", "encode", "CharTransformer", "build_model", "batches", "train_step",
           "estimate_seconds", "run_strategy", "max_loss_difference", "format_table",
           "format_duration", "run"]

STRATEGIES = ("plain", "each block", "sqrt")
LOSS_TOLERANCE = 1e-4
ESTIMATE_FACTOR = 3.7
"""Cost of one step of every strategy in plain steps: 1 for plain, about 1.35 for each of
the two checkpointed strategies (they run most of the forward pass twice)."""
DATA_FILE = Path(__file__).parent / "data" / "shakespeare.txt"


class DemoError(RuntimeError):
    """The demo cannot run as asked (for instance ``--device gpu`` without a GPU)."""


@dataclass(frozen=True)
class DemoConfig:
    """Model size and training run of the demo (the CLI's options).

    Each strategy trains ``1 + steps`` steps (the first is a warm-up and is not timed),
    then runs one more step under tracemalloc for the peak memory.
    """

    steps: int = 10
    batch: int = 8
    seq: int = 64
    blocks: int = 6
    width: int = 64
    heads: int = 4
    lr: float = 3e-3
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq", "blocks", "width", "heads"):
            if getattr(self, name) < 1:
                raise DemoError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise DemoError(f"--width ({self.width}) must be divisible by the number of heads "
                            f"({self.heads})")
        if self.device not in ("cpu", "gpu"):
            raise DemoError(f"--device must be 'cpu' or 'gpu', got {self.device!r}")


FULL = DemoConfig(steps=20, batch=16, seq=128, blocks=8, width=128, heads=4)
"""The size of ``memsave demo --full`` (several minutes on a 2-core machine)."""


@dataclass
class StrategyResult:
    """What one strategy's run gave: its loss curve (warm-up step included), the peak bytes
    of one step, and the times of the timed steps."""

    name: str
    losses: list[float]
    peak_bytes: int
    step_seconds: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    @property
    def step_ms(self) -> float:
        """Median step time in milliseconds."""
        return 1000.0 * statistics.median(self.step_seconds)

    @property
    def min_ms(self) -> float:
        """Fastest step in milliseconds."""
        return 1000.0 * min(self.step_seconds)

    @property
    def max_ms(self) -> float:
        """Slowest step in milliseconds."""
        return 1000.0 * max(self.step_seconds)


# ----- data -----------------------------------------------------------------------
def load_text(path: Path | None = None) -> str:
    """The Shakespeare text shipped with the package (or the file at ``path``).

    >>> load_text()[:9]
    'First Cit'
    """
    return (path or DATA_FILE).read_text(encoding="utf-8")


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    """Character ids (int32) of ``text`` and the vocabulary (sorted distinct characters).

    >>> ids, vocab = encode("abba")
    >>> ids.tolist(), vocab
    ([0, 1, 1, 0], ['a', 'b'])
    """
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return np.array([index[ch] for ch in text], dtype=np.int32), vocab


def batches(ids: np.ndarray, batch: int, seq: int, seed: int
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless random windows: inputs ``x`` (batch, seq) and next-character targets ``y``.

    The same ``seed`` gives the same sequence of batches.

    >>> x, y = next(batches(np.arange(100, dtype=np.int32), 2, 5, seed=0))
    >>> x.shape, bool((y == x + 1).all())
    ((2, 5), True)
    """
    if len(ids) <= seq + 1:
        raise DemoError(f"the text has {len(ids)} characters; --seq {seq} needs more "
                        f"than {seq + 1}")
    rng = np.random.default_rng(seed)
    offsets = np.arange(seq)
    while True:
        starts = rng.integers(0, len(ids) - seq - 1, size=batch)[:, None] + offsets
        yield ids[starts], ids[starts + 1]


# ----- model ----------------------------------------------------------------------
class CharTransformer(nn.Module):
    """A GPT-style character model: token + position embeddings, blocks, LayerNorm, head.

    ``strategy`` picks how the blocks run: ``"plain"``, ``"each block"`` (each block
    checkpointed) or ``"sqrt"`` (:func:`memsave.checkpoint_sequential`).

    >>> model = CharTransformer(vocab=10, width=8, heads=2, blocks=2, seq=4)
    >>> model(np.zeros((3, 4), dtype=np.int32)).shape
    (3, 4, 10)
    """

    def __init__(self, vocab: int, width: int, heads: int, blocks: int, seq: int,
                 strategy: str = "plain") -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.tok = nn.Embedding(vocab, width, std=0.02)
        self.pos = nn.Embedding(seq, width, std=0.02)
        self.blocks = nn.Sequential(*[nn.TransformerBlock(width, heads) for _ in range(blocks)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        # A plain list (not registered): the proxies share the blocks' parameters.
        self.checkpointed_blocks = [ms.checkpointed(block) for block in self.blocks]

    def body(self, h: Any) -> Any:
        """Run the Transformer blocks on ``h`` (batch, seq, width) with the chosen strategy."""
        if self.strategy == "sqrt":
            return ms.checkpoint_sequential(list(self.blocks), h, segments="sqrt")
        layers = self.checkpointed_blocks if self.strategy == "each block" else self.blocks
        for block in layers:
            h = block(h)
        return h

    def forward(self, ids: Any) -> ms.Variable:
        xp = backend.get_array_module(ids)
        h = self.tok(ids) + self.pos(xp.arange(ids.shape[-1]))
        return self.head(self.ln(self.body(h)))


def build_model(vocab: int, cfg: DemoConfig, strategy: str) -> CharTransformer:
    """The demo's model, initialised from ``cfg.seed`` (same seed, same weights), on ``cfg.device``.

    >>> cfg = DemoConfig(blocks=1, width=8, heads=2, seq=4)
    >>> a, b = build_model(5, cfg, "plain"), build_model(5, cfg, "sqrt")
    >>> bool((a.head.W.array == b.head.W.array).all())
    True
    """
    ms.random.seed(cfg.seed)
    model = CharTransformer(vocab, cfg.width, cfg.heads, cfg.blocks, cfg.seq, strategy)
    if cfg.device == "gpu":
        model.to_gpu()
    return model


def train_step(model: CharTransformer, optimizer: optim.Optimizer, x: Any, y: Any) -> float:
    """One step: forward, cross-entropy, backward, gradient clipping, optimizer update.

    Returns the loss (a float, so on the GPU this waits for the forward pass).
    """
    optimizer.zero_grad()
    logits = model(x)
    loss = F.softmax_cross_entropy(F.reshape(logits, (-1, logits.shape[-1])), y.reshape(-1))
    loss.backward()
    del logits
    nn.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return float(loss.array)


def _synchronize(model: nn.Module) -> None:
    """Wait for the GPU to finish queued work (a no-op on the CPU)."""
    xp = backend.get_array_module(next(model.parameters()).array)
    if xp is not np:
        xp.cuda.Device().synchronize()


class _Progress:
    """A tqdm bar over one strategy's ``steps + 2`` steps whose label names the phase
    (warm-up, timed, memory); does nothing when disabled or when tqdm is not installed."""

    def __init__(self, total: int, strategy: str, enabled: bool) -> None:
        self.strategy, self.bar = strategy, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="step", leave=True, file=sys.stderr)

    def phase(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.strategy:<10} {name:<7}")

    def step(self, loss: float | None = None) -> None:
        if self.bar is not None:
            self.bar.update()
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _timed_step(model: CharTransformer, optimizer: optim.Optimizer, x: Any, y: Any
                ) -> tuple[float, float]:
    """:func:`train_step` and its wall time in seconds (the GPU waited for)."""
    start = time.perf_counter()
    loss = train_step(model, optimizer, x, y)
    _synchronize(model)
    return loss, time.perf_counter() - start


def estimate_seconds(cfg: DemoConfig, ids: np.ndarray, vocab: Sequence[str]) -> float:
    """Rough wall time of the whole demo, extrapolated from the faster of two plain steps run
    now (the process's first step pays one-time costs).

    >>> ids, vocab = encode(load_text()[:2000])
    >>> estimate_seconds(DemoConfig(steps=1, batch=2, seq=8, blocks=1, width=8, heads=2),
    ...                  ids, vocab) > 0
    True
    """
    model = build_model(len(vocab), cfg, "plain")
    x, y = next(batches(ids, cfg.batch, cfg.seq, cfg.seed))
    if cfg.device == "gpu":
        x, y = backend.to_gpu(x), backend.to_gpu(y)
    optimizer = optim.Adam(model.parameters(), lr=cfg.lr)
    seconds = min(_timed_step(model, optimizer, x, y)[1] for _ in range(2))
    return seconds * (cfg.steps + 2) * ESTIMATE_FACTOR


def run_strategy(strategy: str, cfg: DemoConfig, progress: bool = True,
                 ids: np.ndarray | None = None, vocab: Sequence[str] | None = None
                 ) -> StrategyResult:
    """Train the model with ``strategy``: one warm-up step (not timed), ``cfg.steps`` timed
    steps, then one more step under tracemalloc for the peak memory (apart from the timed
    steps: tracemalloc slows things down).

    ``ids``/``vocab`` default to the encoded Shakespeare text.
    """
    if ids is None or vocab is None:
        ids, vocab = encode(load_text())
    model = build_model(len(vocab), cfg, strategy)
    optimizer = optim.Adam(model.parameters(), lr=cfg.lr)
    data = batches(ids, cfg.batch, cfg.seq, cfg.seed)
    to_device = backend.to_gpu if cfg.device == "gpu" else (lambda a: a)
    losses, seconds = [], []
    bar = _Progress(cfg.steps + 2, strategy, progress)
    try:
        for i in range(1 + cfg.steps):
            bar.phase("warm-up" if i == 0 else "timed")
            x, y = (to_device(a) for a in next(data))
            loss, elapsed = _timed_step(model, optimizer, x, y)
            losses.append(loss)
            if i > 0:
                seconds.append(elapsed)
            bar.step(loss)
        bar.phase("memory")
        x, y = (to_device(a) for a in next(data))
        optimizer.zero_grad()   # last step's gradients: not part of the measured step
        gc.collect()
        with measure(cfg.device) as m:
            train_step(model, optimizer, x, y)
            _synchronize(model)
        bar.step()
    finally:
        bar.close()
    return StrategyResult(strategy, losses, m.peak, seconds)


# ----- report ---------------------------------------------------------------------
def max_loss_difference(results: Sequence[StrategyResult]) -> float:
    """Largest |loss difference| between the first strategy's curve and any other's, step by step.

    >>> a = StrategyResult("plain", [2.0, 1.5], 0); b = StrategyResult("sqrt", [2.0, 1.25], 0)
    >>> max_loss_difference([a, b])
    0.25
    """
    base = np.asarray(results[0].losses)
    return max((float(np.abs(np.asarray(r.losses) - base).max()) for r in results[1:]),
               default=0.0)


def format_table(results: Sequence[StrategyResult]) -> str:
    """The comparison table; ratios are relative to the first row (plain).

    The step times are min, median and max over the timed steps; the time ratio is the
    ratio of medians.

    >>> rows = [StrategyResult("plain", [2.0], 8 * MiB, [0.1, 0.1, 0.11]),
    ...         StrategyResult("sqrt", [2.0], 4 * MiB, [0.12, 0.125, 0.13])]
    >>> print(format_table(rows))
    strategy    final loss  peak MiB  min ms  median ms  max ms  memory vs plain  time vs plain
    plain           2.0000       8.0   100.0      100.0   110.0            1.00x          1.00x
    sqrt            2.0000       4.0   120.0      125.0   130.0            0.50x          1.25x
    """
    base = results[0]
    header = (f"{'strategy':<10}  {'final loss':>10}  {'peak MiB':>8}  {'min ms':>6}  "
              f"{'median ms':>9}  {'max ms':>6}  {'memory vs plain':>15}  {'time vs plain':>13}")
    lines = [header]
    for r in results:
        lines.append(f"{r.name:<10}  {r.final_loss:>10.4f}  {r.peak_bytes / MiB:>8.1f}  "
                     f"{r.min_ms:>6.1f}  {r.step_ms:>9.1f}  {r.max_ms:>6.1f}  "
                     f"{r.peak_bytes / base.peak_bytes:>14.2f}x  {r.step_ms / base.step_ms:>12.2f}x")
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """A rough duration for people: whole seconds up to 90 s, then minutes.

    >>> format_duration(41.3), format_duration(430)
    ('41 s', '8 min')
    """
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


def run(cfg: DemoConfig, progress: bool = True, out: TextIO | None = None) -> int:
    """Run every strategy, print the table and the loss check; 0 if the losses agree, else 1.

    Raises :class:`DemoError` when ``cfg.device == "gpu"`` and no GPU is usable.
    """
    out = out or sys.stdout
    if cfg.device == "gpu" and not backend.is_gpu_available():
        raise DemoError("--device gpu: no usable GPU (CuPy is not installed or sees no "
                        "CUDA device); install memsave[gpu] on a machine with a GPU, or use "
                        "--device cpu")
    started = time.perf_counter()
    ids, vocab = encode(load_text())
    n_params = sum(p.size for p in build_model(len(vocab), cfg, "plain").parameters())
    print(f"memsave demo: char-level Transformer, {cfg.blocks} blocks, width {cfg.width}, "
          f"{cfg.heads} heads, context {cfg.seq}, batch {cfg.batch}, {n_params:,} parameters, "
          f"on {cfg.device}", file=out)
    print(f"{len(STRATEGIES)} strategies ({', '.join(STRATEGIES)}), each: 1 warm-up step, "
          f"{cfg.steps} timed steps, 1 step under tracemalloc for the peak memory", file=out)
    print("estimated time (from two plain steps): ", end="", file=out, flush=True)
    print(f"about {format_duration(estimate_seconds(cfg, ids, vocab))}", file=out, flush=True)
    results = [run_strategy(name, cfg, progress, ids, vocab) for name in STRATEGIES]
    print(format_table(results), file=out)
    for warning in bench.spread_warnings([(r.name, r.min_ms / 1e3, r.step_ms / 1e3)
                                          for r in results]):
        print(warning, file=out)
    diff = max_loss_difference(results)
    agree = diff <= LOSS_TOLERANCE
    verdict = "agree" if agree else "DIFFER"
    print(f"losses {verdict} across strategies: max |diff| = {diff:.2e} "
          f"(tolerance {LOSS_TOLERANCE:g})", file=out)
    print(f"done in {format_duration(time.perf_counter() - started)}", file=out, flush=True)
    return 0 if agree else 1
