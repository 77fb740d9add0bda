#!/usr/bin/env python
"""Data-parallel scaling: step time and all-reduce cost on 1 and 2 ranks, a ring model beyond.

Weak scaling: every rank trains the reference MLP (depth x Linear(width) + tanh, float32)
on its own batch of fixed size, with one BLAS thread per rank (on this 2-core machine,
2 ranks use both cores).  Each configuration runs in fresh processes under mpiexec and
reports per step: step time (forward, backward, all-reduce, SGD step), the all-reduce's
time and share of the step, and the bytes each rank contributes.  A blocking
``Allreduce`` sweep on 2 ranks gives this machine's latency and bandwidth (fastest repeat).

The estimate for larger runs uses the standard ring all-reduce model: a message of m
bytes on n ranks costs ``2 (n - 1) alpha + 2 (n - 1) / n * m / beta`` (reduce-scatter
then all-gather), summed over the measured messages; compute time is the 1-rank step
minus its all-reduce, with no overlap.

    pip install -e '.[mpi]'
    python benchmarks/ddp_scaling.py            # --markdown for RESULTS.md; --help
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LINKS = {   # name: (alpha seconds per message step, beta bytes per second)
    "10 GbE (30 us, 1.25 GB/s)": (30e-6, 1.25e9),
    "100 Gb/s InfiniBand (3 us, 12 GB/s)": (3e-6, 12e9),
}


def ring_seconds(message_bytes: list[int], ranks: int, alpha: float, beta: float) -> float:
    """Ring all-reduce time of the messages on ``ranks`` ranks."""
    if ranks == 1:
        return 0.0
    return sum(2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * m / beta for m in message_bytes)


# ----- worker: runs under mpiexec ------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    import memsave as ms
    import memsave.distributed as dist
    import memsave.functions as F
    from memsave import nn
    from memsave.optim import SGD

    threadpool_limits(1)
    comm = dist.init()
    ms.random.seed(0)
    model = nn.Sequential(*[layer for _ in range(args.depth)
                            for layer in (nn.Linear(args.width, args.width), F.tanh)])
    ddp = dist.DataParallel(model)
    opt = SGD(ddp.parameters(), lr=1e-3)
    x = np.random.default_rng(dist.rank()).standard_normal((args.batch, args.width)).astype(np.float32)
    steps = []
    for i in range(args.warmup + args.steps):
        comm.Barrier()
        start = time.perf_counter()
        opt.zero_grad()
        y = ddp(x)
        (y * y).mean().backward()
        stats = ddp.allreduce_grads()
        opt.step()
        elapsed = time.perf_counter() - start
        if i >= args.warmup:
            steps.append((elapsed, stats.seconds))
    # Every rank's steps; a step takes as long as its slowest rank.
    everyone = comm.gather(steps, root=0)
    sweep = _sweep(comm) if comm.Get_size() > 1 else None
    if comm.Get_rank() == 0:
        slowest = [max(rank_steps[i] for rank_steps in everyone) for i in range(len(steps))]
        Path(args.out).write_text(json.dumps({
            "ranks": comm.Get_size(), "step_s": [s for s, _ in slowest],
            "allreduce_s": [c for _, c in slowest], "message_bytes": list(stats.message_bytes),
            "bytes": stats.bytes, "sweep": sweep}))


def _sweep(comm) -> list[tuple[int, float]]:
    """(bytes, fastest seconds) of a blocking float32 Allreduce, 8 B to 16 MiB: the fastest
    of several repeats is the link's capability, the others include other processes' load."""
    from mpi4py import MPI

    out = []
    for exp in range(3, 25, 3):
        buf = np.ones((1 << exp) // 4, dtype=np.float32)
        times = []
        for _ in range(9 if exp < 20 else 5):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - start)
        out.append((buf.nbytes, min(times)))
    return out


# ----- driver: launches the workers, prints the tables ---------------------------------------
def run(ranks: int, args: argparse.Namespace) -> dict:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [str(mpiexec), "-n", str(ranks), sys.executable, __file__, "--worker", "--out",
                   str(out), "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch",
                   str(args.batch), "--depth", str(args.depth), "--width", str(args.width)]
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        return json.loads(out.read_text())


def fit_alpha_beta(sweep: list[tuple[int, float]], ranks: int) -> tuple[float, float]:
    """The ring model's ``alpha`` from the smallest message (latency only) and ``beta`` from
    the growth between the two largest (bandwidth only)."""
    t0 = sweep[0][1]
    (m1, t1), (m2, t2) = sweep[-2], sweep[-1]
    alpha = t0 / (2 * (ranks - 1))
    return alpha, 2 * (ranks - 1) / ranks * (m2 - m1) / (t2 - t1)


def report(results: list[dict], args: argparse.Namespace) -> str:
    ms_ = 1e3
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [f"Weak scaling, per-rank batch {args.batch}, MLP depth {args.depth} width {args.width} "
             f"float32, 1 BLAS thread per rank, {args.steps} timed steps (min / median); "
             f"{os.cpu_count()} cores, load average at the end {load}. The all-reduce time "
             "includes waiting for the slower rank.", "",
             "| ranks | step ms | all-reduce ms | all-reduce share | bytes per rank per step | messages |",
             "|---|---|---|---|---|---|"]
    for r in results:
        step, comm = r["step_s"], r["allreduce_s"]
        share = [c / s for s, c in zip(step, comm)]
        lines.append(f"| {r['ranks']} | {min(step) * ms_:.1f} / {statistics.median(step) * ms_:.1f} | "
                     f"{min(comm) * ms_:.1f} / {statistics.median(comm) * ms_:.1f} | "
                     f"{min(share):.1%} / {statistics.median(share):.1%} | "
                     f"{r['bytes'] / 2**20:.2f} MiB | {len(r['message_bytes'])} |")
    one, two = results[0], results[-1]
    ratio = statistics.median(two["step_s"]) / statistics.median(one["step_s"])
    lines += ["", f"{two['ranks']}-rank / 1-rank median step time: {ratio:.2f}x "
              f"(ideal weak scaling: 1.00x)."]
    if two["sweep"] is None:
        return "\n".join(lines)
    alpha, beta = fit_alpha_beta(two["sweep"], two["ranks"])
    lines += ["", f"Blocking Allreduce on {two['ranks']} ranks, this machine (shared memory): alpha = "
              f"{alpha * 1e6:.1f} us, beta = {beta / 1e9:.2f} GB/s, fastest of 5-9 repeats "
              f"({', '.join(f'{b} B: {t * 1e6:.0f} us' for b, t in two['sweep'])})."]
    compute = statistics.median(one["step_s"]) - statistics.median(one["allreduce_s"])
    links = {f"this machine ({alpha * 1e6:.1f} us, {beta / 1e9:.2f} GB/s)": (alpha, beta), **LINKS}
    lines += ["", f"Ring all-reduce estimate for the same messages ({len(two['message_bytes'])} "
              f"all-reduces, {two['bytes'] / 2**20:.2f} MiB), compute {compute * ms_:.1f} ms per step "
              "(1-rank step minus its all-reduce), no overlap:", "",
              "| link | ranks | all-reduce ms | share of step |", "|---|---|---|---|"]
    for name, (a, b) in links.items():
        for n in (2, 8, 64):
            t = ring_seconds(two["message_bytes"], n, a, b)
            lines.append(f"| {name} | {n} | {t * ms_:.2f} | {t / (t + compute):.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="per-rank batch (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = [run(n, args) for n in sorted(args.ranks)]
    print(report(results, args))


if __name__ == "__main__":
    main()
