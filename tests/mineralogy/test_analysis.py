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
    assert t.to_numpy().sum() == 3 and t.columns[0] == "<10 µm" and t.loc["Gl", "<10 µm"] == 0
    with pytest.raises(ValueError, match="at least one, positive and increasing"):
        size_classes(g, edges=())


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
    in_um = grain_size_shift(grains(masks["im0"], pixel_size_um=2.0), grains(masks["im5"], pixel_size_um=2.0))
    assert in_um.loc["Ccp", "median_true"] == pytest.approx(2.0 * gs.loc["Ccp", "median_true"])  # µm when known
    assert (in_um["unit"] == "µm").all() and (gs["unit"] == "px").all()
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


# --- issue 28: perimeter, Feret, orientation, µm, size distribution, free boundary by size class ----------------------

K_ISO = np.pi / (8 * (np.sqrt(2) - 1))  # isotropic scale of the marching-squares perimeter


def _one(mask: np.ndarray, **kw) -> pd.Series:
    g = grains(mask, **kw)
    assert len(g) == 1
    return g.iloc[0]


@pytest.mark.parametrize(("h", "w"), [(3, 7), (12, 5), (1, 1), (1, 9)])
def test_rectangle_perimeter_feret_orientation(h, w):
    m = np.zeros((30, 30), np.uint8)
    m[4 : 4 + h, 6 : 6 + w] = 6
    g = _one(m)
    assert g["perimeter_px"] == pytest.approx(K_ISO * (2 * (w + h) - 4 + 2 * np.sqrt(2)))
    assert g["feret_max_px"] == pytest.approx(np.hypot(w, h))
    assert g["feret_min_px"] == pytest.approx(min(w, h))
    expected_angle = 0.0 if w >= h else 90.0
    assert g["orientation_deg"] == pytest.approx(expected_angle)
    assert g["solidity"] == pytest.approx(1.0) and g["holes"] == 0


def test_feret_of_a_notched_rectangle_uses_the_hull():
    m = np.zeros((30, 30), np.uint8)
    m[5:9, 5:15] = 1  # 4 × 10
    m[5, 14] = 0  # one corner pixel removed: hull loses a triangle, calipers unchanged
    g = _one(m)
    assert g["feret_max_px"] == pytest.approx(np.hypot(10, 4))  # the other diagonal is intact
    assert g["feret_min_px"] == pytest.approx(4.0)
    assert g["solidity"] == pytest.approx(39 / 39.5)
    m2 = np.zeros((30, 30), np.uint8)
    m2[5:15, 5:15] = 1
    m2[5:10, 10:15] = 0  # L shape: hull = square minus the corner triangle
    assert _one(m2)["solidity"] == pytest.approx(75 / (100 - 12.5))


def test_orientation_of_diagonal_laths():
    m = np.zeros((40, 40), np.uint8)
    for i in range(20):
        m[30 - i, 5 + i] = 2  # rises to the right on screen
        m[30 - i, 6 + i] = 2
    assert _one(m)["orientation_deg"] == pytest.approx(45.0, abs=0.5)
    assert _one(m[::-1].copy())["orientation_deg"] == pytest.approx(135.0, abs=0.5)


def test_digital_disc_feret_and_perimeter():
    r = 40
    yy, xx = np.indices((2 * r + 21, 2 * r + 21))
    c = r + 10
    m = (((yy - c) ** 2 + (xx - c) ** 2) <= r * r).astype(np.uint8) * 4
    g = _one(m)
    d = g["ecd_px"]
    assert d == pytest.approx(2 * r, rel=0.005)
    # hull of the pixel squares: corners lie within r + √2/2 of the centre; axis extent 2r + 1
    assert 2 * r <= g["feret_min_px"] <= 2 * r + 1 <= g["feret_max_px"] <= 2 * r + np.sqrt(2) + 1e-9
    assert g["feret_max_px"] == pytest.approx(d, rel=0.02) and g["feret_min_px"] == pytest.approx(d, rel=0.02)
    assert g["perimeter_px"] == pytest.approx(np.pi * d, rel=0.01)  # stated tolerance: 1 % at d = 80 px
    assert g["elongation"] == pytest.approx(1.0, abs=0.01) and g["holes"] == 0


def test_lengths_scale_to_um_and_magnification_invariance():
    m = np.zeros((40, 60), np.uint8)
    m[5:15, 5:35] = 8
    m[8:12, 10:20] = 1  # a hole
    g1 = grains(m, pixel_size_um=1.5)
    s = g1[g1["mineral"] == "Sph"].iloc[0]
    for k in ("ecd", "perimeter", "feret_max", "feret_min", "boundary", "free_boundary"):
        assert s[f"{k}_um"] == pytest.approx(1.5 * s[f"{k}_px"])
    assert s["area_um2"] == pytest.approx(2.25 * (300 - 40)) and s["holes"] == 1
    big = np.kron(m, np.ones((2, 2), np.uint8))  # same section at twice the magnification
    s2 = grains(big, pixel_size_um=0.75).set_index("mineral").loc["Sph"]
    for k in ("ecd", "feret_max", "feret_min", "boundary", "free_boundary"):
        assert s2[f"{k}_um"] == pytest.approx(s[f"{k}_um"])
    assert s2["area_um2"] == pytest.approx(s["area_um2"])
    assert s2["orientation_deg"] == pytest.approx(s["orientation_deg"])
    assert s2["perimeter_um"] == pytest.approx(s["perimeter_um"], rel=0.03)  # only the corner cuts shrink


def test_size_distribution_of_constructed_grains_in_um():
    from lumenkit.mineralogy.analysis import size_distribution

    m = np.zeros((100, 100), np.uint8)
    m[2:6, 2:6] = 6  # 4 px side at 2 µm: ECD 4·2·2/√π = 9.03 µm  -> <10
    m[10:20, 10:20] = 6  # 22.6 µm -> 10–50
    m[30:60, 30:60] = 6  # 67.7 µm -> 50–100
    m[70:80, 70:80] = 2  # galena 22.6 µm
    g = grains(m, pixel_size_um=2.0)
    sd = size_distribution(g)
    assert len(sd) == 2 * 5 and list(sd.columns[:4]) == ["mineral", "size_class", "lower_um", "upper_um"]
    py = sd[sd["mineral"] == "Py/Mrc"].set_index("size_class")
    assert py["grains"].tolist() == [1, 1, 1, 0, 0]
    areas = np.array([16, 100, 900]) * 4.0
    assert py["area_um2"].tolist()[:3] == pytest.approx(areas.tolist())
    assert py.loc["10–50 µm", "area_pct"] == pytest.approx(100 * 400 / areas.sum())
    assert py["passing_count_pct"].tolist() == pytest.approx([100 / 3, 200 / 3, 100, 100, 100])
    assert py["passing_area_pct"].tolist() == pytest.approx(
        (100 * np.cumsum([64, 400, 3600, 0, 0]) / 4064).tolist()
    )
    assert py.loc["50–100 µm", "lower_um"] == 50 and np.isinf(py.loc["≥500 µm", "upper_um"])
    gl = sd[sd["mineral"] == "Gl"].set_index("size_class")
    assert gl.loc["10–50 µm", "count_pct"] == 100 and gl["passing_area_pct"].iloc[0] == 0
    px = size_distribution(grains(m), edges=(5, 20))  # without pixel size: px
    assert "lower_px" in px and px[px["mineral"] == "Py/Mrc"]["grains"].tolist() == [1, 1, 1]
    for edges in [(50, 10), (), (0, 10)]:
        with pytest.raises(ValueError, match="at least one, positive and increasing"):
            size_distribution(g, edges=edges)


def test_free_boundary_fraction_by_size_class():
    from lumenkit.mineralogy.analysis import analyse_mask, free_boundary_by_size

    m = np.zeros((60, 60), np.uint8)
    m[5:15, 40:50] = 1  # chalcopyrite in gangue only
    m[30:40, 30:40] = 1  # chalcopyrite with galena along its left and top sides
    m[25:40, 25:30] = 2
    m[25:30, 25:40] = 2
    g = grains(m, pixel_size_um=1.0).sort_values("y")
    ccp = g[g["mineral"] == "Ccp"]
    assert ccp["boundary_px"].tolist() == [40, 40]
    assert (ccp["free_boundary_px"] / ccp["boundary_px"]).tolist() == [1.0, 0.5]
    fb = free_boundary_by_size(ccp, edges=(5, 20, 100)).set_index("size_class")
    assert fb.loc["5–20 µm", "grains"] == 2 and fb.loc["5–20 µm", "free_fraction"] == pytest.approx(0.75)
    assert fb.loc["5–20 µm", "boundary_um"] == 80 and np.isnan(fb.loc["<5 µm", "free_fraction"])
    alone = np.zeros((20, 20), np.uint8)
    alone[5:10, 5:10] = 6
    a = analyse_mask(alone, pixel_size_um=1.0, edges=(1, 100))
    assert a.association.set_index("size_class").loc["1–100 µm", "free_fraction"] == 1.0
    assert a.locking.loc["Py/Mrc", "free_fraction"] == 1.0
    void = m.copy()
    void[5:15, 39] = 255  # boundary against ignore pixels is not counted
    assert grains(void).sort_values("y")["boundary_px"].iloc[0] == 30


def test_analyse_mask_matches_the_separate_functions():
    from lumenkit.mineralogy.analysis import analyse_mask, size_distribution

    a = analyse_mask(squares(), pixel_size_um=3.0)
    assert a.contacts.loc["Ccp", "Gl"] == 10 and a.locking.loc["Ccp", "free_fraction"] == pytest.approx(0.75)
    assert a.modal.loc["Ccp", "pixels"] == 100
    pd.testing.assert_frame_equal(a.size_distribution, size_distribution(grains(squares(), 3.0)))
    assert a.association.groupby("mineral")["grains"].sum().to_dict() == {"Ccp": 1, "Gl": 1}
    empty = analyse_mask(np.zeros((8, 8), np.uint8))
    assert empty.grains.empty and empty.size_distribution.empty and empty.association.empty
