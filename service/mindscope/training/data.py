"""Training data: a folder of class-named image folders, or the official CIFAR-10 download."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from mindscope.engine.images import scale_to_unit, to_rgb_array, upright

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class LabelledImages:
    """images: uint8 (N, 32, 32, 3); labels: int64 (N,) indexing class_names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    description: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices], self.class_names, self.description)


IMAGE_SIZE = (32, 32)  # (width, height): the All-CNN trains on CIFAR-10's 32x32 images


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return to_rgb_array(upright(image)[0], IMAGE_SIZE)


def list_image_folder(root: Path, per_class_limit: int | None = None) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """(paths, int64 labels, class names) of `root/<class>/*`; classes and files sorted by name."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise ValueError(f"{root} holds no class folders (expected {root}/<class>/<image files>)")
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[:per_class_limit] if per_class_limit else files
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs)


def decode_files(paths: list[Path]) -> np.ndarray:
    """uint8 (N, 32, 32, 3) model-ready pixels of the image files, decoded on a few threads."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return np.stack(list(pool.map(_decode, paths, chunksize=256)))


def load_image_folder(root: Path, per_class_limit: int | None = None) -> LabelledImages:
    """Read `root/<class>/*.{jpg,png,...}`; classes are the sub-folder names, sorted."""
    paths, labels, class_names = list_image_folder(root, per_class_limit)
    return LabelledImages(
        decode_files(paths),
        labels,
        class_names,
        f"image folder {root.name}: {len(paths)} images in {len(class_names)} classes",
    )


def load_cifar10_download() -> LabelledImages:
    """The official CIFAR-10 training set through `keras.datasets` (downloads on first use)."""
    (images, labels), _ = keras.datasets.cifar10.load_data()
    return LabelledImages(
        images.astype(np.uint8),
        labels.reshape(-1).astype(np.int64),
        CIFAR10_CLASSES,
        "CIFAR-10 training set (keras.datasets.cifar10): 50000 images in 10 classes",
    )


def split_validation(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed (train_indices, val_indices); the validation indices never enter training."""
    if not 0 < val_size < n:
        raise ValueError(f"validation size must be between 1 and {n - 1}, got {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


class AugmentedBatches(keras.utils.PyDataset):
    """Shuffled batches with random 4-pixel-padded crops and horizontal flips, float32 in [0, 1].

    Every shuffle and crop is a function of (seed, epoch, batch index), so a resumed run draws
    exactly what the uninterrupted run would have drawn.
    """

    def __init__(self, data: LabelledImages, batch_size: int, seed: int, augment: bool = True, epoch: int = 0):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.epoch = epoch
        self.order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._shuffle()

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.data.images[rows]
        if self.augment:
            images = random_crop_flip(images, np.random.default_rng([self.seed, self.epoch, index]))
        return scale_to_unit(images), self.data.labels[rows]


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """uint8 (N, H, W, C) -> same shape: reflect-pad by `pad`, crop at a random offset, flip half."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy = rng.integers(0, 2 * pad + 1, size=(n,))
    dx = rng.integers(0, 2 * pad + 1, size=(n,))
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out
