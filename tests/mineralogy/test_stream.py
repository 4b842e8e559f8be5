"""Streamed mineralogy: band by band, every table equal bit for bit to the whole mask's (grains across borders)."""

import numpy as np
import pandas as pd
import pytest
import tifffile

from lumenkit.data.mosaic import MosaicMask
from lumenkit.data.sections import Section
from lumenkit.errors import BadMaskError
from lumenkit.mineralogy.analysis import contact_matrix, grains, modal_composition
from lumenkit.mineralogy.stream import pixel_counts, stream_mineralogy
from lumenkit.mineralogy.survey import survey_masks
from lumenkit.synth.render import generate_section

CODES = [0, 1, 2, 3, 4]


def blocky(seed, h, w, ignore=0.02):
    """Random mask of 3×3 blocks with speckle and unlabelled pixels: many grains of every shape and size."""
    rng = np.random.default_rng(seed)
    m = np.kron(rng.integers(0, 4, (h // 3 + 1, w // 3 + 1)), np.ones((3, 3), np.int64))[:h, :w].astype(np.uint8)
    speck = rng.random((h, w)) < 0.1
    m[speck] = rng.integers(0, 5, int(speck.sum()))
    m[rng.random((h, w)) < ignore] = 255
    return m


def assert_same(streamed, mask, codes, px=None):
    pd.testing.assert_frame_equal(streamed.grains, grains(mask, px, codes), check_exact=True)
    pd.testing.assert_frame_equal(streamed.contacts, contact_matrix(mask, codes))
    pd.testing.assert_frame_equal(streamed.modal(), modal_composition(mask, codes))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("band_rows", [2, 3, 7, 25])
def test_random_masks_equal_the_whole_mask_bit_for_bit(seed, band_rows):
    rng = np.random.default_rng(1000 + seed)
    mask = blocky(seed, *map(int, rng.integers(4, 70, 2)))
    assert_same(stream_mineralogy(mask, CODES, 1.5, band_rows=band_rows), mask, CODES, 1.5)


def test_shapes_that_join_late_hold_holes_or_touch_only_diagonally():
    m = np.zeros((40, 30), np.uint8)
    m[2:38, 3] = m[2:38, 9] = 1  # a U: two arms in separate pieces for 35 rows, joined at the bottom
    m[37, 3:10] = 1
    m[5:20, 14:24] = 2  # a grain with a hole across a band border
    m[9:13, 18:20] = 0
    m[21, 25] = m[22, 26] = m[23, 27] = 3  # a diagonal chain: 8-connected through the corners only
    m[30:40, 20:30] = 4  # touches the bottom and right image edges
    m[15, :] = 255  # unlabelled row cutting grains
    for rows in (2, 4, 5, 11):
        s = stream_mineralogy(m, CODES, band_rows=rows)
        assert_same(s, m, CODES)
    assert s.joined > 0
    u = s.grains[s.grains["code"] == 1]
    assert len(u) == 3  # the row of 255 cuts the U: two arm stubs above it, one U below (its arms joined late)
    assert u["area_px"].max() == 2 * 22 + 5
    assert stream_mineralogy(m, CODES, band_rows=2).joined > 0  # the U is taller than two bands: joined from pieces


class CountingRows:
    """A mask served band by band that records every region read."""

    def __init__(self, mask):
        self.mask, self.shape, self.reads = mask, mask.shape, []

    def read(self, y0, y1, x0=0, x1=None):
        self.reads.append((y0, y1, x0, x1))
        return self.mask[y0:y1, x0:x1]


def test_grains_taller_than_many_bands_are_measured_from_their_pieces_reading_each_row_once():
    """A percolating network, a grain with holes across many bands and a spiral: each row read once, the tables
    still equal the whole mask's bit for bit (memory: one band, whatever the grains' size)."""
    m = np.zeros((120, 90), np.uint8)
    m[::6, :] = 1  # a grid of code 1 spanning the whole mask: one grain, 20 bands tall
    m[:, ::7] = 1
    m[3:118, 40:80][(np.arange(115)[:, None] % 9 > 1) & (np.arange(40)[None, :] % 11 > 2)] = 2  # holes
    yy, xx = np.mgrid[:120, :90]
    r, t = np.hypot(yy - 60, xx - 20), np.arctan2(yy - 60, xx - 20)
    m[(np.mod(r - 2.5 * t, 2 * np.pi * 2.5) < 4) & (r < 18)] = 3  # a spiral arm
    src = CountingRows(m)
    s = stream_mineralogy(src, CODES, band_rows=6)
    assert_same(s, m, CODES)
    assert all(y1 - y0 <= 6 for y0, y1, _, _ in src.reads)
    rows = np.concatenate([np.arange(y0, y1) for y0, y1, _, _ in src.reads])
    np.testing.assert_array_equal(np.sort(rows), np.arange(120))  # no region read again
    grid = s.grains[s.grains["code"] == 1].iloc[0]  # the grid: one grain over every band, a hole per cell
    assert grid["area_px"] > 0.2 * m.size and grid["holes"] > 100 and s.joined >= 3


def test_a_disc_far_from_the_origin_reads_isotropic():
    """The kernel's moments are relative to each grain: no cancellation at large coordinates."""
    yy, xx = np.mgrid[:41, :41]
    disc = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 400).astype(np.uint8)
    far = np.zeros((30_041, 41), np.uint8)
    far[-41:] = disc
    a, b = grains(disc, codes=[0, 1]), grains(far, codes=[0, 1])
    assert b.loc[0, "orientation_deg"] == 0.0 and b.loc[0, "elongation"] == pytest.approx(1.0, abs=1e-12)
    for col in ("area_px", "perimeter_px", "feret_max_px", "feret_min_px", "solidity", "elongation"):
        assert a.loc[0, col] == b.loc[0, col]
    assert b.loc[0, "y"] == a.loc[0, "y"] + 30_000


@pytest.fixture(scope="module")
def section_mask():
    _, mask = generate_section("cutnt_c", (1203, 1001), np.random.default_rng(0), scale=1.0)
    return mask


def test_a_tiled_tiff_mask_streams_to_the_whole_mask_tables(section_mask, tmp_path):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, section_mask, tile=(256, 256), compression="zlib")
    codes = [int(c) for c in np.unique(section_mask) if c != 255]
    s = stream_mineralogy(path, codes, 0.5, band_rows=96)
    assert s.joined > 10 and s.bands == 11
    assert_same(s, section_mask, codes, 0.5)
    assert s.shape == section_mask.shape
    np.testing.assert_array_equal(pixel_counts(path, 100), np.bincount(section_mask.ravel(), minlength=256))
    with MosaicMask(path) as m:
        np.testing.assert_array_equal(m.read(100, 300, 50, 70), section_mask[100:300, 50:70])


def test_survey_of_a_mask_on_disk_equals_the_survey_of_the_array(section_mask, tmp_path):
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, section_mask, tile=(256, 256))
    sec = [Section(name="s", path=tmp_path / "s.tif", sample="A", deposit="D", pixel_size_um=0.7)]
    a, b = survey_masks({"s": section_mask}, sec), survey_masks({"s": path}, sec)
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(b.tables()[name], table, check_exact=True, obj=name)


def test_bad_mask_files_are_one_line(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    with pytest.raises(BadMaskError, match="not one 8-bit code per pixel"):
        stream_mineralogy(rgb)
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, blocky(0, 600, 600), tile=(256, 256), compression="zlib")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(BadMaskError, match=r"cut\.tif") as e:
        stream_mineralogy(cut, CODES)
    assert "\n" not in str(e.value)
    with pytest.raises(BadMaskError, match="does not exist"):
        stream_mineralogy(tmp_path / "none.tif")
    with pytest.raises(ValueError, match="band_rows"):
        stream_mineralogy(np.zeros((4, 4), np.uint8), band_rows=1)
