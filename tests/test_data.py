"""The procedural ground-truth task and the class-folder dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lrpc.data import (CLASSES, IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, balanced_sample, denormalize,
                       normalize, preprocess_image, render_scenes, split_scenes)


@pytest.fixture(scope="module")
def scenes():
    return render_scenes(300, seed=7)


def test_same_seed_renders_identical_scenes(scenes):
    again = render_scenes(300, seed=7)
    for field in ("images", "counterfactuals", "masks", "labels"):
        np.testing.assert_array_equal(getattr(scenes, field), getattr(again, field))


def test_different_seeds_render_different_scenes(scenes):
    other = render_scenes(300, seed=8)
    assert not np.array_equal(scenes.images, other.images)


def test_fewer_scenes_are_a_prefix_of_more(scenes):
    prefix = render_scenes(260, seed=7)  # crosses the 256-scene chunk boundary
    np.testing.assert_array_equal(prefix.images, scenes.images[:260])
    np.testing.assert_array_equal(prefix.masks, scenes.masks[:260])


def test_arrays_have_documented_types_shapes_and_ranges(scenes):
    assert scenes.images.shape == scenes.counterfactuals.shape == (300, 3, 64, 64)
    assert scenes.images.dtype == scenes.counterfactuals.dtype == np.float32
    assert scenes.masks.shape == (300, 64, 64) and scenes.masks.dtype == bool
    assert scenes.labels.dtype == np.int64 and set(scenes.labels) == set(range(len(CLASSES)))
    assert scenes.images.min() >= 0 and scenes.images.max() <= 1
    assert scenes.counterfactuals.min() >= 0 and scenes.counterfactuals.max() <= 1


def test_counterfactual_equals_image_outside_the_mask_and_differs_inside(scenes):
    outside = ~scenes.masks[:, None].repeat(3, axis=1)
    np.testing.assert_array_equal(scenes.images[outside], scenes.counterfactuals[outside])
    difference = np.abs(scenes.images - scenes.counterfactuals).sum(1)
    mean_difference_inside = (difference * scenes.masks).sum((1, 2)) / scenes.masks.sum((1, 2))
    assert mean_difference_inside.min() > 0.1


def test_every_object_is_whole_and_inside_the_image(scenes):
    area = scenes.masks.sum((1, 2))
    assert area.min() > 0.05 * 64 * 64
    border = np.zeros((64, 64), bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    assert not (scenes.masks & border).any()


def test_labels_are_balanced_per_chunk(scenes):
    counts = np.bincount(scenes.labels[:256], minlength=len(CLASSES))
    assert (counts == 256 // len(CLASSES)).all()


def test_split_scenes_are_fixed_and_reject_train():
    np.testing.assert_array_equal(split_scenes("test", 8).images, split_scenes("test", 8).images)
    assert not np.array_equal(split_scenes("test", 8).images, split_scenes("val", 8).images)
    with pytest.raises(ValueError, match="split"):
        split_scenes("train", 8)


def test_normalize_round_trips_and_maps_black_to_minus_mean_over_std():
    pixels = torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(denormalize(normalize(pixels)), pixels)
    black = normalize(torch.zeros(3, 1, 1)).flatten()
    expected = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(black, expected)


@pytest.fixture()
def class_folder(tmp_path):
    """Three classes with 4, 3 and 6 images of distinct sizes and solid colours."""
    rng = np.random.default_rng(0)
    for name, count in (("ant", 4), ("bee", 3), ("cat", 6)):
        (tmp_path / name / "nested").mkdir(parents=True)
        for i in range(count):
            size = (300 + 10 * i, 260)
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            folder = tmp_path / name / ("nested" if i % 2 else "")
            Image.new("RGB", size, colour).save(folder / f"img{i}.png")
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_dataset_finds_sorted_classes_and_only_images(class_folder):
    dataset = ImageFolderDataset(class_folder)
    assert dataset.classes == ["ant", "bee", "cat"]
    assert len(dataset) == 13
    assert dataset.labels == [0] * 4 + [1] * 3 + [2] * 6


def test_folder_dataset_items_are_preprocessed_224_crops(class_folder):
    dataset = ImageFolderDataset(class_folder)
    image, label = dataset[5]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == 1
    # A solid colour survives resize/crop/normalise exactly up to 8-bit rounding.
    pixels = denormalize(image)
    assert (pixels.amax((1, 2)) - pixels.amin((1, 2))).max() < 1e-5


def test_preprocess_resizes_shorter_side_then_centre_crops():
    # Left half black, right half white, 400x200: the shorter side becomes 256, the longer int(256*400/200)=512;
    # the centre 224 crop spans columns 144..368 of 512, so its left 112 columns are black and the rest white.
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, 200:] = 255
    crop = denormalize(preprocess_image(Image.fromarray(pixels)))
    assert crop.shape == (3, 224, 224)
    assert crop[:, :, :110].max() < 0.01 and crop[:, :, 114:].min() > 0.99


def test_folder_dataset_rejects_a_root_without_class_folders(tmp_path):
    with pytest.raises(Exception, match="no class subfolders"):
        ImageFolderDataset(tmp_path)


def test_balanced_sample_takes_per_class_from_a_seeded_shuffle(class_folder):
    labels = ImageFolderDataset(class_folder).labels
    chosen = balanced_sample(labels, per_class=2, seed=0)
    assert sorted(np.bincount([labels[i] for i in chosen]).tolist()) == [2, 2, 2]
    assert len(set(chosen)) == 6
    assert chosen == balanced_sample(labels, per_class=2, seed=0)
    assert any(balanced_sample(labels, per_class=2, seed=s) != chosen for s in range(1, 6))


def test_balanced_sample_follows_the_seeded_dataloader_order():
    labels = [0, 1] * 10
    visiting = [int(i) for i in torch.utils.data.DataLoader(
        range(20), batch_size=None, shuffle=True, generator=torch.Generator().manual_seed(3))]
    first_per_class = {}
    for index in visiting:
        first_per_class.setdefault(labels[index], index)
    chosen = balanced_sample(labels, per_class=1, seed=3)
    assert chosen == sorted(first_per_class.values(), key=visiting.index)


def test_balanced_sample_rejects_classes_with_too_few_samples():
    with pytest.raises(ValueError, match="fewer than 3"):
        balanced_sample([0, 0, 0, 1, 1], per_class=3, seed=0)
