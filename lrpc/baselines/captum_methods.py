"""Gradient and LRP baselines computed by captum (an optional dependency, imported on first use).

Captum's hook-based methods assume every module runs once and nothing is modified in place; torchvision-style
ResNets reuse one ReLU module three times per block and write ``out += identity``. So the model is first
traced with torch.fx and rewritten into an equivalent graph: every call site gets its own module copy and
ReLUs are made out-of-place. The rewritten graph must reproduce the model's logits or we refuse to go on.

For LRP-epsilon two more rewrites are needed. Captum applies rules to modules only, so a residual add (a
function) passes the full relevance to BOTH summands and relevance doubles at every block (about 2^16 on a
ResNet-50). The add is therefore wrapped in a module carrying the epsilon rule, which splits relevance in
proportion to the summands (the z-rule on the sum, as zennit and iNNvestigate do). Batch norms are folded into
the preceding convolutions, the usual canonisation, so the epsilon rule sees one affine map.
"""
from __future__ import annotations

import copy
import operator
import warnings
from contextlib import contextmanager

import torch
from torch import fx, nn

from ..errors import LrpcError

__all__ = ["captum_graph", "deeplift", "guided_backprop", "input_x_gradient", "integrated_gradients", "lrp_epsilon"]


def _captum_attr():
    try:
        import captum.attr
    except ImportError as exc:
        raise LrpcError("this baseline needs captum (an optional extra of lrpc): pip install captum") from exc
    return captum.attr


@contextmanager
def _quiet_captum():
    """Captum warns on every call that it sets hooks and that inputs did not require grad: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"captum\.")
        yield


class ResidualAdd(nn.Module):
    """``a + b`` as a module, so that captum can attach an LRP rule to it."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def captum_graph(model: nn.Module, example: torch.Tensor, *, for_lrp: bool = False,
                 epsilon: float = 1e-6) -> fx.GraphModule:
    """A traced copy of ``model`` that captum's hooks handle correctly (see the module docstring)."""
    model = copy.deepcopy(model).eval()
    try:
        graph = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; all mean the same thing to the caller
        raise LrpcError(f"captum baselines need a torch.fx-traceable model; tracing {type(model).__name__} "
                        f"failed: {exc}") from exc
    if for_lrp:
        from torch.fx.experimental.optimization import fuse
        graph = fuse(graph)
    _give_every_call_its_own_module(graph)
    for module in graph.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    if for_lrp:
        _wrap_residual_adds(graph, epsilon)
        _check_lrp_support(graph)
    graph.recompile()
    with torch.no_grad():
        expected, got = model(example), graph(example)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
        raise LrpcError(f"the graph rewritten for captum does not reproduce {type(model).__name__}'s logits "
                        f"(max difference {(expected - got).abs().max().item():.3g}); refusing to attribute")
    return graph


def _give_every_call_its_own_module(graph: fx.GraphModule) -> None:
    seen: set[str] = set()
    for node in graph.graph.nodes:
        if node.op != "call_module":
            continue
        if node.target in seen:
            copy_name = f"{node.target.replace('.', '_')}__{node.name}"
            graph.add_submodule(copy_name, copy.deepcopy(graph.get_submodule(node.target)))
            node.target = copy_name
        seen.add(node.target)


def _epsilon_rule(epsilon: float):
    _captum_attr()
    from captum.attr._utils.lrp_rules import EpsilonRule
    return EpsilonRule(epsilon)


def _wrap_residual_adds(graph: fx.GraphModule, epsilon: float) -> None:
    for node in list(graph.graph.nodes):
        is_add = node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)
        if is_add and len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args):
            name = f"residual_add__{node.name}"
            module = ResidualAdd()
            module.rule = _epsilon_rule(epsilon)
            graph.add_submodule(name, module)
            with graph.graph.inserting_after(node):
                replacement = graph.graph.call_module(name, node.args)
            node.replace_all_uses_with(replacement)
            graph.graph.erase_node(node)


def _check_lrp_support(graph: fx.GraphModule) -> None:
    """Tensor functions other than reshapes would pass relevance as a gradient: refuse them by name."""
    harmless = {torch.flatten, operator.getitem, getattr}
    harmless_methods = {"view", "reshape", "flatten", "size", "contiguous"}
    unsupported = [f"{node.name} ({getattr(node.target, '__name__', node.target)})" for node in graph.graph.nodes
                   if (node.op == "call_function" and node.target not in harmless)
                   or (node.op == "call_method" and node.target not in harmless_methods)]
    if unsupported:
        raise LrpcError("captum's LRP would propagate relevance through these operations as plain gradients, "
                        f"which does not conserve it: {unsupported[:8]}; use lrpc.compile for this model")


def _reduce_channels(attribution: torch.Tensor, channels: str) -> torch.Tensor:
    if channels == "sum":
        return attribution.sum(1).detach()
    if channels == "first":
        # The authors' evaluation scored captum's 3-channel maps by channel 0; kept only to reproduce that.
        return attribution[:, 0].detach()
    raise ValueError(f"channels must be 'sum' or 'first', got {channels!r}")


def integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, steps: int = 50,
                         internal_batch_size: int = 256, channels: str = "sum") -> torch.Tensor:
    """Integrated Gradients from the all-zero model input (the mean colour) in ``steps`` steps."""
    method = _captum_attr().IntegratedGradients(model)
    with _quiet_captum():
        attribution = method.attribute(images, baselines=torch.zeros_like(images), target=targets, n_steps=steps,
                                       internal_batch_size=internal_batch_size)
    return _reduce_channels(attribution, channels)


def input_x_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                     channels: str = "sum") -> torch.Tensor:
    """The input times the gradient of the target logit (no rewriting needed: plain autograd)."""
    method = _captum_attr().InputXGradient(model)
    with _quiet_captum():
        return _reduce_channels(method.attribute(images, target=targets), channels)


def guided_backprop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                    channels: str = "sum") -> torch.Tensor:
    method = _captum_attr().GuidedBackprop(captum_graph(model, images[:1]))
    with _quiet_captum():
        return _reduce_channels(method.attribute(images, target=targets), channels)


def deeplift(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, channels: str = "sum") -> torch.Tensor:
    """DeepLIFT (rescale rule) from the all-zero model input."""
    method = _captum_attr().DeepLift(captum_graph(model, images[:1]))
    with _quiet_captum():
        return _reduce_channels(method.attribute(images, baselines=torch.zeros_like(images), target=targets),
                                channels)


def lrp_epsilon(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *, epsilon: float = 1e-6,
                channels: str = "sum") -> torch.Tensor:
    """LRP-epsilon on every layer, starting from the target logit; BN folded, residual adds split
    proportionally (see the module docstring)."""
    graph = captum_graph(model, images[:1], for_lrp=True, epsilon=epsilon)
    for module in graph.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            module.rule = _epsilon_rule(epsilon)
    with _quiet_captum():
        return _reduce_channels(_captum_attr().LRP(graph).attribute(images, target=targets), channels)
