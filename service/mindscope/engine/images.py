"""One way to turn any decoded picture into the model's input, shared by training and serving."""

from __future__ import annotations

import numpy as np
from PIL import Image

INPUT_SIZE = (32, 32)


def to_rgb_array(image: Image.Image, size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """Convert a PIL image of any mode and size to uint8 (H, W, 3) RGB at `size` (width, height).

    Transparent pixels are composited on white, so an RGBA drawing looks the way a person sees it.
    Resizing uses Pillow's bilinear filter with antialiasing, the same for every input format.
    """
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(rgb, dtype=np.uint8)


def scale_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images in [0, 255] -> float32 in [0, 1], the model's input range."""
    return images.astype(np.float32) / np.float32(255.0)
