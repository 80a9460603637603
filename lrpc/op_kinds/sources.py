"""Where relevance ends: the input layer (reported) and constants (absorbed)."""
from __future__ import annotations

from .base import OpKind, register


@register
class Input(OpKind):
    """The input layer: the image placeholder, or a token model's embedding lookup. Every walk stops here before
    asking for a step (the relevance pass returns its relevance, the analyses start or end at it)."""

    name = "input"
    colour = "#d9d2e9"
    is_input = True
    unsupported = ("emit", "deconvnet_step", "channel_problem", "receptive_field")


@register
class Inert(OpKind):
    """A constant on the relevance path (a cls token, a position embedding, a parameter concatenated to a
    signal): it absorbs its share, like a bias. It has no inputs, so no analysis steps through it."""

    name = "inert"
    absorbs_constant = True
    unsupported = ("deconvnet_step", "channel_problem", "receptive_field")

    def emit(self, rp, plan, r, total) -> None:
        return
