"""Matplotlib without pyplot: figures are built and encoded on request threads, concurrently, so
each has its own canvas and nothing touches pyplot's global state."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mindscope import tracing

DPI = 100


def new_figure(width_in: float, height_in: float) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def encode(figure: Figure, image_format: str = "png") -> bytes:
    with tracing.span("render", format=image_format):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=image_format, dpi=DPI)
        return buffer.getvalue()


def rgb_frame(figure: Figure) -> np.ndarray:
    """The drawn figure as uint8 (H, W, 3), for frames of an animation."""
    canvas = figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
