"""Run every (workload, framework, strategy) in fresh processes and compare them.

Workloads: W (``mlp``: NumPy floor, torch, chainer, memsave), ``cnn`` and ``transformer``
(torch and memsave; ``torch-sdpa`` is torch with its fused scaled_dot_product_attention,
transformer only).  Each configuration runs ``--processes`` times, each time in a new
process with its framework's interpreter (the venvs of setup_venvs.sh for torch and
chainer, the current interpreter for the NumPy floor and memsave), interleaved A/B/A/B:
within a round the frameworks of one (workload, strategy) run back to back, so that machine
noise spreads over all of them.  Per configuration the table reports the median over
processes of peak bytes and median step time, and the min over processes of the min step
time.  Ratios ``x/none`` are to the same framework's plain step; on a machine shared with
other work the min-based ratio (min/none) is the steadier one.  ``--threads N`` sets
OMP/OpenBLAS/MKL threads in every process; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
removed from the processes' environment, and each reports the BLAS kernel that ran.
``--keep-freed-memory`` starts every process, whatever its framework, with glibc's malloc
keeping freed memory for reuse (``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``,
what ``memsave.allocator.keep_freed_memory()`` sets): no page faults for arrays allocated
again every step.

    python benchmarks/compare.py --processes 3 --repeats 5 --markdown
    python benchmarks/compare.py --workloads cnn transformer --threads 1 --markdown

memsave joins when ``import memsave`` works in this interpreter and memsave_bench.py exists.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from workload import DEFAULT_REPEATS, STRATEGIES, WORKLOADS, BenchResult

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
MIB = 2**20


@dataclass(frozen=True)
class Framework:
    """A framework's benchmark script, the venv it runs in (None: this interpreter), the
    workloads it has and extra arguments for its script."""

    name: str
    script: str
    venv: str | None = None
    workloads: tuple[str, ...] = ("mlp",)
    args: tuple[str, ...] = ()

    def python(self) -> Path:
        """Interpreter that runs the script."""
        return VENVS / self.venv / "bin" / "python" if self.venv else Path(sys.executable)

    def unavailable_reason(self) -> str | None:
        """Why this framework cannot run here, or None if it can."""
        if self.venv and not self.python().exists():
            setup = os.path.relpath(HERE / "setup_venvs.sh")
            return f"{self.name}: venv {VENVS / self.venv} missing; create it with " \
                   f"`bash {setup} {self.venv}`"
        if not (HERE / self.script).exists():
            return f"{self.name}: {HERE / self.script} missing"
        if self.name == "memsave" and importlib.util.find_spec("memsave") is None:
            return "memsave: `import memsave` fails in this interpreter; install it with " \
                   "`pip install -e .` from the repository root"
        return None


FRAMEWORKS = (
    Framework("numpy", "numpy_floor.py"),
    Framework("torch", "torch_bench.py", "torch", WORKLOADS),
    Framework("torch-sdpa", "torch_bench.py", "torch", ("transformer",), ("--attention", "sdpa")),
    Framework("chainer", "chainer_bench.py", "chainer"),
    Framework("memsave", "memsave_bench.py", None, WORKLOADS),
)


@dataclass
class Row:
    """One configuration, aggregated over processes, with its ratios."""

    workload: str
    framework: str
    strategy: str
    peak_bytes: int
    median_s: float
    min_s: float
    layer_forwards: int
    processes: int
    peak_vs_none: float | None = None
    time_vs_none: float | None = None
    time_vs_numpy_plain: float | None = None
    min_vs_none: float | None = None


def child_env(threads: int | None, keep_freed_memory: bool = False) -> dict[str, str]:
    """This environment without OpenBLAS kernel overrides, with ``threads`` threads if set,
    and glibc's malloc keeping freed memory if asked."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    if threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    if keep_freed_memory:
        env["MALLOC_MMAP_THRESHOLD_"] = str(32 << 20)   # memsave.allocator's values
        env["MALLOC_TRIM_THRESHOLD_"] = str(1 << 30)
    return env


def run_once(framework: Framework, workload: str, strategy: str, repeats: int,
             env: dict[str, str] | None = None) -> BenchResult:
    """One fresh process of ``framework``'s script; raises RuntimeError if it fails."""
    cmd = [str(framework.python()), str(HERE / framework.script), "--workload", workload,
           "--strategy", strategy, "--repeats", str(repeats), "--json", *framework.args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=HERE,
                          env=child_env(None) if env is None else env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return BenchResult(**json.loads(lines[-1]))


def aggregate(results: list[BenchResult]) -> Row:
    """Median peak and median step time over processes, min of the min step times."""
    first = results[0]
    return Row(workload=first.workload, framework=first.framework, strategy=first.strategy,
               peak_bytes=int(statistics.median(r.peak_bytes for r in results)),
               median_s=statistics.median(r.median_s for r in results),
               min_s=min(r.min_s for r in results),
               layer_forwards=first.layer_forwards, processes=len(results))


def add_ratios(rows: list[Row]) -> None:
    """Fill each row's ratios to its framework's ``none`` row and to NumPy's ``none`` row
    of the same workload."""
    plain = {(row.workload, row.framework): row for row in rows if row.strategy == "none"}
    for row in rows:
        base, floor = plain.get((row.workload, row.framework)), plain.get((row.workload, "numpy"))
        if base:
            row.peak_vs_none = row.peak_bytes / base.peak_bytes
            row.time_vs_none = row.median_s / base.median_s
            row.min_vs_none = row.min_s / base.min_s
        if floor:
            row.time_vs_numpy_plain = row.median_s / floor.median_s


def measure(frameworks: list[Framework], workloads: list[str], strategies: list[str],
            repeats: int, processes: int, env: dict[str, str] | None = None
            ) -> tuple[list[Row], dict[str, dict[str, str]]]:
    """Aggregated rows of every configuration, and each framework's reported versions."""
    results: dict[tuple[str, str, str], list[BenchResult]] = {}
    failed: set[tuple[str, str, str]] = set()
    for round_ in range(processes):
        for workload in workloads:
            for strategy in strategies:
                for fw in frameworks:
                    key = (workload, fw.name, strategy)
                    if workload not in fw.workloads or key in failed:
                        continue
                    print(f"[compare] process {round_ + 1}/{processes}: {workload} {fw.name} "
                          f"{strategy}", file=sys.stderr, flush=True)
                    try:
                        result = run_once(fw, workload, strategy, repeats, env)
                        results.setdefault(key, []).append(result)
                    except RuntimeError as err:
                        print(f"[compare] FAILED {err}", file=sys.stderr, flush=True)
                        failed.add(key)
                        results.pop(key, None)
    rows = [aggregate(runs) for runs in results.values()]
    add_ratios(rows)
    versions = {name: runs[0].versions for (_, name, _), runs in results.items()}
    return rows, versions


def fmt_ratio(value: float | None) -> str:
    """A ratio with two decimals, or '-'."""
    return "-" if value is None else f"{value:.2f}"


HEADER = ("workload", "framework", "strategy", "peak MiB", "peak/none", "median ms", "time/none",
          "time/numpy plain", "min ms", "min/none", "layer fwd")


def table_cells(row: Row) -> tuple[str, ...]:
    """The table's cells for ``row``."""
    return (row.workload, row.framework, row.strategy, f"{row.peak_bytes / MIB:.1f}",
            fmt_ratio(row.peak_vs_none), f"{row.median_s * 1e3:.1f}",
            fmt_ratio(row.time_vs_none), fmt_ratio(row.time_vs_numpy_plain),
            f"{row.min_s * 1e3:.1f}", fmt_ratio(row.min_vs_none), str(row.layer_forwards))


def render_markdown(rows: list[Row]) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|"]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def render_text(rows: list[Row]) -> str:
    """The table as aligned plain text."""
    cells = [HEADER] + [table_cells(row) for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 3 else c[i].rjust(widths[i])
                               for i in range(len(HEADER))) for c in cells)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed steps per process")
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh processes per configuration (median taken)")
    parser.add_argument("--frameworks", nargs="+", default=[fw.name for fw in FRAMEWORKS],
                        choices=[fw.name for fw in FRAMEWORKS])
    parser.add_argument("--workloads", nargs="+", default=["mlp"], choices=WORKLOADS)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/OpenBLAS/MKL threads per process (default: unset)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="every process keeps freed memory for reuse (glibc malloc)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON line per configuration")
    output.add_argument("--markdown", action="store_true", help="markdown table")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    frameworks = []
    for fw in FRAMEWORKS:
        if fw.name not in args.frameworks:
            continue
        reason = fw.unavailable_reason()
        if reason:
            print(f"[compare] skipping {reason}", file=sys.stderr)
        else:
            frameworks.append(fw)
    rows, versions = measure(frameworks, args.workloads, args.strategies, args.repeats,
                             args.processes, child_env(args.threads, args.keep_freed_memory))
    if args.json:
        for row in rows:
            print(json.dumps({**asdict(row), "versions": versions[row.framework]}))
    else:
        print(render_markdown(rows) if args.markdown else render_text(rows))
        for name, vers in versions.items():
            print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in vers.items()), end="")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
