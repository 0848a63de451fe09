"""One way to turn any decoded picture into the model's input, shared by training and serving."""

from __future__ import annotations

import numpy as np
from PIL import ExifTags, Image, ImageOps

# Modes with an alpha channel (premultiplied ones included), composited on white.
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def upright(image: Image.Image) -> tuple[Image.Image, int]:
    """(the image turned as its EXIF Orientation tag says, that tag): phone cameras store photos
    sideways and record how to turn them; 1 means the pixels are already upright."""
    try:
        orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (OSError, ValueError, SyntaxError, TypeError):  # unreadable EXIF: use the pixels as stored
        return image, 1
    if orientation not in range(2, 9):
        return image, 1
    return ImageOps.exif_transpose(image), orientation


def to_eight_bit(image: Image.Image) -> Image.Image:
    """Greyscale modes wider than 8 bits -> mode L, scaled by their range rather than clipped at 255.

    - 16-bit (`I;16*`, how Pillow opens a 16-bit greyscale PNG): 0-65535 -> 0-255.
    - 32-bit integer (`I`): 0-65535 when every value fits there, else the whole int32 range.
    - float (`F`): values within 0-1 are taken as 0-1; otherwise as 0-255, clipped.
    Every other mode is returned as it is.
    """
    if image.mode not in (*_SIXTEEN_BIT_MODES, "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        finite = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        unit = finite.size and finite.min() >= 0 and finite.max() <= 1
        scaled = finite * 255.0 if unit else finite
    elif image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
        scaled = (values + 2.0**31) * (255.0 / (2.0**32 - 1))
    else:
        scaled = values * (255.0 / 65535.0)
    return Image.fromarray(np.clip(scaled, 0, 255).round().astype(np.uint8), mode="L")


def to_rgb_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Convert a PIL image of any mode and size to uint8 (H, W, 3) RGB at `size` (width, height).

    Wide greyscale modes are scaled to 8 bits (`to_eight_bit`); CMYK and palettes convert as
    Pillow converts them. Transparent pixels are composited on white, so an RGBA drawing looks the
    way a person sees it. Resizing uses Pillow's bilinear filter with antialiasing, the same for
    every input format.
    """
    image = to_eight_bit(image)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() would copy an RGB image
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(rgb, dtype=np.uint8)


def to_model_array(image: Image.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """A PIL image of any mode and size -> uint8 (H, W, C) for a model whose input is `shape`
    (height, width, channels): RGB as `to_rgb_array` makes it, then greyscale (ITU-R 601 luma, as
    Pillow converts) when the model takes one channel."""
    height, width, channels = shape
    return fit_channels(to_rgb_array(image, (width, height)), channels)


def fit_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> uint8 (H, W, channels), channels 1 or 3."""
    if channels == 3:
        return rgb
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)[..., None]


def scale_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 images in [0, 255] -> float32 in [0, 1], the model's input range."""
    return images.astype(np.float32) / np.float32(255.0)
