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
    """``lxt.efficient.<name>`` without running ``lxt/efficient/__init__`` or ``lxt/efficient/models/__init__``,
    which import every model map, BERT's among them, and that one fails on transformers 5.x; the patch modules
    import only torch/zennit, a model map its own family's modeling module."""
    import lxt
    root = pathlib.Path(lxt.__file__).parent
    for package_name in ("lxt.efficient", "lxt.efficient.models"):   # the models package imports BERT's map too
        if package_name not in sys.modules:
            package = types.ModuleType(package_name)
            package.__path__ = [str(root.joinpath(*package_name.split(".")[1:]))]
            sys.modules[package_name] = package
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


LXT_FAMILIES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                "Gemma3ForCausalLM": "gemma3", "GPT2LMHeadModel": "gpt2"}


def lxt_patched_copy(model: nn.Module, attention: str = "cp") -> tuple[nn.Module, types.ModuleType]:
    """A deep copy of a Hugging Face model with LXT's per-family patch map (``cp_LRP`` or ``attnLRP``) bound to its
    modules (not to their classes), and the family's modeling module, whose attention function LXT wraps."""
    family = lxt_efficient(f"models.{LXT_FAMILIES[type(model).__name__]}")
    patch_map = family.cp_LRP if attention == "cp" else family.attnLRP
    patched, modeling = copy.deepcopy(model), None
    for target_type, patch in patch_map.items():
        if isinstance(target_type, types.ModuleType):   # the modeling module: its attention function
            modeling = target_type
            continue
        function, method = patch.args[0], patch.keywords.get("method_name", "forward")
        for module in patched.modules():
            if isinstance(module, target_type):
                setattr(module, method, types.MethodType(function, module))
    return patched, modeling


def lxt_token_heatmap(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      target: torch.Tensor, attention: str = "cp") -> torch.Tensor:
    """LXT 2.1's token relevance [B, T] of a Hugging Face causal LM for the next token after each row's last real
    token, as LXT's examples compute it: its per-family patch map (``lxt.efficient.models.<family>``, ``cp_LRP`` or
    ``attnLRP``) bound to the modules of a deep copy, LXT's attention wrapper around the copy's eager attention
    function (what ``patch_attention`` / ``patch_cp_attention`` do, without replacing Hugging Face's attention
    registry, which transformers 5.x no longer accepts), then (embeddings × gradient) summed over D."""
    patches = lxt_efficient("patches")
    reference, modeling = lxt_patched_copy(model, attention)
    reference.config._attn_implementation = "eager"
    wrap = patches.cp_wrap_attention_forward if attention == "cp" else patches.wrap_attention_forward
    original = modeling.eager_attention_forward
    modeling.eager_attention_forward = wrap(original)
    try:
        embeddings = reference.get_input_embeddings()(input_ids).detach().requires_grad_()
        logits = reference(inputs_embeds=embeddings, attention_mask=attention_mask, use_cache=False).logits
        last = torch.where(attention_mask != 0, torch.arange(input_ids.shape[1]), -1).amax(1)
        logits[torch.arange(len(input_ids)), last, target.clone()].sum().backward()
    finally:
        modeling.eager_attention_forward = original
    return (embeddings * embeddings.grad).sum(-1).detach()
