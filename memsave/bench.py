"""``memsave bench``: the memory/time trade-off of checkpointing strategies, measured in one run.

Each strategy runs the same training step (forward, backward) on the same
workload; the table reports peak live bytes above the step's start (exact:
tracemalloc on the CPU), median and min step time over the repeats, the number
of layer forwards executed, and ratios against ``none`` from the same process.

>>> rows = run_benchmark(make_workload("mlp", depth=4, width=8, batch=4), ["none", "sqrt"], repeats=1)
>>> [r.strategy for r in rows], rows[0].layer_forwards, rows[1].layer_forwards
(['none', 'sqrt'], 4, 6)
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import nn
from memsave.memory import MiB, measure

WORKLOADS = ("mlp", "cnn", "transformer")


@dataclass
class Workload:
    """A chain of layers, its input, and a scalar loss on the chain's output."""

    name: str
    layers: list[Callable[[Any], Any]]
    x: ms.Variable
    parameters: list[ms.Parameter]
    forwards: int = 0

    def counted(self) -> list[Callable[[Any], Any]]:
        """The layers, each counting its executions in ``self.forwards``."""
        def wrap(layer: Callable) -> Callable:
            def run(h: Any) -> Any:
                self.forwards += 1
                return layer(h)
            return run
        return [wrap(layer) for layer in self.layers]


def _residual(block: Callable) -> Callable:
    return lambda h: h + block(h)


def make_workload(name: str, depth: int = 0, width: int = 0, batch: int = 0, seq: int = 0,
                  seed: int = 0) -> Workload:
    """Build a workload; zero sizes take the defaults.

    ``mlp``: depth x (Linear(width->width) + tanh), batch 2048, width 256, depth 64 (workload W).
    ``cnn``: depth residual blocks of Conv2d(3x3)+BatchNorm+ReLU on batch x width x seq x seq.
    ``transformer``: depth TransformerBlocks (width, 4 heads) on batch x seq tokens.

    >>> make_workload("mlp", depth=2, width=4, batch=3).x.shape
    (3, 4)
    """
    ms.random.seed(seed)
    rng = np.random.default_rng(seed)
    if name == "mlp":
        depth, width, batch = depth or 64, width or 256, batch or 2048
        linears = [nn.Linear(width, width) for _ in range(depth)]
        layers = [lambda h, lin=lin: F.tanh(lin(h)) for lin in linears]
        x = rng.standard_normal((batch, width))
        modules: list[nn.Module] = linears
    elif name == "cnn":
        depth, width, batch, seq = depth or 8, width or 32, batch or 16, seq or 32
        modules = [nn.Sequential(nn.Conv2d(width, width, 3, pad=1), nn.BatchNorm(width), F.relu)
                   for _ in range(depth)]
        layers = [_residual(block) for block in modules]
        x = rng.standard_normal((batch, width, seq, seq))
    elif name == "transformer":
        depth, width, batch, seq = depth or 8, width or 256, batch or 4, seq or 256
        modules = [nn.TransformerBlock(width, heads=4) for _ in range(depth)]
        layers = list(modules)
        x = rng.standard_normal((batch, seq, width))
    else:
        raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")
    params = [p for m in modules for p in m.parameters()]
    return Workload(name, layers, ms.Variable(x.astype(np.float32), requires_grad=False), params)


def parse_strategy(strategy: str) -> tuple[str, int | str | None]:
    """Split ``segments=K`` into its parts; check the name.

    >>> parse_strategy("segments=4"), parse_strategy("sqrt")
    (('segments', 4), ('sqrt', 'sqrt'))
    """
    if strategy.startswith("segments="):
        k = int(strategy.split("=", 1)[1])
        if k < 1:
            raise ValueError(f"segments must be >= 1, got {k}")
        return "segments", k
    if strategy in ("none", "each"):
        return strategy, None
    if strategy == "sqrt":
        return "sqrt", "sqrt"
    raise ValueError(f"unknown strategy {strategy!r}; use none, each, sqrt or segments=K")


def step(workload: Workload, strategy: str) -> None:
    """One forward+backward of ``workload`` under ``strategy``; gradients cleared first."""
    for p in workload.parameters:
        p.cleargrad()
    kind, segments = parse_strategy(strategy)
    layers, h = workload.counted(), workload.x
    if kind == "none":
        for layer in layers:
            h = layer(h)
    elif kind == "each":
        for layer in layers:
            h = ms.checkpoint(layer, h)
    else:
        h = ms.checkpoint_sequential(layers, h, segments=segments)
    loss = (h * h).sum() * (1.0 / h.size)
    loss.backward()


@dataclass
class Row:
    """One measured strategy."""

    workload: str
    strategy: str
    peak_bytes: int
    median_s: float
    min_s: float
    layer_forwards: int
    peak_ratio: float = 1.0
    time_ratio: float = 1.0


def measure_strategy(workload: Workload, strategy: str, repeats: int) -> Row:
    """Warm up once, measure peak bytes in one step, then time ``repeats`` steps."""
    step(workload, strategy)
    workload.forwards = 0
    with measure() as m:
        step(workload, strategy)
    forwards = workload.forwards
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(workload, strategy)
        times.append(time.perf_counter() - start)
    return Row(workload.name, strategy, m.peak, statistics.median(times), min(times), forwards)


def run_benchmark(workload: Workload, strategies: Sequence[str], repeats: int = 5,
                  progress: Callable[[Iterable], Iterable] = iter) -> list[Row]:
    """Measure every strategy on one workload; ratios are against ``none`` (measured too)."""
    names = list(dict.fromkeys(["none", *strategies]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        rows = [measure_strategy(workload, s, repeats) for s in progress(names)]
    base = rows[0]
    for row in rows:
        row.peak_ratio = row.peak_bytes / base.peak_bytes
        row.time_ratio = row.median_s / base.median_s
    return [r for r in rows if r.strategy in strategies]


def format_table(rows: Sequence[Row]) -> str:
    """Aligned text table.

    >>> print(format_table([Row("mlp", "none", MiB, 0.5, 0.4, 64)]).splitlines()[1].split())
    ['mlp', 'none', '1.0', '1.000', '500.0', '400.0', '1.00', '64']
    """
    header = ("workload", "strategy", "peak MiB", "peak ratio", "median ms", "min ms", "time ratio",
              "forwards")
    body = [(r.workload, r.strategy, f"{r.peak_bytes / MiB:.1f}", f"{r.peak_ratio:.3f}",
             f"{r.median_s * 1e3:.1f}", f"{r.min_s * 1e3:.1f}", f"{r.time_ratio:.2f}",
             str(r.layer_forwards)) for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header, *body])


def format_json(rows: Sequence[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def format_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(asdict(rows[0])))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return out.getvalue()


def plot(rows: Sequence[Row], path: str) -> None:
    """Memory ratio vs time ratio, one point per strategy (needs matplotlib: extra ``bench``)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'memsave[bench]'") from exc
    fig, ax = plt.subplots(figsize=(5, 4))
    for r in rows:
        ax.scatter(r.time_ratio, r.peak_ratio)
        ax.annotate(r.strategy, (r.time_ratio, r.peak_ratio), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("step time / plain")
    ax.set_ylabel("peak memory / plain")
    ax.set_title(f"memsave checkpointing: {rows[0].workload}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
