"""Metrics on hand-made maps whose answers follow from the definitions, not from this implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lrpc.data import groundtruth_model, normalize, split_scenes
from lrpc.metrics import (PROTOCOLS, conservation_error, insertion_deletion, model_randomisation,
                          normalised_trapezoid, pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                          resolve_protocol, spearman, target_sensitivity)

IDENTITY_NORMALISATION = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class InsertedPixelCounter(nn.Module):
    """Logit 0 = how many pixels show the all-ones image rather than the black canvas; logit 1 = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = (x[:, 0] > 0.5).flatten(1).sum(1).float()
        return torch.stack([count, torch.zeros_like(count)], 1)


def counter() -> nn.Module:
    return InsertedPixelCounter().eval()


def quantized_map(level_sizes: list[int], side: int, seed: int = 0) -> torch.Tensor:
    """A [side, side] map with len(level_sizes) values; level i (highest first) covers level_sizes[i] pixels,
    scattered at random."""
    assert sum(level_sizes) == side * side
    values = torch.cat([torch.full((size,), float(len(level_sizes) - i)) for i, size in enumerate(level_sizes)])
    return values[torch.randperm(side * side, generator=torch.Generator().manual_seed(seed))].reshape(side, side)


# --- protocols and the AUC ------------------------------------------------------------------------------------

def test_otsuki2024_frames_follow_the_authors_threshold_index():
    n_pixels = 224 * 224
    # Their loop: for i in range(ceil(N / 500)): threshold = sorted[min(500 * (i + 1), N - 1)], take all >= it.
    authors = [min(500 * (i + 1), n_pixels - 1) + 1 for i in range(math.ceil(n_pixels / 500))]
    assert PROTOCOLS["otsuki2024"].frame_counts(n_pixels).tolist() == authors
    assert len(authors) == 101


def test_fair_frames_are_whole_percents_from_zero_and_rise_steps_are_rows():
    assert PROTOCOLS["fair"].frame_counts(4096).tolist() == [round(k * 40.96) for k in range(101)]
    assert PROTOCOLS["rise2018"].frame_counts(224 * 224).tolist() == [224 * k for k in range(225)]


def test_pixel_steps_scale_with_image_area_unless_made_literal():
    assert PROTOCOLS["otsuki2024"].pixels_per_step(224 * 224) == 500
    assert PROTOCOLS["otsuki2024"].pixels_per_step(64 * 64) == round(500 * 4096 / 50176)
    literal = resolve_protocol("otsuki2024", reference_pixels=None)
    assert literal.pixels_per_step(64 * 64) == 500
    assert literal.name.startswith("otsuki2024+")


def test_resolve_protocol_names_bad_settings():
    with pytest.raises(TypeError, match="unknown protocol settings"):
        resolve_protocol("fair", tie_mode="random")
    with pytest.raises(ValueError, match="ties='sorted'"):
        resolve_protocol("fair", ties="sorted")
    with pytest.raises(ValueError, match="unknown protocol"):
        resolve_protocol("otsuki")


def test_normalised_trapezoid_on_known_curves():
    frames = 11
    x = torch.linspace(0, 1, frames, dtype=torch.float64)
    assert normalised_trapezoid(x).item() == pytest.approx(0.5, abs=1e-12)
    # The trapezoid rule overestimates the integral of x^2 (1/3) by h^2 / 6 with h = 1 / (frames - 1).
    assert normalised_trapezoid(x ** 2).item() == pytest.approx(1 / 3 + 1 / (6 * (frames - 1) ** 2), abs=1e-12)
    assert normalised_trapezoid(torch.ones(2, 5)).tolist() == [1.0, 1.0]


# --- the tie rule, on a model that counts inserted pixels --------------------------------------------------------

def test_inclusive_ties_move_whole_levels_and_strict_ties_move_exactly_the_nominal_count():
    side, levels = 20, [30, 70, 100, 200]
    maps = quantized_map(levels, side)[None]
    images = torch.ones(1, 3, side, side)
    settings = dict(labels=[0], targets=[0], **IDENTITY_NORMALISATION)
    inclusive = insertion_deletion(counter(), images, maps, protocol="otsuki2024",
                                   scores=("logit",), reference_pixels=None, step_pixels=25, **settings)
    strict = insertion_deletion(counter(), images, maps, protocol="otsuki2024",
                                scores=("logit",), reference_pixels=None, step_pixels=25, ties="random", **settings)
    nominal = inclusive.protocol.frame_counts(side * side)
    # Inclusive: a frame whose nominal count ends inside a level takes the whole level, i.e. the smallest
    # cumulative level size that covers the nominal count.
    cumulative = np.cumsum(levels)
    whole_levels = np.array([cumulative[np.searchsorted(cumulative, n)] for n in nominal], dtype=float)
    np.testing.assert_array_equal(inclusive.curves["logit"]["insertion"][0].numpy(), whole_levels)
    np.testing.assert_array_equal(inclusive.curves["logit"]["deletion"][0].numpy(), side * side - whole_levels)
    np.testing.assert_array_equal(strict.curves["logit"]["insertion"][0].numpy(), nominal.astype(float))
    np.testing.assert_array_equal(inclusive.pixels_moved[0].numpy(), whole_levels)
    # So inclusive ties add exactly the pulled-in pixels to Insertion and take them off Deletion.
    extra = np.trapezoid(whole_levels - nominal, dx=1 / (len(nominal) - 1))
    assert (inclusive.auc("insertion", "logit") - strict.auc("insertion", "logit")).item() == pytest.approx(extra)
    assert (strict.auc("deletion", "logit") - inclusive.auc("deletion", "logit")).item() == pytest.approx(extra)


def test_tie_modes_agree_on_a_map_without_ties():
    side = 16
    maps = torch.randperm(side * side, generator=torch.Generator().manual_seed(1)).reshape(1, side, side).float()
    images = torch.ones(1, 3, side, side)
    curves = [insertion_deletion(counter(), images, maps, protocol="fair", ties=ties, labels=[0],
                                 targets=[0], **IDENTITY_NORMALISATION).curves["softmax"]["insertion"]
              for ties in ("inclusive", "random", "stable")]
    torch.testing.assert_close(curves[0], curves[1])
    torch.testing.assert_close(curves[0], curves[2])


def test_result_reports_the_share_of_pixels_tied_at_the_minimum():
    side = 10
    maps = torch.arange(side * side, dtype=torch.float32).reshape(1, side, side)
    maps[0, :5] = -1.0  # 50 of 100 pixels share the minimum
    result = insertion_deletion(counter(), torch.ones(1, 3, side, side), maps, protocol="fair",
                                labels=[0], targets=[0], **IDENTITY_NORMALISATION)
    assert result.tied_at_min_fraction.tolist() == [0.5]
    summary = result.summary()
    assert summary["protocol"] == "fair" and summary["tied_at_min_fraction"] == 0.5
    assert {"insertion", "deletion", "id", "logit_insertion", "logit_id"} <= set(summary)


def test_insertion_deletion_names_missing_inputs():
    images, maps = torch.ones(1, 3, 8, 8), torch.rand(1, 8, 8)
    with pytest.raises(ValueError, match="labels="):
        insertion_deletion(counter(), images, maps, protocol="otsuki2024")
    with pytest.raises(ValueError, match="targets="):
        insertion_deletion(counter(), images, maps, protocol="fair", labels=[0])
    with pytest.raises(ValueError, match="counterfactuals="):
        insertion_deletion(counter(), images, maps, protocol="fair", labels=[0], targets=[0],
                           insertion_canvas="counterfactual")
    with pytest.raises(ValueError, match=r"maps must be \[B, H, W\]"):
        insertion_deletion(counter(), images, torch.rand(1, 4, 4), protocol="fair", labels=[0],
                           targets=[0])


# --- the trained model --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = groundtruth_model()
    scenes = split_scenes("test", 12)
    images = normalize(scenes.images)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    return model, scenes, images, predicted


def test_oracle_mask_beats_random_on_the_counterfactual_canvas(trained):
    model, scenes, images, predicted = trained
    common = dict(protocol="fair", labels=scenes.labels, targets=scenes.labels,
                  counterfactuals=normalize(scenes.counterfactuals), insertion_canvas="counterfactual",
                  deletion_canvas="counterfactual", tie_seeds=(0,), step_fraction=0.05)
    oracle = insertion_deletion(model, images, torch.from_numpy(scenes.masks).float(), **common)
    noise = insertion_deletion(model, images, torch.rand(12, 64, 64, generator=torch.Generator().manual_seed(0)),
                               **common)
    assert oracle.evaluated.sum() >= 10
    assert oracle.summary()["id"] > noise.summary()["id"] + 0.3
    assert oracle.summary()["deletion"] < noise.summary()["deletion"]


def test_constant_map_id_is_zero_only_in_expectation_under_random_ties(trained):
    model, scenes, images, predicted = trained
    constant = torch.zeros(4, 64, 64)
    per_seed = torch.stack([
        insertion_deletion(model, images[:4], constant, protocol="fair", labels=scenes.labels[:4],
                           targets=scenes.labels[:4], tie_seeds=(seed,), step_fraction=0.05).id
        for seed in range(12)])
    evaluated = ~per_seed.isnan().any(0)
    per_seed = per_seed[:, evaluated]
    # Each tie-break is one random pixel order: single draws are not 0 ...
    assert (per_seed.abs() > 1e-3).any()
    # ... but deleting a random n pixels is inserting a random N - n, so over seeds the mean goes to 0.
    mean = per_seed.mean(0)
    standard_error = per_seed.std(0) / math.sqrt(per_seed.shape[0])
    assert (mean.abs() <= 4 * standard_error + 1e-3).all()


def test_constant_map_under_inclusive_ties_scores_the_image_against_the_canvas(trained):
    model, scenes, images, predicted = trained
    result = insertion_deletion(model, images[:4], torch.zeros(4, 64, 64), protocol="otsuki2024",
                                labels=scenes.labels[:4])
    black = normalize(torch.zeros(4, 3, 64, 64))
    labels = torch.from_numpy(scenes.labels[:4])
    with torch.no_grad():
        p_image = model(images[:4]).softmax(1).gather(1, labels[:, None])[:, 0]
        p_black = model(black).softmax(1).gather(1, labels[:, None])[:, 0]
    # Every pixel ties with the first threshold, so the first frame already holds the whole image: the
    # authors' rule hands a constant map ID = p(image) - p(black canvas).
    torch.testing.assert_close(result.id, p_image - p_black, atol=1e-5, rtol=0)
    assert (result.pixels_moved == 64 * 64).all()


def test_deletion_of_a_map_is_insertion_of_its_negation_reversed(trained):
    model, scenes, images, predicted = trained
    maps = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(2))
    settings = dict(protocol="fair", labels=scenes.labels[:3], targets=scenes.labels[:3], only_correct=False,
                    step_fraction=0.05)
    forward = insertion_deletion(model, images[:3], maps, **settings)
    negated = insertion_deletion(model, images[:3], -maps, **settings)
    torch.testing.assert_close(forward.curves["softmax"]["deletion"],
                               negated.curves["softmax"]["insertion"].flip(1), atol=1e-6, rtol=0)


# --- localisation ---------------------------------------------------------------------------------------------

def square_mask(side: int = 16, low: int = 4, high: int = 8) -> torch.Tensor:
    mask = torch.zeros(1, side, side, dtype=torch.bool)
    mask[0, low:high, low:high] = True
    return mask


def test_mass_accuracy_counts_only_positive_relevance():
    mask = square_mask()
    maps = torch.zeros(1, 16, 16)
    maps[0, 5, 5] = 2.0          # inside
    maps[0, 12, 12] = 2.0        # outside
    maps[0, 0, 0] = -100.0       # negative relevance is ignored
    assert relevance_mass_accuracy(maps, mask).tolist() == [0.5]
    assert relevance_mass_accuracy(mask.float(), mask).tolist() == [1.0]
    assert math.isnan(relevance_mass_accuracy(-torch.ones(1, 16, 16), mask).item())


def test_rank_accuracy_of_the_oracle_is_one_and_of_a_constant_map_the_mask_share():
    mask = square_mask()
    assert relevance_rank_accuracy(mask.float(), mask).tolist() == [1.0]
    # All pixels tie, so the top-K is a uniformly random K pixels: expected share inside = K / N.
    assert relevance_rank_accuracy(torch.ones(1, 16, 16), mask).item() == pytest.approx(16 / 256)


def test_pointing_game_tolerance_is_15_of_224_of_the_side():
    side = 224
    mask = square_mask(side, 100, 120)
    hit_at = {"inside": (110, 110), "14 px right": (110, 133), "16 px right": (110, 135)}
    expected = {"inside": 1.0, "14 px right": 1.0, "16 px right": 0.0}
    for where, (row, column) in hit_at.items():
        maps = torch.zeros(1, side, side)
        maps[0, row, column] = 1.0
        assert pointing_game(maps, mask).item() == expected[where], where


def test_pointing_game_with_a_tied_maximum_counts_the_share_of_hits():
    mask = square_mask()
    maps = torch.zeros(1, 16, 16)
    maps[0, 5, 5] = maps[0, 15, 15] = 1.0  # one maximum on the object, one far away
    assert pointing_game(maps, mask).item() == 0.5


# --- sanity -------------------------------------------------------------------------------------------------------

def test_spearman_on_monotone_reversed_and_tied_maps():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert spearman(a, a ** 3).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    # Ties take their mean rank: [1, 1, 2, 2] ranks as [0.5, 0.5, 2.5, 2.5]; Pearson with [0, 1, 2, 3] is 2/sqrt(5).
    assert spearman(a, torch.tensor([[1.0, 1.0, 2.0, 2.0]])).item() == pytest.approx(2 / math.sqrt(5))


def test_conservation_error_is_relative_to_the_reference():
    relevance = torch.tensor([[0.2, 0.3], [1.0, 1.0]])
    torch.testing.assert_close(conservation_error(relevance, torch.tensor([0.5, 4.0])),
                               torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_target_sensitivity_reads_the_maps_of_both_classes():
    ramp = torch.arange(16.0).reshape(1, 4, 4).repeat(2, 1, 1)
    images = torch.zeros(2, 3, 4, 4)

    def flips_with_class(images, targets):
        return ramp * torch.where(targets == 0, 1.0, -1.0)[:, None, None]

    result = target_sensitivity(flips_with_class, images, torch.tensor([0, 0]), torch.tensor([1, 2]))
    torch.testing.assert_close(result, torch.tensor([-1.0, -1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="must differ"):
        target_sensitivity(flips_with_class, images, torch.tensor([0, 1]), torch.tensor([1, 1]))


def test_model_randomisation_cascades_from_the_top_and_leaves_the_model_alone(trained):
    model, scenes, images, predicted = trained
    before = {name: value.clone() for name, value in model.state_dict().items()}

    def gradient_map(network):
        x = images[:4].clone().requires_grad_(True)
        network(x).gather(1, predicted[:4, None]).sum().backward()
        return x.grad.sum(1)

    steps = model_randomisation(gradient_map, model, layers=["fc", "layer4", "layer3"])
    assert [step["randomised"] for step in steps] == [["fc"], ["fc", "layer4"], ["fc", "layer4", "layer3"]]
    assert all(step["spearman"].shape == (4,) for step in steps)
    assert steps[-1]["spearman_abs"].mean() < 0.9
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
