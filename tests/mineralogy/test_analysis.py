import numpy as np
import pandas as pd
import pytest

from lumenkit.mineralogy.analysis import (
    compare_modal,
    contact_matrix,
    deposit_modal,
    grain_size_shift,
    grains,
    image_summary,
    locking,
    modal_composition,
    size_classes,
    sum_contacts,
)


def squares() -> np.ndarray:
    """Background with a 10×10 chalcopyrite square touching a 10×10 galena square along one side."""
    m = np.zeros((40, 50), np.uint8)
    m[10:20, 10:20] = 1
    m[10:20, 20:30] = 2
    return m


def test_modal_composition_exact_and_ignores_void():
    m = squares()
    m[0, :10] = 255
    df = modal_composition(m)
    total = 40 * 50 - 10
    assert df.loc["Ccp", "pixels"] == 100 and df.loc["Gl", "pixels"] == 100
    assert df.loc["Ccp", "area_pct"] == pytest.approx(100 * 100 / total)
    assert df.loc["Ccp", "ore_pct"] == pytest.approx(50.0) and np.isnan(df.loc["BG", "ore_pct"])
    assert df["area_pct"].sum() == pytest.approx(100)
    assert modal_composition(m, codes=[0, 1, 6]).loc["Py/Mrc", "pixels"] == 0


def test_contact_between_two_touching_squares():
    c = contact_matrix(squares())
    assert c.loc["Ccp", "Gl"] == 10 and c.loc["Gl", "Ccp"] == 10
    assert c.loc["Ccp", "BG"] == 30 and c.loc["Gl", "BG"] == 30
    assert (np.diag(c) == 0).all() and (c.to_numpy() == c.to_numpy().T).all()
    lk = locking(c)
    assert lk.loc["Ccp", "boundary_px"] == 40
    assert lk.loc["Ccp", "free_fraction"] == pytest.approx(0.75)
    assert lk.loc["Gl", "locked_fraction"] == pytest.approx(0.25)
    assert "BG" not in lk.index


def test_contacts_skip_ignore_pixels_and_sum():
    m = squares()
    m[10:20, 20] = 255  # a void seam between the squares
    c = contact_matrix(m)
    assert c.loc["Ccp", "Gl"] == 0
    s = sum_contacts([contact_matrix(squares()), contact_matrix(squares())])
    assert s.loc["Ccp", "Gl"] == 20


def test_grain_counts_areas_and_diameters():
    m = np.zeros((60, 60), np.uint8)
    m[5:15, 5:15] = 6  # pyrite square 100 px
    m[30:32, 30:32] = 6  # pyrite 4 px
    m[40, 40] = 6
    m[41, 41] = 6  # diagonal neighbour: one grain under 8-connectivity
    g = grains(m, pixel_size_um=2.0)
    py = g[g["mineral"] == "Py/Mrc"].sort_values("area_px")
    assert py["area_px"].tolist() == [2, 4, 100]
    assert py["ecd_px"].iloc[2] == pytest.approx(2 * np.sqrt(100 / np.pi))
    assert py["ecd_um"].iloc[2] == pytest.approx(4 * np.sqrt(100 / np.pi))
    assert py["area_um2"].iloc[2] == pytest.approx(400.0)
    square = py.iloc[2]
    assert square["elongation"] == pytest.approx(1.0) and square["solidity"] == pytest.approx(1.0)
    assert not py["touches_edge"].any()


def test_grain_with_a_hole_and_elongated_grain():
    m = np.zeros((50, 50), np.uint8)
    m[10:30, 10:30] = 1
    m[15:25, 15:25] = 8  # sphalerite inclusion in chalcopyrite
    m[40:42, 5:45] = 2  # a 2×40 galena lath
    g = grains(m).set_index("mineral")
    assert g.loc["Ccp", "area_px"] == 400 - 100 and g.loc["Ccp", "holes"] == 1
    assert g.loc["Ccp", "solidity"] == pytest.approx(0.75)
    assert g.loc["Sph", "holes"] == 0
    assert g.loc["Gl", "elongation"] == pytest.approx(20.0, rel=0.02)


def test_grains_touching_edge_are_flagged():
    m = np.zeros((20, 20), np.uint8)
    m[0:5, 0:5] = 4
    m[10:12, 10:12] = 4
    g = grains(m).sort_values("area_px")
    assert g["touches_edge"].tolist() == [False, True]


def test_empty_masks():
    m = np.zeros((10, 10), np.uint8)
    assert len(grains(m)) == 0 and "ecd_px" in grains(m).columns
    assert modal_composition(m).loc["BG", "area_pct"] == 100
    assert contact_matrix(m).to_numpy().tolist() == [[0]]
    void = np.full((4, 4), 255, np.uint8)
    assert modal_composition(void, codes=[0, 1])["area_pct"].isna().all()


def test_size_classes():
    g = pd.DataFrame({"mineral": ["Ccp", "Ccp", "Gl"], "ecd_um": [5.0, 60.0, 600.0]})
    t = size_classes(g)
    assert t.loc["Ccp", "<10 µm"] == 1 and t.loc["Ccp", "50–100 µm"] == 1 and t.loc["Gl", "≥500 µm"] == 1
    assert t.to_numpy().sum() == 3


def test_deposit_aggregation_with_intervals_and_comparison():
    rng = np.random.default_rng(0)
    masks, deps = {}, {}
    for i in range(6):
        m = np.zeros((30, 30), np.uint8)
        m[: 5 + i, :] = 1
        masks[f"im{i}"] = m
        deps[f"im{i}"] = "A" if i < 3 else "B"
    per = image_summary(masks, codes=[0, 1], deposits=deps)
    dm = deposit_modal(per, n_boot=200, seed=0)
    a = dm.loc[("A", "Ccp")]
    assert a["area_pct"] == pytest.approx(100 * (5 + 6 + 7) * 30 / (3 * 900))
    assert a["ci_low"] <= a["area_pct"] <= a["ci_high"] and a["images"] == 3
    pred = per.copy()
    pred.loc[pred["mineral"] == "Ccp", "pixels"] += 30
    pred.loc[pred["mineral"] == "BG", "pixels"] -= 30
    cmp = compare_modal(dm, deposit_modal(pred, n_boot=50))
    assert cmp.loc[("A", "Ccp"), "abs_error_pct"] == pytest.approx(100 * 30 / 900)
    gs = grain_size_shift(grains(masks["im0"]), grains(masks["im5"]))
    assert gs.loc["Ccp", "grains_true"] == 1 and gs.loc["Ccp", "ks_distance"] == 1.0
    del rng


def test_mineralogy_tables_and_csv_export(tmp_path):
    from lumenkit.data.imageio import save_image
    from lumenkit.errors import DatasetNotFoundError
    from lumenkit.mineralogy.analysis import mineralogy, read_masks

    masks = {"a": squares(), "b": squares()}
    tabs = mineralogy(masks, codes=[0, 1, 2], deposits={"a": "North", "b": "North"}, n_boot=20)
    assert tabs.contacts["North"].loc["Ccp", "Gl"] == 20
    assert tabs.deposit_modal.loc[("North", "Ccp"), "area_pct"] == pytest.approx(5.0)
    assert len(tabs.grains) == 4 and set(tabs.grains["deposit"]) == {"North"}
    paths = tabs.to_csv(tmp_path / "csv", prefix="North_")
    assert {p.name for p in paths} >= {"North_modal_per_deposit.csv", "North_contacts_North.csv", "North_grains.csv"}
    assert pd.read_csv(tmp_path / "csv" / "North_grains.csv")["area_px"].sum() == 400
    save_image(squares(), tmp_path / "pred" / "a.png")
    assert np.array_equal(read_masks(tmp_path / "pred", ["a"])["a"], squares())
    with pytest.raises(DatasetNotFoundError, match="no predicted mask"):
        read_masks(tmp_path / "pred", ["a", "zz"])
