"""Command line: ``memsave --version``, ``memsave demo``, ``memsave bench``.

>>> main(["--version"])  # doctest: +ELLIPSIS
memsave ...
0
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import memsave
from memsave import bench, demo
from memsave.demo import DemoConfig, DemoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsave", description=memsave.__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo_parser = sub.add_parser(
        "demo", help="train a small model plain and checkpointed; compare memory/time",
        description="Train a character-level Transformer on Shakespeare three ways from the "
                    "same seed (plain, each block checkpointed, sqrt segments) and compare "
                    "final loss, peak memory and step time. Exits with 1 if the loss curves "
                    "differ.")
    defaults = DemoConfig()
    for name, help_text in [("steps", "training steps per strategy"),
                            ("batch", "sequences per batch"),
                            ("seq", "context length (characters)"),
                            ("blocks", "number of Transformer blocks"),
                            ("width", "model width"),
                            ("heads", "attention heads (must divide --width)"),
                            ("seed", "random seed (weights and batches)")]:
        demo_parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                          help=f"{help_text} (default: %(default)s)")
    demo_parser.add_argument("--device", choices=("cpu", "gpu"), default=defaults.device,
                      help="run on the CPU (NumPy) or the GPU (CuPy) (default: %(default)s)")
    demo_parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    _add_bench_parser(sub)
    return parser


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="measure peak memory and step time of checkpointing strategies",
        description="Run one workload under several checkpointing strategies in this process "
                    "and report peak live bytes (tracemalloc), step times, layer forwards and "
                    "ratios against the plain step.")
    parser.add_argument("workload", choices=bench.WORKLOADS, help="mlp is the reference workload W")
    parser.add_argument("--strategies", nargs="+", default=["none", "each", "sqrt"],
                        help="none, each, sqrt, segments=K (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=0, help="layers/blocks (0: the workload's default)")
    parser.add_argument("--width", type=int, default=0, help="width/channels (0: default)")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: default)")
    parser.add_argument("--seq", type=int, default=0, help="sequence length / image side (0: default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per strategy")
    parser.add_argument("--seed", type=int, default=0)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON instead of a table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--plot", metavar="FILE.png", help="draw memory vs time (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def _progress(enabled: bool):
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
        for strategy in args.strategies:
            bench.parse_strategy(strategy)
        workload = bench.make_workload(args.workload, depth=args.depth, width=args.width,
                                       batch=args.batch, seq=args.seq, seed=args.seed)
    except ValueError as err:
        print(f"memsave bench: error: {err}", file=sys.stderr)
        return 2
    rows = bench.run_benchmark(workload, args.strategies, repeats=args.repeats,
                               progress=_progress(not args.no_progress))
    print(bench.format_json(rows) if args.json else bench.format_csv(rows) if args.csv
          else bench.format_table(rows))
    if args.plot:
        bench.plot(rows, args.plot)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """``memsave demo``: build the configuration from the options and run it."""
    try:
        cfg = DemoConfig(steps=args.steps, batch=args.batch, seq=args.seq, blocks=args.blocks,
                         width=args.width, heads=args.heads, device=args.device, seed=args.seed)
        return demo.run(cfg, progress=not args.no_progress)
    except DemoError as err:
        print(f"memsave demo: error: {err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"memsave {memsave.__version__}")
        return 0
    if args.command == "demo":
        return _demo(args)
    if args.command == "bench":
        return _bench(args)
    build_parser().print_help()
    return 0
