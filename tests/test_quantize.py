import pytest
import torch
import torchvision

import lrpc


def test_heat_quantization_by_hand():
    # min 0, max 7, Q = 8 -> Δ = 1: values floor to integers
    heat = torch.tensor([[0.0, 0.5, 1.9], [3.2, 6.99, 7.0]])
    assert torch.equal(lrpc.heat_quantize(heat, 8), torch.tensor([[0.0, 0.0, 1.0], [3.0, 6.0, 7.0]]))
    # Q = 3 on [−2, 2]: Δ = 2, levels −2, 0, 2
    heat = torch.tensor([[-2.0, -0.1, 0.0], [1.9, 2.0, -1.0]])
    assert torch.equal(lrpc.heat_quantize(heat, 3), torch.tensor([[-2.0, -2.0, 0.0], [0.0, 2.0, -2.0]]))


def test_heat_quantization_is_per_image_and_has_at_most_q_levels():
    torch.manual_seed(0)
    batch = torch.randn(4, 16, 16) * torch.tensor([1.0, 10.0, 0.1, 3.0]).view(4, 1, 1)
    out = lrpc.heat_quantize(batch, 8)
    for b in range(4):
        assert torch.equal(out[b], lrpc.heat_quantize(batch[b], 8))
        assert len(out[b].unique()) <= 8
        step = (batch[b].max() - batch[b].min()) / 7
        assert out[b].min() == batch[b].min()
        assert batch[b].max() - step * 1.0001 <= out[b].max() <= batch[b].max()  # floor may round the top down


def test_constant_map_and_bad_arguments():
    flat = torch.full((5, 5), 3.0)
    assert torch.equal(lrpc.heat_quantize(flat), flat)
    with pytest.raises(ValueError, match="at least 2 levels"):
        lrpc.heat_quantize(flat, 1)
    with pytest.raises(ValueError, match=r"\[H, W\] or a batch \[B, H, W\]"):
        lrpc.heat_quantize(torch.zeros(1, 3, 4, 4))


def test_explanation_heatmap_quantize_option():
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    exp = lrpc.compile(model, rules="otsuki2024", example_input=torch.randn(1, 3, 32, 32))(torch.randn(2, 3, 32, 32))
    heat = exp.heatmap()
    assert heat.shape == (2, 32, 32) and torch.allclose(heat, exp.relevance.sum(1))
    assert torch.equal(exp.heatmap(quantize=8), lrpc.heat_quantize(heat, 8))
