"""Command line: ``memsave --version``, ``memsave demo``, ``memsave bench``, ``memsave plan``.

>>> main(["--version"])  # doctest: +ELLIPSIS
memsave ...
0
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import memsave
from memsave import bench, demo, frontier
from memsave.demo import FULL, DemoConfig, DemoError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    >>> positive_int("3")
    3
    >>> positive_int("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer, got '0'
    """
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def size_or_default(text: str) -> int:
    """argparse type: an integer >= 0 (0 takes the workload's default).

    >>> size_or_default("0")
    0
    >>> size_or_default("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive integer, or 0 for the default, got '-1'
    """
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a positive integer, or 0 for the default, "
                                         f"got {text!r}")
    return int(text)


def strategy(text: str) -> str:
    """argparse type: a strategy that :func:`memsave.bench.parse_strategy` accepts."""
    try:
        bench.parse_strategy(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsave", description=memsave.__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _add_demo_parser(sub)
    _add_bench_parser(sub)
    _add_plan_parser(sub)
    return parser


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="train a small model plain and checkpointed; compare memory/time",
        description="Train a character-level Transformer on Shakespeare three ways from the "
                    "same seed (plain, each block checkpointed, sqrt segments) and compare "
                    "final loss, peak memory and step time. The default size takes well under "
                    "a minute on a 2-core machine and says how long it expects before it "
                    "starts; --full is the larger run (several minutes). Exits with 1 if the "
                    "loss curves differ.")
    quick = DemoConfig()
    for name, help_text in [("steps", "timed training steps per strategy, after 1 warm-up step"),
                            ("batch", "sequences per batch"),
                            ("seq", "context length (characters)"),
                            ("blocks", "number of Transformer blocks"),
                            ("width", "model width"),
                            ("heads", "attention heads (must divide --width)")]:
        parser.add_argument(f"--{name}", type=positive_int, default=None,
                            help=f"{help_text} (default: {getattr(quick, name)}; "
                                 f"{getattr(FULL, name)} with --full)")
    parser.add_argument("--seed", type=size_or_default, default=None,
                        help=f"random seed (weights and batches) (default: {quick.seed})")
    parser.add_argument("--full", action="store_true",
                        help="the larger model and run; options given explicitly still apply")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                        help=f"run on the CPU (NumPy) or the GPU (CuPy) (default: {quick.device})")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="measure peak memory and step time of checkpointing strategies",
        description="Run one workload under several checkpointing strategies in this process "
                    "and report peak live bytes (tracemalloc), step times (min, median, max), "
                    "layer forwards and ratios against the plain step ('none', always measured). "
                    "Each strategy runs 1 warm-up step, 1 step under tracemalloc and --repeats "
                    "timed steps.")
    parser.add_argument("workload", choices=bench.WORKLOADS, help="mlp is the reference workload W")
    parser.add_argument("--strategies", nargs="+", type=strategy, default=["none", "each", "sqrt"],
                        help="none, each, sqrt, segments=K, budget=B (bytes such as 300MiB, or a "
                             "fraction such as 0.5 of the plain run's predicted peak: the "
                             "planner's schedule), policy=P (P: dots, everything, "
                             "nothing, offload, int8, fp16) (default: %(default)s)")
    parser.add_argument("--depth", type=size_or_default, default=0,
                        help="layers/blocks (0: the workload's default)")
    parser.add_argument("--width", type=size_or_default, default=0, help="width/channels (0: default)")
    parser.add_argument("--batch", type=size_or_default, default=0, help="batch size (0: default)")
    parser.add_argument("--seq", type=size_or_default, default=0,
                        help="sequence length / image side (0: default)")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed steps per strategy (default: %(default)s)")
    parser.add_argument("--seed", type=size_or_default, default=0)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="run on the CPU (NumPy; peak from tracemalloc) or the GPU (CuPy; peak "
                             "from CuPy's memory pool) (default: %(default)s)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true",
                     help="print JSON (settings, versions, machine facts, rows) instead of a table")
    out.add_argument("--csv", action="store_true",
                     help="print CSV (settings, versions and machine facts on every line)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw peak MiB against step ms (needs matplotlib: memsave[bench])")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="keep freed memory in the process for reuse "
                             "(memsave.allocator.keep_freed_memory): no page faults for arrays "
                             "allocated again every step; peak live bytes are unchanged")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def _add_plan_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plan", help="the planner's memory/time frontier on a workload, predicted and measured",
        description="Profile the workload's chain once, solve the rotor DP for each budget, run "
                    "each schedule with checkpoint_sequential(schedule=...) and report the "
                    "predicted and measured peak, extra layer forwards (predicted / executed) "
                    "and step time against the plain run, with sqrt segments for reference.")
    parser.add_argument("workload", choices=bench.WORKLOADS, help="mlp is the reference workload W")
    parser.add_argument("--budgets", nargs="+", default=["1.0", "0.5", "sqrt", "min"],
                        help="bytes ('300MiB'), a fraction in (0, 1] of the plain run's predicted "
                             "peak ('0.5'), 'min' or 'sqrt' (default: %(default)s)")
    for name in ("depth", "width", "batch", "seq"):
        parser.add_argument(f"--{name}", type=size_or_default, default=0,
                            help=f"{name} (0: the workload's default)")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed rounds, interleaved across configurations (default: %(default)s)")
    parser.add_argument("--seed", type=size_or_default, default=0)
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw peak MiB against extra layer forwards (needs matplotlib: memsave[bench])")


def _plan(args: argparse.Namespace) -> int:
    """``memsave plan``: measure the planner's frontier on one workload and print it."""
    workload = bench.make_workload(args.workload, depth=args.depth, width=args.width,
                                   batch=args.batch, seq=args.seq, seed=args.seed)
    print(f"memsave plan {args.workload}: "
          + ", ".join(f"{k} {v}" for k, v in workload.settings.items() if v)
          + f"; budgets {' '.join(args.budgets)}; {args.repeats} timed rounds", file=sys.stderr)
    try:
        rows, skipped = frontier.frontier(workload, args.budgets, repeats=args.repeats)
    except ValueError as err:  # a budget that is not a size
        print(f"memsave plan: error: {err}", file=sys.stderr)
        return 2
    print(frontier.format_frontier(rows))
    for message in skipped:
        print(f"skipped {message}", file=sys.stderr)
    if args.plot:
        frontier.plot_frontier(rows, args.plot, f"memsave plan {args.workload}")
    return 0


def _progress(enabled: bool) -> Callable[[Iterable[Any]], Iterable[Any]]:
    if enabled:
        try:
            from tqdm import tqdm
            return lambda items: tqdm(items, desc="strategies", leave=False)
        except ImportError:
            pass
    return iter


def _bench(args: argparse.Namespace) -> int:
    """``memsave bench``: measure the strategies on one workload and print the result."""
    try:
        workload = bench.make_workload(args.workload, depth=args.depth, width=args.width,
                                       batch=args.batch, seq=args.seq, seed=args.seed,
                                       device=args.device)
    except RuntimeError as err:     # no GPU
        print(f"memsave bench: error: {err}", file=sys.stderr)
        return 2
    kept = args.keep_freed_memory and memsave.allocator.keep_freed_memory()
    settings = {"workload": args.workload, **workload.settings, "repeats": args.repeats,
                "device": args.device, "keep_freed_memory": kept}
    print(f"memsave bench {args.workload}: "
          + ", ".join(f"{k} {v}" for k, v in workload.settings.items() if v)
          + f"; strategies {' '.join(dict.fromkeys(['none', *args.strategies]))}, each: 1 warm-up "
            f"step, 1 step under tracemalloc, {args.repeats} timed steps", file=sys.stderr)
    try:
        rows = bench.run_benchmark(workload, args.strategies, repeats=args.repeats,
                                   progress=_progress(not args.no_progress))
    except ValueError as err:  # a budget=B below what any schedule needs
        print(f"memsave bench: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(bench.format_json(rows, settings, bench.environment()))
    elif args.csv:
        print(bench.format_csv(rows, settings, bench.environment()), end="")
    else:
        print(bench.format_table(rows))
    for warning in bench.spread_warnings([(r.strategy, r.min_s, r.median_s) for r in rows]):
        print(warning, file=sys.stderr)
    if args.plot:
        bench.plot(rows, args.plot)
    return 0


def _demo_config(args: argparse.Namespace) -> DemoConfig:
    """The quick configuration (or :data:`memsave.demo.FULL` with ``--full``), with the
    options given on the command line applied on top."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DemoConfig)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(FULL if args.full else DemoConfig(), **given)


def _demo(args: argparse.Namespace) -> int:
    """``memsave demo``: build the configuration from the options and run it."""
    try:
        return demo.run(_demo_config(args), progress=not args.no_progress)
    except DemoError as err:
        print(f"memsave demo: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(f"memsave {memsave.__version__}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command in ("bench", "plan"):
        if args.plot:      # fail before running, not after minutes of measuring
            try:
                bench.require_matplotlib()
            except ImportError as err:
                parser.error(str(err))
        return _bench(args) if args.command == "bench" else _plan(args)
    parser.print_help()
    return 0
