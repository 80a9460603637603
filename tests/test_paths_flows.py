"""Channel flows of lrpc.paths against independent references (float64).

- the rule decomposition reproduces every rule kernel (the kernel itself is the reference);
- flow matrices equal a per-connection LRP reference built from dense layer matrices (tests/reference.dense);
- row sums equal the lower channel's relevance from the compiled module (keep=), column sums the upper
  channel's relevance minus what bias and ε absorb (computed by hand), also across pools and residual adds.
"""
import pytest
import torch
from torch import nn

import lrpc
from lrpc.errors import LrpcError
from lrpc.linear_maps import LINEAR_MAPS
from lrpc.paths import relevance_graph
from lrpc.paths import terms
from lrpc.paths.probe import KernelCall
from lrpc.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, WSquare, ZBox, Zero, ZPlus

from reference import dense

TOL = 1e-9
LOW = (-1.5, -1.0, -2.0)
HIGH = (2.0, 1.5, 1.0)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """The tensors here are tiny: extra threads only add synchronisation, which is slow on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_cnn(pool: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
              nn.Conv2d(5, 6, 3, padding=1), nn.ReLU()]
    layers += [pool, nn.Flatten(), nn.Linear(24, 7)] if pool is not None else [nn.Flatten(), nn.Linear(96, 7)]
    layers += [nn.ReLU(), nn.Linear(7, 3)]
    model = nn.Sequential(*layers).eval().double().requires_grad_(False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.normal_(0, 0.1)
    return model


def image(seed: int = 1, size: int = 8) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


MONTAVON_LIKE = lrpc.Rules(
    name="montavon-like", conv=Epsilon(0.25, stabilizer_mode="rms"), linear=Zero(), pool=ZPlus(epsilon=1e-9),
    layers=(("first", ZBox(LOW, HIGH, epsilon=1e-9)), ("_3", Gamma(0.25, epsilon=1e-9, generalized=False))),
    maxpool="winner", start="logit")
ZPLUS_FALLBACK = ZPlus(epsilon=1e-9, bias=False, fallback=True)
ZPLUS_RULES = lrpc.Rules(name="zplus", conv=ZPLUS_FALLBACK, linear=ZPLUS_FALLBACK, pool=ZPLUS_FALLBACK,
                         maxpool="winner")


# ---------------------------------------------------------------------------------------- the decomposition
KERNEL_RULES = [Zero(), Epsilon(0.1), Epsilon(0.25, stabilizer_mode="rms"), ZPlus(), ZPlus(bias=False, fallback=True),
                ZPlus(epsilon=1e-5, stabilizer_mode="add", bias=False, ones_input=True), AlphaBeta(2.0, 1.0),
                Gamma(0.25), Gamma(0.25, generalized=False), ZBox(-1.5, 2.0), Flat(), WSquare()]


@pytest.mark.parametrize("rule", KERNEL_RULES, ids=lambda r: r.describe())
@pytest.mark.parametrize("map_name", ["conv", "linear"])
@pytest.mark.parametrize("inputs", ["signed", "nonneg", "empty windows"])
def test_decomposition_reproduces_the_rule_kernel(rule, map_name, inputs):
    g = torch.Generator().manual_seed(3)
    if map_name == "conv":
        a = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64)
        weight, args = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64), ((2, 2), (1, 1), (1, 1), 1)
    else:
        a = torch.randn(1, 5, generator=g, dtype=torch.float64)
        weight, args = torch.randn(4, 5, generator=g, dtype=torch.float64), ()
    nonneg = inputs != "signed"
    if nonneg:
        a = a.clamp(min=0)
        a[..., 0] = 0.0  # a few zero inputs, so some outputs have no positive contribution
    if inputs == "empty windows":  # some outputs see only zeros: no contribution of either sign
        if map_name == "conv":
            a[..., :4, :4] = 0.0
        else:
            a.zero_()
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    m = LINEAR_MAPS[map_name]
    out = m.forward(a, weight, bias, args)
    r = torch.randn(out.shape, generator=g, dtype=torch.float64)
    consts = tuple(rule.constants(weight, bias).values())
    kwargs = {"map": map_name, "args": args, "nonneg": nonneg, **rule.kernel_kwargs()}
    expected = rule.kernel(a, out, r, *consts, **kwargs)
    parts = terms.decompose(KernelCall(rule.kernel, consts, kwargs), a, out, "layer")
    if getattr(rule, "fallback", False) and inputs == "empty windows":
        assert len(parts) == 3  # positive part, through the negative part, evenly over the window
    assert torch.allclose(terms.message(parts, r, map_name, args), expected, rtol=0, atol=TOL)


def test_a_rule_without_decomposition_is_refused_by_name():
    call = KernelCall(Pass.kernel, (), {"map": "conv", "args": ((1, 1), (0, 0), (1, 1), 1), "nonneg": True})
    with pytest.raises(LrpcError, match="pass_kernel"):
        terms.decompose(call, torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3), "conv7")


# ------------------------------------------------------------------------------ per-connection LRP reference
def _stab(z, eps):
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def connection_relevance(rule: str, W, b, a, r, **p):
    """M [n_out, n_in]: relevance input i receives from output j, from the textbook per-connection formulas."""
    c = W * a[None, :]
    if rule == "zero":
        num, den = c, c.sum(1) + b
    elif rule == "epsilon_rms":
        z = c.sum(1) + b
        num, den = c, z + p["eps"] * z.square().mean().sqrt() + 1e-9
    elif rule == "gamma_original":
        num = c + p["gamma"] * c.clamp(min=0)
        den = _stab(num.sum(1) + b + p["gamma"] * b.clamp(min=0), p["eps"])
    elif rule == "zbox":
        num = c - W.clamp(min=0) * p["low"][None, :] - W.clamp(max=0) * p["high"][None, :]
        den = _stab(num.sum(1), p["eps"])
    elif rule == "zplus_fallback":  # z+ without bias; an output with no positive contribution uses its negative
        positive = c.clamp(min=0)     # ones, one with no contribution at all spreads evenly over its window
        orphan = (positive.sum(1) == 0)[:, None]
        num = torch.where(orphan, c.clamp(max=0), positive)
        empty = (num.sum(1) == 0)[:, None]
        num = torch.where(empty, (W != 0).to(W), num)
        den = torch.where(empty[:, 0], num.sum(1), _stab(num.sum(1), p["eps"]))
    else:
        raise ValueError(rule)
    factor = torch.where(den == 0, torch.zeros_like(den), r / torch.where(den == 0, torch.ones_like(den), den))
    return num * factor[:, None]


def reference_flows(M, lower_channels, upper_channels):
    """F [C_lower, C_upper] from a per-connection matrix over flattened [C, positions] tensors."""
    return M.reshape(upper_channels, -1, lower_channels, M.shape[1] // lower_channels).sum((1, 3)).T


def layer_matrix(module, in_shape):
    forward = (lambda t: nn.functional.conv2d(t, module.weight, None, module.stride, module.padding)) \
        if isinstance(module, nn.Conv2d) else (lambda t: t @ module.weight.T)
    return dense(forward, in_shape)


CASES = {  # layer -> (rule of the reference, its parameters) for each rule set
    "montavon-like": {"_0": ("zbox", {"eps": 1e-9}), "_3": ("gamma_original", {"gamma": 0.25, "eps": 1e-9}),
                      "_5": ("epsilon_rms", {"eps": 0.25}), "_8": ("zero", {}), "_10": ("zero", {})},
    "zplus": {name: ("zplus_fallback", {"eps": 1e-9}) for name in ("_0", "_3", "_5", "_8", "_10")},
}


@pytest.mark.parametrize("rules", list(CASES))
def test_flow_matrices_equal_the_per_connection_reference(rules):
    model, x = tiny_cnn(), image()
    rule_set = MONTAVON_LIKE if rules == "montavon-like" else ZPLUS_RULES
    layers = ["_0", "_3", "_5", "_8", "_10"]
    inputs = {"_0": "input_1", "_3": "_2", "_5": "_4", "_8": "_7", "_10": "_9"}
    explainer = lrpc.compile(model, rules=rule_set, example_input=x, keep=layers + list(inputs.values()))
    exp = explainer(x)
    graph = relevance_graph(explainer, x, max_in_edges=None)
    lower = {"_0": "input", "_3": "_0", "_5": "_3", "_8": "_5", "_10": "_8"}
    for layer in layers:
        module = model[int(layer[1:])]
        a = exp.activations[inputs[layer]][0]
        r = exp.relevances[layer][0].reshape(-1)
        rule, params = CASES[rules][layer]
        if rule == "zbox":
            shape = (-1, *([1] * (a.dim() - 1)))
            params = {**params, "low": torch.tensor(LOW, dtype=a.dtype).reshape(shape).expand_as(a).reshape(-1),
                      "high": torch.tensor(HIGH, dtype=a.dtype).reshape(shape).expand_as(a).reshape(-1)}
        W = layer_matrix(module, tuple(a.shape))
        b = module.bias.repeat_interleave(W.shape[0] // module.bias.numel())
        M = connection_relevance(rule, W, b, a.reshape(-1), r, **params)
        lower_channels = a.shape[0] if a.dim() == 3 else {"_8": 6, "_10": 7}[layer]
        expected = reference_flows(M, lower_channels, module.weight.shape[0])
        got = graph.graph["flows"][lower[layer], layer]
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, rtol=0, atol=TOL * float(expected.abs().max())), layer


def test_row_sums_are_the_lower_relevance_and_columns_lose_only_bias_and_epsilon():
    """ε on every layer: what a channel does not pass down is Σ_q R·(b + ε·sign z)/(z + ε·sign z)."""
    model, x = tiny_cnn(), image()
    eps = 0.05
    rules = lrpc.Rules(name="epsilon", conv=Epsilon(eps), linear=Epsilon(eps), pool=Epsilon(eps), start="logit")
    layers = ["_0", "_3", "_5", "_8", "_10"]
    explainer = lrpc.compile(model, rules=rules, example_input=x, keep=layers)
    exp = explainer(x)
    graph = relevance_graph(explainer, x, max_in_edges=None)
    flows = graph.graph["flows"]
    lower_relevance = {"input": exp.relevance[0].sum((1, 2))}
    for layer in layers:
        r = exp.relevances[layer][0]
        lower_relevance[layer] = r.reshape(r.shape[0], -1).sum(1)
    for (lower, upper), f in flows.items():
        assert torch.allclose(f.sum(1), lower_relevance[lower], rtol=0, atol=TOL), (lower, upper)
    for (lower, upper), f in flows.items():
        if upper == "output":
            continue
        z = exp.activations[upper][0]
        r = exp.relevances[upper][0]
        stabilised = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)
        bias = model[int(upper[1:])].bias.reshape(-1, *([1] * (z.dim() - 1)))
        absorbed = (r * (bias + stabilised - z) / stabilised).reshape(z.shape[0], -1).sum(1)
        assert torch.allclose(f.sum(0), lower_relevance[upper] - absorbed, rtol=0, atol=TOL), upper
    assert torch.allclose(flows["_10", "output"][:, 0], exp.logits[0] * (torch.arange(3) == exp.target[0]))


@pytest.mark.parametrize("preset", ["montavon-vgg16", "otsuki2024", "epsilon-gamma-box", "epsilon-plus"])
def test_row_sums_hold_across_pools_averaging_and_folded_batchnorm(preset):
    """Lossy 2x2 average stand-ins and adaptive pools sit between layers: the transfer keeps rows exact."""
    model, x = tiny_cnn(pool=nn.AdaptiveAvgPool2d(2)), image()
    kwargs = {"low": LOW, "high": HIGH} if preset == "epsilon-gamma-box" else {}
    layers = ["_0", "_3", "_5", "_9", "_11"]
    explainer = lrpc.compile(model, rules=lrpc.preset(preset, **kwargs), example_input=x, keep=layers)
    exp = explainer(x)
    flows = relevance_graph(explainer, x).graph["flows"]
    rows: dict[str, torch.Tensor] = {}
    for (lower, _), f in flows.items():
        rows[lower] = rows.get(lower, 0) + f.sum(1)
    assert torch.allclose(rows["input"], exp.relevance[0].sum((1, 2)), rtol=0, atol=TOL)
    for layer in layers:
        r = exp.relevances[layer][0]
        assert torch.allclose(rows[layer], r.reshape(r.shape[0], -1).sum(1), rtol=0, atol=TOL), layer


class TinyResNet(nn.Module):
    """Stem, two identity blocks, a projection block, GAP and fc."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.a1, self.a2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.c1, self.c2, self.proj = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(x + self.a2(torch.relu(self.a1(x))))
        x = torch.relu(x + self.b2(torch.relu(self.b1(x))))
        x = torch.relu(self.proj(x) + self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


RESNET_LAYERS = ["stem", "a1", "a2", "b1", "b2", "c1", "c2", "proj", "fc"]


@pytest.mark.parametrize("preset", ["default", "otsuki2024", "epsilon-plus"])
def test_residual_merges_split_exactly(preset):
    """A channel feeding several later layers (through skips) receives, summed over its edges, exactly its
    relevance: each edge carries what the merge sends along it."""
    model = TinyResNet().eval().double()
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    explainer = lrpc.compile(model, rules=preset, example_input=x, keep=RESNET_LAYERS)
    exp = explainer(x)
    graph = relevance_graph(explainer, x, max_in_edges=None)
    producers = {lower for lower, _ in graph.graph["flows"]}
    assert {"stem", "a2", "b2"} <= {l for l, u in graph.graph["flows"] if u == "c1"}  # skips reach c1's input
    for layer in producers - {"input"}:
        rows = sum(f.sum(1) for (lower, _), f in graph.graph["flows"].items() if lower == layer)
        r = exp.relevances[layer][0]
        assert torch.allclose(rows, r.reshape(r.shape[0], -1).sum(1), rtol=0, atol=TOL), layer


def test_activation_flows_are_contributions_to_positive_outputs():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules="default", example_input=x, keep=["_2", "_3"])
    exp = explainer(x)
    graph = relevance_graph(explainer, x, mode="activation", max_in_edges=None)
    a, out = exp.activations["_2"][0], exp.activations["_3"][0]
    W = layer_matrix(model[3], tuple(a.shape))
    M = W * a.reshape(-1)[None, :] * (out.reshape(-1) > 0).to(W)[:, None]
    expected = reference_flows(M, 4, 5)
    assert torch.allclose(graph.graph["flows"]["_0", "_3"], expected, rtol=0, atol=TOL)
    node = graph.nodes["_3", 2]
    assert node["total"] == pytest.approx(float(out[2].clamp(min=0).sum()))


def test_graph_attributes_and_pruning():
    model, x = tiny_cnn(), image()
    explainer = lrpc.compile(model, rules="default", example_input=x)
    full = relevance_graph(explainer, x, max_in_edges=None)
    pruned = relevance_graph(explainer, x, max_in_edges=2)
    assert full.graph["layers"] == ["input", "_0", "_3", "_5", "_8", "_10", "output"]
    assert all(pruned.in_degree(n) <= 2 for n in pruned)
    for u, v, data in full.edges(data=True):
        assert data["flow"] != 0
        assert data["frac"] == pytest.approx(data["flow"] / full.nodes[v]["total"])
        if data["frac"] > 0:
            assert data["cost"] == pytest.approx(-torch.log(torch.tensor(data["frac"])).item())
    # the strongest incoming edges survive pruning, with the same attributes
    for v in pruned:
        kept = sorted((d["flow"] for _, _, d in full.in_edges(v, data=True)), reverse=True)[:2]
        assert sorted((d["flow"] for _, _, d in pruned.in_edges(v, data=True)), reverse=True) == kept
    assert list(full.predecessors("output")) == [("_10", int(explainer(x).target[0]))]


def test_path_analysis_refuses_what_it_cannot_fold():
    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))

    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(LrpcError, match="cat"):
        relevance_graph(lrpc.compile(Concat().eval(), example_input=x), x)
    explainer = lrpc.compile(tiny_cnn().float(), example_input=x)
    with pytest.raises(LrpcError, match="one image"):
        relevance_graph(explainer, torch.randn(2, 3, 8, 8))
    with pytest.raises(LrpcError, match="mode"):
        relevance_graph(explainer, x, mode="gradient")
    with pytest.raises(LrpcError, match="max_in_edges"):
        relevance_graph(explainer, x, max_in_edges=0)
    with pytest.raises(TypeError, match="Explainer"):
        relevance_graph(tiny_cnn(), x)
