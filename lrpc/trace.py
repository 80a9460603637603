"""Step 1 of the pipeline: capture the model as an fx graph over ATen ops with ``torch.export`` (non-strict).

Export follows what the model really runs — Python control flow, Hugging Face's output dataclasses, functional
batch norms, attention kernels — and reduces every spelling of an op (a module, a functional, a tensor method) to
one ATen op, so the op table is keyed by a small canonical opset. The batch dimension is exported as dynamic, so
the graph explains any batch size. ``ep.module()`` shares the model's parameters and buffers (no copy); the
model is never modified.

Nodes are renamed after the module that ran them (``layer4_2_conv3``, as fx's symbolic tracing would name a
module call); ops written in a container's own ``forward`` keep the op's name (``add``, ``add_1``). Every node
keeps ``nn_module_stack``, so rules select layers by module path and type and the dump names the user's modules.
"""
from __future__ import annotations

import os
import traceback
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn
from torch.utils import _pytree as pytree

from . import tokens
from .errors import LrpcError

OutputSelector = str | int | Callable[[Any], torch.Tensor] | None
_LIBRARY_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(__file__))


def _user_line(exc: BaseException) -> str:
    """`` at file:line: `code` `` for the innermost frame of the failure outside torch and lrpc, else ''."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_LIBRARY_DIRS)]
    for cause in (exc.__cause__, exc.__context__):
        if not frames and cause is not None:
            frames = [f for f in traceback.extract_tb(cause.__traceback__) if not f.filename.startswith(_LIBRARY_DIRS)]
    return f" at {frames[-1].filename}:{frames[-1].lineno}: `{(frames[-1].line or '').strip()}`" if frames else ""


def check_eval_mode(model: nn.Module) -> None:
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise LrpcError(f"{', '.join(training[:5])}{' ...' if len(training) > 5 else ''} in training mode: call "
                        "model.eval() before lrpc.compile (BatchNorm and Dropout must use their inference "
                        "behaviour; lrpc never changes the model's mode for you)")


def _export_example(example_input: torch.Tensor) -> torch.Tensor:
    """Export specialises a batch of 1 to the constant 1: trace a batch of two copies instead."""
    return example_input[:1].expand(2, *example_input.shape[1:]).contiguous() if example_input.shape[0] < 2 \
        else example_input


def capture(model: nn.Module, example_input: torch.Tensor, output: OutputSelector = None) -> fx.GraphModule:
    """``model`` as a GraphModule over ATen ops with one placeholder (the input) returning one tensor (the scores)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"lrpc.compile expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor such as torch.randn(1, 3, 224, 224), "
                        f"got {type(example_input).__name__}")
    check_eval_mode(model)
    token_model = tokens.is_token_input(example_input)
    try:   # with autograd on: under no_grad, nn.MultiheadAttention and TransformerEncoderLayer take fused fast paths
        if token_model:
            program = tokens.export_tokens(model, example_input)
        else:
            program = torch.export.export(model, (_export_example(example_input),),
                                          dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False)
    except LrpcError:
        raise
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = (" Python control flow on tensor values (`if x.sum() > 0:`) cannot be captured as one graph; "
                "write it with torch.where or torch.cond" if "data-dependent" in str(exc).lower()
                or "guard" in str(exc).lower() else "")
        raise LrpcError(f"the model failed on example_input of shape {tuple(example_input.shape)} "
                        f"({example_input.dtype}) while torch.export captured {type(model).__name__}"
                        f"{_user_line(exc)}: {type(exc).__name__}: {first_line}.{hint}") from exc
    if _writes_through_a_view(program.graph):
        # an in-place write into a slice of another tensor (torchvision's Swin builds its attention mask so):
        # export's own functionalisation turns it into scatters; lrpc's simpler pass would lose the write
        program = program.run_decompositions({})
    gm = program.module()
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    batch = placeholder.meta["val"].shape[0] if isinstance(placeholder.meta.get("val"), torch.Tensor) else None
    gm.meta["lrpc_batch_symbol"] = batch.node.expr if isinstance(batch, torch.SymInt) else None
    # export's pytree calling convention and input guards: the Explainer checks inputs itself
    gm.graph._codegen = fx.graph.CodeGen()
    gm._forward_pre_hooks.clear()
    _select_output(gm, output, type(model).__name__)
    _drop_input_checks(gm)
    if token_model:
        tokens.prepare_graph(gm)
    else:
        placeholder.meta[tokens.SOURCE] = True
    name_nodes(gm)
    return gm


def _writes_through_a_view(graph: fx.Graph) -> bool:
    for node in graph.nodes:
        schema = getattr(node.target, "_schema", None)
        target = node.args[0] if node.args else None
        if (schema is not None and schema.name.endswith("_") and isinstance(target, fx.Node)
                and getattr(getattr(target.target, "_schema", None), "name", "").endswith(("slice", "select",
                                                                                           "view", "diagonal"))):
            return True
    return False


def _output_candidates(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Named tensor leaves of a model's output (``logits``, ``0``, ``pooler_output``…) as fx nodes."""
    if isinstance(tree, fx.Node):
        return {prefix or "output": tree}
    if isinstance(tree, dict) or hasattr(tree, "keys"):
        items = [(str(k), tree[k]) for k in tree.keys()]
    elif isinstance(tree, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(tree)]
    else:
        return {}
    found = {}
    for key, value in items:
        found.update(_output_candidates(value, f"{prefix}.{key}" if prefix else key))
    return found


def _select_output(gm: fx.GraphModule, output: OutputSelector, model_name: str) -> None:
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    flat = list(out_node.args[0]) if isinstance(out_node.args[0], (tuple, list)) else [out_node.args[0]]
    tree = pytree.tree_unflatten(flat, gm._out_spec) if getattr(gm, "_out_spec", None) is not None else flat[0]
    candidates = {k: v for k, v in _output_candidates(tree).items() if isinstance(v, fx.Node)}
    if callable(output) and not isinstance(output, (str, int)):
        chosen = output(tree)
    elif isinstance(output, (str, int)):
        chosen = candidates.get(str(output))
        if chosen is None:
            raise LrpcError(f"output={output!r} is not among {model_name}'s outputs: {', '.join(candidates)}")
    elif isinstance(tree, fx.Node):
        chosen = tree
    elif "logits" in candidates:
        chosen = candidates["logits"]
    elif len(candidates) == 1:
        chosen = next(iter(candidates.values()))
    else:
        raise LrpcError(f"{model_name} returns several tensors ({', '.join(candidates) or 'none'}); say which one "
                        "holds the scores with lrpc.compile(..., output='logits' | an index | a function)")
    if not isinstance(chosen, fx.Node):
        raise LrpcError(f"output= picked {type(chosen).__name__}, not one of the model's output tensors "
                        f"({', '.join(candidates)})")
    out_node.args = (chosen,)
    gm._out_spec = None
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _drop_input_checks(gm: fx.GraphModule) -> None:
    """Export's shape guards on the input become our own check in ``Explainer``; the graph stays plain ops."""
    for node in list(gm.graph.nodes):
        is_check = (node.op == "call_function" and getattr(node.target, "__name__", "").startswith(
            ("_assert", "sym_constrain_range"))) or (node.op == "call_module" and node.target == "_guards_fn")
        if is_check and not node.users:
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()


def module_path(node: fx.Node) -> tuple[str | None, str | None]:
    """(qualified module path, class name) of the innermost module that ran ``node``."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None, None
    path, cls = list(stack.values())[-1]
    type_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return path or None, type_name


def _is_torch_leaf(node: fx.Node) -> bool:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return False
    cls = list(stack.values())[-1][1]
    qualname = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else str(cls)
    return qualname.startswith("torch.nn.modules.") and not qualname.startswith("torch.nn.modules.container.")


def name_nodes(gm: fx.GraphModule) -> None:
    """Names that say where a node comes from: the module path for ops that torch.nn modules run, the op name
    (without export's in-place underscore) for ops in a model's own forward."""
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        path, _ = module_path(node)
        if path and _is_torch_leaf(node):
            base = path.replace(".", "_")
        else:
            packet = getattr(node.target, "overloadpacket", None)
            base = (packet.__name__ if packet is not None else getattr(node.target, "__name__", node.name))
            base = base.rstrip("_") or node.name
        node._rename(base)
    gm.recompile()
