"""``lrpc dump MODEL``: write the paired relevance graph of a model — every node's op, rule, splitting policy, skip
kind and shape — as DOT, SVG/PNG, JSON, GraphML or a text table (``lrpc.debug``)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

from ..compiler import compile as compile_model
from ..debug import FORMATS, build_graph, serialize
from ..debug.formats import RENDERED_FORMATS
from ..errors import LrpcError
from ..presets import presets
from . import load_model


def input_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"--input-shape wants positive integers like 1,3,224,224, got {text!r}")
    return dims


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dump", help="write the paired relevance graph of a model (rules, splitting, skips, shapes)",
        description="Compile MODEL and write its paired relevance graph: one node per forward node with its "
                    "relevance op, rule, splitting policy and skip kind, shape and paired relevance nodes.")
    parser.add_argument("model", metavar="MODEL",
                        help="an architecture of lrpc.models (resnet50, vgg16, ...), a named model, or "
                             "module.path:factory for your own (built-ins have random weights unless --weights)")
    parser.add_argument("--format", choices=FORMATS,
                        help="output format (default: the suffix of -o, else txt); svg/png need graphviz")
    parser.add_argument("--rules", default="default", metavar="NAME",
                        help=f"rule preset (default: default): {', '.join(presets())}")
    parser.add_argument("--input-shape", type=input_shape, metavar="B,C,H,W",
                        help="example input shape (default: 1,3,S,S with S the model's declared input size)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="output file (default: stdout for text formats, MODEL.svg / MODEL.png for images)")
    parser.add_argument("--weights", metavar="FILE", help="state_dict to load strictly into the model")
    parser.add_argument("--explain", action="store_true",
                        help="also explain one random input (seed 0): per-node relevance and deltas in the dump, "
                             "leaking nodes listed on stderr")
    parser.set_defaults(func=run)


def _output_format(args) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lstrip(".").lower()
        if suffix not in FORMATS:
            raise LrpcError(f"cannot tell the format from -o {args.output}: give --format "
                            f"({', '.join(FORMATS)}) or use one of those suffixes")
        return suffix
    return "txt"


def run(args) -> int:
    fmt = _output_format(args)
    loaded = load_model(args.model, args.weights)
    shape = args.input_shape or (1, len(loaded.input.mean), loaded.input.size, loaded.input.size)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(shape, generator=generator)
    explainer = compile_model(loaded.model, args.rules, example_input=example)
    explanation = explainer(example) if args.explain else None
    data = serialize(build_graph(explainer, explanation), fmt)
    output = args.output
    if output is None and fmt in RENDERED_FORMATS:
        output = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', args.model.rpartition(':')[2])}.{fmt}"
    if output is None:
        sys.stdout.write(data.decode())
    else:
        Path(output).write_bytes(data)
        print(f"wrote {output} ({fmt}, {len(explainer.plans)} nodes)", file=sys.stderr)
    if explanation is not None:
        found = explanation.leaks()
        print(f"leaks beyond 1e-6 of the start relevance: {len(found) or 'none'}", file=sys.stderr)
        for leak in found:
            print(f"  {leak}", file=sys.stderr)
    return 0
