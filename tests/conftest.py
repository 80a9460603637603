import pytest
import torch
from torch import nn

torch.set_num_threads(2)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine parameters, so BN is not the identity it is at initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
