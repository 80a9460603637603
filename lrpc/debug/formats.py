"""Writers for the paired graph: DOT (and SVG/PNG through graphviz's ``dot``), node-link JSON, GraphML and an
aligned text table. Each takes the ``networkx.DiGraph`` built by ``graph.build_graph`` and returns text/bytes."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import networkx as nx

from ..errors import LrpcError
from ..op_kinds import KINDS
from ..op_kinds.base import DEFAULT_COLOUR

OFF_PATH_COLOUR = "#ffffff"
SKIP_STYLE = 'color="#1f5fbf", fontcolor="#1f5fbf", style=dashed, penwidth=2'
MAIN_STYLE = 'color="#2b8a3e", fontcolor="#2b8a3e", penwidth=2'
# outlines for nodes whose op creates or loses relevance, by |delta| / |start|: the worst level that applies wins
LEAK_LEVELS = ((1e-3, "#cc0000", "red"), (1e-6, "#e69138", "orange"))


# ------------------------------------------------------------------------------------------------------ DOT
def _quote(text) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _number(x: float) -> str:
    return f"{x:.4g}"


def _choice(a: dict) -> str | None:
    """What the rule set chose for the node: its rule, max-pool mode or splitting policy."""
    if "maxpool" in a:
        return f"maxpool {a['maxpool']}"
    return a.get("rule") or a.get("splitting")


def _label(name: str, a: dict) -> str:
    lines = [name, f"{a['kind']} · {a['target']}"]
    if "shape" in a:
        lines.append("×".join(map(str, a["shape"])))
    choice = _choice(a)
    if choice:
        lines.extend(textwrap.wrap(choice, 44, break_on_hyphens=False))
    if "skip_kind" in a:   # an add
        lines.append(f"{a['skip_kind']} skip" if "skip_input" in a else "no skip found (generic)")
    if "relevance_node" in a:
        lines.append(f"relevance: {a['relevance_node']}")
    if "relevance" in a:
        lines.append(f"R = {_number(a['relevance'])}   Δ = {_number(a['delta'])}")
    return "\n".join(lines)


def _leak_colour(a: dict, start: float | None) -> str | None:
    if start is None or "delta" not in a:
        return None
    size = abs(a["delta"]) / max(abs(start), 1e-30)
    for tol, colour, _ in LEAK_LEVELS:
        if not size <= tol:   # NaN counts as the worst leak
            return colour
    return None


def _fill(a: dict) -> str:
    """The node's kind colour (``OpKind.colour``); a graph read back from a file may name a kind no longer
    registered."""
    if not a["on_path"]:
        return OFF_PATH_COLOUR
    kind = KINDS.get(a["kind"])
    return DEFAULT_COLOUR if kind is None else kind.colour


def _node_line(name: str, a: dict, start: float | None) -> str:
    style = ["rounded", "filled"] + ([] if a["on_path"] else ["dashed"])
    attrs = [f"label={_quote(_label(name, a))}", f'style="{",".join(style)}"',
             f'fillcolor="{_fill(a)}"']
    if not a["on_path"]:
        attrs.append('color="#999999", fontcolor="#777777"')
    leak = _leak_colour(a, start)
    if leak:
        attrs.append(f'color="{leak}", penwidth=3')
    return f"{_quote(name)} [{', '.join(attrs)}];"


def _edge_line(source: str, target: str, a: dict, skip_kind: str | None) -> str:
    role = a.get("role")
    if role == "skip":
        style = f'label="skip ({skip_kind})", {SKIP_STYLE}'
    elif role == "main":
        style = f'label="main", {MAIN_STYLE}'
    elif role == "operand":
        style = f'label="operand {a["operand"]}"'
    elif role == "gate":
        style = 'label="gate (no relevance)", style=dotted, color="#999999"'
    elif "message" not in a:
        style = 'style=dashed, color="#999999"'
    else:
        style = ""
    return f"{_quote(source)} -> {_quote(target)}" + (f" [{style}];" if style else ";")


def _cluster_tree(blocks: list[str]) -> dict[str | None, list[str]]:
    """Parent → child blocks, so a residual module inside another one nests inside its cluster."""
    children: dict[str | None, list[str]] = {}
    for b in blocks:
        parents = [p for p in blocks if p != b and b.startswith(p + ".")]
        children.setdefault(max(parents, key=len) if parents else None, []).append(b)
    return children


def to_dot(g: nx.DiGraph) -> str:
    start = g.graph.get("start_relevance")
    title = f"lrpc · rules={g.graph['rules']} · input {'×'.join(map(str, g.graph['input_shape']))}"
    if start is not None:
        levels = ", ".join(f"{name} > {tol:g}" for tol, _, name in LEAK_LEVELS)
        title += (f" · relevance R: {g.graph['relevance_of']}, start {_number(start)}"
                  f"\noutline where Δ (relevance the op creates or loses) / start: {levels}")
    title += "\nedges into adds: blue dashed = skip branch, green = main branch"
    lines = ["digraph lrpc {", f"  label={_quote(title)}; labelloc=t; fontname=Helvetica; rankdir=TB;",
             '  node [shape=box, fontname=Helvetica, fontsize=10];', '  edge [fontname=Helvetica, fontsize=9];']
    members: dict[str | None, list[str]] = {}
    for name, a in g.nodes(data=True):
        members.setdefault(a.get("block"), []).append(name)
    module_types = {a["module"]: a.get("module_type") for _, a in g.nodes(data=True) if "module" in a}
    children = _cluster_tree(g.graph["blocks"])

    def emit(block: str | None, indent: str) -> None:
        if block is not None:
            lines.append(f"{indent}subgraph {_quote('cluster_' + block)} {{")
            kind = module_types.get(block) or "block"
            lines.append(f"{indent}  label={_quote(f'{block} ({kind})')}; "
                         'style="rounded,filled"; fillcolor="#f7f7f7"; color="#888888";')
        inner = indent + ("  " if block is not None else "")
        for name in members.get(block, []):
            lines.append(inner + _node_line(name, g.nodes[name], start))
        for child in children.get(block, []):
            emit(child, inner)
        if block is not None:
            lines.append(f"{indent}}}")

    emit(None, "  ")
    for source, target, a in g.edges(data=True):
        lines.append("  " + _edge_line(source, target, a, g.nodes[target].get("skip_kind")))
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text: str, fmt: str) -> bytes:
    """Run graphviz's ``dot`` on DOT text; ``fmt`` is ``svg`` or ``png``."""
    program = shutil.which("dot")
    if program is None:
        raise LrpcError(f"rendering .{fmt} needs graphviz's `dot` program, which is not installed: install "
                        "graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; conda: "
                        "conda install graphviz), or dump to .dot and render it elsewhere")
    done = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode(), capture_output=True)
    if done.returncode != 0:
        raise LrpcError(f"graphviz's dot failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return done.stdout


# ---------------------------------------------------------------------------------------- JSON, GraphML, text
def to_json(g: nx.DiGraph) -> str:
    return json.dumps(nx.node_link_data(g, edges="edges"), indent=1)


def _graphml_value(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def to_graphml(g: nx.DiGraph) -> str:
    """GraphML holds scalars only: lists (shapes, message names) are stored as their JSON text."""
    flat = nx.DiGraph()
    flat.graph.update({k: _graphml_value(v) for k, v in g.graph.items()})
    flat.add_nodes_from((n, {k: _graphml_value(v) for k, v in a.items()}) for n, a in g.nodes(data=True))
    flat.add_edges_from(g.edges(data=True))
    return "\n".join(nx.generate_graphml(flat)) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list):
        return "×".join(map(str, value))
    return str(value)


def _policy(a: dict) -> str | None:
    if "skip_kind" in a:   # an add
        skip = f"{a['skip_kind']} skip={a['skip_input']}" if "skip_input" in a else a["skip_kind"]
        return f"{a['splitting']}; {skip}"
    return _choice(a)


def to_text(g: nx.DiGraph) -> str:
    explained = "start_relevance" in g.graph
    header = ["node", "kind", "target", "module", "shape", "rule / policy", "relevance node"]
    if explained:
        header += ["R in", "R out", "delta", "absorbed"]
    rows = []
    for name, a in g.nodes(data=True):
        row = [name, a["kind"], a["target"], a.get("module"), a.get("shape"), _policy(a), a.get("relevance_node")]
        if explained:
            row += [a.get("relevance"), a.get("relevance_out"), a.get("delta"), a.get("absorbed")]
        rows.append([_cell(v) for v in row])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    title = f"# lrpc graph: rules={g.graph['rules']}, input={g.graph['input_shape']}, {g.number_of_nodes()} nodes"
    if explained:
        title += f"; relevance: {g.graph['relevance_of']}, start = {_number(g.graph['start_relevance'])}"
    lines = [title] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- dispatch
TEXT_FORMATS = {"dot": to_dot, "json": to_json, "graphml": to_graphml, "txt": to_text}
RENDERED_FORMATS = ("svg", "png")
FORMATS = (*TEXT_FORMATS, *RENDERED_FORMATS)


def format_of(path: Path) -> str:
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise LrpcError(f"cannot tell the dump format from {str(path)!r}: use one of the suffixes "
                        f"{', '.join('.' + f for f in FORMATS)}")
    return fmt


def serialize(g: nx.DiGraph, fmt: str) -> bytes:
    if fmt in TEXT_FORMATS:
        return TEXT_FORMATS[fmt](g).encode()
    if fmt in RENDERED_FORMATS:
        return render(to_dot(g), fmt)
    raise LrpcError(f"unknown dump format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write(g: nx.DiGraph, path: str | Path, fmt: str | None = None) -> Path:
    path = Path(path)
    data = serialize(g, fmt or format_of(path))
    path.write_bytes(data)
    return path
