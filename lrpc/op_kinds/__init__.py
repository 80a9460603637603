"""Relevance op kinds: one object per kind, in a registry. The op table (``lrpc.ops``) says which kind a node is
(``OpInfo.kind``, a key of ``KINDS``); the rule set may choose another kind for its relevance
(``NodePlan.transform``). Every other module asks the kind object, ``kind_of(plan)``, for a behaviour or a trait
and never compares kind names, so a new kind is one class in one family module, registered there with
``@register`` (and its test).

Each kind owns (``base.OpKind``): its relevance step (``emit``, called by the relevance pass), what it absorbs
(``absorbs``, the accounting), how the graph analyses step through it (``deconvnet_step``, ``channel_problem`` for
path analysis, ``receptive_field`` and ``window``), how the dump shows it (``dump_choice``, ``edge_role``,
``colour``), the rule set's choices for it (``under_rules``, ``configure``) and traits (``is_input``,
``absorbs_constant``, ``pointwise``, ``attention``, ``residual_join``, ``applies_rule``, ``zero_padding``,
``carries_value``, ``moves_batch``, ``weighted``).

Families: ``sources`` (input, inert), ``linear``, ``elementwise`` (pass, batchnorm, gate, add, product),
``structural`` (move, reshape, permute, pad, cat, stack, scatter), ``pooling`` (maxpool, amax), ``attention``
(frozen_matmul, attention, matmul_product) and ``rule_sets`` (attnlrp, layernorm_frozen_std, centering,
batchnorm_affine, constant_add, softmax).
"""
from __future__ import annotations

from . import attention, elementwise, linear, pooling, rule_sets, sources, structural  # noqa: F401 (they register)
from .base import KINDS, OpKind, kind_of, lookup, register

__all__ = ["KINDS", "OpKind", "kind_of", "lookup", "register"]
