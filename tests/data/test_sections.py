"""A mineralogist's own sections: folders, samples.csv, and the pixel size of every image with its source."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from lumenkit.data.imageio import save_image, write_text
from lumenkit.data.sections import metadata_pixel_size_um, read_sections, require_pixel_sizes, sections_table
from lumenkit.errors import ConfigError, DatasetNotFoundError

IMG = np.full((16, 24, 3), 120, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "sections"
    save_image(IMG, root / "north" / "s12_a.jpg")
    save_image(IMG, root / "north" / "s12_b.png")
    save_image(IMG, root / "south" / "deep" / "s40.jpg")
    save_image(IMG, root / ".hidden" / "skip.jpg")
    tifffile.imwrite(root / "ome.ome.tif", IMG, photometric="rgb", metadata={"PhysicalSizeX": 0.65,
                                                                             "PhysicalSizeY": 0.65})
    # 1.3 µm per pixel written as pixels per centimetre
    tifffile.imwrite(root / "tags.tif", IMG, photometric="rgb", resolution=(10_000 / 1.3, 10_000 / 1.3),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(root / "screen.tif", IMG, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    return root


def test_every_image_at_any_depth_with_pixel_size_and_its_source(folder):
    write_text(folder / "samples.csv", "image,sample,deposit,pixel_size_um,operator\n"
               "north/s12_a.jpg,S12,North,1.30,AK\ns12_b,S12,North,,AK\nome.ome,O1,West,0.655,\n")
    got = {s.name: s for s in read_sections(folder, pixel_size_um=0.9)}
    assert sorted(got) == ["north/s12_a", "north/s12_b", "ome.ome", "screen", "south/deep/s40", "tags"]
    assert (got["north/s12_a"].pixel_size_um, got["north/s12_a"].pixel_size_source) == (1.3, "samples.csv")
    assert got["north/s12_a"].sample == "S12" and got["north/s12_a"].deposit == "North"
    assert got["north/s12_a"].extra == {"operator": "AK"}
    assert (got["north/s12_b"].pixel_size_um, got["north/s12_b"].pixel_size_source) == (0.9, "parameter")
    # within 1 % of the file's OME-XML 0.65 µm: the CSV's value is used
    assert (got["ome.ome"].pixel_size_um, got["ome.ome"].pixel_size_source) == (0.655, "samples.csv")
    assert got["tags"].pixel_size_um == pytest.approx(1.3) and got["tags"].pixel_size_source == "TIFF tags"
    assert got["screen"].pixel_size_source == "parameter"  # 72 dpi is no microscope calibration
    assert got["south/deep/s40"].sample == "south/deep/s40" and got["south/deep/s40"].deposit == ""
    table = sections_table(list(got.values()))
    assert {"image", "sample", "deposit", "pixel_size_um", "pixel_size_source", "operator"} <= set(table.columns)


def test_metadata_order_and_unknown_pixel_size(folder):
    assert metadata_pixel_size_um(folder / "ome.ome.tif") == (pytest.approx(0.65), "OME-XML")
    assert metadata_pixel_size_um(folder / "north" / "s12_a.jpg") == (None, None)
    sections = {s.name: s for s in read_sections(folder)}
    assert sections["south/deep/s40"].pixel_size_um is None and sections["south/deep/s40"].pixel_size_source is None
    with pytest.raises(ConfigError, match=r"s12_a.jpg: no pixel size known; add its pixel_size_um to samples.csv"):
        require_pixel_sizes(list(sections.values()))


def test_bad_folders_and_tables_are_one_line_errors(tmp_path, folder):
    with pytest.raises(DatasetNotFoundError, match="folder of sections not found"):
        read_sections(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="holds no images"):
        read_sections(tmp_path / "empty")
    write_text(folder / "samples.csv", "image,sample\nnorth/s12_a,S12\nmissing_one,S99\n")
    with pytest.raises(ConfigError, match=r"samples.csv: names images not in .*\['missing_one'\]"):
        read_sections(folder)
    write_text(folder / "samples.csv", "image,pixel_size_um\ns40,1.3\ns40,2.6\n")
    with pytest.raises(ConfigError, match="listed more than once with different values"):
        read_sections(folder)
    write_text(folder / "samples.csv", "image,pixel_size_um\ns40,-1\n")
    with pytest.raises(ConfigError, match="pixel_size_um must be a positive number"):
        read_sections(folder)
    write_text(folder / "samples.csv", "sample,deposit\nS1,North\n")
    with pytest.raises(ConfigError, match="no 'image' column"):
        read_sections(folder)
    with pytest.raises(ConfigError, match="samples table not found"):
        read_sections(folder, samples_csv=tmp_path / "nope.csv")


def test_non_square_pixels_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", IMG, photometric="rgb", resolution=(10_000, 5_000),
                     resolutionunit="CENTIMETER")
    with pytest.raises(ConfigError, match=r"a.tif: TIFF XResolution/YResolution declare non-square pixels"):
        read_sections(tmp_path)


def test_one_sample_name_in_two_deposits_is_refused(tmp_path):
    for name in ("a", "b"):
        save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / f"{name}.png")
    write_text(tmp_path / "samples.csv", "image,sample,deposit\na,S1,North\nb,S1,South\n")
    with pytest.raises(ConfigError, match=r"sample 'S1' is in deposits \['North', 'South'\].*North-S1"):
        read_sections(tmp_path)


@pytest.mark.parametrize(("image", "declared", "source"),
                         [("ome.ome", "0.65", "OME-XML"), ("tags", "1.3", "TIFF tags")])
def test_a_pixel_size_that_contradicts_the_files_own_is_refused(folder, image, declared, source):
    """samples.csv and the file's metadata more than 1 % apart: one line naming the image, both values and sources."""
    write_text(folder / "samples.csv", f"image,pixel_size_um\n{image},2.0\n")
    with pytest.raises(ConfigError) as e:
        read_sections(folder)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(folder / f"{image}.tif"))
    assert f"pixel size 2 µm in {folder / 'samples.csv'} differs from {declared} µm in the file's {source}" in msg
    assert "correct one of them, or leave its pixel_size_um empty in samples.csv to use the file's" in msg
    write_text(folder / "samples.csv", f"image,pixel_size_um\n{image},{float(declared) * 1.009}\n")
    assert {s.name: s.pixel_size_source for s in read_sections(folder)}[image] == "samples.csv"  # within 1 %
    write_text(folder / "samples.csv", f"image,pixel_size_um\n{image},\n")
    got = {s.name: s for s in read_sections(folder)}[image]
    assert got.pixel_size_um == pytest.approx(float(declared)) and got.pixel_size_source == source


def test_a_samples_csv_value_is_the_fix_for_non_square_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", IMG, photometric="rgb", resolution=(10_000, 5_000),
                     resolutionunit="CENTIMETER")
    write_text(tmp_path / "samples.csv", "image,pixel_size_um\na,1.5\n")
    (got,) = read_sections(tmp_path)
    assert (got.pixel_size_um, got.pixel_size_source) == (1.5, "samples.csv")
