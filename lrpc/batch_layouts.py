"""Where each sample sits in every tensor, measured once at compile time, so relevance and its per-sample sums
stay with their sample in batches of any size.

Export's symbolic shapes say which dimension holds the batch (``ops.batch_layout``). Video and audio models
merge the batch with other sizes there: frames folded into it (``[B·T, C, H, W]``), TimeSformer's divided
attention (``[B·N, T, D]`` and back), Swin's windows, attention's ``[L·B, E]``. A merged dimension is laid out
as ``[outer, B, inner]`` flattened; which ``inner`` is read off a run of the graph on a batch of six samples
(a base sample ``x`` in four slots, two changed copies in the other two): a change must stay in its own slots.

The same run finds what per-sample relevance cannot follow: a node whose slots of ``x`` differ mixes samples
(``x[:B]`` on a ``[B·T, ...]`` tensor reads the frames of the first samples), which compile refuses naming the
node. A node that reads such a tensor but whose values no change reaches (TimeSformer takes its class token
from ``embeddings[:B, 0]``: the same constant in every row) is a constant and absorbs its share, like a class
token does elsewhere.
"""
from __future__ import annotations

import torch
import torch.fx as fx

from .ops import batch_layout, depends_on_input, dims_of, is_tensor, packet, params

aten = torch.ops.aten

SLOTS = 6
BASE = (0, 1, 3, 4)      # slots holding the base sample x
CHANGED = (2, 5)         # slots holding changed copies of it
_TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4}
_DIM_OPS = {aten.slice, aten.select, aten.narrow, aten.index_select, aten.gather, aten.unfold, aten.roll,
            aten.flip, aten.cat, aten.stack, aten.split, aten.split_with_sizes, aten.chunk, aten.unbind,
            aten.tensor_split, aten.slice_scatter, aten.select_scatter}


def measure(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> None:
    """``inputs``: the example input, then the other graph inputs (a token model's attention mask), which are
    repeated unchanged. Record ``lrpc_batch_inner`` on merged nodes, ``lrpc_mixes_samples`` on nodes that move values between
    samples and ``lrpc_constant_part`` on nodes that read only the sample-independent part of such a tensor.
    Graphs where every tensor keeps its samples in a dimension of their own, and no op acts along it, are not run."""
    batch = gm.meta.get("lrpc_batch_symbol")
    # nodes lrpc adds after export (a language model's score readout) carry no symbolic shape: per-sample by design
    nodes = [n for n in gm.graph.nodes if n.op == "call_function" and is_tensor(n) and depends_on_input(n)
             and isinstance(n.meta.get("val"), torch.Tensor)]
    if batch is None or not any(_needs_measuring(n, batch) for n in nodes):
        return
    wanted = set(nodes)
    verdicts: dict[fx.Node, tuple[bool, bool]] = {}   # node -> (mixes samples, no change reaches it)

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n in wanted and isinstance(value, torch.Tensor):
                verdicts[n] = _judge(n, value, batch)
            return value

    with torch.no_grad():
        Recorder(gm).run(_six_samples(inputs[0]), *(x[:1].expand(SLOTS, *x.shape[1:]) for x in inputs[1:]))
    for n, (mixes, unchanged) in verdicts.items():
        if mixes:
            n.meta["lrpc_mixes_samples"] = True
        elif unchanged and any(verdicts.get(i, (False, False))[0] for i in n.all_input_nodes):
            n.meta["lrpc_constant_part"] = True


def _needs_measuring(n: fx.Node, batch) -> bool:
    if not isinstance(n.meta.get("val"), torch.Tensor):
        return False
    dim, inner = batch_layout(n)
    if inner is not None or not _has_batch(n, batch):
        return True
    source = n.args[0] if n.args and isinstance(n.args[0], fx.Node) and is_tensor(n.args[0]) else None
    if source is None or packet(n) not in _DIM_OPS | {aten.index}:
        return False
    source_dim = batch_layout(source)[0]
    if packet(n) is aten.slice and n.meta["val"].shape == source.meta["val"].shape:
        return False   # x[:, ...]: the whole batch
    p = params(n)
    if packet(n) is aten.index:
        indices = p.get("indices", ())
        return len(indices) > source_dim and indices[source_dim] is not None
    dims = p.get("dim", p.get("dims", p.get("dimension", 0)))
    return source_dim in dims_of(dims, len(source.meta["tensor_meta"].shape)) if dims is not None else False


def _has_batch(n: fx.Node, batch) -> bool:
    value = n.meta.get("val")
    return isinstance(value, torch.Tensor) and any(
        isinstance(s, torch.SymInt) and batch in s.node.expr.free_symbols for s in value.shape)


def _six_samples(example_input: torch.Tensor) -> torch.Tensor:
    """x in slots 0, 1, 3, 4; two changes of it in slots 2 and 5 (noise on floats, a shifted copy of ids)."""
    x = example_input[:1]
    generator = torch.Generator(device="cpu").manual_seed(0)

    def changed(k: int) -> torch.Tensor:
        if x.is_floating_point():
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return x + noise * (x.std() + 1 if x.numel() > 1 else 1)
        return x.roll(k, -1)
    return torch.cat([x, x, changed(1), x, x, changed(2)])


def _slots(value: torch.Tensor, dim: int, inner: int) -> torch.Tensor:
    """[SLOTS, ...]: each sample's elements of ``value``, whose dimension ``dim`` is [outer, B, inner]."""
    v = value.movedim(dim, 0)
    return v.reshape(-1, SLOTS, inner, *v.shape[1:]).transpose(0, 1).reshape(SLOTS, -1)


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Equal up to the rounding a batched kernel may add (changes are of the order of the values)."""
    if not a.is_floating_point():
        return a == b
    scale = float(a.abs().max()) if a.numel() else 0.0
    return (a - b).abs() <= _TOLERANCE.get(a.dtype, 1e-2) * scale + torch.finfo(a.dtype).tiny


def _judge(n: fx.Node, value: torch.Tensor, batch) -> tuple[bool, bool]:
    if not _has_batch(n, batch):
        return True, False   # one tensor for all samples, computed from them
    dim, inner = batch_layout(n)
    size = value.shape[dim]
    candidates = [inner] if inner is None else [i for i in range(1, size // SLOTS + 1) if (size // SLOTS) % i == 0]
    fits = []
    for i in candidates:
        slots = _slots(value, dim, i or 1)
        mixes = not all(bool(_same(slots[BASE[0]], slots[k]).all()) for k in BASE[1:])
        if not mixes:
            changes = sum(int((~_same(slots[BASE[0]], slots[k])).sum()) for k in CHANGED)
            fits.append((changes, i))
    if inner is not None:
        chosen = max(fits)[1] if fits else 1
        # batch-major ([B·n]): recorded as -1, so that n may change with a dynamic size (a token model's length)
        n.meta["lrpc_batch_inner"] = -1 if chosen == size // SLOTS else chosen
    return not fits, bool(fits) and max(fits)[0] == 0
