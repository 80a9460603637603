"""The ``lrpc`` command line (also ``python -m lrpc``): one subcommand per module of ``lrpc.commands``.

A module there that defines ``register(subparsers)`` is a subcommand; ``lrpc.commands`` documents the contract.
Errors the user can fix print as ``lrpc <command>: error: ...`` with exit code 1; usage errors exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import __version__, commands
from .errors import LrpcError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpc", description="Explain PyTorch image classifiers with Layer-wise Relevance Propagation.")
    parser.add_argument("--version", action="version", version=f"lrpc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if callable(getattr(module, "register", None)):
            module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except (LrpcError, ValueError, OSError) as exc:
        print(f"lrpc {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lrpc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
