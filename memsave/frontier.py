"""``memsave plan``: the planner's time/memory frontier on a bench workload, measured.

The workload's chain is profiled once (:func:`memsave.planner.profile`); for each budget the
rotor DP is solved (:func:`memsave.planner.solve`) and the schedule is run with
``checkpoint_sequential(schedule=...)``: one warm-up step, one step under tracemalloc (peak
live bytes, layer forwards executed), then ``repeats`` timed rounds interleaved with the
plain run and sqrt segments, so the time ratios come from the same machine state.

A budget is bytes (``"300MiB"``, ``"4096"``), a fraction in (0, 1] of the plain run's
predicted peak (``"0.5"``), ``min`` (the least any schedule needs) or ``sqrt`` (the
measured peak of sqrt segments).

>>> rows, skipped = frontier(bench.make_workload("mlp", depth=4, width=8, batch=4), ["1.0", "min"],
...                          repeats=1)
>>> [r.label for r in rows], rows[2].extra_predicted == rows[2].extra_executed, skipped
(['plain', 'sqrt segments', 'budget 1.0', 'budget min'], True, [])
"""
from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import memsave as ms
from memsave import bench, planner
from memsave.memory import MiB, measure


@dataclass
class FrontierRow:
    """One measured configuration: ``budget`` and ``predicted_peak`` are None for the
    reference rows (plain, sqrt segments); ratios are against plain (median, min)."""

    label: str
    budget: int | None
    predicted_peak: int | None
    measured_peak: int
    extra_predicted: int | None
    extra_executed: int
    median_ratio: float = 1.0
    min_ratio: float = 1.0


def budget_bytes(text: str, chain: planner.Chain, sqrt_peak: int) -> int:
    """Bytes for one ``--budgets`` entry (see the module docstring).

    >>> chain = planner.Chain(uf=[1] * 4, ub=[1] * 4, x=[8] * 5, xbar=[8] * 4)
    >>> budget_bytes("0.5", chain, 40), budget_bytes("min", chain, 40), budget_bytes("1KiB", chain, 40)
    (24, 32, 1024)
    """
    if text == "min":
        return planner.minimum_budget(chain)[0]
    if text == "sqrt":
        return sqrt_peak
    try:
        fraction = float(text)
    except ValueError:
        return planner.parse_bytes(text)
    if "." not in text:
        return planner.parse_bytes(int(fraction))
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a fractional budget must be in (0, 1] (a share of the plain run's "
                         f"predicted peak), got {text!r}; give bytes as '300MiB' or an integer")
    return int(fraction * planner.simulate(tuple(range(chain.n_layers)), chain)[1])


def _step(workload: bench.Workload, how: dict[str, Any]) -> None:
    for p in workload.parameters:
        p.cleargrad()
    h: Any = workload.x
    if how:
        h = ms.checkpoint_sequential(workload.counted(), h, **how)
    else:  # the plain run
        for layer in workload.counted():
            h = layer(h)
    loss = bench.loss(h)
    del h
    loss.backward()


def _peak_and_forwards(workload: bench.Workload, how: dict[str, Any]) -> tuple[int, int]:
    _step(workload, how)  # warm-up
    workload.forwards = 0
    with measure() as m:
        _step(workload, how)
    return m.peak, workload.forwards - len(workload.layers)


def frontier(workload: bench.Workload, budgets: Sequence[str],
             repeats: int = 3) -> tuple[list[FrontierRow], list[str]]:
    """Rows for plain, sqrt segments, then each budget; and one message per budget left out
    because it is below the least any schedule needs (the message states that minimum)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        chain = planner.profile(workload.layers, workload.x, loss=bench.loss)
        configs: dict[str, dict[str, Any]] = {"plain": {},
                                              "sqrt segments": {"segments": "sqrt"}}
        rows = [FrontierRow(label, None, None, peak, None, extra)
                for label, how in configs.items()
                for peak, extra in [_peak_and_forwards(workload, how)]]
        rows[0].predicted_peak = planner.simulate(tuple(range(chain.n_layers)), chain)[1]
        skipped = []
        for text in budgets:
            try:
                schedule = planner.solve(chain, budget_bytes(text, chain, rows[1].measured_peak))
            except ValueError as err:
                skipped.append(f"budget {text}: {err}")
                continue
            label = f"budget {text}"
            configs[label] = {"schedule": schedule}
            peak, extra = _peak_and_forwards(workload, configs[label])
            rows.append(FrontierRow(label, schedule.budget, schedule.peak_bytes, peak,
                                    schedule.extra_forwards, extra))
        times: dict[str, list[float]] = {label: [] for label in configs}
        for _ in range(repeats):
            for label, how in configs.items():
                start = time.perf_counter()
                _step(workload, how)
                times[label].append(time.perf_counter() - start)
    base = times["plain"]
    for row in rows:
        row.median_ratio = statistics.median(times[row.label]) / statistics.median(base)
        row.min_ratio = min(times[row.label]) / min(base)
    return rows, skipped


def format_frontier(rows: Sequence[FrontierRow]) -> str:
    """Aligned text table of :func:`frontier`'s rows.

    >>> print(format_frontier([FrontierRow("plain", None, MiB, MiB, None, 0)]).splitlines()[1])
    plain   -           1.0                 1.0                - / 0                       1.00 / 1.00
    """
    header = ("config", "budget MiB", "predicted peak MiB", "measured peak MiB",
              "extra forwards pred / exec", "time vs plain (median / min)")

    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / MiB:.1f}"

    body = [(r.label, mib(r.budget), mib(r.predicted_peak), mib(r.measured_peak),
             f"{'-' if r.extra_predicted is None else r.extra_predicted} / {r.extra_executed}",
             f"{r.median_ratio:.2f} / {r.min_ratio:.2f}") for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in [header, *body])


def plot_frontier(rows: Sequence[FrontierRow], path: str, title: str) -> None:
    """Predicted and measured peak MiB against the extra layer forwards each plan executes
    (the recomputation it pays; unlike a step time, exact on a busy machine); plain and sqrt
    segments as labelled reference points (needs matplotlib: extra ``bench``)."""
    bench.require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    planned = sorted((r for r in rows if r.budget is not None), key=lambda r: r.extra_executed)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    extra = [r.extra_executed for r in planned]
    ax.plot(extra, [r.measured_peak / MiB for r in planned], "o-", label="planner, measured")
    ax.plot(extra, [(r.predicted_peak or 0) / MiB for r in planned], "x--", label="planner, predicted")
    for r in rows:
        if r.budget is None:
            ax.plot(r.extra_executed, r.measured_peak / MiB, "s", label=r.label)
    ax.set_xlabel("extra layer forwards per step (recomputation)")
    ax.set_ylabel("peak memory of a step, MiB")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
