"""Overlays a mineralogist keeps: the legend names the minerals present, the scale bar has its length in µm."""

from __future__ import annotations

import numpy as np
import pytest

from lumenkit.data.catalogue import CATALOGUE
from lumenkit.data.pictures import annotated_overlay, nice_length_um


def scene():
    mask = np.zeros((300, 400), np.uint8)
    mask[50:150, 100:250] = 1  # chalcopyrite
    mask[200:280, 20:90] = 2  # galena
    return np.full((300, 400, 3), 90, np.uint8), mask


def has_colour(region: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    return bool((region == np.array(rgb, np.uint8)).all(-1).any())


def test_round_scale_bar_lengths():
    assert nice_length_um(400, 1.3) == 100  # a fifth of 520 µm is 104 µm
    assert nice_length_um(3396, 1.3) == 500
    assert nice_length_um(1000, 0.25) == 50
    with pytest.raises(ValueError, match="must be positive"):
        nice_length_um(100, 0)


def test_legend_of_the_minerals_present_and_a_scale_bar_of_the_right_length():
    image, mask = scene()
    out = annotated_overlay(image, mask, pixel_size_um=1.3)
    legend = out[:60, :150]
    assert has_colour(legend, CATALOGUE[1].colour) and has_colour(legend, CATALOGUE[2].colour)
    assert not has_colour(legend, CATALOGUE[6].colour)  # pyrite is absent, so not listed
    bottom = out[250:, 200:]
    black_runs = [(row == 0).all(-1).sum() for row in bottom]
    assert max(black_runs) == round(100 / 1.3)  # a 100 µm bar at 1.3 µm per pixel
    assert out.shape == image.shape and out.dtype == np.uint8


def test_no_scale_bar_without_a_pixel_size():
    image, mask = scene()
    out = annotated_overlay(image, mask, pixel_size_um=None)
    assert max((row == 0).all(-1).sum() for row in out[250:, 200:]) == 0


def test_mineral_names_are_drawn_without_missing_glyphs():
    """The default bitmap font lacks the en dash of "tennantite–tetrahedrite": a stand-in is drawn, never a box."""
    from PIL import ImageFont

    from lumenkit.data.pictures import _has_glyph, _plain

    for size in (10, 16):
        font = ImageFont.load_default(size=size)
        for name in ("Tnt/Ttr  tennantite–tetrahedrite", "200 µm", "2×2 mm²"):
            text = _plain(name, size)
            assert all(c == " " or _has_glyph(font, c) for c in text), (size, text)
            assert len(text) == len(name)  # one stand-in per character
        assert _plain("Tnt/Ttr  tennantite–tetrahedrite", size).endswith(("tennantite–tetrahedrite",
                                                                           "tennantite-tetrahedrite"))

