"""The texture ground-truth task (lrpc.data.textures): deterministic, prefix-stable, balanced, and its counterfactual
equals the image exactly outside the object's visible mask."""
from __future__ import annotations

import numpy as np
import pytest

from lrpc.data import TEXTURE_CLASSES, render_texture_scenes, texture_split_scenes
from lrpc.data.textures import _MAX_OCCLUSION


@pytest.fixture(scope="module")
def scenes():
    return render_texture_scenes(300, seed=5)


def test_seeded_and_prefix_stable(scenes):
    again = render_texture_scenes(40, seed=5)
    for name in ("images", "counterfactuals", "masks", "labels"):
        np.testing.assert_array_equal(getattr(again, name), getattr(scenes, name)[:40])
    assert not np.array_equal(render_texture_scenes(40, seed=6).images, again.images)


def test_types_ranges_and_balanced_labels(scenes):
    assert scenes.images.shape == scenes.counterfactuals.shape == (300, 3, 64, 64)
    assert scenes.images.dtype == np.float32 and scenes.masks.dtype == bool
    assert 0 <= scenes.images.min() and scenes.images.max() <= 1
    assert np.bincount(scenes.labels[:256], minlength=len(TEXTURE_CLASSES)).tolist() == [64] * 4


def test_counterfactual_equals_the_image_outside_the_visible_object(scenes):
    outside = ~scenes.masks[:, None].repeat(3, 1)
    np.testing.assert_array_equal(scenes.images[outside], scenes.counterfactuals[outside])
    # inside, the object was painted over the background: most of its pixels differ
    inside = np.abs(scenes.images - scenes.counterfactuals).max(1) > 0
    assert ((inside & scenes.masks).sum((1, 2)) >= 0.5 * scenes.masks.sum((1, 2))).all()


def test_occlusion_leaves_most_of_every_object_visible(scenes):
    visible = scenes.masks.sum((1, 2))
    smallest_ellipse = np.pi * (0.2 * 64) * (0.2 * 0.6 * 64)
    assert (visible >= (1 - _MAX_OCCLUSION) * smallest_ellipse - 64).all()   # a pixel row of rounding per side


def test_splits_are_fixed_and_train_is_not_a_split():
    np.testing.assert_array_equal(texture_split_scenes("test", 8).images, texture_split_scenes("test", 8).images)
    with pytest.raises(ValueError, match="split must be"):
        texture_split_scenes("train", 8)
