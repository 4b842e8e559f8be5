"""QuPath GeoJSON export/import.

The fixture ``fixtures/qupath_annotations.geojson`` follows QuPath's GeoJSON as documented on the QuPath
documentation page "Exporting annotations" (qupath.readthedocs.io, docs/advanced/exporting_annotations,
v0.4/0.5: pixel coordinates, origin at the top-left of the full-resolution image, a FeatureCollection whose
features carry the classification) and the fields QuPath v0.4+ writes and reads (qupath-core
``PathObjectTypeAdapters``: UUID ``id``, ``properties.objectType``, ``properties.classification`` =
``{"name", "color": [r, g, b]}``, ``properties.measurements`` = ``{name: value}``, optional ``name``/``isLocked``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape
from skimage.measure import label

from lumenkit.data.catalogue import CATALOGUE
from lumenkit.errors import ConfigError, UnknownClassError
from lumenkit.interop.geojson import (
    geojson_to_mask,
    mask_to_geojson,
    read_geojson_mask,
    trace_grains,
    write_grains_geojson,
)
from lumenkit.synth.deposits import DEPOSITS
from lumenkit.synth.render import generate_section

FIXTURE = Path(__file__).parent / "fixtures" / "qupath_annotations.geojson"


def constructed_mask() -> np.ndarray:
    m = np.zeros((40, 48), dtype=np.uint8)
    m[2:20, 2:20] = 1  # chalcopyrite with holes; one hole touches the outside at a corner
    m[3, 3] = m[2, 2] = 0
    m[6:10, 6:10] = 0
    m[12:15, 12:15] = 2  # a galena island inside the hole... of another class
    m[11:16, 11:16][m[11:16, 11:16] == 1] = 0
    m[12:15, 12:15] = 2
    m[2:20, 20:30] = 8  # sphalerite touching chalcopyrite along an edge
    for k in range(8):  # a diagonal-only chain of pyrite pixels (one 8-connected grain, a MultiPolygon)
        m[24 + k, 2 + k] = 6
    m[24:32, 20:23] = 6
    m[0:10, 38:48] = 5  # pyrrhotite on the top and right border
    m[30:40, 30:48] = 3  # magnetite on the bottom/right border, with a ring-shaped hole
    m[33:37, 34:38] = 0
    m[34:36, 35:37] = 3  # island inside the hole (its own grain)
    for k in range(6):  # a diagonal chain of one-pixel holes inside sphalerite (holes touching holes)
        m[4 + k, 22 + k] = 0
    m[22:30, 24:32] = 10  # hematite cut corner to corner by a diagonal line: halves joined only at corners
    for k in range(8):
        m[22 + k, 24 + k] = 0
    m[22, 40] = 11  # single pixels touching diagonally, different classes
    m[23, 41] = 12
    m[25:28, 40:43] = 255  # unlabelled
    m[18:20, 0:2] = 255
    return m


def grain_ious(mask: np.ndarray, back: np.ndarray, min_px: int = 1) -> list[float]:
    ious = []
    fg = np.where((mask == 0) | (mask == 255), 0, mask)
    lab = label(fg, background=0, connectivity=2)
    for gid in range(1, lab.max() + 1):
        g = lab == gid
        if g.sum() < min_px:
            continue
        code = mask[g][0]
        b = back == code
        # the grain's counterpart: pixels of its class in the re-imported mask within its 8-connected component
        blab = label(b, connectivity=2)
        ids = np.unique(blab[g])
        r = np.isin(blab, ids[ids > 0])
        ious.append((g & r).sum() / (g | r).sum())
    return ious


def check_features(fc: dict) -> None:
    assert fc["type"] == "FeatureCollection"
    for f in fc["features"]:
        assert f["type"] == "Feature"
        props = f["properties"]
        assert props["objectType"] in ("detection", "annotation")
        assert set(props["classification"]) == {"name", "color"}
        assert len(props["classification"]["color"]) == 3
        assert isinstance(props["measurements"], dict)
        g = shape(f["geometry"])
        assert g.geom_type in ("Polygon", "MultiPolygon")
        assert shapely.is_valid(g), shapely.is_valid_reason(g)
        assert g.area == props["measurements"]["Area px"]


def test_constructed_round_trip_is_exact() -> None:
    m = constructed_mask()
    fc = mask_to_geojson(m, pixel_size_um=2.0)
    check_features(fc)
    back = geojson_to_mask(json.loads(json.dumps(fc)), (m.shape[1], m.shape[0]))
    expected = np.where(m == 0, 255, m)
    assert np.array_equal(back, expected)
    ious = grain_ious(m, back)
    assert len(ious) >= 10 and min(ious) == 1.0
    kinds = {shape(f["geometry"]).geom_type for f in fc["features"]}
    assert kinds == {"Polygon", "MultiPolygon"}
    assert any(len(shape(f["geometry"]).interiors) > 0 for f in fc["features"] if f["geometry"]["type"] == "Polygon")
    f0 = fc["features"][0]["properties"]["measurements"]
    assert f0["Area µm^2"] == pytest.approx(4.0 * f0["Area px"])


def test_pixel_corners_on_integer_coordinates() -> None:
    m = np.full((5, 6), 0, dtype=np.uint8)
    m[1:3, 2:5] = 2
    (f,) = mask_to_geojson(m, object_type="annotation")["features"]
    g = shape(f["geometry"])
    assert g.bounds == (2.0, 1.0, 5.0, 3.0)
    assert len(g.exterior.coords) == 5  # collinear vertices dropped
    assert f["properties"]["classification"] == {"name": "Gl", "color": list(CATALOGUE[2].colour)}
    assert f["properties"]["measurements"]["Perimeter px"] == 10.0


def test_diagonal_pixels_are_one_valid_grain() -> None:
    m = np.zeros((4, 4), dtype=np.uint8)
    m[0, 0] = m[1, 1] = m[2, 2] = 1
    geoms = trace_grains(label(m, connectivity=2))
    (g,) = geoms.values()
    assert g.geom_type == "MultiPolygon" and g.area == 3 and g.is_valid


def test_synthetic_section_round_trip() -> None:
    _, m = generate_section(next(iter(DEPOSITS)), (256, 192), np.random.default_rng(3))
    fc = mask_to_geojson(m)
    check_features(fc)
    back = geojson_to_mask(fc, (256, 192))
    ious = grain_ious(m, back, min_px=50)
    assert len(ious) > 0
    assert min(ious) >= 0.99
    assert np.array_equal(back, np.where(m == 0, 255, m))


def test_write_and_read_file(tmp_path: Path) -> None:
    m = constructed_mask()
    p = write_grains_geojson(m, tmp_path / "grains.geojson", object_type="annotation", name_style="name")
    back = read_geojson_mask(p, (m.shape[1], m.shape[0]))
    assert np.array_equal(back, np.where(m == 0, 255, m))


def test_qupath_fixture_imports() -> None:
    mask = read_geojson_mask(FIXTURE, (20, 16))
    assert mask.shape == (16, 20)
    assert (mask[2:8, 2:10] != 255).sum() == 48 - 4
    assert (mask[2:8, 2:10] == 1).sum() == 44 and (mask[4:6, 4:6] == 255).all()  # hole left unannotated
    assert (mask == 2).sum() == 6 * 4 + 5 * 5
    # x 1.5–8.5, y 10.5–14.5: centres strictly inside are columns 2–7 and rows 11–13 (centres on the edge are out)
    assert (mask[11:14, 2:8] == 6).all() and (mask == 6).sum() == 18
    assert (mask == 255).sum() == 320 - 44 - 49 - 18  # the unclassified region is skipped


def test_unknown_class_is_one_line(tmp_path: Path) -> None:
    fc = json.loads(FIXTURE.read_text())
    fc["features"][0]["properties"]["classification"]["name"] = "Tumor"
    p = tmp_path / "bad.geojson"
    p.write_text(json.dumps(fc))
    with pytest.raises(UnknownClassError) as e:
        read_geojson_mask(p, (20, 16))
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "'Tumor'" in msg and "Ccp" in msg and "chalcopyrite" in msg
    assert "feature 0" in msg


def test_self_intersecting_polygon_is_one_line(tmp_path: Path) -> None:
    fc = json.loads(FIXTURE.read_text())
    fc["features"][2]["geometry"]["coordinates"] = [[[1, 10], [8, 14], [8, 10], [1, 14], [1, 10]]]  # bow-tie
    p = tmp_path / "bowtie.geojson"
    p.write_text(json.dumps(fc))
    with pytest.raises(ConfigError) as e:
        read_geojson_mask(p, (20, 16))
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "feature 2" in msg and "pyrite cluster" in msg
    assert "Self-intersection" in msg
    repaired = read_geojson_mask(p, (20, 16), repair=True)
    assert (repaired == 6).sum() > 0


def test_not_json_is_config_error(tmp_path: Path) -> None:
    p = tmp_path / "x.geojson"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_geojson_mask(p, (4, 4))
