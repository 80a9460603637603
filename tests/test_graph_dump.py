"""Graph dump and debugging (lrpc.debug): the paired graph, its formats, leaks and the debug mode.

Expectations come from the architecture itself (which blocks have a downsample module, how many convs the model
has), from hand computations (the relevance a bias absorbs) and from networkx / graphviz reading the dumps back.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck

import lrpc
from lrpc.cli import main
from lrpc.debug import build_graph
from lrpc.rules import Epsilon, Zero

SIZE = 64   # small inputs keep ResNet-50 fast; every stage still has spatial extent


def _compile(factory, rules="default", dtype=torch.float32, **kw):
    torch.manual_seed(0)
    model = factory().eval().to(dtype)
    return model, lrpc.compile(model, rules, example_input=torch.randn(1, 3, SIZE, SIZE, dtype=dtype), **kw)


@pytest.fixture(scope="module")
def r50():
    return _compile(resnet50)


@pytest.fixture(scope="module")
def r18():
    return _compile(resnet18)


@pytest.fixture(scope="module")
def r18_explained(r18):
    _, explainer = r18
    return explainer, explainer(torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))


def _residual_blocks(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))}


# ------------------------------------------------------------------------------------------- graph content
def test_resnet50_every_conv_and_linear_has_a_rule_every_add_a_policy(r50):
    model, explainer = r50
    g = explainer.graph
    convs = [n for n, a in g.nodes(data=True) if a.get("module_type") == "Conv2d"]
    linears = [n for n, a in g.nodes(data=True) if a.get("module_type") == "Linear"]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 53
    assert len(linears) == 1
    zplus = lrpc.preset("default").conv.describe()   # what the default preset promises
    for name in convs + linears:
        assert g.nodes[name]["kind"] == "linear" and g.nodes[name]["rule"] == zplus, name
    adds = [n for n, a in g.nodes(data=True) if a["kind"] == "add"]
    assert len(adds) == len(_residual_blocks(model)) == 16
    for name in adds:
        a = g.nodes[name]
        assert a["splitting"] == "ratio(with identity)"
        assert a["skip_kind"] in ("identity", "projection")
    # every forward node is there once, with its output shape, and edges follow the data flow
    assert g.nodes["x"]["shape"] == [1, 3, SIZE, SIZE]
    assert g.nodes["fc"]["shape"] == [1, 1000]
    assert set(g.predecessors("fc")) == {"flatten"} and set(g.successors("x")) == {"conv1"}
    assert nx.is_directed_acyclic_graph(g)


@pytest.mark.parametrize("which", ["r18", "r50"])
def test_identity_and_projection_skips_match_the_architecture(which, request):
    model, explainer = request.getfixturevalue(which)
    g = explainer.graph
    blocks = _residual_blocks(model)
    expected_projections = {"layer2.0", "layer3.0", "layer4.0"} | ({"layer1.0"} if which == "r50" else set())
    assert {name for name, block in blocks.items() if block.downsample is not None} == expected_projections
    last_bn = "bn3" if which == "r50" else "bn2"
    by_module = {a.get("module"): n for n, a in g.nodes(data=True) if a["kind"] != "add"}
    seen = set()
    for name, a in g.nodes(data=True):
        if a["kind"] != "add":
            continue
        block = a["module"]
        seen.add(block)
        assert a["skip_kind"] == ("projection" if block in expected_projections else "identity"), block
        assert g.nodes[a["main_input"]]["module"] == f"{block}.{last_bn}"
        if block in expected_projections:
            assert g.nodes[a["skip_input"]]["module"] == f"{block}.downsample.1"
        else:   # the identity skip is the block's own input: what feeds its first conv
            assert a["skip_input"] == next(g.predecessors(by_module[f"{block}.conv1"]))
        roles = {g.edges[u, name]["role"]: u for u in g.predecessors(name)}
        assert roles == {"skip": a["skip_input"], "main": a["main_input"]}
    assert seen == set(blocks)
    for name, a in g.nodes(data=True):   # clusters: a node inside a block's module belongs to that block
        owner = next((b for b in blocks if (a.get("module") or "").startswith(b + ".")), None)
        assert a.get("block") == (owner or (a.get("module") if a.get("module") in blocks else None)), name


def test_relevance_pairing_names_nodes_of_the_generated_module(r18):
    _, explainer = r18
    generated = {n.name for n in explainer.module.graph.nodes}
    g = explainer.graph
    for name, a in g.nodes(data=True):
        assert a["relevance_node"] in generated, name
        assert set(a["message_nodes"]) <= generated
    assert g.nodes["x"]["message_nodes"] == []                    # the input is the sink
    assert len(g.nodes["add"]["message_nodes"]) == 2              # one message per operand
    assert {g.edges[u, "add"]["message"] for u in g.predecessors("add")} == set(g.nodes["add"]["message_nodes"])


# ------------------------------------------------------------------------------------------------- formats
def test_json_round_trips_through_networkx(r18_explained, tmp_path):
    explainer, exp = r18_explained
    g = build_graph(explainer, exp)
    path = exp.dump(tmp_path / "r18.json")
    back = nx.node_link_graph(json.loads(path.read_text()))
    assert list(back.nodes(data=True)) == list(g.nodes(data=True))
    assert list(back.edges(data=True)) == list(g.edges(data=True))
    assert back.graph == g.graph
    assert back.nodes["conv1"]["rule"].startswith("zplus(") and isinstance(back.nodes["conv1"]["relevance"], float)


def test_graphml_reads_back_with_the_same_structure(r18, tmp_path):
    _, explainer = r18
    g = explainer.graph
    back = nx.read_graphml(explainer.dump(tmp_path / "r18.graphml"))
    assert set(back.nodes) == set(g.nodes) and set(back.edges) == set(g.edges)
    for name, a in g.nodes(data=True):
        assert back.nodes[name]["kind"] == a["kind"]
        assert json.loads(back.nodes[name]["shape"]) == a["shape"]
        assert back.nodes[name].get("rule") == a.get("rule")


def test_text_table_is_aligned_and_lists_every_node(r18_explained, tmp_path):
    explainer, exp = r18_explained
    lines = exp.dump(tmp_path / "r18.txt").read_text().splitlines()
    header, rows = lines[1], lines[2:]
    assert len(rows) == explainer.graph.number_of_nodes()
    rule_column = header.index("rule / policy")
    conv = next(r for r in rows if r.startswith("conv1 "))
    assert conv[rule_column:].startswith("zplus(")
    add = next(r for r in rows if r.startswith("add "))
    assert add[rule_column:].startswith("ratio(with identity); identity skip=")


def test_dot_output_marks_blocks_and_branches_and_dot_accepts_it(r18_explained, tmp_path):
    explainer, exp = r18_explained
    g = explainer.graph
    dot = exp.dump(tmp_path / "r18.dot").read_text()
    assert dot.startswith("digraph lrpc {") and dot.count("{") == dot.count("}")
    for block in ("layer1.0", "layer1.1", "layer2.0", "layer4.1"):
        assert f'subgraph "cluster_{block}" {{' in dot
    for name in g.nodes:
        assert re.search(rf'^\s*"{name}" \[label=', dot, re.M), name
    for name, a in g.nodes(data=True):
        if a["kind"] == "add":
            assert f'"{a["skip_input"]}" -> "{name}" [label="skip ({a["skip_kind"]})"' in dot
            assert f'"{a["main_input"]}" -> "{name}" [label="main"' in dot
    assert dot.count("->") == g.number_of_edges()
    if shutil.which("dot") is None:
        assert not os.environ.get("CI"), "CI must install graphviz so that dot checks the DOT output"
        with pytest.raises(lrpc.LrpcError, match="install graphviz"):
            exp.dump(tmp_path / "r18.svg")
        return
    checked = subprocess.run(["dot", "-Tcanon"], input=dot.encode(), capture_output=True)
    assert checked.returncode == 0 and not checked.stderr, checked.stderr.decode()
    svg = ET.parse(exp.dump(tmp_path / "r18.svg")).getroot()
    clusters = [e for e in svg.iter("{http://www.w3.org/2000/svg}g") if e.get("class") == "cluster"]
    assert len(clusters) == 8     # one per BasicBlock
    assert exp.dump(tmp_path / "r18.png").read_bytes()[:4] == b"\x89PNG"


def test_rendering_without_graphviz_says_to_install_it(r18, tmp_path, monkeypatch):
    _, explainer = r18
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(lrpc.LrpcError, match="install graphviz"):
        explainer.dump(tmp_path / "r18.svg")
    with pytest.raises(lrpc.LrpcError, match=r"\.graphml"):
        explainer.dump(tmp_path / "r18.pdf")


# ----------------------------------------------------------------------------------------- relevance, leaks
def test_bias_absorbs_what_the_hand_computation_says():
    # one linear layer, LRP-0, start = the target logit z_t: R_i = a_i w_ti, so Σ R_i = z_t − b_t and the bias
    # absorbs exactly b_t
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double().eval()
    x = torch.randn(2, 5, dtype=torch.double)
    explainer = lrpc.compile(model, lrpc.Rules(linear=Zero(), start="logit"), example_input=x)
    exp = explainer(x, target=torch.tensor([2, 0]))
    b = model[0].bias.detach()
    for sample, t in enumerate([2, 0]):
        node = build_graph(explainer, exp, sample=sample).nodes["_0"]
        assert node["absorbs"] == "bias"
        assert node["absorbed"] == pytest.approx(float(b[t]), abs=1e-12)
        assert node["delta"] == pytest.approx(-float(b[t]), abs=1e-12)
        assert node["relevance"] == pytest.approx(float(exp.logits[sample, t]), abs=1e-12)
    mean = build_graph(explainer, exp).nodes["_0"]
    assert mean["absorbed"] == pytest.approx(float(b[[2, 0]].mean()), abs=1e-12)


def test_otsuki_maxpool_stand_in_leaks_and_default_does_not():
    torch.manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.double)
    _, otsuki = _compile(resnet18, "otsuki2024", torch.double, keep=["relu", "maxpool"])
    exp = otsuki(x)
    found = exp.leaks(1e-6)
    assert found[0].node == "maxpool" and found[0].kind == "maxpool"
    assert [leak.size for leak in found] == sorted((leak.size for leak in found), reverse=True)
    # independent of the cut bookkeeping: relu feeds only the pool, so what the pool emits is relu's relevance
    emitted = exp.relevances["relu"].sum((1, 2, 3))
    received = exp.relevances["maxpool"].sum((1, 2, 3))
    torch.testing.assert_close(found[0].delta, emitted - received)
    assert found[0].size == pytest.approx(float(((emitted - received).abs() / exp.start.abs()).max()))
    _, default = _compile(resnet18, "default", torch.double)
    assert default(x).leaks(1e-6) == []


def test_deltas_add_up_to_the_relevance_that_reaches_the_input(r18_explained):
    explainer, exp = r18_explained
    g = build_graph(explainer, exp, sample=1)
    total_delta = sum(a["delta"] for _, a in g.nodes(data=True))
    assert float(exp.relevance[1].sum()) == pytest.approx(float(exp.start[1]) + total_delta, rel=1e-4)


# ------------------------------------------------------------------------------------------------ debug mode
def test_debug_mode_names_the_conv_whose_weights_hold_a_nan():
    model, explainer = _compile(resnet18, debug=True)
    x = torch.randn(1, 3, SIZE, SIZE)
    clean = explainer(x)
    _, plain = _compile(resnet18)
    torch.testing.assert_close(clean.relevance, plain(x).relevance)   # the checks pass tensors through
    with torch.no_grad():
        model.layer2[1].conv1.weight[3, 5, 1, 1] = float("nan")
    with pytest.raises(lrpc.LrpcError, match=r"forward activation at node 'layer2_1_conv1' has \d+ NaN"):
        explainer(x)


def test_debug_mode_names_the_node_whose_relevance_op_makes_a_nan():
    broken = lrpc.preset("default").layers + (("layer3.0.conv2", Epsilon(epsilon=float("nan"))),)
    rules = lrpc.preset("default", layers=broken)
    _, explainer = _compile(resnet18, rules, debug=True)
    with pytest.raises(lrpc.LrpcError, match="relevance message to 'layer3_0_relu' at node 'layer3_0_conv2'"):
        explainer(torch.randn(1, 3, SIZE, SIZE))
    _, silent = _compile(resnet18, rules)
    assert torch.isnan(silent(torch.randn(1, 3, SIZE, SIZE)).relevance).all()


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_dump_by_architecture_name_and_by_factory(tmp_path):
    out = tmp_path / "r18.json"
    assert main(["dump", "resnet18", "--input-shape", "1,3,32,32", "-o", str(out)]) == 0
    g = nx.node_link_graph(json.loads(out.read_text()))
    assert g.graph["input_shape"] == [1, 3, 32, 32] and g.nodes["layer2_0_downsample_0"]["kind"] == "linear"
    assert main(["dump", "lrpc.models:resnet18", "--format", "graphml", "--rules", "otsuki2024",
                 "--input-shape", "1,3,32,32", "-o", str(tmp_path / "r18.xml")]) == 0
    assert nx.read_graphml(tmp_path / "r18.xml").graph["rules"] == "otsuki2024"


def test_cli_dump_errors_name_the_problem(capsys):
    assert main(["dump", "no_such_model"]) == 1
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert main(["dump", "resnet18", "-o", "graph.pdf"]) == 1
    assert "cannot tell the format from -o graph.pdf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dump", "resnet18", "--input-shape", "1,3,x"])
    assert "--input-shape wants positive integers" in capsys.readouterr().err


def test_python_dash_m_lrpc_dump_with_leaks():
    done = subprocess.run([sys.executable, "-m", "lrpc", "dump", "resnet18", "--format", "txt", "--input-shape",
                           "1,3,32,32", "--explain", "--rules", "otsuki2024"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# lrpc graph: rules=otsuki2024") and "maxpool (maxpool) loses" in done.stderr
