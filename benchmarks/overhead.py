"""Per-op overhead microbenchmark: a tiny MLP where dispatch, not arithmetic, dominates.

Workload TINY: batch 8, width 32, 8 x (Linear + tanh), loss ``sum(y * y) / batch``, plain
forward + backward + gradient zeroing (each framework's ``build(TINY, "none")`` step).
Reported: step time and step time per forward op, counting 3 ops per layer (matmul, bias
add, tanh) plus 3 for the loss (mul, sum, div) = 27.  The backward's ops are not counted
separately, so "per op" covers an op's forward and its backward.

Run each framework with its interpreter (torch and chainer from their venvs):

    python benchmarks/overhead.py --framework numpy --json
    benchmarks/.venvs/torch/bin/python benchmarks/overhead.py --framework torch --json

or count instructions per step instead of timing (cachegrind, exact on a noisy machine; needs
valgrind): ``python benchmarks/overhead.py --instructions memsave`` (``torch`` with
``--torch-python``),

or let ``--paired N`` run memsave (this interpreter) and torch (``--torch-python``) N times
each, alternating, each run in a fresh process with ``--threads`` BLAS/OpenMP threads and
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from its environment (each run reports the BLAS
kernel it used).  It prints, per framework, the min and median over processes of the
median-block and of the min-block µs/op, and the ratio memsave/torch of each pair:

    python benchmarks/overhead.py --paired 5 --torch-python .venv-torch/bin/python
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from workload import TINY, Step, Workload

HERE = Path(__file__).resolve().parent

MODULES = {"numpy": "numpy_floor", "torch": "torch_bench", "chainer": "chainer_bench",
           "memsave": "memsave_bench"}
OPS_PER_LAYER = 3
LOSS_OPS = 3


def forward_ops(wl: Workload) -> int:
    """Forward ops of one step of ``wl``."""
    return OPS_PER_LAYER * wl.depth + LOSS_OPS


def block_times(step: Step, steps: int, blocks: int) -> list[float]:
    """Seconds per step of ``blocks`` blocks of ``steps`` consecutive steps each."""
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return times


def run(framework: str, steps: int, blocks: int, warmup: int) -> dict[str, object]:
    """Build ``framework``'s TINY step, warm it up and time it."""
    module = importlib.import_module(MODULES[framework])
    step = module.build(TINY, "none")
    block_times(step, warmup, 1)
    times = block_times(step, steps, blocks)
    ops = forward_ops(TINY)
    median = statistics.median(times)
    return {"framework": framework, "batch": TINY.batch, "width": TINY.width,
            "depth": TINY.depth, "ops_per_step": ops, "median_step_us": median * 1e6,
            "min_step_us": min(times) * 1e6, "us_per_op": median * 1e6 / ops,
            "versions": module.versions()}


def fresh_run(python: str, framework: str, threads: int, steps: int, blocks: int,
              warmup: int) -> dict[str, object]:
    """:func:`run` in a new process of ``python``, with ``threads`` BLAS/OpenMP threads and
    the OpenBLAS kernel overrides removed from its environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({name: str(threads) for name in
                ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    command = [python, str(HERE / "overhead.py"), "--framework", framework, "--json",
               "--steps", str(steps), "--blocks", str(blocks), "--warmup", str(warmup)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def paired(rounds: int, torch_python: str, threads: int, steps: int, blocks: int,
           warmup: int) -> dict[str, object]:
    """memsave and torch alternating, ``rounds`` fresh processes each; per framework the min
    and median over processes, and the per-round ratios memsave/torch."""
    runs: dict[str, list[dict[str, object]]] = {"memsave": [], "torch": []}
    for _ in range(rounds):
        for framework, python in (("memsave", sys.executable), ("torch", torch_python)):
            runs[framework].append(fresh_run(python, framework, threads, steps, blocks, warmup))
    summary: dict[str, object] = {"rounds": rounds, "threads": threads}
    for framework, results in runs.items():
        medians = [float(r["us_per_op"]) for r in results]
        mins = [float(r["min_step_us"]) / float(r["ops_per_step"]) for r in results]
        summary[framework] = {
            "us_per_op_median_block": {"min": min(medians), "median": statistics.median(medians)},
            "us_per_op_min_block": {"min": min(mins), "median": statistics.median(mins)},
            "versions": results[0]["versions"]}
    pairs = list(zip(runs["memsave"], runs["torch"]))
    for key, of in (("ratio_median_block", lambda r: float(r["us_per_op"])),
                    ("ratio_min_block", lambda r: float(r["min_step_us"]))):
        ratios = [of(m) / of(t) for m, t in pairs]
        summary[key] = {"min": min(ratios), "median": statistics.median(ratios),
                        "each": [round(r, 3) for r in ratios]}
    return summary


def instructions(python: str, framework: str, runs: tuple[int, int] = (100, 400)) -> float:
    """Instructions per step of ``framework``'s TINY step: cachegrind's count for a process
    running ``runs[1]`` steps minus one running ``runs[0]``, over the difference (so start-up
    and imports cancel out).  1 thread, OpenBLAS overrides removed, as in :func:`fresh_run`."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "MKL_NUM_THREADS")})
    counts = []
    for steps in runs:
        command = [valgrind, "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null", python, str(HERE / "overhead.py"),
                   "--framework", framework, "--steps", str(steps), "--blocks", "1",
                   "--warmup", "50"]
        err = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stderr
        refs = re.search(r"I\s+refs:\s+([\d,]+)", err)
        if refs is None:
            raise RuntimeError(f"no instruction count in valgrind's output:\n{err[-2000:]}")
        counts.append(int(refs.group(1).replace(",", "")))
    return (counts[1] - counts[0]) / (runs[1] - runs[0])


def print_paired(summary: dict[str, object]) -> None:
    """The :func:`paired` summary as a few lines of text."""
    for framework in ("memsave", "torch"):
        entry = summary[framework]
        med, low = entry["us_per_op_median_block"], entry["us_per_op_min_block"]
        print(f"{framework:8s} us/op  median block: min {med['min']:6.2f} median "
              f"{med['median']:6.2f}   min block: min {low['min']:6.2f} median "
              f"{low['median']:6.2f}   ({entry['versions'].get('blas', 'blas ?')})")
    for key in ("ratio_median_block", "ratio_min_block"):
        r = summary[key]
        print(f"memsave/torch {key[6:]:12s} min {r['min']:.2f} median {r['median']:.2f} "
              f"(each pair: {', '.join(f'{x:.2f}' for x in r['each'])})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(MODULES))
    parser.add_argument("--paired", type=int, metavar="N",
                        help="alternate memsave and torch, N fresh processes each")
    parser.add_argument("--torch-python", default=str(HERE / ".venvs" / "torch" / "bin" / "python"),
                        help="interpreter with torch, for --paired")
    parser.add_argument("--instructions", choices=["memsave", "torch"],
                        help="count instructions per step with cachegrind instead of timing")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (--paired)")
    parser.add_argument("--steps", type=int, default=500, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks (median taken)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed steps first")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if [args.framework, args.paired, args.instructions].count(None) != 2:
        parser.error("give exactly one of --framework, --paired and --instructions")
    if args.instructions is not None:
        python = args.torch_python if args.instructions == "torch" else sys.executable
        per_step = instructions(python, args.instructions)
        print(f"{args.instructions}: {per_step / 1e6:.3f} M instructions per step "
              f"({per_step / forward_ops(TINY):.0f} per op)")
        return 0
    if args.paired is not None:
        if args.paired < 1:
            parser.error(f"--paired needs at least 1 round, got {args.paired}")
        if not Path(args.torch_python).exists():
            parser.error(f"--torch-python {args.torch_python} does not exist; create the venv "
                         "with benchmarks/setup_venvs.sh or pass the interpreter that has torch")
        summary = paired(args.paired, args.torch_python, args.threads, args.steps, args.blocks,
                         args.warmup)
        if args.json:
            print(json.dumps(summary))
        else:
            print_paired(summary)
        return 0
    result = run(args.framework, args.steps, args.blocks, args.warmup)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['framework']:8s} {result['median_step_us']:9.1f} us/step  "
              f"{result['us_per_op']:7.2f} us/op  ({result['ops_per_step']} ops/step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
