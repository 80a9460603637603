"""Property test: random small networks of every structure (CNN blocks, gates, LayerNorm MLPs, attention over
pixels, layer scale, upsampling) compile, stay finite and conserve (float64, 1e-6).

A fast sample runs by default, the same 12 examples on every run (derandomized); `make test-slow` draws 250
new ones each run."""
import operator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import lrpc
from lrpc.models.testing import randomize_batchnorm

BLOCKS = ("conv", "grouped", "identity", "projection", "functional_add", "cat", "maxpool", "avgpool", "bn",
          "se_gate", "layer_norm_gelu", "upsample", "token_attention", "layer_scale", "transpose_silu")


class RandomCNN(nn.Module):
    """A chain of blocks, each recorded as (kind, modules) and replayed in forward; fx traces the replay."""

    def __init__(self, plan, in_channels=3, classes=4, size=9):
        super().__init__()
        self.kinds = []
        self.layers = nn.ModuleList()
        c = in_channels
        for kind, width, kernel, stride in plan:
            if kind in ("maxpool", "avgpool"):
                if size < 2:
                    continue
                size = -(-size // 2)
            if kind in ("conv", "projection"):
                size = (size - 1) // stride + 1
            width = max(2, width - width % 2)
            if kind == "conv":
                mods = [nn.Conv2d(c, width, kernel, stride, kernel // 2)]
                c = width
            elif kind == "grouped":
                groups = 2 if c % 2 == 0 else 1
                mods = [nn.Conv2d(c, c, kernel, 1, kernel // 2, groups=groups, bias=False)]
            elif kind == "identity":
                mods = [nn.Conv2d(c, c, kernel, 1, kernel // 2), nn.BatchNorm2d(c)]
            elif kind == "projection":
                mods = [nn.Conv2d(c, width, kernel, stride, kernel // 2), nn.Conv2d(c, width, 1, stride)]
                c = width
            elif kind == "functional_add":
                mods = [nn.Conv2d(c, c, 1)]
            elif kind == "cat":
                mods = [nn.Conv2d(c, width // 2, 1), nn.Conv2d(c, width - width // 2, kernel, 1, kernel // 2)]
                c = width
            elif kind == "bn":
                mods = [nn.BatchNorm2d(c)]
            elif kind == "se_gate":
                mods = [nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)]
            elif kind in ("layer_norm_gelu", "transpose_silu"):
                mods = [nn.LayerNorm(c), nn.Linear(c, c)]
            elif kind == "token_attention":
                mods = [nn.Linear(c, 3 * c), nn.Linear(c, c)]
            elif kind == "layer_scale":
                mods = [nn.Conv2d(c, c, kernel, 1, kernel // 2, groups=c)]
                self.register_parameter(f"gamma{len(self.kinds)}", nn.Parameter(torch.rand(c, 1, 1) + 0.1))
            elif kind == "upsample":
                if size > 6:
                    continue
                size *= 2
                mods = []
            else:
                mods = []
            self.kinds.append(kind)
            self.layers.append(nn.ModuleList(mods))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        for i, (kind, mods) in enumerate(zip(self.kinds, self.layers)):
            if kind in ("conv", "grouped"):
                x = torch.relu(mods[0](x))
            elif kind == "identity":
                out = mods[1](mods[0](x))
                out += x
                x = F.relu(out)
            elif kind == "projection":
                x = torch.relu(mods[0](x) + mods[1](x))
            elif kind == "functional_add":
                x = torch.relu(operator.add(x, torch.relu(mods[0](x))))
            elif kind == "cat":
                x = torch.cat([torch.relu(mods[0](x)), torch.relu(mods[1](x))], 1)
            elif kind == "maxpool":
                x = F.max_pool2d(x, 2, ceil_mode=True)
            elif kind == "avgpool":
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            elif kind == "bn":
                x = torch.relu(mods[0](x))
            elif kind == "se_gate":   # squeeze-and-excitation: a sigmoid gate broadcast over the map
                x = x * torch.sigmoid(mods[1](torch.relu(mods[0](x.mean((2, 3), keepdim=True)))))
            elif kind == "layer_norm_gelu":   # a channels-last LayerNorm + MLP, as ConvNeXt writes it
                x = x + F.gelu(mods[1](mods[0](x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)
            elif kind == "transpose_silu":
                tokens = x.flatten(2).transpose(1, 2)
                x = F.silu(mods[1](mods[0](tokens))).transpose(1, 2).reshape(x.shape)
            elif kind == "token_attention":   # single-head attention over the pixels as tokens, residual
                tokens = x.flatten(2).transpose(1, 2)
                q, k, v = mods[0](tokens).chunk(3, -1)
                out = mods[1](F.scaled_dot_product_attention(q, k, v))
                x = x + out.transpose(1, 2).reshape(x.shape)
            elif kind == "layer_scale":
                x = x + getattr(self, f"gamma{i}") * mods[0](x)
            elif kind == "upsample":
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


plans = st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(2, 8), st.sampled_from([1, 3]), st.integers(1, 2)),
                 min_size=1, max_size=6)


def check(plan, seed):
    torch.manual_seed(seed)
    model = randomize_batchnorm(RandomCNN(plan), seed).double().eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    explainer = lrpc.compile(model, rules="default", example_input=x[:1])
    exp = explainer(x)
    assert torch.isfinite(exp.relevance).all() and torch.isfinite(exp.layer_sum_matrix).all()
    assert float(exp.conservation_error().max()) < 1e-6, exp.layer_sums


@settings(max_examples=12, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, seed=st.integers(0, 10_000))
def test_random_cnns_conserve(plan, seed):
    check(plan, seed)


@pytest.mark.slow
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans, seed=st.integers(0, 10_000))
def test_random_cnns_conserve_many(plan, seed):
    check(plan, seed)
