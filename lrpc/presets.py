"""The named rule sets (docs/presets.md): ``preset(name, **overrides)`` builds one, ``presets()`` lists them.

Each preset is a function returning a ``Rules`` (``lrpc.rule_set``: which rule each layer gets, how adds split,
where relevance starts) with a one-line description of what it reproduces. ``Rules``, ``LayerContext`` and the
mode tuples are importable from here as before.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

from .errors import LrpcError
from .rule_set import (ATTENTION_MODES, BATCHNORM_MODES, CONSTANT_ADD_MODES, GATED_PRODUCT_MODES,  # noqa: F401
                       LAYERNORM_MODES, MAXPOOL_MODES, START_MODES, LayerContext, Rules, Selector,
                       selector_matches)   # importable from here as before the move
from .rules import Epsilon, Flat, Gamma, Rule, ZBox, Zero, ZPlus
from .splitting import Splitting

IMAGENET_LOW = (-2.1179, -2.0357, -1.8044)
IMAGENET_HIGH = (2.2489, 2.4286, 2.6400)


# ------------------------------------------------------------------------------------------------ the presets
# The view of the map each family ranks best with on lrpc's ground-truth tasks (docs/views.md has the tables).
CNN_VIEW = ("; recommended view on CNNs: exp.heatmap(smooth='auto') (the stem's receptive-field blur: higher "
            "insertion-deletion on the ground-truth tasks, docs/views.md)")
TRANSFORMER_VIEW = ("; recommended view: exp.heatmap(sign='absolute', smooth='auto') (the signed map interleaves "
                    "both signs over the object and ranks near chance, docs/views.md)")


def _otsuki(splitting: Splitting, description: str) -> Rules:
    zplus = ZPlus(epsilon=1e-5, stabilizer_mode="add", bias=False)
    return Rules(conv=zplus, linear=zplus, pool=zplus,
                 layers=(("first", ZPlus(epsilon=1e-5, stabilizer_mode="add", bias=False, ones_input=True)),),
                 maxpool="avg2x2", splitting=splitting, start="softmax", description=description + CNN_VIEW)


def otsuki2024() -> Rules:
    return _otsuki(Splitting("ratio", identity=True),
                   "Otsuki et al. 2024 as their code computes it (Table 2 (iv)): z+ (+1e-5, biases ignored), "
                   "first layer on an all-ones input, max-pool as 2x2 average, ratio splitting with identity "
                   "skips, start = softmax probability of the predicted class")


def otsuki2024_i() -> Rules:
    return _otsuki(Splitting("symmetric", identity=False), "Table 2 (i): symmetric splitting, identity skips get 0")


def otsuki2024_ii() -> Rules:
    return _otsuki(Splitting("symmetric", identity=True), "Table 2 (ii): symmetric splitting with identity skips")


def otsuki2024_iii() -> Rules:
    return _otsuki(Splitting("ratio", identity=False), "Table 2 (iii): ratio splitting, identity skips get 0")


def otsuki2024_mixture(epsilon: float = 1e-6, after_block: int = 8) -> Rules:
    """Appendix D.3: ε for layers after the 8th bottleneck block (counted by residual adds), z+ below."""
    base = otsuki2024()
    late = Epsilon(epsilon=epsilon)
    return base.replace(layers=base.layers + ((lambda c: c.adds_before >= after_block, late),),
                        description=f"Otsuki et al. appendix D.3: ε={epsilon} after residual block {after_block}, "
                                    "z+ below, otherwise as otsuki2024" + CNN_VIEW)


def default(conv_gamma: float | None = None, linear_gamma: float | None = None) -> Rules:
    # no stabiliser is needed: the fallback handles every output whose positive part is zero
    zplus = ZPlus(epsilon=0.0, stabilizer_mode="none", bias=False, fallback=True)
    return Rules(conv=zplus, linear=zplus, pool=zplus, maxpool="winner", splitting=Splitting("ratio", True),
                 layers=_gamma_layers(conv_gamma, linear_gamma, bias=False), start="softmax",
                 description="the paper's method without the legacy quirks: z+ (α1β0 on signed inputs, biases "
                             "out, no stabiliser, outputs without positive evidence routed through their negative "
                             "contributions instead of dropped), true max-pool windows (winner-take-all), ratio splitting "
                             "with identity skips and a 0/0 guard; conserves exactly. conv_gamma / linear_gamma: "
                             "zennit's γ (biases out) instead of z+ on convs / linears outside attention"
                             + CNN_VIEW + "; on ViTs the raw map (the blur lowers its black-canvas ranking there)")


def _zennit(first: Rule | None, conv: Rule, epsilon: float, stabilizer: float, description: str) -> Rules:
    norm = Epsilon(epsilon=stabilizer)
    return Rules(conv=conv, linear=Epsilon(epsilon=epsilon), pool=norm,
                 layers=(() if first is None else (("first", first),)), maxpool="winner",
                 splitting=Splitting("proportional", True, epsilon=stabilizer), batchnorm="fold",
                 start="logit", description=description)


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Rules:
    return _zennit(None, ZPlus(epsilon=stabilizer), epsilon, stabilizer,
                   "zennit EpsilonPlus with its canonizers: BatchNorm folded, z+ on convs, ε on linear layers, "
                   "proportional (Norm) adds and average pools, gradient (winner) max-pool" + CNN_VIEW)


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Rules:
    return _zennit(Flat(epsilon=stabilizer), ZPlus(epsilon=stabilizer), epsilon, stabilizer,
                   "zennit EpsilonPlusFlat: as epsilon-plus with the flat rule on the first layer")


def epsilon_gamma_box(low: Any = None, high: Any = None, epsilon: float = 1e-6, gamma: float = 0.25,
                      stabilizer: float = 1e-6) -> Rules:
    if low is None or high is None:
        raise LrpcError("preset 'epsilon-gamma-box' needs low= and high=: the lowest and highest values of the "
                        "normalised input, scalars or one per channel (ImageNet: lrpc.presets.IMAGENET_LOW/HIGH)")
    return _zennit(ZBox(low, high, epsilon=stabilizer), Gamma(gamma, epsilon=stabilizer), epsilon, stabilizer,
                   "zennit EpsilonGammaBox: z^B first layer, γ on convs, ε on linear layers, BatchNorm folded")


def montavon_vgg16(low: Any = IMAGENET_LOW, high: Any = IMAGENET_HIGH) -> Rules:
    gamma = Gamma(0.25, epsilon=1e-9, generalized=False)
    eps_rms = Epsilon(epsilon=0.25, stabilizer_mode="rms")
    return Rules(conv=eps_rms, linear=Zero(), pool=ZPlus(epsilon=1e-9),
                 layers=(("first", ZBox(low, high, epsilon=1e-9)),
                         (lambda c: c.map == "conv" and 1 <= c.index <= 6, gamma)),
                 maxpool="avg2x2", maxpool_epsilon=1e-9, start="logit",
                 description="Montavon et al. (VGG-16): z^B on conv1_1, γ=0.25 on conv1_2…conv3_3, "
                             "ε=0.25·RMS(z) on conv4_1…conv5_3, LRP-0 on the classifier, max-pool as 2x2 average, "
                             "start from the target logit")


def _gamma_layers(conv_gamma: float | None, linear_gamma: float | None, bias: bool) -> tuple[tuple[Selector, Rule], ...]:
    """zennit's generalised γ (stabiliser 1e-6·sign) on convs and on the linears outside attention, as LXT applies
    it: its γ reaches only modules whose forward runs, not nn.MultiheadAttention's projections."""
    layers: list[tuple[Selector, Rule]] = []
    if conv_gamma is not None:
        layers.append((lambda c: c.map == "conv", Gamma(conv_gamma, epsilon=1e-6, bias=bias)))
    if linear_gamma is not None:
        layers.append((lambda c: c.map == "linear" and not c.attention_projection,
                       Gamma(linear_gamma, epsilon=1e-6, bias=bias)))
    return tuple(layers)


def _transformer(attention: str, conv_gamma: float | None, linear_gamma: float | None, description: str) -> Rules:
    # LRP-0 with the bias in the denominator is what LXT's gradient × input computes on a linear map; LXT's
    # cp-LRP stops the gradient at a gated MLP's gate, AttnLRP splits the product uniformly
    return Rules(conv=Zero(), linear=Zero(), pool=Zero(), layers=_gamma_layers(conv_gamma, linear_gamma, bias=True),
                 maxpool="winner", splitting=Splitting("proportional", True), batchnorm="affine",
                 layernorm="frozen_std", attention=attention, constant_add="proportional",
                 gated_product="half" if attention == "attnlrp" else "frozen_gate", start="logit",
                 description=description + TRANSFORMER_VIEW)


def cp_lrp(conv_gamma: float | None = None, linear_gamma: float | None = None) -> Rules:
    return _transformer("frozen", conv_gamma, linear_gamma,
                        "CP-LRP as LXT 2.1's ViT map (Ali et al. 2022): attention weights frozen, LayerNorm with σ "
                        "frozen, identity through activations, LRP-0 with biases absorbing, proportional residual "
                        "adds, the cls token and positional embedding absorbing their shares, a gated MLP's gate "
                        "frozen, start = target logit; "
                        "conv_gamma / linear_gamma: zennit's γ on convs / linears outside attention")


def attnlrp(conv_gamma: float | None = None, linear_gamma: float | None = None) -> Rules:
    return _transformer("attnlrp", conv_gamma, linear_gamma,
                        "AttnLRP (Achtibat et al. 2024): as cp-lrp outside attention; inside, the softmax rule "
                        "R_x = x(R - s·ΣR) and the z-rule shared half-and-half on q·kᵀ and A·V (and on a gated MLP's "
                        "act(x W)·(x V))")


PRESETS: dict[str, Callable[..., Rules]] = {
    "otsuki2024": otsuki2024, "otsuki2024-i": otsuki2024_i, "otsuki2024-ii": otsuki2024_ii,
    "otsuki2024-iii": otsuki2024_iii, "otsuki2024-mixture": otsuki2024_mixture, "default": default,
    "epsilon-plus": epsilon_plus, "epsilon-plus-flat": epsilon_plus_flat, "epsilon-gamma-box": epsilon_gamma_box,
    "montavon-vgg16": montavon_vgg16, "cp-lrp": cp_lrp, "attnlrp": attnlrp,
}
RULES_FIELDS = {f.name for f in dataclasses.fields(Rules)}


def presets() -> list[str]:
    return list(PRESETS)


def preset(name: str, **kwargs: Any) -> Rules:
    """Build a named rule set. Keyword arguments go to the preset (``low=``, ``epsilon=``…) or replace a
    ``Rules`` field (``start=``, ``maxpool=``, ``splitting=``…)."""
    if name not in PRESETS:
        raise LrpcError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in RULES_FIELDS}
    try:
        rules = PRESETS[name](**kwargs)
    except TypeError as exc:
        raise LrpcError(f"preset {name!r}: {exc}") from exc
    return dataclasses.replace(rules, name=name, **overrides)


def resolve(rules: Rules | str | None) -> Rules:
    if rules is None:
        return preset("default")
    if isinstance(rules, str):
        return preset(rules)
    if isinstance(rules, Rules):
        return rules
    raise TypeError(f"rules must be a preset name or an lrpc.Rules object, got {type(rules).__name__}")


def preset_for_input(name: str, mean: Sequence[float], std: Sequence[float]):
    """The preset; box rules (z^B) get the input's true bounds, pixels 0 and 1 under this normalisation."""
    if "low" in inspect.signature(PRESETS[name]).parameters:
        low = tuple((0.0 - m) / s for m, s in zip(mean, std))
        high = tuple((1.0 - m) / s for m, s in zip(mean, std))
        return preset(name, low=low, high=high)
    return preset(name)
