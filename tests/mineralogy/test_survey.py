"""Sections to a mineralogy survey: µm, weight %, assay, per sample and deposit, and the `lumenkit analyse` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import save_image, write_text
from lumenkit.data.sections import Section
from lumenkit.mineralogy.survey import survey_masks, write_survey
from lumenkit.synth.deposits import DEPOSITS
from lumenkit.synth.render import generate_section


def section(name, sample, deposit, px=None):
    return Section(path=Path(f"/x/{name}.png"), name=name, sample=sample, deposit=deposit,
                   pixel_size_um=px, pixel_size_source="samples.csv" if px else None)


def disc_mask(h, w, code, r, cy, cx):
    yy, xx = np.ogrid[:h, :w]
    m = np.zeros((h, w), np.uint8)
    m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = code
    return m


def test_the_same_section_at_two_magnifications_gives_the_same_answer():
    """One synthetic section at two magnifications: modal % within 1 point, median ECD in µm within 5 %.

    The low magnification is the high one resampled 2× by majority over 2×2 pixels (as ``predict`` resamples masks),
    pixel size doubled: boundaries move and the smallest grains vanish or merge, as they would under a 2× weaker
    objective. The median is by area (d50, the size half the minerals' area is finer than, as automated mineralogy
    reports it): the median by count is set by specks of 1–3 px that only the finer pixels resolve (3.2 against
    6.0 µm here), a difference of resolution, not of measurement.
    """
    from lumenkit.data.imageio import resize_mask

    _, high = generate_section(next(iter(DEPOSITS)), (600, 400), np.random.default_rng(0))
    low = resize_mask(high, (300, 200))
    assert (np.repeat(np.repeat(low, 2, 0), 2, 1) != high).mean() > 0.01  # a real resampling, not a copy
    s = survey_masks({"low": low, "high": high}, [section("low", "A", "D", 2.0), section("high", "B", "D", 1.0)],
                     n_boot=50)
    modal = s.modal.pivot_table(index="mineral", columns="image", values="area_pct")
    assert len(modal) >= 4  # several minerals of a real texture, not one disc
    assert (modal["low"] - modal["high"]).abs().max() < 1.0
    def d50(g):
        g = g.sort_values("ecd_um")
        passing = g["area_um2"].cumsum() / g["area_um2"].sum()
        return g["ecd_um"].to_numpy()[np.searchsorted(passing.to_numpy(), 0.5)]

    med = s.grains.groupby("image")[["ecd_um", "area_um2"]].apply(d50)
    assert abs(med["low"] - med["high"]) / med["low"] < 0.05
    assert s.unit == "µm" and "area_µm2" in s.modal.columns


def test_pooling_per_sample_and_deposit_by_real_area_with_intervals():
    ccp = np.ones((10, 10), np.uint8)  # pure chalcopyrite, 100 px
    gl = np.full((10, 10), 2, np.uint8)  # pure galena
    sections = [section("a", "S1", "North", 1.0), section("b", "S1", "North", 2.0), section("c", "S2", "South", 1.0)]
    s = survey_masks({"a": ccp, "b": gl, "c": gl}, sections, codes=[0, 1, 2], n_boot=200)
    north = s.by_deposit.set_index(["deposit", "mineral"])
    # b covers 4× the area of a (2 µm pixels): Ccp 100 / 500 µm² = 20 %, galena 80 %
    assert north.loc[("North", "Ccp"), "area_pct"] == pytest.approx(20.0)
    assert north.loc[("North", "Gl"), "area_pct"] == pytest.approx(80.0)
    assert north.loc[("North", "Ccp"), "area_pct_low"] <= 20.0 <= north.loc[("North", "Ccp"), "area_pct_high"]
    # weight %: 100·4.18 / (100·4.18 + 400·7.60)
    want = 100 * 100 * 4.18 / (100 * 4.18 + 400 * 7.60)
    assert north.loc[("North", "Ccp"), "weight_pct"] == pytest.approx(want, rel=1e-3)
    assay = s.assay_by_deposit.set_index(["deposit", "element"])["grade_pct"]
    assert assay[("South", "Pb")] == pytest.approx(86.6, abs=0.1)  # pure galena: 207.2 / 239.26
    assert set(s.by_sample["sample"]) == {"S1", "S2"} and s.by_sample["images"].max() == 2


def test_assay_per_sample_and_deposit_has_bootstrap_intervals_over_images():
    """Grades get the modal table's bootstrap over images: zero width for identical images, else between them."""
    mixed = np.zeros((20, 20), np.uint8)
    mixed[:, :8] = 1  # chalcopyrite
    mixed[:, 8:12] = 2  # galena; background elsewhere
    ccp = np.ones((20, 20), np.uint8)
    gl = np.full((20, 20), 2, np.uint8)
    sections = [section("a1", "Same", "North", 1.0), section("a2", "Same", "North", 1.0),
                section("a3", "Same", "North", 1.0), section("b1", "Two", "South", 1.0),
                section("b2", "Two", "South", 1.0)]
    s = survey_masks({"a1": mixed, "a2": mixed.copy(), "a3": mixed.copy(), "b1": ccp, "b2": gl}, sections,
                     codes=[0, 1, 2], n_boot=300)
    t = s.assay_by_sample.set_index(["sample", "element"])
    assert {"images", "grade_pct", "grade_pct_low", "grade_pct_high"} <= set(t.columns)
    image = s.assay.set_index(["image", "element"])["grade_pct"]
    for element in ("Cu", "Pb", "S"):  # every image alike: the interval is the grade itself
        same = t.loc[("Same", element)]
        assert same["grade_pct"] == pytest.approx(image[("a1", element)]) and same["grade_pct"] > 0
        assert same["grade_pct_low"] == pytest.approx(same["grade_pct"])
        assert same["grade_pct_high"] == pytest.approx(same["grade_pct"])
        two = t.loc[("Two", element)]  # two different images: from one image's grade to the other's
        grades = sorted([image[("b1", element)], image[("b2", element)]])
        assert grades[0] < grades[1]
        assert two["grade_pct_low"] < two["grade_pct"] < two["grade_pct_high"]
        assert two["grade_pct_low"] == pytest.approx(grades[0]) and two["grade_pct_high"] == pytest.approx(grades[1])
    assert t.loc[("Two", "Cu"), "images"] == 2 and t.loc[("Same", "Cu"), "images"] == 3
    # the same resamples as the modal table: the pooled grade follows from the pooled weight % and the bounds
    # of copper (in chalcopyrite alone) from the bounds of chalcopyrite's weight %
    modal = s.by_sample.set_index(["sample", "mineral"])
    cu_in_ccp = 100 * 63.546 / 183.511
    for col in ("weight_pct", "weight_pct_low", "weight_pct_high"):
        assert t.loc[("Two", "Cu"), col.replace("weight", "grade")] == pytest.approx(
            modal.loc[("Two", "Ccp"), col] * cu_in_ccp / 100, rel=1e-3)
    dep = s.assay_by_deposit.set_index(["deposit", "element"])
    assert dep.loc[("South", "Cu"), "grade_pct_low"] < dep.loc[("South", "Cu"), "grade_pct_high"]
    assert dep.loc[("North", "Cu"), "grade_pct_low"] == pytest.approx(dep.loc[("North", "Cu"), "grade_pct_high"])


def test_lengths_stay_in_pixels_when_a_pixel_size_is_missing(tmp_path):
    s = survey_masks({"a": disc_mask(40, 40, 1, 8, 20, 20)}, [section("a", "S", "D")], n_boot=10)
    assert s.unit == "px" and "area_px2" in s.modal.columns and "ecd_um" not in s.grains.columns
    paths = write_survey(s, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unit"] == "px" and summary["images"] == 1 and {p.name for p in paths} >= {"grains.csv",
                                                                                               "summary.json"}
    (tmp_path / "file").write_text("x")
    from lumenkit.errors import OutputPathError

    with pytest.raises(OutputPathError, match="file: exists and is not a folder; choose another --out"):
        write_survey(s, tmp_path / "file")


def test_lumenkit_analyse_on_a_folder_of_unlabelled_sections(tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    Checkpoint(net, ClassMap([0, 1, 2]), 0.5, config={"pixel_size_um": 2.6}).save(tmp_path / "model.pt")
    rng = np.random.default_rng(1)
    for name in ("north/a", "north/b", "south/c"):
        save_image(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), tmp_path / "sec" / f"{name}.png")
    write_text(tmp_path / "sec" / "samples.csv", "image,sample,deposit,pixel_size_um\nnorth/a,S1,North,1.3\n"
               "north/b,S1,North,1.3\nsouth/c,S2,South,2.6\n")
    code = main(["analyse", str(tmp_path / "sec"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "out"), "--um", "--quiet"])
    assert code == 0
    for name in ("sections", "modal", "assay", "grains", "modal_by_sample", "modal_by_deposit", "assay_by_deposit",
                 "contacts", "locking", "size_by_sample", "free_boundary_by_size"):
        assert (tmp_path / "out" / f"{name}.csv").exists(), name
    sections = pd.read_csv(tmp_path / "out" / "sections.csv").set_index("image")
    assert sections.loc["north/a", "pixel_size_source"] == "samples.csv"
    comp = pd.read_csv(tmp_path / "out" / "masks" / "composition.csv").set_index("image")
    assert comp.loc["a", "scale"] == pytest.approx(1.0) and comp.loc["c", "scale"] == pytest.approx(0.5)
    assert (comp["pixel_size_source"] == "samples.csv").all()  # where each image's pixel size came from, as above
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unit"] == "µm" and summary["samples"] == 2 and summary["deposits"] == 2
    assert summary["model"] == str(tmp_path / "model.pt")  # which model identified the minerals
    net2 = create_model("resunet", in_channels=3, classes=3, width=4, depth=3).eval()
    Checkpoint(net2, ClassMap([0, 1, 2]), 0.5, config={"pixel_size_um": 2.6}).save(tmp_path / "model2.pt")
    assert main(["analyse", str(tmp_path / "sec"), "--model", str(tmp_path / "model.pt"), "--model",
                 str(tmp_path / "model2.pt"), "--out", str(tmp_path / "ens"), "--um", "--quiet"]) == 0
    ens = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert ens["model"] == [str(tmp_path / "model.pt"), str(tmp_path / "model2.pt")] and ens["samples"] == 2
    write_text(tmp_path / "sec" / "samples.csv", "image,sample\nnorth/a,S1\n")
    capsys.readouterr()
    assert main(["analyse", str(tmp_path / "sec"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "out2"), "--um", "--quiet"]) == 2  # µm asked, pixel sizes unknown
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err  # one line naming the first image without a pixel size, and the fix
    assert err[0].startswith(f"lumenkit: error: {tmp_path / 'sec' / 'north' / 'a.png'}: no pixel size known; ")
    assert "--pixel-size UM" in err[0]
    assert not (tmp_path / "out2").exists()  # nothing written, not even the folder


def test_analyse_bad_inputs_are_one_line_errors(tmp_path, capsys):
    from lumenkit.cli import main
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    Checkpoint(net, ClassMap([0, 1, 2]), 0.5).save(tmp_path / "model.pt")
    save_image(np.zeros((32, 32, 3), np.uint8), tmp_path / "sec" / "a.png")
    (tmp_path / "taken").write_text("a file where the output folder should go")
    args = ["analyse", str(tmp_path / "sec"), "--model", str(tmp_path / "model.pt"), "--quiet", "--out"]
    assert main([*args, str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "taken: exists and is not a folder; choose another --out" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["analyse", str(tmp_path / "empty"), "--model", str(tmp_path / "model.pt"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err
    write_text(tmp_path / "sec" / "samples.csv", "image,sample\nb,S1\n")
    assert main([*args, str(tmp_path / "o2")]) == 2
    assert "names images not in" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def _tiny_model(path, **config):
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    Checkpoint(net, ClassMap([0, 1, 2]), 0.5, config=config).save(path)
    return path


def test_analyse_refuses_a_samples_csv_pixel_size_that_contradicts_the_file(tmp_path, capsys):
    import tifffile

    from lumenkit.cli import main

    model = _tiny_model(tmp_path / "model.pt")
    (tmp_path / "sec").mkdir()
    tifffile.imwrite(tmp_path / "sec" / "a.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb",
                     resolution=(10_000 / 1.3, 10_000 / 1.3), resolutionunit="CENTIMETER")  # 1.3 µm/px in its tags
    write_text(tmp_path / "sec" / "samples.csv", "image,sample,pixel_size_um\na,S1,2.6\n")
    assert main(["analyse", str(tmp_path / "sec"), "--model", str(model), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"lumenkit: error: {tmp_path / 'sec' / 'a.tif'}: pixel size 2.6 µm in ")
    assert "samples.csv differs from 1.3 µm in the file's TIFF tags; correct one of them" in err[0]
    assert not (tmp_path / "out").exists()


def test_analyse_scale_is_the_fallback_for_images_without_pixel_size(tmp_path, capsys):
    from lumenkit.cli import build_parser, main

    model = _tiny_model(tmp_path / "model.pt", pixel_size_um=2.6)
    save_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8), tmp_path / "sec" / "a.png")
    args = ["analyse", str(tmp_path / "sec"), "--model", str(model), "--quiet", "--out"]
    assert main([*args, str(tmp_path / "plain")]) == 0
    assert main([*args, str(tmp_path / "half"), "--scale", "0.5"]) == 0
    plain = pd.read_csv(tmp_path / "plain" / "masks" / "composition.csv").set_index("image")
    half = pd.read_csv(tmp_path / "half" / "masks" / "composition.csv").set_index("image")
    assert plain.loc["a", "scale"] == pytest.approx(1.0) and half.loc["a", "scale"] == pytest.approx(0.5)
    capsys.readouterr()
    assert main([*args, str(tmp_path / "bad"), "--scale", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "scale 0.0 is not a positive relative scale" in err[0]
    assert not (tmp_path / "bad").exists()
    # the same plain-words help as predict's --scale
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    helps = {c: next(a.help for a in sub[c]._actions if a.dest == "scale") for c in ("analyse", "predict")}
    assert helps["analyse"] == helps["predict"] and "fallback when pixel sizes are unknown" in helps["analyse"]


def test_boundaries_weigh_by_real_length_and_one_unit_for_every_grain():
    # the same disc of chalcopyrite in background, once at 2 µm/px and once at twice the magnification
    coarse = disc_mask(100, 100, 1, 20, 50, 50)
    fine = disc_mask(200, 200, 1, 40, 100, 100)
    s = survey_masks({"a": coarse, "b": fine}, [section("a", "S", "D", 2.0), section("b", "S", "D", 1.0)], n_boot=10)
    c = s.contacts.set_index(["mineral", "other"])["boundary_um"]
    from lumenkit.mineralogy.analysis import contact_matrix

    expect = contact_matrix(coarse).loc["Ccp", "BG"] * 2.0 + contact_matrix(fine).loc["Ccp", "BG"] * 1.0
    assert c[("Ccp", "BG")] == pytest.approx(expect)
    lock = s.locking.set_index("mineral")  # the locking table's length is in the contacts' unit, named so
    assert "boundary_px" not in lock and lock.loc["Ccp", "boundary_um"] == pytest.approx(
        s.contacts.query("mineral == 'Ccp'")["boundary_um"].sum())
    assert contact_matrix(coarse).loc["Ccp", "BG"] * 2.0 == pytest.approx(contact_matrix(fine).loc["Ccp", "BG"],
                                                                          rel=0.05)  # same length in µm
    # one image without a pixel size: every length in px, every grain counted in the size tables
    mixed = survey_masks({"a": coarse, "b": fine}, [section("a", "S", "D", 2.0), section("b", "S", "D")], n_boot=10)
    assert mixed.unit == "px" and "ecd_um" not in mixed.grains and "boundary_px" in mixed.contacts
    assert "boundary_px" in mixed.locking and "boundary_um" not in mixed.locking
    assert mixed.size_by_sample.query("mineral == 'Ccp'")["grains"].sum() == 2
    assert mixed.overall.set_index("mineral").loc["Ccp", "images"] == 2
