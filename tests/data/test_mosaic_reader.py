"""Mosaics read lazily: regions decode only their tiles, pyramid levels are checked, bad files are one line."""

import numpy as np
import pytest
import tifffile

from lumenkit.data.imageio import resize_image, target_size
from lumenkit.data.mosaic import Mosaic, is_mosaic
from lumenkit.errors import BadImageError

IMG = np.random.default_rng(0).integers(0, 256, (1001, 1203, 3), dtype=np.uint8)


def write(path, image=IMG, levels=(), **kw):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(image, tile=(256, 256), photometric="rgb", compression="zlib", subifds=len(levels), **kw)
        for lv in levels:
            tw.write(lv, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    return path


def test_regions_and_scaled_rows_equal_the_whole_image(tmp_path):
    path = write(tmp_path / "m.tif", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with Mosaic(path) as m:
        assert m.shape == (1001, 1203) and m.pixel_size_um == pytest.approx(0.5)
        np.testing.assert_array_equal(m.read(300, 700, 100, 900), IMG[300:700, 100:900])
        size = m.scaled_size(0.125)
        whole = resize_image(IMG, size)
        got = np.concatenate([m.scaled_rows(0.125, a, min(size[1], a + 13)) for a in range(0, size[1], 13)])
        np.testing.assert_array_equal(got, whole)
    assert is_mosaic(path, min_pixels=1_000_000) and not is_mosaic(path)  # below the default 64 MP


def test_the_pyramid_level_nearest_the_scale_is_read(tmp_path):
    half = IMG[::2, ::2]
    quarter = IMG[::4, ::4]
    path = write(tmp_path / "p.tif", levels=(half, quarter))
    with Mosaic(path) as m:
        assert [lv.shape for lv in m.levels] == [(1001, 1203), half.shape[:2], quarter.shape[:2]]
        assert m.levels[1].downsample == pytest.approx(1001 / 501)
        assert [m.level_for(f) for f in (1.0, 0.6, 0.5, 0.3, 0.2)] == [0, 0, 1, 1, 2]
        rows = m.scaled_rows(0.125, 0, 10)
        np.testing.assert_array_equal(rows, resize_image(quarter, target_size((1203, 1001), 0.125))[:10])
        for level, image in enumerate((IMG, half, quarter)):  # every level, level 0 of a pyramid included
            np.testing.assert_array_equal(m.read(5, 105, 7, 207, level=level), image[5:105, 7:207])
        np.testing.assert_array_equal(m.scaled_rows(1.0, 0, 3), IMG[:3])


def test_bad_mosaics_are_one_line_naming_the_file(tmp_path):
    bad = write(tmp_path / "levels.tif", levels=(IMG[::2, ::3],))  # 2× down in y, 3× in x
    with pytest.raises(BadImageError, match=r"levels.tif: pyramid level 1 .* rebuild the pyramid"):
        Mosaic(bad)
    deep = tmp_path / "deep.tif"
    tifffile.imwrite(deep, np.zeros((300, 300, 3), np.uint16), tile=(256, 256), photometric="rgb")
    with pytest.raises(BadImageError, match=r"must be 8-bit RGB"):
        Mosaic(deep)
    whole = write(tmp_path / "whole.tif").read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(BadImageError, match=r"cut.tif: .*(truncated|not a readable TIFF)"):
        with Mosaic(cut) as m:
            m.read(0, m.shape[0])
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(BadImageError, match=r"junk.tif: not a readable TIFF"):
        Mosaic(tmp_path / "junk.tif")
    for err in (BadImageError,):
        assert "\n" not in str(err(f"{cut}: x"))


@pytest.mark.parametrize("reduction", [2, 4])
def test_a_pyramid_level_of_another_sample_type_is_named(tmp_path, reduction):
    """A 16-bit level in an 8-bit pyramid: tifffile splits the pyramid (at 2× it looked like a second image)."""
    deep = IMG[::reduction, ::reduction].astype(np.uint16) * 257
    for sub, name in ((True, "sub.tif"), (False, "pages.tif")):  # in sub-IFDs, or as the pages after level 0
        path = tmp_path / f"{reduction}-{name}"
        if sub:
            write(path, levels=(deep,))
        else:
            with tifffile.TiffWriter(path, bigtiff=True) as tw:
                tw.write(IMG, tile=(256, 256), photometric="rgb", compression="zlib")
                tw.write(deep, tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
        with pytest.raises(BadImageError) as err:
            Mosaic(path)
        assert str(err.value) == (f"{path}: pyramid level 1 is uint16, level 0 uint8; a mosaic and its pyramid are "
                                  "8-bit RGB: export it again as 8-bit RGB (its pyramid rebuilt)")
    # in a pyramid of two levels: the 16-bit one first (2×) or second (4×)
    path = write(tmp_path / "two.tif", levels=(deep, IMG[::4, ::4]) if reduction == 2 else (IMG[::2, ::2], deep))
    with pytest.raises(BadImageError, match=rf"two.tif: pyramid level {reduction // 2} is uint16, level 0 uint8; "):
        Mosaic(path)


def test_a_pyramid_stored_as_the_pages_after_level_0_is_read(tmp_path):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(IMG, tile=(256, 256), photometric="rgb", compression="zlib")
        tw.write(IMG[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    with Mosaic(path) as m:
        assert [lv.shape for lv in m.levels] == [(1001, 1203), (501, 602)]
        np.testing.assert_array_equal(m.read(0, 501, level=1), IMG[::2, ::2])


@pytest.mark.parametrize("thumb", ["rgb", "grey", "16-bit"])
def test_a_thumbnail_page_is_not_taken_for_a_pyramid_level(tmp_path, thumb):
    """Microscope software often stores a small preview after the image: not sized as a level, it is left alone."""
    small = IMG[::10, ::9][:100, :130]
    small = {"rgb": small, "grey": small[..., 0], "16-bit": small.astype(np.uint16) * 257}[thumb]
    path = tmp_path / "thumb.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(IMG, tile=(256, 256), photometric="rgb", compression="zlib")
        tw.write(small, photometric="rgb" if small.ndim == 3 else "minisblack", subfiletype=1)
    with Mosaic(path) as m:
        assert [lv.shape for lv in m.levels] == [(1001, 1203)]
        np.testing.assert_array_equal(m.read(0, 1001), IMG)


def test_a_tile_that_decodes_to_the_wrong_size_is_one_line(tmp_path):
    import zlib

    path = write(tmp_path / "tile.tif")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[6]  # tile (1, 1): rows 256–512
    data = bytearray(path.read_bytes())
    short = zlib.compress(bytes(256 * 100 * 3))  # valid deflate, but 100 rows of the tile's 256
    data[offset : offset + len(short)] = short
    path.write_bytes(bytes(data))
    with Mosaic(path) as m:
        np.testing.assert_array_equal(m.read(0, 256), IMG[:256])  # the tiles above decode
        with pytest.raises(BadImageError) as err:
            m.read(200, 600, 0, 600)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: cannot decode rows 200–600 of level 0 (")
    assert message.endswith("the file is truncated or damaged: copy or export it again")


def test_what_cannot_be_read_region_by_region_is_refused(tmp_path, monkeypatch):
    from lumenkit.data import mosaic as mod

    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(IMG[:300, :300], -1, 0), photometric="rgb", planarconfig="separate",
                     tile=(256, 256))
    with pytest.raises(BadImageError, match=r"planar.*interleaved RGB"):
        Mosaic(planar)
    striped = tmp_path / "striped.tif"
    tifffile.imwrite(striped, IMG[:300, :300], photometric="rgb", rowsperstrip=300)
    monkeypatch.setattr(mod, "_MAX_STRIP_BYTES", 100_000)  # one 270 kB strip
    with pytest.raises(BadImageError, match=r"strips of 0 MB.*re-export the mosaic tiled"):
        Mosaic(striped)
    monkeypatch.setattr(mod, "_MAX_STRIP_BYTES", 1_000_000)
    with Mosaic(striped) as m:  # strips small enough: read region by region
        np.testing.assert_array_equal(m.read(100, 200), IMG[100:200, :300])
