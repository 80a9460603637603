"""Receptive fields from the graph against the gradient support of single output positions.

The gradient of one position of a layer with respect to the input is non-zero exactly on the pixels that position
depends on (random weights, no ReLU, no max-pool, so no gradient is gated off), and the box computed from the
graph's kernels, strides, paddings and dilations must be the bounding box of that support.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from lrpc.receptive_field import receptive_field


class Geometry(nn.Module):
    """Strides, paddings, a dilation, an explicit zero pad, an average pool, a strided residual and a max-pool
    (swapped for an average pool of the same geometry where the gradient is taken)."""

    def __init__(self, maxpool: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 5, stride=2, padding=1)
        self.pool = (nn.MaxPool2d if maxpool else nn.AvgPool2d)(3, stride=2, padding=1)
        self.dilated = nn.Conv2d(4, 4, 3, dilation=2, padding=0)
        self.main = nn.Conv2d(4, 6, (3, 1), stride=(2, 1), padding=(1, 0))
        self.shortcut = nn.Conv2d(4, 6, 1, stride=(2, 1))
        self.avg = nn.AvgPool2d(2, stride=1)
        self.head = nn.Linear(6, 2)

    def features(self, x):
        x = self.pool(self.stem(x))
        x = self.dilated(F.pad(x, (2, 0, 1, 1)))
        return self.avg(self.main(x) + self.shortcut(x))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def support_box(model: nn.Module, x: torch.Tensor, node_output, position: tuple[int, int]) -> np.ndarray:
    x = x.clone().requires_grad_(True)
    out = node_output(model, x)
    out[0, :, position[0], position[1]].sum().backward()
    rows, columns = np.nonzero(x.grad[0].abs().sum(0).numpy())
    return np.array([[rows.min(), rows.max() + 1], [columns.min(), columns.max() + 1]])


def test_boxes_equal_gradient_support_of_every_position():
    torch.manual_seed(0)
    graph_model = Geometry(maxpool=True).eval()
    gradient_model = Geometry(maxpool=False).eval()
    gradient_model.load_state_dict(graph_model.state_dict())
    x = torch.randn(1, 3, 41, 37)
    explainer = lrpc.compile(graph_model, "default", example_input=x)
    last = [name for name in explainer.layer_names if explainer.plans[name].module == "avg"][-1]
    field = receptive_field(explainer, last)
    grid = tuple(gradient_model.features(x).shape[2:])
    assert field.grid == grid and field.image == (41, 37)
    boxes = field.boxes(np.arange(np.prod(grid)))
    for flat, box in enumerate(boxes):
        position = np.unravel_index(flat, grid)
        want = support_box(gradient_model, x, lambda m, t: m.features(t), position)
        np.testing.assert_array_equal(box, want, err_msg=f"position {position}")
    # the true max-pool's gradient picks one input per window: its support lies inside the box
    for flat in (0, len(boxes) - 1):
        position = np.unravel_index(flat, grid)
        inside = support_box(graph_model, x, lambda m, t: m.features(t), position)
        assert (inside[:, 0] >= boxes[flat][:, 0]).all() and (inside[:, 1] <= boxes[flat][:, 1]).all()


def test_groundtruth_resnet_and_positions_after_global_pooling():
    from lrpc.data import GROUNDTRUTH_IMAGE_SIZE as size, groundtruth_model

    model = groundtruth_model()
    explainer = lrpc.compile(model, "default", example_input=torch.zeros(1, 3, size, size))
    field = receptive_field(explainer, "layer3_1_relu_2")
    assert field.grid == (4, 4)
    box = field.boxes([5])[0]   # position (1, 1)

    stages = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                           model.layer3)
    torch.manual_seed(0)
    # ReLUs and the max-pool gate gradients off, so the union of the supports over many inputs stands for it
    union = np.zeros((size, size), bool)
    for _ in range(8):
        x = torch.randn(1, 3, size, size, requires_grad=True)
        stages(x)[0, :, 1, 1].sum().backward()
        union |= x.grad[0].abs().sum(0).numpy() > 0
    rows, columns = np.nonzero(union)
    assert box[0, 0] <= rows.min() and rows.max() < box[0, 1]
    assert box[1, 0] <= columns.min() and columns.max() < box[1, 1]

    whole = receptive_field(explainer, "flatten")
    assert whole.grid == () and whole.boxes([0]).tolist() == [[[0, size], [0, size]]]
    with pytest.raises(lrpc.LrpcError, match="not a node"):
        receptive_field(explainer, "layer9")
