"""Insertion, Deletion and ID (Insertion - Deletion) with every choice explicit.

A map ranks the pixels. Frame k of the insertion curve shows the top-ranked pixels of the image over a
*canvas* and everything else from the canvas; frame k of the deletion curve shows the image with those pixels
replaced by the canvas. Each frame is scored by the model; the AUC is the normalised trapezoid on a uniform
[0, 1] frame axis, and ID = Insertion - Deletion.

How pixels of equal value are ranked (``ties``) matters as much as the map for quantized or sparse maps:

- ``inclusive``: the authors' threshold rule: frame k takes every pixel whose value is >= the value at its
  nominal rank, so a whole tied level enters (or leaves) at once;
- ``random``: a strict ranking with ties broken uniformly at random (seeded; curves averaged over seeds);
- ``stable``: a strict ranking with ties broken by raster order.

Canvases are built in pixel space and normalised like the images: ``black`` is 0 in [0, 1] RGB; ``mean`` is
the normalisation mean colour (0 in model space); ``blur`` is a Gaussian blur (11x11, sigma 5) of the image
with zero padding in model space, as in RISE; ``counterfactual`` is a per-image replacement the caller gives
(e.g. the scene rendered without the object).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from ..errors import LrpcError
from ..views import heatmap_view

__all__ = ["CANVASES", "PROTOCOLS", "SCORES", "TIE_MODES", "InsertionDeletionResult", "Protocol",
           "insertion_deletion", "normalised_trapezoid", "resolve_protocol"]

CANVASES = ("black", "mean", "blur", "counterfactual")
TIE_MODES = ("inclusive", "random", "stable")
SCORES = ("softmax", "logit")
SCORE_CLASSES = ("label", "explained")
REFERENCE_PIXELS = 224 * 224


@dataclass(frozen=True)
class Protocol:
    """Every choice an Insertion/Deletion number depends on.

    Frame sizes come from exactly one of ``step_pixels`` (pixels per step on an image of ``reference_pixels``
    pixels, scaled by area to other sizes so a step covers the same fraction; ``reference_pixels=None`` uses
    ``step_pixels`` literally) or ``step_fraction``. Frames run until the whole image has moved.
    ``count_offset`` adds pixels to every frame: the authors' code reads frame k's threshold at 0-based rank
    k*step, so their frames hold k*step + 1 pixels (offset 1).
    """

    name: str
    insertion_canvas: str = "black"
    deletion_canvas: str = "black"
    ties: str = "random"
    tie_seeds: tuple[int, ...] = (0,)
    step_pixels: int | None = None
    step_fraction: float | None = None
    reference_pixels: int | None = REFERENCE_PIXELS
    include_zero_frame: bool = True
    count_offset: int = 0
    scores: tuple[str, ...] = ("softmax",)
    score_class: str = "explained"
    only_correct: bool = False

    def __post_init__(self) -> None:
        for field, value, allowed in (("insertion_canvas", self.insertion_canvas, CANVASES),
                                      ("deletion_canvas", self.deletion_canvas, CANVASES),
                                      ("ties", self.ties, TIE_MODES), ("score_class", self.score_class, SCORE_CLASSES)):
            if value not in allowed:
                raise ValueError(f"protocol {self.name!r}: {field}={value!r} is not one of {allowed}")
        if not self.scores or any(score not in SCORES for score in self.scores):
            raise ValueError(f"protocol {self.name!r}: scores={self.scores!r} must be a non-empty tuple from {SCORES}")
        if (self.step_pixels is None) == (self.step_fraction is None):
            raise ValueError(f"protocol {self.name!r}: give exactly one of step_pixels and step_fraction")
        if self.step_pixels is not None and self.step_pixels < 1:
            raise ValueError(f"protocol {self.name!r}: step_pixels must be >= 1, got {self.step_pixels}")
        if self.step_fraction is not None and not (0 < self.step_fraction <= 1
                                                   and abs(1 / self.step_fraction - round(1 / self.step_fraction)) < 1e-9):
            raise ValueError(f"protocol {self.name!r}: step_fraction must be 1/n for an integer n, got {self.step_fraction}")
        if self.ties == "random" and not self.tie_seeds:
            raise ValueError(f"protocol {self.name!r}: random ties need at least one seed in tie_seeds")

    def pixels_per_step(self, n_pixels: int) -> int | None:
        """Pixels added per frame on an image of ``n_pixels`` pixels (None for fraction-based steps)."""
        if self.step_pixels is None:
            return None
        if self.reference_pixels is None:
            return self.step_pixels
        return max(1, round(self.step_pixels * n_pixels / self.reference_pixels))

    def frame_counts(self, n_pixels: int) -> np.ndarray:
        """Nominal number of moved pixels in each frame, before tie handling."""
        step = self.pixels_per_step(n_pixels)
        if step is None:
            n_steps = round(1 / self.step_fraction)
            counts = np.rint(np.arange(n_steps + 1) * n_pixels / n_steps).astype(np.int64)
        else:
            n_steps = -(-n_pixels // step)
            counts = np.minimum(np.arange(n_steps + 1, dtype=np.int64) * step, n_pixels)
        if not self.include_zero_frame:
            counts = counts[1:]
        return np.minimum(counts + self.count_offset, n_pixels)

    @property
    def seeds_used(self) -> tuple[int, ...]:
        return self.tie_seeds if self.ties == "random" else (0,)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, Protocol] = {
    # The authors' evaluation code: black canvas, 500 px per step on 224x224 (101 frames), no 0 % frame,
    # threshold rule with inclusive ties, softmax of the ground-truth class, every image.
    "otsuki2024": Protocol("otsuki2024", "black", "black", ties="inclusive", step_pixels=500,
                           include_zero_frame=False, count_offset=1, scores=("softmax",), score_class="label"),
    # Strict ranking with random tie-breaks averaged over 3 seeds, 1 % steps with the 0 % frame, the class the
    # map explains, only correctly classified images; logit AUCs alongside.
    "fair": Protocol("fair", "black", "black", ties="random", tie_seeds=(0, 1, 2), step_fraction=0.01,
                     include_zero_frame=True, scores=("softmax", "logit"), score_class="explained",
                     only_correct=True),
    # Petsiuk et al. (RISE): insertion over a blurred copy, deletion to the mean colour, 224 px per step on
    # 224x224, the class the map explains (RISE explains the top class).
    "rise2018": Protocol("rise2018", "blur", "mean", ties="stable", step_pixels=224, include_zero_frame=True,
                         scores=("softmax",), score_class="explained"),
}


def resolve_protocol(protocol: str | Protocol, **overrides) -> Protocol:
    """A named or given protocol with fields replaced by ``overrides`` (the name gets a '+changes' suffix)."""
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; named protocols: {sorted(PROTOCOLS)}")
        protocol = PROTOCOLS[protocol]
    elif not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a name or a Protocol, got {type(protocol).__name__}")
    if not overrides:
        return protocol
    fields = {f.name for f in dataclasses.fields(Protocol)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown protocol settings {unknown}; settable: {sorted(fields)}")
    if "tie_seeds" in overrides:
        overrides["tie_seeds"] = tuple(overrides["tie_seeds"])
    if "scores" in overrides:
        overrides["scores"] = tuple(overrides["scores"])
    if "step_pixels" in overrides and "step_fraction" not in overrides:
        overrides["step_fraction"] = None
    if "step_fraction" in overrides and "step_pixels" not in overrides:
        overrides["step_pixels"] = None
    changes = ",".join(f"{key}={value}" for key, value in sorted(overrides.items()))
    return dataclasses.replace(protocol, name=f"{protocol.name}+{changes}", **overrides)


def normalised_trapezoid(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled at F evenly spaced points of [0, 1]: (sum - (first + last) / 2) / (F - 1)."""
    if curves.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 frames for an area, got {curves.shape[-1]}")
    return (curves.sum(-1) - (curves[..., 0] + curves[..., -1]) / 2) / (curves.shape[-1] - 1)


@dataclass(frozen=True)
class InsertionDeletionResult:
    """Per-image curves and AUCs. Images left out (``evaluated`` False) hold NaN.

    ``curves[score][kind]`` is [B, F] for kind 'insertion' / 'deletion'; ``pixels_moved`` [B, F] counts the
    pixels actually moved per frame (above the nominal count where inclusive ties pull a level in);
    ``tied_at_min_fraction`` [B] is the share of each map's pixels that equal its minimum.
    """

    protocol: Protocol
    pixels_per_step: int | None
    frame_fractions: torch.Tensor
    evaluated: torch.Tensor
    scored_class: torch.Tensor
    curves: dict[str, dict[str, torch.Tensor]]
    pixels_moved: torch.Tensor
    tied_at_min_fraction: torch.Tensor

    def auc(self, kind: str, score: str | None = None) -> torch.Tensor:
        score = score or self.protocol.scores[0]
        if score not in self.curves:
            raise ValueError(f"score {score!r} was not computed under protocol {self.protocol.name!r}; "
                             f"available: {list(self.curves)}")
        if kind == "id":
            return self.auc("insertion", score) - self.auc("deletion", score)
        if kind not in ("insertion", "deletion"):
            raise ValueError(f"kind must be 'insertion', 'deletion' or 'id', got {kind!r}")
        return normalised_trapezoid(self.curves[score][kind])

    @property
    def insertion(self) -> torch.Tensor:
        return self.auc("insertion")

    @property
    def deletion(self) -> torch.Tensor:
        return self.auc("deletion")

    @property
    def id(self) -> torch.Tensor:
        return self.auc("id")

    def summary(self) -> dict:
        """Means over evaluated images, with the protocol and tie statistics that qualify them."""
        keep = self.evaluated
        out: dict = {"protocol": self.protocol.name, "protocol_settings": self.protocol.as_dict(),
                     "pixels_per_step": self.pixels_per_step, "frames": int(self.frame_fractions.numel()),
                     "images": int(keep.numel()), "evaluated": int(keep.sum())}
        for score in self.curves:
            prefix = "" if score == self.protocol.scores[0] else f"{score}_"
            for kind in ("insertion", "deletion", "id"):
                out[prefix + kind] = float(self.auc(kind, score)[keep].mean()) if keep.any() else float("nan")
        out["tied_at_min_fraction"] = float(self.tied_at_min_fraction[keep].mean()) if keep.any() else float("nan")
        return out


@torch.no_grad()
def insertion_deletion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, *,
                       protocol: str | Protocol = "fair", labels: torch.Tensor | Sequence[int] | None = None,
                       targets: torch.Tensor | Sequence[int] | int | None = None,
                       counterfactuals: torch.Tensor | None = None,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       sample_ids: torch.Tensor | Sequence[int] | None = None,
                       sign: str = "signed", smooth: float | Sequence[float] | None = None,
                       batch_size: int = 256, **overrides) -> InsertionDeletionResult:
    """Insertion/Deletion curves of ``maps`` [B, H, W] for model inputs ``images`` [B, C, H, W].

    ``images`` (and ``counterfactuals``) are normalised model inputs; ``mean``/``std`` is that normalisation,
    used to place canvases in pixel space. ``labels`` are the ground-truth classes, ``targets`` the classes
    the maps explain; the protocol's ``score_class`` (and ``only_correct``) decides which are needed.
    Any :class:`Protocol` field can be overridden by keyword, e.g. ``ties="random"``. Random tie-breaks are
    seeded by (tie seed, sample id): give ``sample_ids`` [B] (non-negative ints, e.g. dataset indices) and an
    image's curves do not depend on which other images share the call or in what order; without them the id
    is the image's position in this call. ``sign`` / ``smooth`` rank a view of the maps (``lrpc.views``, read in
    the order of ``Explanation.heatmap``): e.g. ``sign="absolute"`` ranks by |R|; ``smooth`` takes σ in pixels
    (for ``"auto"``, which needs the model's graph, pass ``exp.heatmap(smooth="auto")`` as the maps).
    """
    protocol = resolve_protocol(protocol, **overrides)
    if model.training:
        raise ValueError("model is in training mode (batch-norm statistics would change per frame); call model.eval()")
    images, maps = _check_images_and_maps(images, maps)
    maps = heatmap_view(maps, sign=sign, smooth=smooth, auto=_auto_needs_an_explainer)
    n_images, _, height, width = images.shape
    n_pixels = height * width
    labels = _class_tensor(labels, n_images, "labels")
    targets = _class_tensor(targets, n_images, "targets")
    sample_ids = _sample_ids(sample_ids, n_images)

    if protocol.score_class == "label":
        if labels is None:
            raise ValueError(f"protocol {protocol.name!r} scores the ground-truth class: pass labels=")
        scored_class = labels
    else:
        if targets is None:
            raise ValueError(f"protocol {protocol.name!r} scores the explained class: pass targets= "
                             f"(the class each map explains)")
        scored_class = targets
    evaluated = torch.ones(n_images, dtype=torch.bool)
    if protocol.only_correct:
        if labels is None:
            raise ValueError(f"protocol {protocol.name!r} keeps only correctly classified images: pass labels=")
        predicted = torch.cat([model(images[i:i + batch_size]).argmax(1).cpu() for i in range(0, n_images, batch_size)])
        evaluated = predicted == labels

    canvases = {kind: _canvas(getattr(protocol, f"{kind}_canvas"), images, counterfactuals, mean, std)
                for kind in ("insertion", "deletion")}
    counts = torch.from_numpy(protocol.frame_counts(n_pixels))
    n_frames = len(counts)
    curves = {score: {kind: torch.full((n_images, n_frames), float("nan")) for kind in ("insertion", "deletion")}
              for score in protocol.scores}
    pixels_moved = torch.full((n_images, n_frames), float("nan"))
    flat_maps = maps.reshape(n_images, n_pixels)
    tied_at_min = (flat_maps == flat_maps.min(1, keepdim=True).values).float().mean(1)

    for i in torch.nonzero(evaluated).flatten().tolist():
        # [S, F, N] frame masks, one set per tie-break seed; identical frames across seeds are scored once.
        masks = torch.stack([_frame_masks(flat_maps[i], counts, protocol.ties, seed, sample_ids[i])
                             for seed in protocol.seeds_used])
        pixels_moved[i] = masks.sum(-1).float().mean(0)
        unique_masks, inverse = torch.unique(masks.reshape(-1, n_pixels), dim=0, return_inverse=True)
        unique_masks = unique_masks.reshape(-1, 1, height, width)
        for kind, start, end in (("insertion", canvases["insertion"][i], images[i]),
                                 ("deletion", images[i], canvases["deletion"][i])):
            frame_logits = torch.cat([
                model(start + chunk.to(images.device, images.dtype) * (end - start)).cpu()
                for chunk in unique_masks.split(batch_size)])
            for score in protocol.scores:
                values = frame_logits if score == "logit" else frame_logits.softmax(1)
                per_frame = values[:, scored_class[i]][inverse].reshape(len(protocol.seeds_used), n_frames)
                curves[score][kind][i] = per_frame.mean(0)

    return InsertionDeletionResult(protocol=protocol, pixels_per_step=protocol.pixels_per_step(n_pixels),
                                   frame_fractions=counts.double() / n_pixels, evaluated=evaluated,
                                   scored_class=scored_class, curves=curves, pixels_moved=pixels_moved,
                                   tied_at_min_fraction=tied_at_min)


def _auto_needs_an_explainer():
    raise LrpcError("smooth='auto' derives σ from the compiled model: pass exp.heatmap(smooth='auto') as maps")


def _check_images_and_maps(images: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    maps = torch.as_tensor(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"maps must be [B, H, W] = {(images.shape[0], *images.shape[2:])} to match images "
                         f"{tuple(images.shape)}, got {tuple(maps.shape)}; sum channels and resize "
                         f"(e.g. F.interpolate) before scoring")
    maps = maps.detach().to("cpu", torch.float64)
    if not torch.isfinite(maps).all():
        bad = torch.nonzero(~torch.isfinite(maps).flatten(1).all(1)).flatten().tolist()
        raise ValueError(f"maps of images {bad[:10]} contain NaN or inf")
    return images.detach(), maps


def _class_tensor(classes, n_images: int, name: str) -> torch.Tensor | None:
    if classes is None:
        return None
    classes = torch.as_tensor(classes, dtype=torch.long).cpu()
    if classes.ndim == 0:
        classes = classes.expand(n_images)
    if classes.shape != (n_images,):
        raise ValueError(f"{name} must be an int or [B={n_images}] classes, got shape {tuple(classes.shape)}")
    return classes


def _sample_ids(sample_ids, n_images: int) -> list[int]:
    if sample_ids is None:
        return list(range(n_images))
    ids = torch.as_tensor(sample_ids)
    if ids.shape != (n_images,) or ids.dtype == torch.bool or ids.is_floating_point() or bool((ids < 0).any()):
        raise ValueError(f"sample_ids must be [B={n_images}] non-negative ints, got "
                         f"{ids.dtype} of shape {tuple(ids.shape)}")
    return [int(i) for i in ids]


def _canvas(kind: str, images: torch.Tensor, counterfactuals: torch.Tensor | None,
            mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    if kind == "black":
        return normalize(torch.zeros(images.shape[1:]), mean, std).to(images).expand_as(images)
    if kind == "mean":
        return torch.zeros_like(images)
    if kind == "blur":
        return _gaussian_blur(images, kernel_size=11, sigma=5.0)
    if counterfactuals is None:
        raise ValueError("the 'counterfactual' canvas needs counterfactuals= (normalised replacement images)")
    if counterfactuals.shape != images.shape:
        raise ValueError(f"counterfactuals {tuple(counterfactuals.shape)} must match images {tuple(images.shape)}")
    return counterfactuals.detach().to(images)


def _gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - kernel_size // 2
    profile = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = torch.outer(profile, profile)
    kernel = (kernel / kernel.sum()).expand(images.shape[1], 1, kernel_size, kernel_size)
    return F.conv2d(images, kernel, padding=kernel_size // 2, groups=images.shape[1])


def _frame_masks(values: torch.Tensor, counts: torch.Tensor, ties: str, seed: int, sample_id: int) -> torch.Tensor:
    """[F, N] bool: which pixels each frame moves, for one map ``values`` [N]."""
    n_pixels = values.numel()
    if ties == "inclusive":
        descending = values.sort(descending=True).values
        thresholds = descending[(counts - 1).clamp(min=0)]
        # A frame with a nominal count of 0 moves nothing, whatever the threshold.
        return (values[None] >= thresholds[:, None]) & (counts[:, None] > 0)
    if ties == "stable":
        order = torch.argsort(-values, stable=True)
    else:
        # A random permutation first, then a stable sort: equal values end up in uniformly random order.
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, sample_id]).generate_state(1)[0]))
        shuffle = torch.randperm(n_pixels, generator=generator)
        order = shuffle[torch.argsort(-values[shuffle], stable=True)]
    rank = torch.empty(n_pixels, dtype=torch.long)
    rank[order] = torch.arange(n_pixels)
    return rank[None] < counts[:, None]
