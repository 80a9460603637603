"""Third-party model definitions compile with no hand-written canonizer and close their relevance accounting.

Hugging Face ``transformers`` classifiers (small configs, random weights, ``pixel_values`` in, a ``ModelOutput``
out) and timm architectures of the families lrpc's op table covers, in float64 under ``default``: the logits
equal the model's, every sample's input relevance plus everything absorbed (cls tokens, constants) equals the
start relevance, and a model without constant inputs conserves at every cut.
"""
from __future__ import annotations

import pytest
import torch

import lrpc
from zoo import HF_MODELS

TOKEN_MODELS = {"vit", "vit_eager_attention", "deit", "beit", "dinov2"}   # cls / distillation tokens absorb


def _check_accounting(model, example, batch: int = 2):
    torch.manual_seed(1)
    model = model.double()
    x = torch.randn(batch, *example.shape[1:], dtype=torch.double)
    explainer = lrpc.compile(model, "default", example_input=x[:1])
    exp = explainer(x)
    with torch.no_grad():
        reference = model(x)
    reference = reference.logits if hasattr(reference, "logits") else reference
    torch.testing.assert_close(exp.logits, reference, rtol=1e-10, atol=1e-10)
    relevance = exp.relevance.sum(tuple(range(1, x.dim())))
    absorbed = sum(exp.absorbed.values()) if exp.absorbed else torch.zeros_like(relevance)
    torch.testing.assert_close(relevance + absorbed, exp.start, rtol=1e-6, atol=1e-9)
    return exp


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_hugging_face_classifier_compiles_and_closes_its_accounting(name):
    model, example = HF_MODELS[name]()
    exp = _check_accounting(model, example)
    if name not in TOKEN_MODELS:
        assert float(exp.conservation_error().max()) < 1e-6
    else:
        assert all(exp.explainer.plans[node].info.kind == "inert" for node in exp.absorbed)


TIMM_SMALL = {   # architecture -> create_model overrides that keep the test small
    "mobilenetv3_small_050": {}, "efficientnet_b0": {}, "convnext_atto": {},
    "densenet121": {"block_config": (2, 2, 2, 2)},   # its growth rate and layers, two dense layers per block
    "vit_tiny_patch16_224": {"img_size": 32, "patch_size": 8}, "swin_tiny_patch4_window7_224": {"img_size": 56},
    "ghostnet_100": {}, "levit_128s": {"img_size": 64},
}
TIMM_SIZE = {"vit_tiny_patch16_224": 32, "swin_tiny_patch4_window7_224": 56}
# ghostnet_100's block table (kernel, expansion, out channels, SE ratio, stride), one block of each kind: an
# identity skip, strided with a conv shortcut, with SE strided and with an identity skip. The whole table is 16
# blocks; compiling it costs minutes of export on two cores and runs under `make test-slow`.
GHOSTNET_BLOCKS = [[[3, 16, 16, 0, 1]], [[3, 48, 24, 0, 2]], [[5, 72, 40, 0.25, 2]], [[5, 120, 40, 0.25, 1]]]


def _timm_model(name: str, full_depth: bool = False):
    import timm
    torch.manual_seed(0)
    if name == "ghostnet_100" and not full_depth:   # timm's ghostnet_100 cannot take another table
        from timm.models.ghostnet import GhostNet
        return GhostNet(GHOSTNET_BLOCKS, num_classes=4, width=1.0).eval()
    overrides = {} if full_depth else TIMM_SMALL[name]
    return timm.create_model(name, pretrained=False, num_classes=4, **overrides).eval()


@pytest.mark.parametrize("name", sorted(TIMM_SMALL))
def test_timm_architecture_compiles_and_closes_its_accounting(name):
    size = TIMM_SIZE.get(name, 64)
    _check_accounting(_timm_model(name), torch.randn(1, 3, size, size))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "ghostnet_100"])
def test_timm_architecture_at_its_full_depth_compiles_and_closes_its_accounting(name):
    _check_accounting(_timm_model(name, full_depth=True), torch.randn(1, 3, 64, 64))


def test_torchvision_swin_whose_attention_mask_is_written_through_a_view():
    """torchvision's shifted-window block fills slices of a mask in place: captured through export's own
    functionalisation, the logits equal the model's and the accounting closes."""
    from torchvision.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4],
                            num_classes=5).eval()
    exp = _check_accounting(model, torch.randn(1, 3, 32, 32))
    assert float(exp.conservation_error().max()) < 1e-6
