"""LXT 2.1 as the independent reference for the transformer presets (docs/transformers.md).

LXT explains by patching module forwards process-wide (``lxt.efficient.monkey_patch``) and zennit's hook class
(``monkey_patch_zennit``). Here the same LXT functions are bound to the modules of a deep copy instead, and
zennit's ``Gamma`` is subclassed with LXT's hook methods, so nothing outside the copy changes and other tests in
the process see torchvision and zennit untouched. The heatmap is LXT's: backward from the target logit with seed
1, then ``(x * x.grad).sum(1)``.
"""
from __future__ import annotations

import copy
import importlib
import pathlib
import sys
import types

import torch
from torch import nn


def lxt_efficient(name: str):
    """``lxt.efficient.<name>`` without running ``lxt/efficient/__init__``, which imports LXT's Hugging Face
    model maps (they need a transformers version lrpc does not pin); the patch modules import only torch/zennit."""
    import lxt
    if "lxt.efficient" not in sys.modules:
        package = types.ModuleType("lxt.efficient")
        package.__path__ = [str(pathlib.Path(lxt.__file__).parent / "efficient")]
        sys.modules["lxt.efficient"] = package
    return importlib.import_module(f"lxt.efficient.{name}")


def _attnlrp_mha_forward(self, query, key, value, *args, **kwargs):
    # LXT's AttnLRP attention wrapper (patches.wrap_attention_forward), applied where torchvision calls it
    divide = lxt_efficient("rules").divide_gradient
    return self.original_forward(divide(query, 4), divide(key, 4), divide(value, 2), *args, **kwargs)


def lxt_heatmap(model: nn.Module, x: torch.Tensor, target: torch.Tensor, attention: str = "cp",
                conv_gamma: float | None = None, linear_gamma: float | None = None) -> torch.Tensor:
    """LXT's map of torchvision's ViT: its ``cp_LRP`` patch map (``attention='cp'``), or with LXT's AttnLRP
    attention wrapper on ``nn.MultiheadAttention`` (``'attnlrp'``); γ through zennit as LXT's examples apply it."""
    patches = lxt_efficient("patches")
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.GELU):
            module.original_forward = module.forward
            module.forward = types.MethodType(patches.non_linear_forward, module)
        elif isinstance(module, nn.LayerNorm):
            module.forward = types.MethodType(patches.layer_norm_forward, module)
        elif isinstance(module, nn.MultiheadAttention):
            module.original_forward = module.forward
            forward = patches.cp_multi_head_attention_forward if attention == "cp" else _attnlrp_mha_forward
            module.forward = types.MethodType(forward, module)
    composite = None
    if conv_gamma is not None or linear_gamma is not None:
        import zennit.composites
        import zennit.rules
        hooks = lxt_efficient("zennit_patches")

        class LxtGamma(zennit.rules.Gamma):
            forward = hooks.forward
            backward = hooks.backward

        layer_map = ([(nn.Conv2d, LxtGamma(conv_gamma))] if conv_gamma is not None else []) + \
                    ([(nn.Linear, LxtGamma(linear_gamma))] if linear_gamma is not None else [])
        composite = zennit.composites.LayerMapComposite(layer_map)
        composite.register(model)
    try:
        x = x.detach().clone().requires_grad_()
        logits = model(x)
        logits[torch.arange(len(x)), target].sum().backward()
    finally:
        if composite is not None:
            composite.remove()
    return (x * x.grad).sum(1).detach()
