"""Weight % and calculated assay: exact answers worked out by hand from the catalogue's densities and formulas."""

import numpy as np
import pandas as pd
import pytest

from lumenkit.data.catalogue import (
    ATOMIC_WEIGHTS,
    CATALOGUE,
    Mineral,
    mass_fractions,
    parse_formula,
    tennantite_tetrahedrite,
)
from lumenkit.errors import ConfigError, UnknownClassError
from lumenkit.mineralogy import (
    assay_table,
    calculated_assay,
    element_deportment,
    modal_composition,
    weight_percent,
    weight_table,
)
from lumenkit.mineralogy.analysis import image_summary


def test_every_mineral_has_density_formula_and_sources():
    for m in CATALOGUE.values():
        assert m.density is not None and m.density > 0, m.label
        assert m.density_source, m.label
        if m.code != 0:
            assert m.formula and m.elements and m.formula_source, m.label
            assert abs(sum(m.mass_fractions.values()) - 1) < 1e-12
    assert CATALOGUE[0].mass_fractions == {}
    # constructors without the new fields still work, and codes, labels, colours are unchanged
    m = Mineral(99, "X", "x", (1, 2, 3), 1.0, "x")
    assert m.density is None and m.mass_fractions == {}
    assert (CATALOGUE[6].label, CATALOGUE[6].colour) == ("Py/Mrc", (250, 245, 170))


def test_chalcopyrite_composition_from_iupac_weights():
    # CuFeS2: 63.546 + 55.845 + 2 × 32.06 = 183.511 g/mol
    f = mass_fractions("CuFeS2")
    assert f["Cu"] == pytest.approx(63.546 / 183.511)
    assert round(100 * f["Cu"], 2) == 34.63
    assert round(100 * f["Fe"], 2) == 30.43
    assert round(100 * f["S"], 2) == 34.94
    assert CATALOGUE[1].mass_fractions == pytest.approx(f)


def test_mixture_classes_documented_choices():
    assert CATALOGUE[6].mass_fractions == pytest.approx(CATALOGUE[13].mass_fractions)  # pyrite = marcasite = FeS2
    assert dict(CATALOGUE[7].elements) == {"Fe": 4.5, "Ni": 4.5, "S": 8}
    assert dict(CATALOGUE[11].elements) == {"Cu": 12, "As": 2, "Sb": 2, "S": 13}
    assert CATALOGUE[11].density == pytest.approx((4.62 + 4.97) / 2)
    ttr = tennantite_tetrahedrite(1.0)
    assert ttr.density == 4.97 and dict(ttr.elements)["As"] == 0
    with pytest.raises(ConfigError, match="outside 0–1"):
        tennantite_tetrahedrite(1.5)


def test_parse_formula():
    assert parse_formula("Fe4.5Ni4.5S8") == {"Fe": 4.5, "Ni": 4.5, "S": 8}
    assert parse_formula("Cu12As4S13") == {"Cu": 12, "As": 4, "S": 13}
    for bad in ("(Fe,Ni)9S8", "cufes2", "CuFeS2x", ""):
        with pytest.raises(ConfigError, match="explicit element counts"):
            parse_formula(bad)
    with pytest.raises(ConfigError, match="ATOMIC_WEIGHTS"):
        parse_formula("CoAsS")


def test_pure_chalcopyrite_section():
    w = weight_percent({1: 1234})
    assert w.loc["Ccp", "area_pct"] == 100 and w.loc["Ccp", "weight_pct"] == 100
    a = calculated_assay(w)
    assert list(a.index) == ["Cu", "Fe", "S"]
    assert round(a["Cu"], 1) == 34.6
    assert a["Cu"] == pytest.approx(100 * 63.546 / 183.511)
    assert a["Fe"] == pytest.approx(100 * 55.845 / 183.511)  # 30.43 %
    assert a["S"] == pytest.approx(100 * 2 * 32.06 / 183.511)  # 34.94 %
    assert a.sum() == pytest.approx(100)


def test_galena_sphalerite_half_and_half_by_hand():
    w = weight_percent({"Gl": 50, "Sph": 50})
    # weight ∝ area × density: galena 50 × 7.60 = 380, sphalerite 50 × 4.10 = 205, total 585
    wg, ws = 100 * 380 / 585, 100 * 205 / 585  # 64.957 %, 35.043 %
    assert w.loc["Gl", "weight_pct"] == pytest.approx(wg)
    assert w.loc["Sph", "weight_pct"] == pytest.approx(ws)
    # PbS: Pb 207.2 / (207.2 + 32.06) = 0.86600;  ZnS: Zn 65.38 / (65.38 + 32.06) = 0.67098
    pb = wg * 207.2 / 239.26  # 56.253 %
    zn = ws * 65.38 / 97.44  # 23.513 %
    s = wg * 32.06 / 239.26 + ws * 32.06 / 97.44  # 20.234 %
    a = calculated_assay(w)
    assert list(a.index) == ["Pb", "Zn", "S"]
    assert a["Pb"] == pytest.approx(pb) and round(a["Pb"], 2) == 56.25
    assert a["Zn"] == pytest.approx(zn) and round(a["Zn"], 2) == 23.51
    assert a["S"] == pytest.approx(s) and round(a["S"], 2) == 20.23


def test_gangue_dilutes_by_density():
    w = weight_percent({0: 50, 1: 50})
    # 50 × 4.18 / (50 × 4.18 + 50 × 2.7) = 209 / 344 = 60.756 % chalcopyrite
    assert w.loc["Ccp", "weight_pct"] == pytest.approx(100 * 209 / 344)
    assert calculated_assay(w)["Cu"] == pytest.approx(209 / 344 * 100 * 63.546 / 183.511)  # 21.04 %
    heavy = weight_percent({0: 50, 1: 50}, gangue_density=4.18)
    assert heavy.loc["Ccp", "weight_pct"] == pytest.approx(50)
    ore_only = weight_percent({0: 50, 1: 50}, gangue_density=0)
    assert ore_only.loc["Ccp", "weight_pct"] == pytest.approx(100)
    assert ore_only.loc["BG", "area_pct"] == 50
    # an explicit density for code 0 wins over gangue_density
    assert weight_percent({0: 1, 1: 1}, densities={"BG": 4.18}).loc["Ccp", "weight_pct"] == pytest.approx(50)


def test_overrides_density_and_composition():
    w = weight_percent({"Tnt/Ttr": 1}, densities={11: 4.97})
    assert w.loc["Tnt/Ttr", "density"] == 4.97
    ttr = tennantite_tetrahedrite(1.0)
    a = calculated_assay(w, compositions={11: ttr})
    m = 12 * 63.546 + 4 * 121.76 + 13 * 32.06
    assert a["Sb"] == pytest.approx(100 * 4 * 121.76 / m) and a["As"] == 0
    assert calculated_assay(w, compositions={"Tnt/Ttr": "Cu12Sb4S13"})["Sb"] == pytest.approx(a["Sb"])
    assert calculated_assay(w, compositions={11: {"Cu": 12, "Sb": 4, "S": 13}})["Cu"] == pytest.approx(a["Cu"])


def test_mask_to_modal_to_weight_and_assay():
    m = np.zeros((20, 20), np.uint8)
    m[:10, :10] = 2  # 100 px galena
    m[10:, :10] = 8  # 100 px sphalerite
    m[:, 10:] = 255  # ignored
    modal = modal_composition(m)
    w = weight_percent(modal)
    assert list(w.index) == ["Gl", "Sph"]
    assert w.loc["Gl", "weight_pct"] == pytest.approx(100 * 380 / 585)
    assert calculated_assay(w)["Pb"] == pytest.approx(100 * 380 / 585 * 207.2 / 239.26)
    dep = element_deportment(w)
    assert dep.loc["Sph", "Pb"] == 0 and dep.sum().to_dict() == pytest.approx(calculated_assay(w).to_dict())


def test_many_sections_tidy_tables():
    a = np.full((10, 10), 1, np.uint8)
    b = np.zeros((10, 10), np.uint8)
    b[:5] = 2
    t = assay_table({"a": a, "b": b})
    assert list(t.columns) == ["image", "element", "grade_pct"]
    assert t.set_index(["image", "element"]).loc[("a", "Cu"), "grade_pct"] == pytest.approx(100 * 63.546 / 183.511)
    pb = 50 * 7.60 / (50 * 7.60 + 50 * 2.7) * 100 * 207.2 / 239.26
    assert t.set_index(["image", "element"]).loc[("b", "Pb"), "grade_pct"] == pytest.approx(pb)
    wt = weight_table({"a": a, "b": b})
    assert set(wt.columns) >= {"image", "mineral", "code", "area_pct", "density", "weight_pct"}
    assert wt.groupby("image")["weight_pct"].sum().to_numpy() == pytest.approx([100, 100])
    long = image_summary({"a": a, "b": b}, codes=[0, 1, 2])
    from_long = assay_table(long).query("grade_pct > 0").reset_index(drop=True)
    pd.testing.assert_frame_equal(from_long, t.query("grade_pct > 0").reset_index(drop=True))


def test_bad_input():
    with pytest.raises(UnknownClassError, match="LumenStone code 0–14"):
        weight_percent({42: 10})
    with pytest.raises(UnknownClassError, match="label"):
        weight_percent({"quartz": 10})
    with pytest.raises(ConfigError, match="≥ 0"):
        weight_percent({1: -1})
    with pytest.raises(ConfigError, match="gangue_density"):
        weight_percent({1: 1}, gangue_density=-2.7)
    with pytest.raises(ConfigError, match="positive density"):
        weight_percent({1: 1}, densities={1: 0})
    with pytest.raises(ConfigError, match="all areas are 0"):
        weight_percent({1: 0, 255: 5})
    with pytest.raises(ConfigError, match="no weight"):
        weight_percent({0: 5}, gangue_density=0)
    with pytest.raises(ConfigError, match="'code' column"):
        weight_percent(pd.DataFrame({"x": [1]}))
    with pytest.raises(UnknownClassError):
        calculated_assay({1: 50, 99: 50})
    assert set(ATOMIC_WEIGHTS) >= {"Cu", "Pb", "Zn", "Ni", "Fe", "As", "Sb", "S", "O", "Au", "Ag"}
