import numpy as np
import pytest

from lumenkit.data.catalogue import (
    CATALOGUE,
    CLASS_SETS,
    IGNORE,
    MERGED_LABELS,
    ClassMap,
    labels_for,
    mineral,
    resolve_class_set,
)
from lumenkit.errors import UnknownClassError


def test_catalogue_has_all_fifteen_codes_with_distinct_colours():
    assert sorted(CATALOGUE) == list(range(15))
    colours = {m.colour for m in CATALOGUE.values()}
    assert len(colours) == 15
    assert all(m.hex.startswith("#") and len(m.hex) == 7 for m in CATALOGUE.values())


def test_reflectance_order_matches_ore_microscopy_tables():
    r = {m.label: m.reflectance for m in CATALOGUE.values()}
    assert r["Py/Mrc"] > r["Ccp"] > r["Tnt/Ttr"] > r["Sph"] > r["BG"]
    assert r["Gl"] > r["Brt"]


def test_class_sets():
    assert CLASS_SETS["S1"] == (0, 1, 2, 4, 6, 8, 11)
    assert CLASS_SETS["S2"] == (0, 1, 3, 5, 7)
    assert 7 not in CLASS_SETS["S3"] and len(CLASS_SETS["S3"]) == 14
    assert resolve_class_set("s1") == CLASS_SETS["S1"]
    assert resolve_class_set([8, 0, 8]) == (0, 8)


def test_merged_labels_are_the_papers():
    assert labels_for(CLASS_SETS["S1"]) == ["BG", "Ccp", "Gl", "Brt", "Py/Mrc", "Sph", "Tnt/Ttr"]
    assert set(MERGED_LABELS) == {"Py/Mrc", "Tnt/Ttr"}


def test_lookup_by_code_and_label():
    assert mineral(8).name == "sphalerite"
    assert mineral("tnt/ttr").code == 11
    assert mineral("galena").code == 2
    with pytest.raises(UnknownClassError, match="valid codes"):
        mineral(15)
    with pytest.raises(UnknownClassError, match="valid labels"):
        mineral("quartz")
    with pytest.raises(UnknownClassError, match="valid names"):
        resolve_class_set("S9")


def test_classmap_round_trip_and_ignore():
    cm = ClassMap("S1")
    codes = np.array([[0, 1, 2], [4, 6, 8], [11, 255, 0]], dtype=np.uint8)
    idx = cm.to_index(codes)
    assert idx.tolist() == [[0, 1, 2], [3, 4, 5], [6, IGNORE, 0]]
    assert np.array_equal(cm.to_code(idx), codes)
    assert cm.labels[4] == "Py/Mrc" and len(cm) == 7
    assert cm.colours.shape == (7, 3)


def test_classmap_rejects_codes_outside_set_naming_source():
    cm = ClassMap("S2")
    with pytest.raises(UnknownClassError, match=r"m\.png: class codes \[2, 6\]"):
        cm.to_index(np.array([0, 2, 6, 1], dtype=np.uint8), source="m.png")
    with pytest.raises(UnknownClassError):
        cm.to_index(np.array([0, 300], dtype=np.int32))
