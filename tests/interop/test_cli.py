"""``lumenkit convert`` and ``lumenkit import-labels`` end to end through :func:`lumenkit.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from lumenkit.cli import main
from lumenkit.data.catalogue import CATALOGUE
from lumenkit.data.imageio import read_mask, save_image
from lumenkit.interop.imagej import lut_bytes

FIXTURE = Path(__file__).parent / "fixtures" / "qupath_annotations.geojson"
W, H = 80, 64


def two_discs() -> np.ndarray:
    """Background with a chalcopyrite disc (code 1), a pyrite disc (code 6) and an unlabelled (255) strip."""
    yy, xx = np.mgrid[:H, :W]
    m = np.zeros((H, W), dtype=np.uint8)
    m[(yy - 20) ** 2 + (xx - 20) ** 2 <= 12**2] = 1
    m[(yy - 40) ** 2 + (xx - 58) ** 2 <= 9**2] = 6
    m[:, 78:] = 255
    return m


def write_masks(folder: Path, **masks: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in masks.items():
        save_image(m, folder / f"{name}.png")
    return folder


def contents(folder: Path) -> list[str]:
    """Every entry of ``folder`` (hidden ones too), or ``[]`` when it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def one_line_error(capsys: pytest.CaptureFixture[str], *names: object) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lumenkit: error: "), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, (name, err)
    return err


# -- convert --------------------------------------------------------------------------------------------------------
def test_convert_to_geojson(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = two_discs()
    masks = write_masks(tmp_path / "masks", s1=m)
    out = tmp_path / "out"
    assert main(["convert", str(masks), "--to", "geojson", "--out", str(out), "--pixel-size", "2"]) == 0
    assert f"wrote 1 GeoJSON file(s) to {out}" in capsys.readouterr().out
    assert contents(out) == ["s1.geojson"]
    fc = json.loads((out / "s1.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    by_name = {f["properties"]["classification"]["name"]: f["properties"] for f in fc["features"]}
    assert set(by_name) == {"Ccp", "Py/Mrc"}
    for name, code in (("Ccp", 1), ("Py/Mrc", 6)):
        props = by_name[name]
        assert props["objectType"] == "detection"
        assert props["classification"]["color"] == list(CATALOGUE[code].colour)
        assert props["measurements"]["Class code"] == code
        assert props["measurements"]["Area px"] == int((m == code).sum())
        assert props["measurements"]["Area µm^2"] == pytest.approx(4.0 * (m == code).sum())


def test_convert_annotations_with_full_names(tmp_path: Path) -> None:
    masks = write_masks(tmp_path / "masks", s1=two_discs())
    out = tmp_path / "out"
    assert main(["convert", str(masks / "s1.png"), "--to", "geojson", "--annotations", "--full-names",
                 "--out", str(out)]) == 0
    fc = json.loads((out / "s1.geojson").read_text())
    names = sorted(f["properties"]["classification"]["name"] for f in fc["features"])
    assert names == ["chalcopyrite", CATALOGUE[6].name]
    assert {f["properties"]["objectType"] for f in fc["features"]} == {"annotation"}
    assert "Area µm^2" not in fc["features"][0]["properties"]["measurements"]


def test_convert_to_palette_with_lut(tmp_path: Path) -> None:
    m, m2 = two_discs(), np.full((H, W), 8, dtype=np.uint8)
    masks = write_masks(tmp_path / "masks", a=m, b=m2)
    (masks / "confidence").mkdir()  # a predict --out folder's subfolder: not taken
    save_image(np.full((H, W), 200, dtype=np.uint8), masks / "confidence" / "a.png")
    out = tmp_path / "out"
    assert main(["convert", str(masks), "--to", "palette", "--lut", "--out", str(out)]) == 0
    assert contents(out) == ["a.png", "b.png", "lumenstone.lut"]
    with Image.open(out / "a.png") as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im), m)
        assert tuple(np.asarray(im.convert("RGB"))[20, 20]) == CATALOGUE[1].colour
    assert np.array_equal(read_mask(out / "b.png"), m2)
    lut = (out / "lumenstone.lut").read_bytes()
    assert len(lut) == 768 and lut == lut_bytes()


def test_convert_lut_only(tmp_path: Path) -> None:
    out = tmp_path / "luts"
    assert main(["convert", "--lut", "--out", str(out)]) == 0
    assert contents(out) == ["lumenstone.lut"] and (out / "lumenstone.lut").stat().st_size == 768


# -- import-labels --------------------------------------------------------------------------------------------------
def square_geojson(path: Path, name: str = "Ccp", coords: list[list[float]] | None = None) -> Path:
    ring = coords or [[2, 2], [10, 2], [10, 8], [2, 8], [2, 2]]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
         "properties": {"objectType": "annotation", "classification": {"name": name, "color": [238, 200, 30]}}}]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fc))
    return path


def test_import_geojson_with_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = square_geojson(tmp_path / "ann" / "s1.geojson")
    out = tmp_path / "out"
    assert main(["import-labels", str(src), "--size", "16x12", "--out", str(out)]) == 0
    assert f"wrote 1 mask(s) to {out}" in capsys.readouterr().out
    assert contents(out) == ["s1.png"]
    mask = read_mask(out / "s1.png", expected_size=(16, 12))
    expected = np.full((12, 16), 255, dtype=np.uint8)
    expected[2:8, 2:10] = 1  # pixel centres strictly inside x 2–10, y 2–8
    assert np.array_equal(mask, expected)


def test_convert_then_import_is_exact(tmp_path: Path) -> None:
    """Masks → QuPath annotations → masks: every grain comes back, background and unlabelled pixels become 255."""
    m = two_discs()
    masks = write_masks(tmp_path / "masks", s1=m)
    images = tmp_path / "images"
    images.mkdir()
    save_image(np.zeros((H, W, 3), dtype=np.uint8), images / "s1.jpg")
    geo = tmp_path / "qupath"
    assert main(["convert", str(masks), "--to", "geojson", "--annotations", "--out", str(geo)]) == 0
    (geo / "s1.geojson").rename(geo / "s1.jpg.geojson")  # QuPath may keep the image's extension in the name
    out = tmp_path / "back"
    assert main(["import-labels", str(geo), "--image", str(images), "--out", str(out)]) == 0
    assert contents(out) == ["s1.png"]
    assert np.array_equal(read_mask(out / "s1.png"), np.where(m == 0, 255, m))


def test_import_qupath_fixture_with_image_file(tmp_path: Path) -> None:
    image = tmp_path / "section.png"
    save_image(np.zeros((16, 20, 3), dtype=np.uint8), image)
    out = tmp_path / "out"
    assert main(["import-labels", str(FIXTURE), "--image", str(image), "--out", str(out)]) == 0
    mask = read_mask(out / "qupath_annotations.png", expected_size=(20, 16))
    assert (mask == 1).sum() == 44 and (mask == 2).sum() == 49 and (mask == 6).sum() == 18
    assert (mask == 255).sum() == 320 - 44 - 49 - 18


def test_import_napari_labels_with_map(tmp_path: Path) -> None:
    labels = np.zeros((12, 16), dtype=np.int32)
    labels[1:5, 1:6] = 1
    labels[6:10, 8:15] = 2
    src = tmp_path / "labels" / "s2.tif"
    src.parent.mkdir()
    tifffile.imwrite(src, labels)
    out = tmp_path / "out"
    assert main(["import-labels", str(src.parent), "--map", "1=Ccp,2=6", "--out", str(out)]) == 0
    mask = read_mask(out / "s2.png")
    expected = np.full((12, 16), 255, dtype=np.uint8)
    expected[1:5, 1:6] = 1
    expected[6:10, 8:15] = 6
    assert np.array_equal(mask, expected)


def test_import_repair_fixes_a_bow_tie(tmp_path: Path) -> None:
    src = square_geojson(tmp_path / "bowtie.geojson", coords=[[1, 1], [9, 7], [9, 1], [1, 7], [1, 1]])
    out = tmp_path / "out"
    assert main(["import-labels", str(src), "--size", "12x10", "--repair", "--out", str(out)]) == 0
    assert (read_mask(out / "bowtie.png") == 1).sum() > 0


# -- bad input: one line naming the file and the fix, exit code 2, nothing written -----------------------------------
def test_unknown_class_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = square_geojson(tmp_path / "s1.geojson", name="Tumor")
    out = tmp_path / "out"
    assert main(["import-labels", str(src), "--size", "16x12", "--out", str(out)]) == 2
    err = one_line_error(capsys, src, "'Tumor'")
    assert "rename the class in QuPath" in err and "Ccp" in err
    assert contents(out) == []


def test_self_intersecting_polygon_without_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = square_geojson(tmp_path / "ann" / "a.geojson")
    bad = square_geojson(tmp_path / "ann" / "b.geojson", coords=[[1, 1], [9, 7], [9, 1], [1, 7], [1, 1]])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["import-labels", str(good.parent), "--size", "16x12", "--out", str(out)]) == 2
    err = one_line_error(capsys, bad, "Self-intersection", "--repair")
    assert "repair=True" not in err
    assert contents(out) == ["keep.txt"]  # a.png, converted before b failed, is not left behind


def test_corrupt_geojson(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "s1.geojson"
    src.write_text('{"type": "FeatureCollection", "features": [')
    out = tmp_path / "new" / "out"
    assert main(["import-labels", str(src), "--size", "16x12", "--out", str(out)]) == 2
    one_line_error(capsys, src, "not valid JSON", "export it again from QuPath")
    assert contents(tmp_path) == ["s1.geojson"]  # neither out nor its new parent is left behind


def test_corrupt_mask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = write_masks(tmp_path / "masks", a=two_discs(), b=two_discs())
    data = (masks / "b.png").read_bytes()
    (masks / "b.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["convert", str(masks), "--to", "geojson", "--lut", "--out", str(out)]) == 2
    one_line_error(capsys, masks / "b.png", "corrupt or truncated")
    assert contents(out) == []


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no masks here")
    out = tmp_path / "out"
    assert main(["convert", str(empty), "--to", "palette", "--out", str(out)]) == 2
    one_line_error(capsys, empty, "holds no LumenStone masks")
    assert main(["import-labels", str(empty), "--size", "16x12", "--out", str(out)]) == 2
    one_line_error(capsys, empty, "holds no QuPath GeoJSON")
    assert contents(out) == []


def test_out_is_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = write_masks(tmp_path / "masks", a=two_discs())
    out = tmp_path / "out.geojson"
    out.write_text("not a folder")
    assert main(["convert", str(masks), "--to", "geojson", "--out", str(out)]) == 2
    one_line_error(capsys, out, "not a folder", "--out")
    assert out.read_text() == "not a folder"


def test_geojson_without_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = square_geojson(tmp_path / "s1.geojson")
    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "out"
    assert main(["import-labels", str(src), "--out", str(out)]) == 2
    one_line_error(capsys, src, "--image", "--size WxH")
    assert main(["import-labels", str(src), "--image", str(images), "--out", str(out)]) == 2
    one_line_error(capsys, src, images, "no image named s1")
    assert contents(out) == []


def test_labels_that_are_not_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "s2.tif"
    tifffile.imwrite(src, np.full((8, 8), 40, dtype=np.int32))
    out = tmp_path / "out"
    assert main(["import-labels", str(src), "--out", str(out)]) == 2
    one_line_error(capsys, src, "[40]", "--map")
    assert main(["import-labels", str(src), "--map", "40=Tumor", "--out", str(out)]) == 2
    one_line_error(capsys, src, "'Tumor'")
    assert main(["import-labels", str(src), "--map", "40:Ccp", "--out", str(out)]) == 2
    one_line_error(capsys, "--map", "'40:Ccp'")
    assert contents(out) == []


def test_two_inputs_of_one_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_masks(tmp_path / "train", s1=two_discs())
    b = write_masks(tmp_path / "test", s1=two_discs())
    out = tmp_path / "out"
    assert main(["convert", str(a), str(b), "--to", "palette", "--out", str(out)]) == 2
    one_line_error(capsys, b / "s1.png", a / "s1.png")
    assert contents(out) == []


def test_output_would_replace_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = write_masks(tmp_path / "masks", s1=two_discs())
    before = (masks / "s1.png").read_bytes()
    assert main(["convert", str(masks), "--to", "palette", "--out", str(masks)]) == 2
    one_line_error(capsys, masks / "s1.png", "choose another --out")
    assert (masks / "s1.png").read_bytes() == before and contents(masks) == ["s1.png"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Path:
    """A folder nobody, root included, can write in (``chattr +i``; ``chmod`` when not root), else skip."""
    import os
    import shutil
    import subprocess

    ro = tmp_path / "read-only"
    ro.mkdir()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode == 0:
        def undo() -> None:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
    elif os.geteuid() != 0:
        ro.chmod(0o555)

        def undo() -> None:
            ro.chmod(0o755)
    else:
        pytest.skip("cannot make a read-only folder here (no chattr +i, and root ignores chmod)")
    try:
        (ro / "probe").touch()
    except OSError:
        yield ro
        undo()
        return
    undo()
    pytest.skip("the read-only folder is writable here")


@pytest.mark.parametrize("case", ["a file", "a folder under a file", "a read-only folder"])
@pytest.mark.parametrize("command", ["convert", "import-labels"])
def test_an_output_folder_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str], request,
                                                 command: str, case: str) -> None:
    masks = write_masks(tmp_path / "masks", s1=two_discs())
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = {"a file": blocker, "a folder under a file": blocker / "sub",
           "a read-only folder": request.getfixturevalue("read_only_dir") / "out" if case == "a read-only folder"
           else None}[case]
    args = (["convert", str(masks), "--to", "geojson"] if command == "convert"
            else ["import-labels", str(masks / "s1.png")])
    before = sorted(tmp_path.rglob("*"))
    assert main([*args, "--out", str(out)]) == 2
    err = one_line_error(capsys, out, "choose another --out")
    assert err.startswith(f"lumenkit: error: {out}: ")
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_text() == "keep me"


def test_a_folder_where_an_output_file_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = write_masks(tmp_path / "masks", a=two_discs(), b=two_discs())
    out = tmp_path / "out"
    (out / "b.geojson").mkdir(parents=True)
    assert main(["convert", str(masks), "--to", "geojson", "--out", str(out)]) == 2
    one_line_error(capsys, out / "b.geojson", "is a folder")
    assert contents(out) == ["b.geojson"] and contents(out / "b.geojson") == []
