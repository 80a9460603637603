"""The base class of an op kind, the registry ``KINDS`` and the lookups every other module uses.

An ``OpKind`` is stateless: one instance per kind, registered under its ``name`` (the string ``OpInfo.kind``
holds, or the ``NodePlan.transform`` a rule set chose). Its hooks receive the node's ``NodePlan`` and answer for
that node. The four hooks in ``HOOKS`` are the ones a new kind must decide: override each, or name it in
``unsupported``, where the base refuses with an ``LrpcError`` naming the node, the kind and the module path.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from ..errors import LrpcError

if TYPE_CHECKING:   # the pass and the plans sit above this package; their types only
    import torch
    import torch.fx as fx

    from ..annotate import NodePlan
    from ..ops import OpInfo
    from ..rule_set import Rules
    from ..relevance_pass import RelevancePass

DEFAULT_COLOUR = "#f3f3f3"


class OpKind:
    """One relevance op kind: how its relevance step is emitted, what it absorbs, how the graph analyses step
    through it, how the dump shows it, and the traits other modules ask."""

    name: str = ""
    colour = DEFAULT_COLOUR        # the node's fill in the DOT dump
    # hooks from HOOKS this kind refuses on purpose (the base raises a clear LrpcError for them)
    unsupported: tuple[str, ...] = ()

    # -- traits
    is_input = False               # the input layer: relevance stops here and is reported
    absorbs_constant = False       # a constant: it absorbs whatever relevance reaches it
    pointwise = False              # keeps every position where it is (elementwise, normalisation, padding)
    attention = False              # an attention op (relevance mixes positions through attention weights)
    residual_join = False          # adds two branches (a residual block lives where it is)
    applies_rule = False           # a linear map a rule applies to (``info.map`` names it)
    zero_padding = False           # adds zeros around its input (``info.args`` are F.pad's pads)

    HOOKS = ("emit", "deconvnet_step", "channel_problem", "receptive_field")

    # -- 1. the relevance step
    def emit(self, rp: "RelevancePass", plan: "NodePlan", r: "fx.Node", total: "fx.Node") -> None:
        """Write the node's relevance step into ``rp``'s graph: one ``rp.send`` per input that receives
        relevance. ``r`` is the node's summed relevance, ``total`` its per-sample total (reusable as a message's
        total where the step keeps every value)."""
        raise self.refusal(plan, "the relevance pass has no step for it")

    # -- 2. the accounting
    def absorbs(self, plan: "NodePlan") -> tuple[str, ...]:
        """What in the node's op may absorb relevance by design: "bias", "stabiliser", "constant", "softmax"."""
        return ()

    # -- 3. the graph analyses
    def deconvnet_step(self, plan: "NodePlan", s: "torch.Tensor", like: list["torch.Tensor"],
                       acts: dict[str, "torch.Tensor"], module: "fx.GraphModule") -> list[tuple[str, "torch.Tensor"]]:
        """The Zeiler–Fergus signal each input receives from the node's signal ``s`` [N, ...]; ``like`` holds
        the inputs' activations expanded to N rows, ``acts`` every activation by node name, ``module`` the
        generated module (whose buffers the node reads)."""
        raise self.refusal(plan, "deconvnet has no rule for it")

    def channel_problem(self, plan: "NodePlan") -> str | None:
        """None where the node keeps channel c of its input in channel c of its output (path analysis folds it
        into a channel-wise region), else what it does to the channels."""
        return f"is a {self.name!r} op, which mixes or reorders channels"

    def receptive_field(self, plan: "NodePlan", known: list[tuple["fx.Node", Any]]):
        """The node's receptive field from its inputs' (``known``: (input, field) pairs, none of them whole);
        see ``op_kinds.fields``."""
        raise self.refusal(plan, "no receptive field through it")

    def window(self, plan: "NodePlan") -> tuple[tuple[int, ...], ...] | None:
        """(kernel, stride, padding, dilation) per spatial dimension of a fixed window, or None."""
        return None

    def moves_batch(self, plan: "NodePlan") -> bool:
        """Whether the node moves the batch away from dimension 0."""
        return False

    def carries_value(self, node: "fx.Node") -> bool:
        """Whether the op carries its input's values unchanged (a view, a copy, a constant scaling)."""
        return False

    # -- 4. the dump
    def dump_choice(self, plan: "NodePlan") -> dict:
        """The node attributes that say what the rule set chose for it (its rule, mode or policy)."""
        return {}

    def edge_role(self, plan: "NodePlan", source: "fx.Node") -> dict:
        """Attributes of the edge from ``source`` into the node (an operand's role)."""
        return {}

    # -- 5. annotation
    def weighted(self, info: "OpInfo") -> bool:
        """Whether the op has weights (rules count weighted layers from the input)."""
        return False

    def under_rules(self, info: "OpInfo", rules: "Rules") -> tuple["OpInfo", str | None]:
        """The rule set's choice for the op: the (possibly rewired) op, and the name of the kind that emits its
        relevance instead of this one, or None."""
        return info, None

    def configure(self, plan: "NodePlan", rules: "Rules", scope: Any) -> None:
        """Set the rule set's choices on the plan (a rule, a pool mode, a splitting policy) and check them;
        ``scope`` is annotate's view of the whole graph."""

    # -- errors
    def refusal(self, plan: "NodePlan", what: str) -> LrpcError:
        return LrpcError(f"node {plan.node.name!r} ({self.name} op, module {plan.module or '-'}): {what}")


KINDS: dict[str, OpKind] = {}


def register(cls: type[OpKind]) -> type[OpKind]:
    """Class decorator: register one instance of the kind under its name."""
    if not cls.name or cls.name in KINDS:
        raise LrpcError(f"op kind {cls.__name__} needs a name no other kind has, got {cls.name!r}")
    KINDS[cls.name] = cls()
    return cls


def lookup(name: str) -> OpKind:
    kind = KINDS.get(name)
    if kind is None:
        raise LrpcError(f"no op kind {name!r} is registered in lrpc.op_kinds; registered: {', '.join(sorted(KINDS))}")
    return kind


def kind_of(plan: "NodePlan") -> OpKind:
    """The kind that handles a planned node: the one its rule set chose (``plan.transform``), else its op's."""
    return lookup(plan.info.kind if plan.transform is None else plan.transform)


# ------------------------------------------------------------------------------------------- emit helpers
def tag(plan: "NodePlan") -> str:
    return f"rel_{plan.node.name}"


def forward_inputs(rp: "RelevancePass", plan: "NodePlan") -> list["fx.Node"]:
    """The node's relevance inputs as the generated graph holds them."""
    return [rp.env[i] for i in plan.info.inputs]


def send_parts(rp: "RelevancePass", plan: "NodePlan", parts: "fx.Node") -> None:
    """Send part k of a kernel's tuple result to the node's input k."""
    for k, producer in enumerate(plan.info.inputs):
        rp.send(producer, plan.node, rp.call(operator.getitem, (parts, k), name=f"{tag(plan)}_{k}"))


def send_one(rp: "RelevancePass", plan: "NodePlan", fn, args, kwargs=None, total=None) -> None:
    """Call ``fn`` for the message to the node's single relevance input and send it."""
    message = rp.call(fn, args, kwargs, name=tag(plan))
    rp.send(plan.info.inputs[0], plan.node, message, total)
