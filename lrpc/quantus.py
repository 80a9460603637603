"""lrpc as a Quantus explanation function, so that Quantus's metrics evaluate lrpc's relevance maps.

    import quantus
    from lrpc.quantus import explain_func
    metric = quantus.MaxSensitivity(nr_samples=10)
    scores = metric(model=model, x_batch=x, y_batch=y, explain_func=explain_func,
                    explain_func_kwargs={"rules": "epsilon-plus"})

Quantus calls ``explain_func(model, inputs, targets, **explain_func_kwargs)`` with numpy batches many times per
metric (robustness metrics once per perturbation). The compiled explainer is kept per model and rule set (the
last ``CACHE_SIZE`` of them), so only the first call compiles; the model is never copied. Quantus's
randomisation metrics re-initialise the layers of one model copy in place, layer after layer: the explainer
follows the model and compiles again after each change (see ``lrpc.compile``), so every map is that of the
model as it is at the call.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .captum import LRPC
from .errors import LrpcError
from .rule_set import Rules
from .views import heatmap_view

__all__ = ["CACHE_SIZE", "clear_cache", "explain_func"]

CACHE_SIZE = 8
# (id(model), rules, start) -> adapter. The adapter holds the model, so an id cannot be reused while cached.
_adapters: OrderedDict[tuple, LRPC] = OrderedDict()


def explain_func(model: nn.Module, inputs, targets, *, rules: Rules | str = "default", start: str | None = None,
                 channels: str = "sum", sign: str = "signed", smooth=None, quantize: int | None = None,
                 device: str | torch.device | None = None, **unknown) -> np.ndarray:
    """Input relevance of ``targets`` for ``inputs`` [B, C, H, W], as float32 numpy.

    ``channels="sum"``: the relevance summed over channels, [B, 1, H, W] (the heatmap, as Quantus's own
    ``explain`` reduces channels), read through ``sign`` / ``smooth`` / ``quantize`` exactly as
    ``Explanation.heatmap`` reads it (``smooth="auto"``: the compiled model's stem σ); ``"keep"``: the raw
    relevance per channel, [B, C, H, W]. ``rules`` / ``start`` as in ``lrpc.compile``. ``device``: where the
    inputs go (Quantus passes the metric's device); the model stays where it is.
    """
    if unknown:
        raise LrpcError(f"lrpc's explain_func got unknown arguments {sorted(unknown)}; it takes rules=, start=, "
                        f"channels=, sign=, smooth=, quantize= and device=")
    if channels not in ("sum", "keep"):
        raise LrpcError(f"channels must be 'sum' or 'keep', got {channels!r}")
    view = {"sign": sign, "smooth": smooth, "quantize": quantize}
    if channels == "keep" and view != {"sign": "signed", "smooth": None, "quantize": None}:
        raise LrpcError("sign=, smooth= and quantize= read the channel-summed heatmap: use them with channels='sum'")
    x = torch.as_tensor(inputs, device=device)
    if not x.is_floating_point():
        raise LrpcError(f"inputs must be floating point, got {x.dtype}")
    target = None if targets is None else torch.as_tensor(targets, device=x.device).long().reshape(-1)
    adapter = _adapter(model, rules, start)
    relevance = adapter.attribute(x, target=target)
    if channels == "sum":
        relevance = heatmap_view(relevance.sum(1), **view,
                                 auto=lambda: adapter.explainer(x).smoothing_sigma).unsqueeze(1)
    return relevance.detach().cpu().numpy().astype(np.float32, copy=False)


def _adapter(model: nn.Module, rules: Rules | str, start: str | None) -> LRPC:
    try:
        key = (id(model), rules, start)
        adapter = _adapters.get(key)
    except TypeError as exc:
        raise LrpcError(f"rules must be a preset name or a hashable lrpc.Rules, got {rules!r}") from exc
    if adapter is None:
        adapter = LRPC(model, rules) if start is None else LRPC(model, rules, start=start)
        _adapters[key] = adapter
        while len(_adapters) > CACHE_SIZE:
            _adapters.popitem(last=False)
    _adapters.move_to_end(key)
    return adapter


def clear_cache() -> None:
    """Forget the kept explainers (and the models they hold)."""
    _adapters.clear()
