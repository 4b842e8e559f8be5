"""Palette-PNG masks, the ImageJ lookup table, and napari labels images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from lumenkit.data.catalogue import CATALOGUE
from lumenkit.data.imageio import read_mask, save_palette_mask
from lumenkit.errors import UnknownClassError
from lumenkit.interop.imagej import LUT_SIZE, lut_bytes, write_imagej_lut
from lumenkit.interop.napari import mask_from_labels_image


def codes_mask() -> np.ndarray:
    rng = np.random.default_rng(0)
    vals = np.array([*CATALOGUE, 255], dtype=np.uint8)
    return vals[rng.integers(0, len(vals), size=(30, 40))]


def test_palette_png_round_trip_and_colours(tmp_path: Path) -> None:
    m = codes_mask()
    p = tmp_path / "mask.png"
    save_palette_mask(m, p)
    assert np.array_equal(read_mask(p, expected_size=(40, 30)), m)
    with Image.open(p) as im:
        assert im.mode == "P" and im.format == "PNG"
        pal = np.array(im.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
        shown = np.asarray(im.convert("RGB"))
    for code, mineral in CATALOGUE.items():
        assert tuple(pal[code]) == mineral.colour
    assert tuple(pal[255]) == (255, 255, 255)
    assert tuple(shown[m == 1][0]) == CATALOGUE[1].colour


def test_palette_png_refuses_other_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        save_palette_mask(codes_mask(), tmp_path / "mask.jpg")


def test_imagej_lut_bytes(tmp_path: Path) -> None:
    p = write_imagej_lut(tmp_path / "lumenstone.lut")
    data = p.read_bytes()
    assert len(data) == LUT_SIZE == 768 and data == lut_bytes()
    r, g, b = data[:256], data[256:512], data[512:]
    for code, mineral in CATALOGUE.items():
        assert (r[code], g[code], b[code]) == mineral.colour
    assert (r[255], g[255], b[255]) == (255, 255, 255)


def test_napari_labels_as_codes(tmp_path: Path) -> None:
    m = codes_mask()
    p = tmp_path / "labels.tif"
    tifffile.imwrite(p, m.astype(np.int32))
    assert np.array_equal(mask_from_labels_image(p), m)


def test_napari_labels_with_mapping(tmp_path: Path) -> None:
    ids = np.zeros((8, 8), dtype=np.int32)
    ids[:4] = 1
    ids[4:, :4] = 7
    p = tmp_path / "labels.png"
    Image.fromarray(ids.astype(np.uint8)).save(p)
    out = mask_from_labels_image(p, {1: "chalcopyrite", 7: "Gl"})
    assert (out[:4] == 1).all() and (out[4:, :4] == 2).all() and (out[4:, 4:] == 255).all()
    with pytest.raises(UnknownClassError, match="not in the mapping"):
        mask_from_labels_image(p, {1: "Ccp"})
    with pytest.raises(UnknownClassError, match="not LumenStone codes"):
        tifffile.imwrite(tmp_path / "big.tif", np.full((2, 2), 300, dtype=np.int32))
        mask_from_labels_image(tmp_path / "big.tif")
