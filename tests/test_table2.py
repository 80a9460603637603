"""The four Table 2 variants on a block small enough to compute by hand.

x = [x0, x1] (two channels, one pixel); the residual branch is a 1x1 conv that swaps and doubles the channels,
h_m = [2·x1, 2·x0]; y = h_m + x; logit = y0 + y1. Starting from the logit, z⁺ on the final linear layer gives
R_y = y. Then, per Eq. 4–6 of the paper:
- (iv) ratio with identity:   R_m = h_m, R_s = x        → R_x = x + (swap of h_m moved back) = 3·x
- (ii) symmetric with identity: R_m = R_s = y/2        → R_x = swap(y)/2 + y/2
- (i), (iii) identity skip silent: R_m = y             → R_x = swap(y)
"""
import pytest
import torch
from torch import nn

import lrpc
from lrpc.rules import ZPlus


class SwapBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.branch.weight.copy_(torch.tensor([[0.0, 2.0], [2.0, 0.0]]).view(2, 2, 1, 1))
            self.head.weight.fill_(1.0)

    def forward(self, x):
        y = torch.relu(self.branch(x) + x)
        return self.head(torch.flatten(y, 1))


X = torch.tensor([1.0, 2.0], dtype=torch.float64)
Y = torch.tensor([5.0, 4.0], dtype=torch.float64)          # [2·x1 + x0, 2·x0 + x1]
EXPECTED = {
    "otsuki2024": (3 * X, torch.tensor([4.0, 2.0])),           # (iv): R at the branch output = h_m
    "otsuki2024-ii": (Y.flip(0) / 2 + Y / 2, Y / 2),           # (ii)
    "otsuki2024-i": (Y.flip(0), Y),                            # (i)
    "otsuki2024-iii": (Y.flip(0), Y),                          # (iii)
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_table2_splits_by_hand(name):
    model = SwapBlock().double().eval()
    # the preset's splitting policy, with a plain z⁺ everywhere so the numbers stay hand-computable
    rules = lrpc.preset(name, start="logit").replace(conv=ZPlus(epsilon=0.0, stabilizer_mode="none"),
                                                     linear=ZPlus(epsilon=0.0, stabilizer_mode="none"), layers=())
    x = X.view(1, 2, 1, 1)
    exp = lrpc.compile(model, rules=rules, example_input=x, keep=["branch"])(x, 0)
    expected_input, expected_branch = EXPECTED[name]
    assert torch.allclose(exp.relevance.flatten(), expected_input.double(), atol=1e-12)
    assert torch.allclose(exp.relevances["branch"].flatten(), expected_branch.double(), atol=1e-12)
    assert float(exp.start) == pytest.approx(9.0)


def test_table2_presets_carry_the_papers_policies():
    policies = {name: (lrpc.preset(name).splitting.mode, lrpc.preset(name).splitting.identity) for name in EXPECTED}
    assert policies == {"otsuki2024": ("ratio", True), "otsuki2024-ii": ("symmetric", True),
                        "otsuki2024-i": ("symmetric", False), "otsuki2024-iii": ("ratio", False)}


def test_ratio_split_guards_zero_over_zero():
    from lrpc.splitting import split_add
    r = torch.tensor([1.0, 2.0])
    zero = torch.zeros(2)
    r0, r1 = split_add(r, zero, zero, mode="ratio", eps=0.0, silent=-1)
    assert torch.equal(r0, r / 2) and torch.equal(r1, r / 2)
