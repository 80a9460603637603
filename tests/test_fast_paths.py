"""The speed paths are exact: the flipped-kernel and scattered pointwise conv transposes equal autograd's input
gradient of the conv, the per-weight cache notices in-place edits, the kernels that update their temporaries in
place still give correct gradients where autograd records them (path analysis differentiates replayed relevance
ops), unread constants are not stored, and a channels-last model explains to the same numbers."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

import lrpc
from lrpc.linear_maps import LINEAR_MAPS
from lrpc.models.narrow_resnet import NarrowResNet
from lrpc.models.testing import randomize_batchnorm
from lrpc.rules import alpha_beta_kernel
from lrpc.splitting import split_add

CONV = LINEAR_MAPS["conv"]
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _input_gradient(x, w, s, stride, padding, dilation, groups):
    """The transpose of the conv applied to s, by autograd: d<s, conv(x)>/dx."""
    x = x.clone().requires_grad_(True)
    y = CONVS[x.dim() - 2](x, w, None, stride, padding, dilation, groups)
    (grad,) = torch.autograd.grad(y, x, s)
    return grad


@pytest.mark.parametrize("dims,channels,groups,kernel,stride,padding,dilation", [
    (2, (4, 6), 1, 3, 1, 1, 1),      # the flipped-kernel path
    (2, (4, 6), 2, 3, 1, 2, 2),      # grouped, dilated
    (2, (6, 6), 6, 5, 1, 2, 1),      # depthwise
    (2, (8, 4), 1, 1, 1, 0, 1),      # pointwise
    (1, (3, 5), 1, 3, 1, 0, 1),
    (3, (2, 3), 1, 3, 1, 1, 1),
    (2, (4, 6), 1, 3, 2, 1, 1),      # strided: the input-gradient kernel
    (2, (8, 6), 1, 1, 2, 0, 1),      # strided pointwise (projection shortcut): the scatter path
    (2, (8, 6), 2, 1, 3, 0, 1),      # ... grouped, a stride that leaves a remainder
    (1, (3, 5), 1, 1, 2, 0, 1),
    (2, (8, 6), 1, 1, 2, 1, 1),      # padded pointwise: the input-gradient kernel
    (2, (4, 6), 1, 3, 1, 3, 1),      # padding beyond the kernel: the input-gradient kernel
])
def test_conv_transpose_is_the_input_gradient(dims, channels, groups, kernel, stride, padding, dilation):
    torch.manual_seed(0)
    cin, cout = channels
    x = torch.randn(2, cin, *([9] * dims), dtype=torch.float64)
    w = torch.randn(cout, cin // groups, *([kernel] * dims), dtype=torch.float64)
    args = ((stride,) * dims, (padding,) * dims, (dilation,) * dims, groups)
    s = torch.randn_like(CONV.forward(x, w, None, args))
    expected = _input_gradient(x, w, s, *args)
    for _ in range(2):   # the second call reads the cached kernel
        assert torch.allclose(CONV.transpose(s, x, w, args), expected, rtol=1e-12, atol=1e-12)
    if dims == 2:   # channels_last relevance stays channels_last
        last = torch.channels_last
        got = CONV.transpose(s.contiguous(memory_format=last), x.contiguous(memory_format=last),
                             w.contiguous(memory_format=last), args)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert got.is_contiguous(memory_format=last)


def test_cached_kernel_follows_in_place_edits():
    torch.manual_seed(1)
    x, w = torch.randn(1, 3, 6, 6), torch.randn(5, 3, 3, 3)
    args = ((1, 1), (1, 1), (1, 1), 1)
    s = torch.randn(1, 5, 6, 6)
    with torch.inference_mode():
        CONV.transpose(s, x, w, args)
    w.mul_(-2.0)
    with torch.inference_mode():
        got = CONV.transpose(s, x, w, args)
    assert torch.allclose(got, _input_gradient(x, w, s, *args[:3], 1), atol=1e-5)
    # a kernel cached under inference mode is an ordinary tensor: autograd may record through it later
    s = s.requires_grad_(True)
    (grad,) = torch.autograd.grad(CONV.transpose(s, x, w, args).sum(), s)
    assert torch.allclose(grad, CONV.forward(torch.ones_like(x), w, None, args), atol=1e-5)


def test_in_place_kernels_differentiate_correctly():
    """gradcheck compares autograd's gradient (through the in-place updates) with finite differences."""
    torch.manual_seed(2)
    a = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    args = ((1, 1), (1, 1), (1, 1), 1)
    out = CONV.forward(a, w, None, args)

    def zplus(r):
        return alpha_beta_kernel(a, out, r, w.clamp(min=0), w.clamp(max=0), None, None, map="conv", args=args,
                                 nonneg=True, alpha=1.0, beta=0.0, eps=1e-3, stab="sign", ones_input=False,
                                 fallback=True, eps_in_bias=False)

    x0, x1 = torch.randn(2, 1, 4, 5, 5, dtype=torch.float64)

    def ratio_split(r):
        return split_add(r, x0, x1, mode="ratio", eps=0.0, silent=-1)

    r = torch.rand_like(out, requires_grad=True)
    assert torch.autograd.gradcheck(zplus, (r,))
    assert torch.autograd.gradcheck(ratio_split, (torch.rand_like(x0, requires_grad=True),))
    recorded = zplus(r).detach()
    with torch.inference_mode():   # the in-place path gives the values the recorded one does
        assert torch.allclose(zplus(r.detach()), recorded, rtol=1e-12, atol=1e-15)


def test_the_zplus_fallback_differentiates_and_its_op_gives_the_same_values():
    """With orphans of both kinds (an output channel with only negative weights, an all-zero input patch), the
    fallback runs: autograd records it as plain tensor code (gradcheck), and without autograd the opaque op
    (``add_zplus_orphans_``, what compiled graphs run) adds the same relevance in place."""
    torch.manual_seed(3)
    a = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    a[:, :, :4, :4] = 0.0
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    w[0] = -w[0].abs()
    args = ((1, 1), (1, 1), (1, 1), 1)

    def zplus(r, fallback=True):
        return alpha_beta_kernel(a, None, r, w.clamp(min=0), w.clamp(max=0), None, None, map="conv", args=args,
                                 nonneg=True, alpha=1.0, beta=0.0, eps=0.0, stab="none", ones_input=False,
                                 fallback=fallback, eps_in_bias=False)

    r = torch.rand(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    recorded, total = zplus(r), r.sum((1, 2, 3)).detach()
    assert (total - zplus(r, fallback=False).sum((1, 2, 3))).min() > 0.1     # plain z+ loses the orphans' share
    assert torch.allclose(recorded.sum((1, 2, 3)), total, rtol=1e-12)        # the fallback routes all of it
    assert torch.autograd.gradcheck(zplus, (r,))
    with torch.inference_mode():
        assert torch.allclose(zplus(r.detach()), recorded.detach(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_nonzero_reads_any_dense_layout(layout):
    from lrpc.zplus_fallback import nonzero
    t = torch.zeros(2, 3, 4, 5)
    t = {"contiguous": t, "channels_last": t.contiguous(memory_format=torch.channels_last),
         "transposed": t.transpose(1, 3)}[layout]
    assert not nonzero(t)
    t[1, 2, 3, 1] = -1e-30
    assert nonzero(t)
    t[1, 2, 3, 1] = float("nan")
    assert nonzero(t)


def test_negative_weights_are_kept_only_where_a_kernel_reads_them():
    """z⁺ on an input the compiler proved >= 0 never reads W⁻: no buffer for it (VGG-16's would be 550 MB);
    the signed image input and the fallback (which routes orphaned relevance through W⁻) keep it."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 6, 6)

    def negative_buffers(explainer):
        return sorted(name for name, _ in explainer.module.named_buffers() if name.endswith("_w_neg"))

    plain = lrpc.compile(model, rules=lrpc.Rules(conv=lrpc.rules.ZPlus(), linear=lrpc.rules.ZPlus(),
                                                pool=lrpc.rules.ZPlus()), example_input=x)
    assert negative_buffers(plain) == ["lrpc_const__0_w_neg"]   # node "_0": the first conv, on the image
    assert len(negative_buffers(lrpc.compile(model, rules="otsuki2024", example_input=x))) == 0  # ones input
    assert len(negative_buffers(lrpc.compile(model, rules="default", example_input=x))) == 3     # fallback


def _bottleneck_resnet():
    """torchvision's ResNet-50 layout (stem, max-pool, Bottleneck blocks) at a quarter of the width with one block
    per stage but two in the second, so both projection and identity skips occur: ResNet-50's ops and layouts."""
    return NarrowResNet(Bottleneck, [1, 2, 1, 1], num_classes=7, width=16)


@pytest.mark.parametrize("architecture", [
    _bottleneck_resnet,
    pytest.param(lambda: torchvision.models.resnet50(weights=None, num_classes=7), marks=pytest.mark.slow,
                 id="resnet50")])
def test_channels_last_model_and_input_give_the_same_explanation_in_the_same_layout(architecture):
    """CPU convolutions run faster channels-last; lrpc keeps that layout through the relevance pass (transposes,
    scatters, splits, sums) and the numbers do not change."""
    torch.manual_seed(4)
    model = randomize_batchnorm(architecture()).eval().double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    last = torch.channels_last
    for preset in ("otsuki2024", "default"):
        plain = lrpc.compile(model, rules=preset, example_input=x[:1])(x)
        model.to(memory_format=last)   # in place, like every Module.to
        got = lrpc.compile(model, rules=preset, example_input=x[:1])(x.contiguous(memory_format=last))
        model.to(memory_format=torch.contiguous_format)
        assert got.relevance.is_contiguous(memory_format=last)
        assert torch.allclose(got.relevance, plain.relevance, rtol=1e-10, atol=1e-14)
        for name, total in plain.layer_sums.items():
            assert torch.allclose(got.layer_sums[name], total, rtol=1e-10)


@pytest.mark.parametrize("stabilizer_mode", ["add", "sign"])
def test_zero_epsilon_with_a_shift_stabiliser_is_lrp0_not_nan(stabilizer_mode):
    """ε = 0 under 'add' or 'sign' is no shift at all: 0/0 must be 0 (as LRP-0 defines it), not NaN, also on the
    in-place division path (an all-zero input window gives z⁺ = 0)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    x[:, :, :5, :5] = 0.0
    rule = lrpc.rules.ZPlus(epsilon=0.0, stabilizer_mode=stabilizer_mode, bias=False)
    explanation = lrpc.compile(model, rules=lrpc.Rules(conv=rule, linear=rule, pool=rule), example_input=x)(x)
    assert bool(torch.isfinite(explanation.relevance).all())
    assert float(explanation.relevance[:, :, :4, :4].abs().max()) == 0.0   # nothing reaches a blank window


@pytest.mark.parametrize("channels,kernel,stride,padding,dilation,groups", [
    ((3, 4), 7, 2, 3, 1, 1),     # a ResNet stem: the input-gradient kernel, now on one channel
    ((4, 6), 3, 1, 1, 1, 2),     # grouped, the flipped-kernel path
    ((6, 6), 3, 2, 1, 1, 6),     # depthwise, strided
    ((4, 4), 3, 1, 2, 2, 1),     # dilated, padded beyond the kernel
    ((3, 5), 2, 3, 0, 1, 1),     # a stride that leaves a remainder
])
def test_flat_on_one_channel_matches_the_dense_flat_rule(channels, kernel, stride, padding, dilation, groups):
    """The flat rule's one-channel kernel against the rule written per connection (tests/reference.py), both
    layouts; and on a token model's linear layer (features last)."""
    from reference import dense, lrp_dense
    from lrpc.rules import flat_kernel
    g = torch.Generator().manual_seed(0)
    cin, cout = channels
    a = torch.randn(2, cin, 10, 10, generator=g, dtype=torch.float64)
    ones = torch.ones(cout, cin // groups, kernel, kernel, dtype=torch.float64)
    args = ((stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)
    r = torch.randn_like(CONV.forward(a, ones, None, args))
    W = dense(lambda e: F.conv2d(e, ones, None, stride, padding, dilation, groups), a.shape[1:])
    expected = torch.stack([lrp_dense("flat", W, None, a[b].flatten(), r[b].flatten(), eps=1e-6)
                            for b in range(2)]).view_as(a)
    for layout in (torch.contiguous_format, torch.channels_last):
        got = flat_kernel(a.contiguous(memory_format=layout), None, r.contiguous(memory_format=layout), ones, None,
                          map="conv", args=args, nonneg=False, eps=1e-6, stab="sign")
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14) and got.is_contiguous(memory_format=layout)
    tokens = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    r = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    W = torch.ones(3, 7, dtype=torch.float64)
    got = flat_kernel(tokens, None, r, W, None, map="linear", args=(), nonneg=False, eps=1e-6, stab="sign")
    expected = torch.stack([torch.stack([lrp_dense("flat", W, None, tokens[b, t], r[b, t], eps=1e-6)
                                         for t in range(5)]) for b in range(2)])
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("channels,stride,padding", [(3, 2, 3), (1, 1, 1), (5, 2, 1)])
def test_zplus_on_a_signed_image_matches_the_dense_rule(channels, stride, padding):
    """z⁺ on a signed input of few channels (an image: both sign parts run as one conv, side by side in the
    channels) and of more (two convs), against the rule written per connection."""
    from reference import dense, lrp_dense
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, channels, 11, 11, generator=g, dtype=torch.float64)
    w = torch.randn(6, channels, 7 if stride == 2 and padding == 3 else 3, 7 if stride == 2 and padding == 3 else 3,
                    generator=g, dtype=torch.float64)
    args = ((stride,) * 2, (padding,) * 2, (1, 1), 1)
    r = torch.randn_like(CONV.forward(a, w, None, args))
    got = alpha_beta_kernel(a, None, r, w.clamp(min=0), w.clamp(max=0), None, None, map="conv", args=args,
                            nonneg=False, alpha=1.0, beta=0.0, eps=1e-6, stab="sign", ones_input=False,
                            fallback=False, eps_in_bias=False)
    W = dense(lambda e: F.conv2d(e, w, None, stride, padding), a.shape[1:])
    zero_bias = torch.zeros(W.shape[0], dtype=torch.float64)
    expected = torch.stack([lrp_dense("zplus", W, zero_bias, a[b].flatten(), r[b].flatten(), eps=1e-6, bias=False)
                            for b in range(2)]).view_as(a)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-13)
