"""Turning feature maps into pictures, in one place to import from: value ranges and the square-root scale
(``ranges``), colour tables and enlargement (``colours``), words and numbers (``labels``) and colour bars
(``colorbar``)."""

from cnnx.base.choices import NORMALIZE, SCOPES, STRETCHES
from cnnx.render.colorbar import colorbar
from cnnx.render.colours import CMAP_ALIASES, MIN_THICKNESS, colorize, colormap, picture, thumbnail, upscale
from cnnx.render.labels import BACKGROUND, INK, font, format_number, pair_text, shape_text, text_width, write
from cnnx.render.ranges import (
    PERCENTILE_LEAST,
    PERCENTILE_SAMPLE,
    Indexed,
    Style,
    indexed,
    to_index,
    to_value,
    value_range,
)

__all__ = [
    "BACKGROUND", "CMAP_ALIASES", "INK", "MIN_THICKNESS", "NORMALIZE", "PERCENTILE_LEAST", "PERCENTILE_SAMPLE",
    "SCOPES", "STRETCHES", "Indexed", "Style", "colorbar", "colorize", "colormap", "font", "format_number",
    "indexed", "pair_text", "picture", "shape_text", "text_width", "thumbnail", "to_index", "to_value", "upscale",
    "value_range", "write",
]
