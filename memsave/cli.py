"""Command line: ``memsave --version``, ``memsave demo``, ``memsave bench``.

>>> main(["--version"])  # doctest: +ELLIPSIS
memsave ...
0
"""
from __future__ import annotations

import argparse
from typing import Sequence

import memsave


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsave", description=memsave.__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="train a small model plain and checkpointed; compare memory/time")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"memsave {memsave.__version__}")
        return 0
    if args.command == "demo":
        print("demo arrives with the nn issue")
        return 0
    build_parser().print_help()
    return 0
