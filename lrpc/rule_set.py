"""A rule set: which rule each layer gets, and the model-wide modes (splitting, max-pool, normalisations, start).

``Rules`` maps a layer to its rule by module type, by qualified name (glob), by position (``"first"`` /
``"last"`` weighted layer, or any predicate on ``LayerContext``), falling back to the per-map defaults; the
rules themselves (``ZPlus``, ``Epsilon``, …) are in ``lrpc.rules``, the named sets in ``lrpc.presets``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

from .errors import LrpcError
from .rules import Rule, ZPlus
from .splitting import Splitting

MAXPOOL_MODES = ("winner", "proportional", "avg2x2")
BATCHNORM_MODES = ("pass", "fold", "affine")
LAYERNORM_MODES = ("pass", "frozen_std")
ATTENTION_MODES = ("frozen", "attnlrp")
CONSTANT_ADD_MODES = ("signal", "proportional")
GATED_PRODUCT_MODES = ("half", "frozen_gate")
START_MODES = ("one", "logit", "softmax", "score", "sigmoid")   # score: a single-score head's logit


@dataclass(frozen=True)
class LayerContext:
    """What a selector sees about a layer: names, type, and its position in graph order."""

    node: str
    module: str | None
    module_type: str | None
    map: str                # "conv", "conv_transpose", "linear", "avg_pool", "adaptive_avg_pool", "upsample", "fold",
                            # "reduce"; "module" for a leaf
    index: int              # among weighted layers (conv/linear), graph order; -1 for pools
    num_weighted: int
    adds_before: int        # residual adds that precede the layer in graph order
    attention_projection: bool = False   # a linear map making attention's q, k or v, or reading its output


Selector = Union[type, str, Callable[[LayerContext], bool]]


def selector_matches(selector: Selector, ctx: LayerContext) -> bool:
    if isinstance(selector, type):
        return ctx.module_type == selector.__name__
    if isinstance(selector, str):
        if selector == "first":
            return ctx.index == 0
        if selector == "last":
            return ctx.index == ctx.num_weighted - 1 and ctx.index >= 0
        return any(fnmatch.fnmatchcase(name, selector) for name in (ctx.node, ctx.module) if name)
    return bool(selector(ctx))


@dataclass(frozen=True)
class Rules:
    """A complete rule set. ``layers`` is checked first (first match wins), then the per-map defaults."""

    name: str = "custom"
    conv: Rule = ZPlus()
    linear: Rule = ZPlus()
    pool: Rule = ZPlus()
    layers: Sequence[tuple[Selector, Rule]] = ()
    maxpool: str = "winner"
    maxpool_epsilon: float = 1e-5   # stabiliser of the avg2x2 stand-in (the authors' value)
    splitting: Splitting = Splitting()
    batchnorm: str = "pass"          # "pass", "fold" (into the conv before) or "affine" (its z-rule, shift absorbs)
    layernorm: str = "pass"          # "pass" (statistics constant, relevance unchanged) or "frozen_std" (LXT)
    attention: str = "frozen"        # "frozen" (relevance through the values only) or "attnlrp"
    constant_add: str = "signal"     # x + constant: "signal" (all to x) or "proportional" (the constant absorbs)
    gated_product: str = "half"      # act(a) * b: "half" to each factor (AttnLRP) or "frozen_gate" (all to b, CP-LRP)
    start: str = "softmax"
    description: str = ""

    def __post_init__(self):
        for kind in ("conv", "linear", "pool"):
            if not isinstance(getattr(self, kind), Rule):
                raise LrpcError(f"Rules.{kind} must be a rule object such as lrpc.rules.ZPlus(), "
                                f"got {getattr(self, kind)!r}")
        for entry in self.layers:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Rule)):
                raise LrpcError(f"Rules.layers entries are (selector, rule) pairs, got {entry!r}")
        if not isinstance(self.splitting, Splitting):
            raise LrpcError(f"Rules.splitting must be lrpc.Splitting(...), got {self.splitting!r}")
        if self.maxpool not in MAXPOOL_MODES:
            raise LrpcError(f"unknown maxpool mode {self.maxpool!r}; choose one of {MAXPOOL_MODES}")
        if self.start not in START_MODES:
            raise LrpcError(f"unknown start mode {self.start!r}; choose one of {START_MODES}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise LrpcError(f"batchnorm must be one of {BATCHNORM_MODES}, got {self.batchnorm!r}")
        for name, allowed in (("layernorm", LAYERNORM_MODES), ("attention", ATTENTION_MODES),
                              ("constant_add", CONSTANT_ADD_MODES), ("gated_product", GATED_PRODUCT_MODES)):
            if getattr(self, name) not in allowed:
                raise LrpcError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def rule_for(self, ctx: LayerContext) -> Rule:
        for selector, rule in self.layers:
            if selector_matches(selector, ctx):
                return rule
        if ctx.map in ("conv", "conv_transpose"):
            return self.conv
        if ctx.map == "linear":
            return self.linear
        return self.pool

    def replace(self, **changes: Any) -> "Rules":
        return dataclasses.replace(self, **changes)
