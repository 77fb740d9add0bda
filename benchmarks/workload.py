"""Shared definition of the comparison workloads and the measurement harness.

Workload W (``mlp``): an MLP of ``depth`` x (Linear(width -> width) + tanh) on a float32
batch, loss ``sum(y * y) / batch``.  Every framework starts from the same parameters and
input (drawn here with NumPy from a fixed seed), so gradients can be compared across
frameworks.

``cnn`` and ``transformer`` are the other two workloads of ``memsave bench`` at its default
sizes (:data:`CNN`, :data:`TRANSFORMER`), loss ``sum(y * y) / y.size``; memsave runs them
through ``memsave.bench`` itself, torch through equivalent modules (torch_bench.py) with
torch's own initialisation, on the same input.

Strategies:
    none  plain forward + backward
    each  every (Linear + tanh) layer checkpointed individually
    sqrt  ``segments`` checkpointed segments of ``depth // segments`` layers

This module needs only the standard library and NumPy, because it is imported inside the
torch and chainer virtual environments as well as by the driver.

One benchmark step is: forward, loss, backward, then gradient zeroing (the gradients are
dropped, i.e. set to ``None``), so the memory baseline taken right before a step holds the
parameters and the input but no gradients.  Each script measures, in one process:

1. one warm-up step, which also counts the layer forwards executed per step;
2. one step measured for peak live bytes above the baseline (framework-specific method);
3. ``repeats`` timed steps (with memory tracing off), reported as median and min.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

STRATEGIES: tuple[str, ...] = ("none", "each", "sqrt")
WORKLOADS: tuple[str, ...] = ("mlp", "cnn", "transformer")
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "chainer", "memsave")
DEFAULT_REPEATS = 5

#: One benchmark step; its return value (e.g. gradients) is dropped.
Step = Callable[[], object]


@dataclass(frozen=True)
class Workload:
    """Sizes of an MLP workload; ``segments`` is used by the ``sqrt`` strategy."""

    depth: int
    width: int
    batch: int
    segments: int
    seed: int = 0
    dtype: str = "float32"

    @property
    def segment_size(self) -> int:
        """Number of layers per checkpointed segment."""
        return self.depth // self.segments


#: The reference workload W.
W = Workload(depth=64, width=256, batch=2048, segments=8)

#: The tiny MLP of the per-op overhead microbenchmark (no checkpointing).
TINY = Workload(depth=8, width=32, batch=8, segments=1)


@dataclass(frozen=True)
class BlockWorkload:
    """Sizes of the ``cnn`` and ``transformer`` workloads (``memsave bench`` defaults).

    cnn: ``depth`` x (h + ReLU(BatchNorm(Conv3x3(width -> width, pad 1)))) on x of shape
    (batch, width, seq, seq).  transformer: ``depth`` pre-norm causal blocks (``heads``
    heads, GELU MLP of 4 x width) on x of shape (batch, seq, width).  ``sqrt`` uses
    round(sqrt(depth)) segments, as memsave's ``segments="sqrt"``.
    """

    name: str
    depth: int
    width: int
    batch: int
    seq: int
    heads: int = 0
    seed: int = 0

    @property
    def segments(self) -> int:
        """Segments of the ``sqrt`` strategy."""
        return max(1, round(self.depth ** 0.5))

    def input_array(self) -> np.ndarray:
        """The float32 input, drawn as ``memsave.bench.make_workload`` draws it."""
        shape = ((self.batch, self.width, self.seq, self.seq) if self.name == "cnn"
                 else (self.batch, self.seq, self.width))
        return np.random.default_rng(self.seed).standard_normal(shape).astype(np.float32)


CNN = BlockWorkload("cnn", depth=8, width=32, batch=16, seq=32)
TRANSFORMER = BlockWorkload("transformer", depth=8, width=256, batch=4, seq=256, heads=4)
BLOCK_WORKLOADS = {"cnn": CNN, "transformer": TRANSFORMER}


def init_arrays(wl: Workload) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Weights (out, in), biases and input of ``wl``, drawn from ``wl.seed``.

    Weights are uniform in +-sqrt(3 / width), i.e. of variance 1/width (LeCun's
    scale-preserving init), so gradients keep their scale through deep tanh stacks: with
    PyTorch's default Linear bound 1/sqrt(width) every layer shrank them by sqrt(3) and at
    depth >= 256 the backward ran in float32 denormals, ~14x slower.  Biases are uniform in
    +-1/sqrt(width), the input is standard normal.
    """
    rng = np.random.default_rng(wl.seed)
    bound = 1.0 / np.sqrt(wl.width)
    weights = [rng.uniform(-np.sqrt(3.0) * bound, np.sqrt(3.0) * bound,
                           (wl.width, wl.width)).astype(wl.dtype) for _ in range(wl.depth)]
    biases = [rng.uniform(-bound, bound, wl.width).astype(wl.dtype) for _ in range(wl.depth)]
    x = rng.standard_normal((wl.batch, wl.width)).astype(wl.dtype)
    return weights, biases, x


class LayerCounter:
    """Counts executions of a layer's forward (recomputations included)."""

    def __init__(self) -> None:
        self.count = 0

    def tick(self) -> None:
        """Record one layer forward."""
        self.count += 1

    def count_during(self, step: Step) -> int:
        """Run ``step`` and return how many layer forwards it executed."""
        start = self.count
        step()
        return self.count - start


@dataclass
class BenchResult:
    """One benchmark configuration's measurements: the scripts' JSON contract."""

    framework: str
    strategy: str
    peak_bytes: int
    median_s: float
    min_s: float
    layer_forwards: int
    versions: dict[str, str] = field(default_factory=dict)
    workload: str = "mlp"

    def to_json(self) -> str:
        """One-line JSON form."""
        return json.dumps(asdict(self), sort_keys=False)

    def to_text(self) -> str:
        """Human-readable one-line form."""
        return (f"{self.workload:11s} {self.framework:10s} {self.strategy:5s} "
                f"peak {self.peak_bytes / 2**20:8.1f} MiB  "
                f"median {self.median_s * 1e3:8.1f} ms  min {self.min_s * 1e3:8.1f} ms  "
                f"layer forwards {self.layer_forwards}")


def base_versions() -> dict[str, str]:
    """Versions every script reports: Python and NumPy, and the BLAS kernel that runs (its
    architecture and threads, from threadpoolctl where it is installed)."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return versions
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            versions["blas"] = (f"{pool['internal_api']} {pool.get('version')} "
                                f"{pool.get('architecture')} threads {pool['num_threads']}")
    return versions


def time_steps(step: Step, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` consecutive calls of ``step``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def tracemalloc_peak(step: Step) -> int:
    """Peak live bytes traced by tracemalloc during ``step``, above the level before it.

    tracemalloc must have been started before the model was built; it is stopped here so
    the timed steps that follow run at full speed.
    """
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before


def run_benchmark(framework: str, strategy: str, step: Step, counter: LayerCounter,
                  measure_peak: Callable[[Step], int], repeats: int,
                  versions: dict[str, str], workload: str = "mlp") -> BenchResult:
    """Warm up (counting layer forwards), measure peak memory, then time ``repeats`` steps."""
    layer_forwards = counter.count_during(step)
    peak_bytes = measure_peak(step)
    times = time_steps(step, repeats)
    return BenchResult(framework=framework, strategy=strategy, peak_bytes=peak_bytes,
                       median_s=statistics.median(times), min_s=min(times),
                       layer_forwards=layer_forwards, versions=versions, workload=workload)


def bench_parser(description: str, workloads: tuple[str, ...] = ("mlp",)
                 ) -> argparse.ArgumentParser:
    """Command line shared by the per-framework benchmark scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", choices=workloads, default="mlp")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed steps after the warm-up and memory steps")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def emit(result: BenchResult, as_json: bool) -> None:
    """Print ``result`` as JSON or as text."""
    print(result.to_json() if as_json else result.to_text(), flush=True)
