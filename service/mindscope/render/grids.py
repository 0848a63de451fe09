"""Activation maps as a grid of colour-mapped channels beside the input, and the layer GIF."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from mindscope.render.encode import BACKGROUND, MARGIN, colorize, png_bytes, to_uint8, upscale

TILE = 96
COLUMNS = 9


def grid_size(channel_count: int, columns: int = COLUMNS, tile: int = TILE) -> tuple[int, int]:
    """(width, height) in pixels of `activation_grid` for this many channels."""
    cols = min(columns, max(channel_count, 1))
    rows = math.ceil(channel_count / cols) if channel_count else 1
    width = MARGIN + tile + 2 * MARGIN + cols * (tile + MARGIN)
    height = MARGIN + max(rows * (tile + MARGIN), tile + MARGIN) + 16
    return width, height


def _grid_image(image: np.ndarray, values: np.ndarray, title: str, columns: int, tile: int) -> Image.Image:
    channel_count = values.shape[-1]
    width, height = grid_size(channel_count, columns, tile)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    canvas.paste(upscale(to_uint8(image), tile), (MARGIN, MARGIN))
    cols = min(columns, max(channel_count, 1))
    left = MARGIN + tile + 2 * MARGIN
    for c in range(channel_count):
        row, col = divmod(c, cols)
        # Each channel is normalised on its own, as in the seed's grids.
        tile_image = upscale(colorize(values[..., c]), tile)
        canvas.paste(tile_image, (left + col * (tile + MARGIN), MARGIN + row * (tile + MARGIN)))
    ImageDraw.Draw(canvas).text((MARGIN, height - 14), title, fill=(0, 0, 0))
    return canvas


def activation_grid(
    image: np.ndarray, values: np.ndarray, title: str, columns: int = COLUMNS, tile: int = TILE
) -> bytes:
    """image: float32 (32, 32, 3) in [0, 1]; values: float32 (H, W, C) -> PNG of size `grid_size(C)`."""
    return png_bytes(_grid_image(image, values, title, columns, tile))


def activation_animation(
    image: np.ndarray, frames: list[tuple[str, np.ndarray]], channels: int = 27, frame_ms: int = 900
) -> bytes:
    """GIF: the input alone, then each (title, float32 (H, W, C)) layer's first `channels` channels.

    Every frame has the size `grid_size(channels)`.
    """
    size = grid_size(channels)
    first = Image.new("RGB", size, BACKGROUND)
    first.paste(upscale(to_uint8(image), TILE), (MARGIN, MARGIN))
    ImageDraw.Draw(first).text((MARGIN, size[1] - 14), "input", fill=(0, 0, 0))
    pictures = [first]
    for title, values in frames:
        canvas = Image.new("RGB", size, BACKGROUND)
        canvas.paste(_grid_image(image, values[..., :channels], title, COLUMNS, TILE), (0, 0))
        pictures.append(canvas)
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()
