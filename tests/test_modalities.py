"""Audio, time-series, video and volume models: compiled on one sample, explained on a batch of three.

For every model of ``modality_zoo`` (third-party definitions from torchvision and Hugging Face, and two of our
own): the explanation of a batch of three equals the three single-sample explanations row by row (relevance,
start, every layer sum), the accounting closes per sample in float64 (input relevance + absorbed == start), the
relevance has the input's shape and ``exp.heatmap()`` the modality's view. Models folding frames into the batch
([B·T, ...]) are checked against a spelling without the fold, and a model that mixes samples is refused.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpc
from modality_zoo import SLOW, ZOO, build

HEATMAP_SHAPE = {   # modality -> the heatmap of an input [B, *sample]
    "audio": lambda x: (x.shape[0], x.shape[-1]),
    "spectrogram": lambda x: tuple(x.shape),
    "timeseries": lambda x: tuple(x.shape),
    "video": None,   # per model: the channel axis is 1 (torchvision) or 2 (Hugging Face)
    "volume": lambda x: (x.shape[0], *x.shape[2:]),
}


def _batch_of_three(x1: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn((2, *x1.shape[1:]), generator=generator, dtype=x1.dtype)
    return torch.cat([x1, x1 + 0.5 * noise[:1], noise[1:]])


def _check_batch_equals_single_samples(explainer, x):
    exp = explainer(x)
    assert exp.relevance.shape == x.shape
    closed = exp.relevance.flatten(1).sum(1) + sum(exp.absorbed.values(), torch.zeros_like(exp.start))
    torch.testing.assert_close(closed, exp.start, rtol=1e-9, atol=1e-12)
    for k in range(x.shape[0]):
        single = explainer(x[k:k + 1], target=exp.target[k:k + 1])
        torch.testing.assert_close(exp.relevance[k:k + 1], single.relevance, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(exp.layer_sum_matrix[k:k + 1], single.layer_sum_matrix, rtol=1e-7, atol=1e-12)
    return exp


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in ZOO])
def test_model_compiled_on_one_sample_explains_a_batch_of_three_like_three_single_samples(name):
    model, x1 = build(name)
    explainer = lrpc.compile(model, "default", example_input=x1)
    exp = _check_batch_equals_single_samples(explainer, _batch_of_three(x1))
    modality = ZOO[name][0]
    x = exp.relevance
    expected = HEATMAP_SHAPE[modality](x) if HEATMAP_SHAPE[modality] else \
        tuple(s for k, s in enumerate(x.shape) if k != (2 if x.shape[2] == 3 else 1))
    assert tuple(exp.heatmap().shape) == expected


class FrameFolding(nn.Module):
    """A video classifier that folds frames into the batch, [B, T, C, H, W] -> [B·T, C, H, W], and back;
    ``time_major`` folds [T·B] instead; ``folded=False`` spells the same model with a 3-D conv of depth 1."""

    def __init__(self, time_major: bool = False, folded: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.time_major, self.folded = time_major, folded

    def forward(self, x):
        b, t = x.shape[:2]
        if not self.folded:
            h = F.conv3d(x.transpose(1, 2), self.conv.weight.unsqueeze(2), self.conv.bias, padding=(0, 1, 1))
            return self.head(F.relu(h).amax((3, 4)).mean(2))
        frames = x.transpose(0, 1) if self.time_major else x
        h = F.relu(self.conv(frames.reshape(b * t, *x.shape[2:]))).amax((2, 3))      # [B·T, 4]
        h = h.view(t, b, 4).transpose(0, 1) if self.time_major else h.view(b, t, 4)
        return self.head(h.mean(1))


@pytest.mark.parametrize("time_major", [False, True])
def test_frames_folded_into_the_batch_explain_like_the_unfolded_spelling(time_major):
    torch.manual_seed(0)
    folded = FrameFolding(time_major).double().eval()
    plain = FrameFolding(folded=False).double().eval()
    plain.load_state_dict(folded.state_dict())
    x = torch.randn(3, 4, 3, 6, 6, dtype=torch.double, generator=torch.Generator().manual_seed(2))
    exp = _check_batch_equals_single_samples(lrpc.compile(folded, "default", example_input=x[:1]), x)
    reference = lrpc.compile(plain, "default", example_input=x[:1])(x)
    torch.testing.assert_close(exp.relevance, reference.relevance, rtol=1e-9, atol=1e-12)
    assert exp.heatmap().shape == (3, 4, 6, 6)   # [B, T, H, W]: channels found at axis 2 from the conv


class MixesSamples(nn.Module):
    """Reads the first B rows of a [B·T, ...] tensor: frames of the first samples land in every sample's slot."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        b, t = x.shape[:2]
        h = self.conv(x.reshape(b * t, *x.shape[2:])).mean((2, 3))
        return self.head(h[:b])


def test_a_model_that_moves_values_between_samples_is_refused_at_compile_naming_the_node():
    torch.manual_seed(0)
    with pytest.raises(lrpc.LrpcError, match=r"slice.*depend on other samples"):
        lrpc.compile(MixesSamples().eval(), "default", example_input=torch.randn(1, 4, 3, 6, 6))


def test_heatmap_views_per_modality():
    relevance = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float64).view(2, 3, 4, 5, 6)
    assert lrpc.modalities.heatmap(relevance[:, 0, 0, 0]).shape == (2, 6)            # waveform [B, T]
    assert lrpc.modalities.heatmap(relevance[:, :1, 0, 0]).shape == (2, 6)           # [B, 1, T]
    assert lrpc.modalities.heatmap(relevance[:, :, 0, 0]).shape == (2, 3, 6)         # per channel
    torch.testing.assert_close(lrpc.modalities.signal_sum(relevance[:, :, 0, 0]), relevance[:, :, 0, 0].sum(1))
    torch.testing.assert_close(lrpc.modalities.heatmap(relevance), relevance.sum(1))          # [B, T, H, W]
    torch.testing.assert_close(lrpc.modalities.heatmap(relevance, 2), relevance.sum(2))       # frames first
