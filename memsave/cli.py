"""Command line: ``memsave --version``, ``memsave demo``, ``memsave bench``.

>>> main(["--version"])  # doctest: +ELLIPSIS
memsave ...
0
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import memsave
from memsave import demo
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
    return parser


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
    build_parser().print_help()
    return 0
