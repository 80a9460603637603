"""The op-kind registry (lrpc.op_kinds): every kind the op table produces is registered and decides every hook,
and a kind defined outside lrpc (here, in this file) compiles through the relevance pass, the accounting, the
dump, the path analyses and receptive fields without any other lrpc module changing.

References: gradient × input (LRP-0 on a bias-free ReLU network equals it), conservation, and the same model
compiled with the op table's own kind for the op.
"""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lrpc
import lrpc.ops
from lrpc.debug import build_graph, leaks, serialize
from lrpc.errors import LrpcError
from lrpc.op_kinds import KINDS, OpKind, kind_of, lookup, register
from lrpc.op_kinds import fields
from lrpc.ops import OpInfo
from lrpc.paths import deconvnet, relevance_graph
from lrpc.receptive_field import receptive_field
from lrpc.rules import Zero

aten = torch.ops.aten
LRPC = Path(lrpc.__file__).parent


# ------------------------------------------------------------------------------------------ completeness
def _kinds_in_source() -> set[str]:
    """Every kind name the library can produce: ``OpInfo("name", ...)`` anywhere in lrpc, and the kinds a rule
    set chooses (``under_rules`` returning ``info, "name"``)."""
    names = set()
    for path in LRPC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "OpInfo" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
            if isinstance(node, ast.FunctionDef) and node.name == "under_rules":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple) \
                            and isinstance(ret.value.elts[1], ast.Constant) and ret.value.elts[1].value:
                        names.add(ret.value.elts[1].value)
    return names


def test_every_kind_the_library_produces_is_registered():
    produced = _kinds_in_source()
    assert {"linear", "add", "input", "inert", "attnlrp", "softmax"} <= produced   # the scan finds them
    assert produced <= KINDS.keys(), f"unregistered kinds: {produced - KINDS.keys()}"


def _fake_plan(kind: str):
    node = SimpleNamespace(name="blocks_0_op", op="call_function", target=None)
    return SimpleNamespace(node=node, module="blocks.0", transform=None, info=OpInfo(kind))


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_decides_every_hook(name):
    kind = KINDS[name]
    assert kind.name == name
    for hook in OpKind.HOOKS:
        overridden = getattr(type(kind), hook) is not getattr(OpKind, hook)
        assert overridden != (hook in kind.unsupported), \
            f"kind {name!r} must override {hook} or list it in unsupported, not both or neither"
    plan = _fake_plan(name)
    refusals = {"emit": lambda: kind.emit(None, plan, None, None),
                "deconvnet_step": lambda: kind.deconvnet_step(plan, None, [], {}, None),
                "receptive_field": lambda: kind.receptive_field(plan, [])}
    for hook in kind.unsupported:
        if hook == "channel_problem":   # the path analyses raise with the region it was found in
            assert name in kind.channel_problem(plan)
            continue
        with pytest.raises(LrpcError, match=rf"node 'blocks_0_op' \({name} op, module blocks\.0\)"):
            refusals[hook]()


def test_unknown_kind_names_the_registered_ones():
    with pytest.raises(LrpcError, match="no op kind 'warp'.*registered: .*linear"):
        lookup("warp")
    with pytest.raises(LrpcError, match="needs a name no other kind has"):
        register(type("Again", (OpKind,), {"name": "linear"}))


def test_a_rule_set_kind_is_its_base_op_to_the_analyses():
    attnlrp, softmax = KINDS["attnlrp"], KINDS["softmax"]
    assert attnlrp.attention and not attnlrp.pointwise
    assert softmax.pointwise and softmax.channel_problem(_fake_plan("pass")) is None
    assert kind_of(SimpleNamespace(info=OpInfo("pass"), transform="softmax")) is softmax


class SelfAttention(nn.Module):
    def forward(self, t):
        return nn.functional.scaled_dot_product_attention(t, t, t)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.attn, self.head = nn.Conv2d(3, 8, 4, stride=4), SelfAttention(), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(self.conv(x).flatten(2).transpose(1, 2)).mean(1))


def test_deconvnet_through_attention_names_node_kind_and_module():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    explainer = lrpc.compile(Tokens().eval(), "default", example_input=x)
    with pytest.raises(LrpcError, match=r"node '\w+' \(attention op, module attn\): deconvnet has no rule"):
        deconvnet(explainer, x, "head", 0)


# ----------------------------------------------------------------------------------- a kind from outside lrpc
class DoubleThenHalve(OpKind):
    """A toy kind: relevance doubled, then halved (it conserves); elementwise, channel-wise, ReLU-like."""

    name = "test_double_then_halve"
    pointwise = True

    def emit(self, rp, plan, r, total) -> None:
        doubled = rp.call(torch.mul, (r, 2.0), name=f"double_{plan.node.name}")
        rp.send(plan.info.inputs[0], plan.node, rp.call(torch.mul, (doubled, 0.5), name=f"rel_{plan.node.name}"))

    def deconvnet_step(self, plan, s, like, acts, module):
        return [(plan.info.inputs[0].name, s.clamp(min=0))]

    def channel_problem(self, plan):
        return None

    def receptive_field(self, plan, known):
        return fields.elementwise(plan, known)

    def dump_choice(self, plan) -> dict:
        return {"rule": "double then halve"}


def use_toy_kind(request, monkeypatch) -> OpKind:
    """Register the toy kind (until the test ends) and map ``aten.relu`` to it by a test-local op table entry."""
    register(DoubleThenHalve)
    request.addfinalizer(lambda: KINDS.pop(DoubleThenHalve.name))
    monkeypatch.setitem(lrpc.ops.TABLE, aten.relu,
                        lambda node, ctx: OpInfo(DoubleThenHalve.name, (node.args[0],), nonneg="always"))
    return KINDS[DoubleThenHalve.name]


def _bias_free_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(80, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).eval().double()


ZERO = lrpc.Rules(name="zero", conv=Zero(), linear=Zero(), pool=Zero(), maxpool="winner", start="logit")


def test_a_kind_registered_outside_lrpc_compiles_through_every_stage(request, monkeypatch):
    model = _bias_free_cnn()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    one = x[:1]
    reference = lrpc.compile(model, ZERO, example_input=one)   # the op table's own kind for ReLU: pass
    toy_kind = use_toy_kind(request, monkeypatch)
    explainer = lrpc.compile(model, ZERO, example_input=one)
    relus = [name for name, plan in explainer.plans.items() if kind_of(plan) is toy_kind]
    assert len(relus) == 3 and not any(kind_of(plan) is toy_kind for plan in reference.plans.values())

    exp = explainer(x, target=torch.tensor([0, 2]))
    xg = x.clone().requires_grad_(True)   # LRP-0 on a bias-free ReLU network is gradient × input
    model(xg).gather(1, torch.tensor([[0], [2]])).sum().backward()
    assert torch.allclose(exp.relevance, xg.grad * x, rtol=0, atol=1e-10)

    # accounting: the toy conserves, nothing absorbs, the relevance closes
    assert leaks(exp, tol=1e-9) == [] and exp.absorbed == {}
    assert torch.allclose(exp.relevance.flatten(1).sum(1), exp.start, rtol=1e-12, atol=0)

    # the dump shows the kind and its choice
    graph = build_graph(explainer, exp)
    assert {graph.nodes[name]["kind"] for name in relus} == {toy_kind.name}
    assert serialize(graph, "txt").decode().count("double then halve") == 3
    assert "double then halve" in serialize(graph, "dot").decode()

    # path analyses and receptive fields step through it as through a ReLU
    got, expected = relevance_graph(explainer, one), relevance_graph(reference, one)
    assert got.graph["flows"].keys() == expected.graph["flows"].keys()
    for key, flow in expected.graph["flows"].items():
        assert torch.allclose(torch.as_tensor(got.graph["flows"][key]), torch.as_tensor(flow), rtol=0, atol=1e-12)
    assert torch.equal(deconvnet(explainer, one, "3", [1, 4]), deconvnet(reference, one, "3", [1, 4]))
    second_relu = relus[1]   # conv 3x3 pad 1, max-pool 2, conv 3x3 pad 1: by hand, offset -3, jump 2, size 8
    assert receptive_field(explainer, second_relu).axes == (fields.Axis(-3, 2, 8),) * 2
    assert receptive_field(explainer, second_relu) == receptive_field(reference, second_relu)
