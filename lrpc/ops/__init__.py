"""The op table: how each ATen op maps to a relevance op. Supporting a new op is one entry in a family module.

``torch.export`` reduces every spelling of an op (module, functional, tensor method) to one ATen op, so the table
is keyed by ATen op packets (``aten.conv2d``), split by family: ``linear`` (convs, linears, pools, means,
upsampling: a rule applies), ``elementwise`` (activations, sums and products), ``structural`` (views, slices,
concatenation: relevance moves back to where the value came from), ``normalization`` and ``attention``.

A handler reads one fx node and returns an ``OpInfo``: the relevance ``kind`` (what the relevance pass emits),
the tensor ``inputs`` that receive relevance, and for linear maps the map name, its plain arguments and its
parameters. A handler raises ``Unsupported`` with the reason when it sees a form it cannot explain.

The kind is a key of ``lrpc.op_kinds.KINDS``: one registered object per kind owns what the relevance pass emits
for it, what it absorbs and how the analyses step through it (``linear``, ``pass``, ``batchnorm``, ``gate``,
``add``, ``product``, ``move``, ``reshape``, ``permute``, ``pad``, ``cat``, ``stack``, ``scatter``, ``maxpool``,
``amax``, ``frozen_matmul``, ``attention``, ``matmul_product``, ``inert``, ``input``; docs/architecture.md lists
them). A handler returns one of those names; a new kind is a new class in ``lrpc.op_kinds``. Nodes whose output is
not a tensor (sizes, lists) carry no relevance.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
from torch.fx.operator_schemas import normalize_function

aten = torch.ops.aten


class Unsupported(Exception):
    """A node lrpc has no relevance op for; the message says why."""


@dataclass
class OpInfo:
    kind: str
    inputs: tuple[fx.Node, ...] = ()
    map: str | None = None
    args: tuple = ()
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    nonneg: str = "never"  # "always": output >= 0; "inputs": >= 0 when all inputs are; "never"
    extra: dict[str, Any] = field(default_factory=dict)


class Context:
    """What a handler may look at: the captured module (for get_attr values) and node shapes."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm

    def constant(self, node: Any, what: str) -> torch.Tensor | None:
        if node is None:
            return None
        if isinstance(node, fx.Node) and node.op == "get_attr":
            return operator.attrgetter(node.target)(self.gm)
        raise Unsupported(f"{what} must be a parameter, buffer or constant, but is computed from the input by {node}")


def shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def is_tensor(node: Any) -> bool:
    return shape(node) is not None


def params(node: fx.Node) -> dict[str, Any]:
    """The node's arguments by their schema names, defaults filled in."""
    if "lrpc_params" not in node.meta:
        bound = normalize_function(node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)
        node.meta["lrpc_params"] = dict(bound.kwargs) if bound is not None else {}
    return node.meta["lrpc_params"]


def packet(node: fx.Node) -> Any:
    """The op a node calls, up to its overload (``aten.add`` for ``aten.add.Tensor``)."""
    return getattr(node.target, "overloadpacket", node.target) if node.op == "call_function" else None


# node meta flag of the input layer: the placeholder of an image model, the embedding lookup of a token model
# (``lrpc.tokens``), whose output relevance is reported; other inputs (an attention mask) carry no relevance
SOURCE = "lrpc_source"

# ops whose tensor arguments at these positions are read for their dtype, device or shape only
_METADATA_ARGS = {aten.type_as: (1,), aten.zeros_like: (0,), aten.ones_like: (0,), aten.empty_like: (0,),
                  aten.full_like: (0,), aten.new_zeros: (0,), aten.new_ones: (0,), aten.new_empty: (0,),
                  aten.new_full: (0,)}


def _value_inputs(n: fx.Node) -> list[fx.Node]:
    skip = _METADATA_ARGS.get(packet(n), ())
    metadata = {a for k, a in enumerate(n.args) if k in skip and isinstance(a, fx.Node)}
    return [i for i in n.all_input_nodes if i not in metadata]


def depends_on_input(node: fx.Node) -> bool:
    """Whether the input layer's values flow into this node; parameters, constants, sizes (``x.shape[0]``), a
    tensor whose dtype alone is read (VideoMAE's ``pos.type_as(embeddings)``) and what is computed from a token
    model's ids and mask alone (causal and padding masks) do not."""
    if "lrpc_depends_on_input" not in node.meta:
        stack, seen, found = [node], set(), False
        while stack and not found:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            found = n.meta.get(SOURCE, False) or n.meta.get("lrpc_depends_on_input", False)
            stack.extend(i for i in _value_inputs(n) if is_tensor(i) or _holds_tensors(i))
        node.meta["lrpc_depends_on_input"] = found
    return node.meta["lrpc_depends_on_input"]


def _holds_tensors(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return isinstance(meta, (list, tuple)) and any(hasattr(m, "shape") for m in meta)


def batch_layout(node: fx.Node) -> tuple[int, int | None]:
    """(dimension, inner) of the samples in ``node``'s output, read off export's symbolic shapes. ``inner`` is
    None for the usual [B, ...] (the dimension is the batch alone); where the batch is merged with other sizes
    (Swin's windows [B·nW, ...], attention's [L·B, E]) the dimension is [outer, B, inner] flattened, and
    ``inner`` is measured by ``batch_layouts.measure`` (-1: outer 1, [B·n] for any n)."""
    layout = sample_layout(node)
    return (0, None) if layout is None else layout


def sample_layout(node: fx.Node) -> tuple[int, int | None] | None:
    """``batch_layout``, but None for an output with no dimension depending on a symbolic batch (a value built
    from the input's shape alone, such as a position index, or not a tensor), where ``batch_layout`` says 0."""
    batch = node.graph.owning_module.meta.get("lrpc_batch_symbol") if node.graph.owning_module else None
    value = node.meta.get("val")
    if batch is None:   # exported with a fixed batch: every activation is batch-major
        return 0, None
    if not isinstance(value, torch.Tensor):
        return None
    for dim, size in enumerate(value.shape):
        if isinstance(size, torch.SymInt) and batch in size.node.expr.free_symbols:
            if size.node.expr == batch:
                return dim, None
            return dim, node.meta.get("lrpc_batch_inner", 1)
    return None


def is_constant(v: Any) -> bool:
    return not isinstance(v, fx.Node) or not is_tensor(v) or not depends_on_input(v)


def dims_of(dims: Any, ndim: int) -> tuple[int, ...]:
    dims = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
    return tuple(d % ndim for d in dims)


Handler = Callable[[fx.Node, Context], OpInfo]
TABLE: dict[Any, Handler] = {}


def _load_families() -> None:
    from . import attention, elementwise, linear, normalization, structural
    for family in (linear, elementwise, structural, normalization, attention):
        overlap = TABLE.keys() & family.TABLE.keys()
        assert not overlap, f"ops {overlap} have two entries"
        TABLE.update(family.TABLE)


def describe_target(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    if node.op == "call_function":
        return str(getattr(node.target, "overloadpacket", None) or getattr(node.target, "__name__", node.target))
    return node.op


def op_info(node: fx.Node, ctx: Context) -> OpInfo:
    """The table lookup. Raises ``Unsupported`` for nodes on the relevance path that have no entry."""
    if node.meta.get(SOURCE):
        return OpInfo("input")
    if node.op in ("get_attr", "output") or not is_tensor(node) or not depends_on_input(node) \
            or node.meta.get("lrpc_constant_part"):
        return OpInfo("inert")
    handler = TABLE.get(packet(node))
    if handler is None:
        raise Unsupported("no relevance op for this operation (extend lrpc.ops with an entry for it)")
    try:
        info = handler(node, ctx)
    except Unsupported:   # the entry's own reason (a reduction over the batch…) says more than the measurement
        raise
    except Exception as exc:   # a form of the op its entry does not expect: named in the audit, not a traceback
        raise Unsupported(f"its entry in lrpc.ops cannot read this call ({type(exc).__name__}: {exc})") from exc
    if node.meta.get("lrpc_mixes_samples"):
        raise Unsupported("its values of one sample depend on other samples of the batch (or lrpc cannot tell "
                          "which elements belong to which sample), measured at compile time; lrpc explains "
                          "each sample on its own")
    return info


_load_families()
