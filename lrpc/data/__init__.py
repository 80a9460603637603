"""Data for evaluation: the procedural ground-truth task, its trained model, and class-folder datasets."""
from .folder import ImageFolderDataset, balanced_sample, preprocess_image
from .groundtruth import (GROUNDTRUTH_ARCHITECTURES, GROUNDTRUTH_CHECKPOINT, GROUNDTRUTH_CHECKPOINTS,
                          GROUNDTRUTH_IMAGE_SIZE, groundtruth_architecture, groundtruth_model)
from .normalization import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from .procedural import CLASSES, DISTRACTORS, SPLIT_SEEDS, ShapeScenes, render_scenes, split_scenes

__all__ = ["CLASSES", "DISTRACTORS", "GROUNDTRUTH_ARCHITECTURES", "GROUNDTRUTH_CHECKPOINT", "GROUNDTRUTH_CHECKPOINTS", "GROUNDTRUTH_IMAGE_SIZE", "IMAGENET_MEAN",
           "IMAGENET_STD", "SPLIT_SEEDS", "ImageFolderDataset", "ShapeScenes", "balanced_sample", "denormalize",
           "groundtruth_architecture", "groundtruth_model", "normalize", "preprocess_image", "render_scenes",
           "split_scenes"]
