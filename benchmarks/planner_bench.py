"""The planner on workload W: measured peak vs budget, forwards and step time vs plain.

Profiles W once (``memsave.planner.profile``), then for budgets between the least any
schedule needs and the plain run's predicted peak solves the rotor DP, runs the schedule
with ``checkpoint_sequential(schedule=...)`` and measures, in this one process: the peak
live bytes of one step (tracemalloc), the layer forwards executed, and step times
interleaved round by round with plain and sqrt segments (ratios: min and median).
Also solves for sqrt segments' measured peak and for half of it (the issue's targets).

``--vs-sqrt N`` instead runs the head-to-head at sqrt segments' measured peak (or at
``--segments K`` segments'): the plan for that budget against those segments, N alternating
pairs of steps, timed in wall and process
CPU seconds (CPU time is what a busy machine disturbs least); it reports min and median of
each and in how many pairs the plan was the faster.  ``--gradients freed`` runs both with an
SGD update inside backward (``optimizer.step_in_backward()``) and plans for it.

    python benchmarks/planner_bench.py [--workload mlp|cnn|transformer] [--repeats 5]
        [--profile-repeats 1] [--depth D] [--batch B]      (sizes default to bench's)
    python benchmarks/planner_bench.py --vs-sqrt 30 [--gradients kept|freed] [--segments K]
    python benchmarks/planner_bench.py --sweep 2 4 8 16 32   # plans at K segments' peaks (memory, forwards)
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings

import memsave as ms
from memsave import bench, planner
from memsave.memory import MiB, measure
from memsave.remat.sequential import segment_bounds


def step(workload: bench.Workload, how: dict) -> None:
    for p in workload.parameters:
        p.cleargrad()
    h = ms.checkpoint_sequential(workload.counted(), workload.x, **how)
    loss = bench.loss(h)
    del h
    loss.backward()


def peak_and_forwards(workload: bench.Workload, how: dict) -> tuple[int, int]:
    step(workload, how)  # warm-up
    workload.forwards = 0
    with measure() as m:
        step(workload, how)
    return m.peak, workload.forwards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--depth", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--workload", choices=bench.WORKLOADS, default="mlp")
    parser.add_argument("--profile-repeats", type=int, default=1)
    parser.add_argument("--vs-sqrt", type=int, default=0, metavar="PAIRS")
    parser.add_argument("--gradients", choices=("kept", "freed"), default="kept")
    parser.add_argument("--segments", default="sqrt", help="segments for --vs-sqrt (default sqrt)")
    parser.add_argument("--sweep", type=int, nargs="+", default=[], metavar="K",
                        help="for each K: the plan at K segments' measured peak (no timing)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
    workload = bench.make_workload(args.workload, depth=args.depth, batch=args.batch)
    if args.sweep:
        sweep(workload, args.sweep, args.gradients, args.profile_repeats)
        return
    if args.vs_sqrt:
        segments = args.segments if args.segments == "sqrt" else int(args.segments)
        versus_segments(workload, segments, args.vs_sqrt, args.gradients, args.profile_repeats)
        return
    n = len(workload.layers)

    start = time.perf_counter()
    chain = planner.profile(workload.layers, workload.x, repeats=args.profile_repeats, loss=bench.loss)
    print(f"{args.workload}, {n} layers; profile ({args.profile_repeats} runs per layer): "
          f"{time.perf_counter() - start:.2f} s; x {chain.x[0] / MiB:.2f} MiB, "
          f"xbar {chain.xbar[0] / MiB:.2f} MiB, grad {chain.grad[0] / MiB:.3f} MiB per layer")
    least = planner.minimum_budget(chain)[0]
    plain_model = planner.simulate(tuple(range(n)), chain)[1]
    plain_peak, _ = peak_and_forwards(workload, {"segments": 1})
    sqrt_peak, sqrt_forwards = peak_and_forwards(workload, {"segments": segments})
    print(f"minimum budget {least / MiB:.1f} MiB; plain: model {plain_model / MiB:.1f} MiB, "
          f"measured {plain_peak / MiB:.1f} MiB; sqrt measured {sqrt_peak / MiB:.1f} MiB")

    budgets = {"minimum": least, "sqrt/2": sqrt_peak // 2, "sqrt peak": sqrt_peak,
               "mid": (sqrt_peak + plain_model) // 2, "plain": plain_model}
    configs: dict[str, dict] = {"plain": {"segments": 1}, "sqrt segments": {"segments": "sqrt"}}
    rows = []
    for name, budget in budgets.items():
        if budget < least:
            print(f"{name}: {budget / MiB:.1f} MiB is below the minimum; skipped")
            continue
        start = time.perf_counter()
        schedule = planner.solve(chain, budget)
        solve_s = time.perf_counter() - start
        peak, forwards = peak_and_forwards(workload, {"schedule": schedule})
        label = f"budget {name}"
        configs[label] = {"schedule": schedule}
        rows.append((label, budget, schedule, peak, forwards - n, solve_s))

    times: dict[str, list[float]] = {label: [] for label in configs}
    for _ in range(args.repeats):
        for label, how in configs.items():
            start = time.perf_counter()
            step(workload, how)
            times[label].append(time.perf_counter() - start)
    base = times["plain"]

    def ratio(label: str) -> str:
        return (f"{statistics.median(times[label]) / statistics.median(base):.2f} / "
                f"{min(times[label]) / min(base):.2f}")

    print(f"\nplain step: median {statistics.median(base) * 1e3:.0f} ms, min {min(base) * 1e3:.0f} ms "
          f"({args.repeats} interleaved rounds)")
    print("| budget | budget MiB | predicted peak MiB | measured peak MiB | measured / budget "
          "| extra forwards predicted / executed | stored inputs | time vs plain (median / min) "
          "| solve s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, budget, schedule, peak, executed, solve_s in rows:
        print(f"| {label} | {budget / MiB:.1f} | {schedule.peak_bytes / MiB:.1f} | {peak / MiB:.1f} "
              f"| {peak / budget:.3f} | {schedule.extra_forwards} / {executed} | {schedule.peak_slots} "
              f"| {ratio(label)} | {solve_s:.1f} |")
    segments = len(segment_bounds(n, "sqrt"))
    print(f"| sqrt segments | - | - | {sqrt_peak / MiB:.1f} | - | - / {sqrt_forwards - n} | {segments} "
          f"| {ratio('sqrt segments')} | - |")
    print(f"| plain | - | {plain_model / MiB:.1f} | {plain_peak / MiB:.1f} | - | 0 / 0 | 0 "
          "| 1.00 / 1.00 | - |")


def profiled(workload: bench.Workload, gradients: str,
             profile_repeats: int) -> tuple[ms.optim.SGD, planner.Chain]:
    """An SGD optimizer (applied inside backward when ``gradients`` is "freed", so that its
    gradients do not stay) and the workload's chain, planned for those gradients."""
    optimizer = ms.optim.SGD(workload.parameters, lr=1e-6)
    if gradients == "freed":
        optimizer.step_in_backward()
    chain = planner.profile(workload.layers, workload.x, repeats=profile_repeats, loss=bench.loss)
    if gradients == "freed":
        chain = dataclasses.replace(chain, grad=[0] * chain.n_layers)
    return optimizer, chain


def sweep(workload: bench.Workload, counts: list[int], gradients: str, profile_repeats: int) -> None:
    """For each segment count K: K segments' measured peak and forwards, and the plan's for
    that budget (predicted and measured): a markdown table."""
    optimizer, chain = profiled(workload, gradients, profile_repeats)
    n = len(workload.layers)
    print(f"gradients {gradients}")
    print("| segments K | K segments: peak MiB | extra forwards | plan: predicted peak MiB "
          "| measured peak MiB | extra forwards predicted / executed |")
    print("|---|---|---|---|---|---|")
    for k in counts:
        peak, forwards = peak_and_forwards(workload, {"segments": k})
        schedule = planner.solve(chain, peak)
        planned, executed = peak_and_forwards(workload, {"schedule": schedule})
        print(f"| {k} | {peak / MiB:.2f} | {forwards - n} | {schedule.peak_bytes / MiB:.2f} "
              f"| {planned / MiB:.2f} | {schedule.extra_forwards} / {executed - n} |")
    optimizer.stop_step_in_backward()


def versus_segments(workload: bench.Workload, segments: int | str, pairs: int, gradients: str,
                    profile_repeats: int) -> None:
    """The plan at the segments' measured peak against those segments, step for step."""
    optimizer, chain = profiled(workload, gradients, profile_repeats)
    sqrt_peak, sqrt_forwards = peak_and_forwards(workload, {"segments": segments})
    schedule = planner.solve(chain, sqrt_peak)
    peak, forwards = peak_and_forwards(workload, {"schedule": schedule})
    n = len(workload.layers)
    print(f"gradients {gradients}; budget = {segments} segments' measured peak {sqrt_peak / MiB:.2f} MiB")
    print(f"{segments} segments: extra forwards {sqrt_forwards - n}, peak {sqrt_peak / MiB:.2f} MiB")
    print(f"plan: extra forwards {forwards - n} (predicted {schedule.extra_forwards}), peak "
          f"{peak / MiB:.2f} MiB (predicted {schedule.peak_bytes / MiB:.2f}), "
          f"{schedule.peak_slots} stored inputs")
    configs = {"sqrt segments": {"segments": segments}, "plan": {"schedule": schedule}}
    wall: dict[str, list[float]] = {label: [] for label in configs}
    cpu: dict[str, list[float]] = {label: [] for label in configs}
    for k in range(pairs):
        order = list(configs) if k % 2 == 0 else list(reversed(configs))
        for label in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            step(workload, configs[label])
            wall[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
    for name, times in (("wall", wall), ("cpu", cpu)):
        wins = sum(p < s for p, s in zip(times["plan"], times["sqrt segments"]))
        print(f"{name} ms: segments min {min(times['sqrt segments']) * 1e3:.1f} median "
              f"{statistics.median(times['sqrt segments']) * 1e3:.1f}; plan min "
              f"{min(times['plan']) * 1e3:.1f} median {statistics.median(times['plan']) * 1e3:.1f}; "
              f"plan/segments min {min(times['plan']) / min(times['sqrt segments']):.3f} median "
              f"{statistics.median(times['plan']) / statistics.median(times['sqrt segments']):.3f}; "
              f"plan faster in {wins} of {pairs} pairs")
    optimizer.stop_step_in_backward()


if __name__ == "__main__":
    main()
