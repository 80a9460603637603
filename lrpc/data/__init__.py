"""Data for evaluation: the procedural ground-truth task, its trained model, and class-folder datasets."""
from .folder import ImageFolderDataset, balanced_sample, preprocess_image
from .groundtruth import (GROUNDTRUTH_ARCHITECTURES, GROUNDTRUTH_CHECKPOINT, GROUNDTRUTH_CHECKPOINTS,
                          GROUNDTRUTH_IMAGE_SIZE, GROUNDTRUTH_TASKS, groundtruth_architecture, groundtruth_classes,
                          groundtruth_model, groundtruth_scenes)
from .normalization import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from .procedural import CLASSES, DISTRACTORS, SPLIT_SEEDS, ShapeScenes, render_scenes, split_scenes
from .textures import (TEXTURE_CLASSES, TEXTURE_DISTRACTORS, TEXTURE_SPLIT_SEEDS, render_texture_scenes,
                       texture_split_scenes)

__all__ = ["CLASSES", "DISTRACTORS", "GROUNDTRUTH_ARCHITECTURES", "GROUNDTRUTH_CHECKPOINT", "GROUNDTRUTH_CHECKPOINTS", "GROUNDTRUTH_IMAGE_SIZE", "GROUNDTRUTH_TASKS", "IMAGENET_MEAN",
           "IMAGENET_STD", "SPLIT_SEEDS", "TEXTURE_CLASSES", "TEXTURE_DISTRACTORS", "TEXTURE_SPLIT_SEEDS", "ImageFolderDataset", "ShapeScenes", "balanced_sample", "denormalize",
           "groundtruth_architecture", "groundtruth_classes", "groundtruth_model", "groundtruth_scenes", "normalize",
           "preprocess_image", "render_scenes", "render_texture_scenes", "split_scenes", "texture_split_scenes"]
