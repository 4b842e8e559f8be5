"""Pictures a mineralogist keeps: an overlay of the minerals with their legend and a scale bar in µm, as one image.

Drawn with Pillow into the pixels themselves (not a plotting library), so the picture stays true when it is copied
into a report or a slide: the legend names the minerals present (catalogue colours), and the scale bar, drawn
only when the pixel size is known, has a round length (1, 2 or 5 × 10ⁿ µm) close to a fifth of the image width.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.colours import overlay


def nice_length_um(width_px: int, pixel_size_um: float, fraction: float = 0.2) -> float:
    """A round scale-bar length in µm (1, 2 or 5 × 10ⁿ) at most ``fraction`` of an image ``width_px`` wide.

    Raises:
        ValueError: a non-positive width or pixel size.
    """
    if width_px <= 0 or not pixel_size_um > 0:
        raise ValueError(f"width and pixel size must be positive, got {width_px} px and {pixel_size_um} µm")
    target = width_px * pixel_size_um * fraction
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5, 10) if m * power <= target)


@functools.lru_cache(maxsize=16)
def _micro(size: int) -> str:
    """``"µ"`` when the default font of ``size`` draws it, else ``"u"`` (decided once per size, not per picture)."""
    return _drawable("µ", size)


_ASCII = {"µ": "u", "–": "-", "—": "-", "×": "x", "²": "2", "³": "3"}
"""Stand-ins for characters a bitmap default font may lack (it draws a box instead)."""


@functools.lru_cache(maxsize=256)
def _drawable(char: str, size: int) -> str:
    """``char``, or its ASCII stand-in when the default font of ``size`` cannot draw it."""
    if char.isascii() or char not in _ASCII:
        return char
    return char if _has_glyph(ImageFont.load_default(size=size), char) else _ASCII[char]


def _plain(text: str, size: int) -> str:
    """``text`` with every character the default font of ``size`` lacks replaced (e.g. the en dash in a name)."""
    return "".join(_drawable(c, size) for c in text)


def _has_glyph(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, char: str) -> bool:
    """Whether ``font`` draws ``char`` (not the box it draws for characters it lacks)."""

    def render(c: str) -> bytes:
        im = Image.new("L", (64, 64))
        ImageDraw.Draw(im).text((0, 0), c, font=font, fill=255)
        return im.tobytes()

    return render(char) != render("\uffff")


def scale_bar_label(length_um: float, micro: str = "µ") -> str:
    """A scale bar's label: ``"200 µm"``, or ``"2 mm"`` from 1000 µm (``micro`` replaces ``µ`` for fonts without it)."""
    return f"{length_um / 1000:g} mm" if length_um >= 1000 else f"{length_um:g} {micro}m"


def annotated_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    pixel_size_um: float | None = None,
    alpha: float = 0.45,
    codes: Sequence[int] | None = None,
) -> np.ndarray:
    """The mask's colours over the image, with a legend of the minerals present and a scale bar in µm.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` LumenStone codes (255 = unlabelled, not drawn).
        pixel_size_um: µm per pixel of ``image``; ``None`` draws no scale bar (lengths unknown).
        alpha: mask opacity in [0, 1].
        codes: minerals to list (default: every code present except background 0 and 255).

    Returns:
        ``(H, W, 3)`` uint8: the overlay with the legend in the top-left corner and the scale bar bottom right.

    Raises:
        ValueError: image and mask sizes differ.
    """
    out = Image.fromarray(overlay(image, mask, alpha=alpha))
    h, w = mask.shape
    size = max(10, min(h, w) // 40)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(out)
    present = np.flatnonzero(np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256))
    codes = [c for c in (codes if codes is not None else present) if c in CATALOGUE and c not in (0, IGNORE)]
    pad = max(2, size // 3)
    if codes:
        lines = [_plain(f"{CATALOGUE[c].label}  {CATALOGUE[c].name}", size) for c in codes]
        text_w = max(draw.textlength(s, font=font) for s in lines)
        box = (pad, pad, int(3 * pad + size + text_w + pad), int(pad + len(lines) * (size + pad) + pad))
        draw.rectangle(box, fill=(255, 255, 255), outline=(0, 0, 0))
        for i, (c, s) in enumerate(zip(codes, lines, strict=True)):
            y = 2 * pad + i * (size + pad)
            draw.rectangle((2 * pad, y, 2 * pad + size, y + size), fill=CATALOGUE[c].colour, outline=(0, 0, 0))
            draw.text((3 * pad + size, y), s, fill=(0, 0, 0), font=font)
    if pixel_size_um:
        length = nice_length_um(w, pixel_size_um)
        bar = round(length / pixel_size_um)
        x1, y1 = w - 2 * pad, h - 2 * pad
        label = scale_bar_label(length, _micro(size))
        tw = draw.textlength(label, font=font)
        draw.rectangle((x1 - max(bar, int(tw)) - pad, y1 - size - 2 * pad - max(2, size // 4), x1 + pad, y1 + pad),
                       fill=(255, 255, 255))
        draw.rectangle((x1 - bar, y1 - max(2, size // 4), x1 - 1, y1), fill=(0, 0, 0))
        draw.text((x1 - bar / 2 - tw / 2, y1 - size - pad - max(2, size // 4)), label, fill=(0, 0, 0), font=font)
    return np.asarray(out)
