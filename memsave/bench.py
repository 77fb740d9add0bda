"""``memsave bench``: the memory/time trade-off of checkpointing strategies, measured in one run.

Each strategy runs the same training step (forward, backward) on the same
workload: one warm-up step, one step under tracemalloc for the peak live bytes
above the step's start (exact on the CPU), then ``repeats`` timed steps.  The
table reports min, median and max step time, the number of layer forwards
executed, and ratios against ``none`` from the same process; :func:`spread_warnings`
says when the step times vary too much for the time ratios to mean anything.

>>> rows = run_benchmark(make_workload("mlp", depth=4, width=8, batch=4), ["none", "sqrt"], repeats=1)
>>> [r.strategy for r in rows], rows[0].layer_forwards, rows[1].layer_forwards
(['none', 'sqrt'], 4, 6)
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import backend, nn
from memsave.memory import MiB, measure

WORKLOADS = ("mlp", "cnn", "transformer")
SPREAD_LIMIT = 0.2
"""Largest tolerated ``median / min - 1`` of a strategy's step times; above it the machine
was busy during the run and the time ratios are not reliable."""
SEGMENT_POLICIES = {"dots": ms.policies.dots_saveable, "everything": ms.policies.everything_saveable,
                    "nothing": ms.policies.nothing_saveable,
                    "offload": ms.policies.offload_dots_to_host}
"""``policy=P`` strategies that run sqrt segments under a checkpoint policy."""
COMPRESSIONS = {"int8": "int8", "fp16": "float16"}
"""``policy=P`` strategies that run the plain model with saved activations compressed."""


@dataclass
class Workload:
    """A chain of layers and its input; :func:`loss` turns the chain's output into a scalar."""

    name: str
    layers: list[Callable[[Any], Any]]
    x: ms.Variable
    parameters: list[ms.Parameter]
    settings: dict[str, int] = field(default_factory=dict)
    forwards: int = 0
    device: str = "cpu"
    schedules: dict[str, Any] = field(default_factory=dict, repr=False)

    def counted(self) -> list[Callable[[Any], Any]]:
        """The layers, each counting its executions in ``self.forwards``."""
        def wrap(layer: Callable) -> Callable:
            def run(h: Any) -> Any:
                self.forwards += 1
                return layer(h)
            return run
        return [wrap(layer) for layer in self.layers]


def loss(h: ms.Variable) -> ms.Variable:
    """The workloads' loss on the chain's output: the mean of its squares.

    >>> import numpy as np
    >>> float(loss(ms.Variable(np.array([1.0, 3.0]))).array)
    5.0
    """
    return (h * h).sum() * (1.0 / h.size)


def _residual(block: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda h: h + block(h)


def _tanh_of(linear: nn.Linear) -> Callable[[Any], Any]:
    return lambda h: F.tanh(linear(h))


def make_workload(name: str, depth: int = 0, width: int = 0, batch: int = 0, seq: int = 0,
                  seed: int = 0, device: str = "cpu") -> Workload:
    """Build a workload; zero sizes take the defaults.  ``device="gpu"`` puts it on the GPU
    (CuPy; a RuntimeError says so when none is available).

    ``mlp``: depth x (Linear(width->width) + tanh), batch 2048, width 256, depth 64 (workload W).
    ``cnn``: depth residual blocks of Conv2d(3x3)+BatchNorm+ReLU on batch x width x seq x seq.
    ``transformer``: depth TransformerBlocks (width, 4 heads) on batch x seq tokens.

    >>> w = make_workload("mlp", depth=2, width=4, batch=3)
    >>> w.x.shape, w.settings
    ((3, 4), {'depth': 2, 'width': 4, 'batch': 3, 'seq': 0, 'seed': 0})
    """
    ms.random.seed(seed)
    rng = np.random.default_rng(seed)
    layers: list[Callable[[Any], Any]]
    modules: list[nn.Module]
    if name == "mlp":
        depth, width, batch, seq = depth or 64, width or 256, batch or 2048, 0
        linears = [nn.Linear(width, width) for _ in range(depth)]
        layers = [_tanh_of(lin) for lin in linears]
        x = rng.standard_normal((batch, width))
        modules = list(linears)
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
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    x = x.astype(np.float32)
    if device == "gpu":
        if not backend.is_gpu_available():
            raise RuntimeError("device='gpu' needs CuPy and a CUDA GPU (pip install -e '.[gpu]')")
        for m in modules:
            m.to_gpu()
        x = backend.to_gpu(x)
    params = [p for m in modules for p in m.parameters()]
    settings = dict(depth=depth, width=width, batch=batch, seq=seq, seed=seed)
    return Workload(name, layers, ms.Variable(x, requires_grad=False), params, settings,
                    device=device)


def parse_strategy(strategy: str) -> tuple[str, int | float | str | None]:
    """Split ``segments=K`` and ``policy=P`` into their parts; check the name.

    ``policy=dots|everything|nothing|offload`` runs sqrt segments under that checkpoint
    policy (:data:`SEGMENT_POLICIES`); ``policy=int8|fp16`` runs the plain model with every
    saved activation compressed (:data:`COMPRESSIONS`), nothing recomputed.

    >>> parse_strategy("segments=4"), parse_strategy("sqrt"), parse_strategy("policy=dots")
    (('segments', 4), ('sqrt', 'sqrt'), ('policy', 'dots'))
    >>> parse_strategy("budget=300MiB"), parse_strategy("budget=0.5")
    (('budget', 314572800), ('budget', 0.5))
    >>> parse_strategy("segments=abc")
    Traceback (most recent call last):
    ...
    ValueError: segments=K needs a positive integer K, got 'abc'
    >>> parse_strategy("policy=all")
    Traceback (most recent call last):
    ...
    ValueError: policy=P needs P in dots, everything, nothing, offload, int8, fp16, got 'all'
    """
    if strategy.startswith("segments="):
        k = strategy.split("=", 1)[1]
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"segments=K needs a positive integer K, got {k!r}")
        return "segments", int(k)
    if strategy.startswith("policy="):
        name = strategy.split("=", 1)[1]
        if name not in SEGMENT_POLICIES and name not in COMPRESSIONS:
            raise ValueError(f"policy=P needs P in {', '.join([*SEGMENT_POLICIES, *COMPRESSIONS])}"
                             f", got {name!r}")
        return "policy", name
    if strategy.startswith("budget="):
        text = strategy.split("=", 1)[1]
        if "." in text and text.replace(".", "", 1).isdigit():
            if not 0.0 < float(text) <= 1.0:
                raise ValueError(f"budget=F needs a fraction F in (0, 1] of the plain run's "
                                 f"predicted peak, or bytes such as budget=300MiB; got {text!r}")
            return "budget", float(text)
        return "budget", ms.planner.parse_bytes(text)
    if strategy in ("none", "each"):
        return strategy, None
    if strategy == "sqrt":
        return "sqrt", "sqrt"
    raise ValueError(f"unknown strategy {strategy!r}; use none, each, sqrt, segments=K, budget=B or "
                     f"policy=P (P: {', '.join([*SEGMENT_POLICIES, *COMPRESSIONS])})")


def step(workload: Workload, strategy: str) -> None:
    """One forward+backward of ``workload`` under ``strategy``; gradients cleared first."""
    for p in workload.parameters:
        p.cleargrad()
    kind, arg = parse_strategy(strategy)
    layers = workload.counted()
    h: Any = workload.x
    if kind == "none":
        for layer in layers:
            h = layer(h)
    elif kind == "each":
        for layer in layers:
            h = ms.checkpoint(layer, h)
    elif kind == "policy" and arg in COMPRESSIONS:
        with ms.saved_arrays(ms.policies.compress(COMPRESSIONS[arg])):
            for layer in layers:
                h = layer(h)
    elif kind == "policy":
        h = ms.checkpoint_sequential(layers, h, segments="sqrt", policy=SEGMENT_POLICIES[str(arg)])
    elif kind == "budget":
        h = ms.checkpoint_sequential(layers, h, schedule=planned(workload, strategy))
    else:
        assert not isinstance(arg, float)  # only budget=F parses to a float
        h = ms.checkpoint_sequential(layers, h, segments=arg)
    value = loss(h)
    del h  # as in `loss_fn(model(x)).backward()`: nothing but the graph holds the output
    value.backward()


def planned(workload: Workload, strategy: str) -> ms.planner.Schedule:
    """The planner's schedule for a ``budget=B`` strategy: the chain is profiled and solved
    once per workload and strategy (so timed steps do not include planning).  A fraction B
    is of the plain run's predicted peak.

    >>> w = make_workload("mlp", depth=4, width=8, batch=4)
    >>> planned(w, "budget=1.0").extra_forwards, planned(w, "budget=1.0") is planned(w, "budget=1.0")
    (0, True)
    """
    if strategy not in workload.schedules:
        kind, budget = parse_strategy(strategy)
        if kind != "budget" or not isinstance(budget, (int, float)):
            raise ValueError(f"planned() needs a budget=B strategy, got {strategy!r}")
        chain = ms.planner.profile(workload.layers, workload.x)
        if isinstance(budget, float):
            budget = int(budget * ms.planner.simulate(tuple(range(chain.n_layers)), chain)[1])
        workload.schedules[strategy] = ms.planner.solve(chain, budget)
    return workload.schedules[strategy]


@dataclass
class Row:
    """One measured strategy."""

    workload: str
    strategy: str
    peak_bytes: int
    min_s: float
    median_s: float
    max_s: float
    layer_forwards: int
    peak_ratio: float = 1.0
    time_ratio: float = 1.0


def measure_strategy(workload: Workload, strategy: str, repeats: int) -> Row:
    """Warm up once, measure peak bytes in one step, then time ``repeats`` (>= 1) steps."""
    step(workload, strategy)
    workload.forwards = 0
    with measure(workload.device) as m:
        step(workload, strategy)
    forwards = workload.forwards
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(workload, strategy)
        backend.synchronize(workload.x.array)      # a GPU step is done when the device is
        times.append(time.perf_counter() - start)
    return Row(workload.name, strategy, m.peak, min(times), statistics.median(times), max(times),
               forwards)


def run_benchmark(workload: Workload, strategies: Sequence[str], repeats: int = 5,
                  progress: Callable[[Iterable], Iterable] = iter) -> list[Row]:
    """Measure every strategy on one workload.  ``none`` is always measured and comes first:
    the ratios are against it."""
    names = list(dict.fromkeys(["none", *strategies]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        rows = [measure_strategy(workload, s, repeats) for s in progress(names)]
    base = rows[0]
    for row in rows:
        row.peak_ratio = row.peak_bytes / base.peak_bytes
        row.time_ratio = row.median_s / base.median_s
    return rows


def spread(min_s: float, median_s: float) -> float:
    """How far the median step time lies above the fastest step, as a fraction of it.

    On an idle machine the steps of one strategy take nearly the same time; when other
    work competes for the cores, most steps slow down and the median drifts up.

    >>> round(spread(0.100, 0.130), 2)
    0.3
    """
    return median_s / min_s - 1.0


def spread_warnings(times: Sequence[tuple[str, float, float]]) -> list[str]:
    """One warning per ``(strategy, min_s, median_s)`` whose :func:`spread` exceeds
    :data:`SPREAD_LIMIT`; an empty list when the time ratios can be trusted.

    >>> spread_warnings([("none", 0.100, 0.105), ("sqrt", 0.100, 0.180)])  # doctest: +NORMALIZE_WHITESPACE
    ["warning: 'sqrt' steps: median 180.0 ms is 80% above the fastest (100.0 ms); the machine
    was busy, so the time ratios are not reliable: rerun on an idle machine or with more
    steps"]
    """
    return [f"warning: {name!r} steps: median {1e3 * median_s:.1f} ms is "
            f"{100 * spread(min_s, median_s):.0f}% above the fastest ({1e3 * min_s:.1f} ms); "
            "the machine was busy, so the time ratios are not reliable: rerun on an idle "
            "machine or with more steps"
            for name, min_s, median_s in times if spread(min_s, median_s) > SPREAD_LIMIT]


def environment() -> dict[str, Any]:
    """Versions and machine facts that a timing depends on (recorded with every result).

    >>> sorted(environment())
    ['blas', 'cpu_count', 'load_average', 'machine', 'memsave', 'numpy', 'platform', 'python']
    """
    facts: dict[str, Any] = {
        "memsave": ms.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        facts["blas"] = None
    else:
        facts["blas"] = [{k: info.get(k) for k in ("internal_api", "version", "num_threads",
                                                   "architecture")}
                         for info in threadpool_info() if info.get("user_api") == "blas"]
    return facts


def format_table(rows: Sequence[Row]) -> str:
    """Aligned text table.

    >>> print(format_table([Row("mlp", "none", MiB, 0.4, 0.5, 0.7, 64)]).splitlines()[1].split())
    ['mlp', 'none', '1.0', '1.000', '400.0', '500.0', '700.0', '1.00', '64']
    """
    header = ("workload", "strategy", "peak MiB", "peak ratio", "min ms", "median ms", "max ms",
              "time ratio", "forwards")
    body = [(r.workload, r.strategy, f"{r.peak_bytes / MiB:.1f}", f"{r.peak_ratio:.3f}",
             f"{r.min_s * 1e3:.1f}", f"{r.median_s * 1e3:.1f}", f"{r.max_s * 1e3:.1f}",
             f"{r.time_ratio:.2f}", str(r.layer_forwards)) for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header, *body])


def format_json(rows: Sequence[Row], settings: dict[str, Any], env: dict[str, Any]) -> str:
    """``{"settings": ..., "environment": ..., "rows": [...]}``: a result that says how it was made.

    >>> out = json.loads(format_json([Row("mlp", "none", MiB, 0.4, 0.5, 0.7, 64)],
    ...                              {"repeats": 5}, {"numpy": "2.0"}))
    >>> out["settings"], out["environment"], out["rows"][0]["median_s"]
    ({'repeats': 5}, {'numpy': '2.0'}, 0.5)
    """
    return json.dumps({"settings": settings, "environment": env, "rows": [asdict(r) for r in rows]},
                      indent=2)


def format_csv(rows: Sequence[Row], settings: dict[str, Any], env: dict[str, Any]) -> str:
    """One line per strategy; the settings and environment repeat on every line, so each
    line stands alone when results of several runs are concatenated.

    >>> print(format_csv([Row("mlp", "none", MiB, 0.4, 0.5, 0.7, 64)], {"repeats": 5},
    ...                  {"numpy": "2.0"}), end="")  # doctest: +NORMALIZE_WHITESPACE
    workload,strategy,peak_bytes,min_s,median_s,max_s,layer_forwards,peak_ratio,time_ratio,repeats,numpy
    mlp,none,1048576,0.4,0.5,0.7,64,1.0,1.0,5,2.0
    """
    lines = [{**asdict(r), **settings, **{k: _csv_value(v) for k, v in env.items()}} for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(lines[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    """Lists and dicts (load average, BLAS libraries) as compact JSON inside one CSV cell."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value


def require_matplotlib() -> None:
    """Raise ``ImportError`` with the install hint when matplotlib is missing (checked before
    a benchmark runs, so a missing plotting library does not waste the run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'memsave[bench]'") from exc


def plot(rows: Sequence[Row], path: str) -> None:
    """Peak MiB against median step ms, one labelled point per strategy, the min-max range of
    step times as a horizontal bar, both axes from 0 (needs matplotlib: extra ``bench``)."""
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        ms_, mib = r.median_s * 1e3, r.peak_bytes / MiB
        ax.errorbar(ms_, mib, xerr=[[ms_ - r.min_s * 1e3], [r.max_s * 1e3 - ms_]], fmt="o",
                    capsize=3, label=f"{r.strategy}: {mib:.1f} MiB, {ms_:.0f} ms")
        ax.annotate(r.strategy, (ms_, mib), textcoords="offset points", xytext=(5, 5))
    ax.set_xlim(left=0, right=1.15 * max(r.max_s for r in rows) * 1e3)
    ax.set_ylim(bottom=0, top=1.15 * max(r.peak_bytes for r in rows) / MiB)
    ax.set_xlabel("step time, ms (median; bar: min to max)")
    ax.set_ylabel("peak memory of a step, MiB")
    ax.set_title(f"memsave bench {rows[0].workload}")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
