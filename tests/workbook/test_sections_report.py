"""The sections report: synthetic sections without masks → analysis once → pages overall, per deposit and sample."""

import json

import numpy as np
import pandas as pd
import pytest

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import read_mask
from lumenkit.data.sections import read_sections
from lumenkit.errors import ConfigError
from lumenkit.synth.writer import write_sections
from lumenkit.workbook.pipeline import default_stages, group_pages
from lumenkit.workbook.sections import ensure_analysis, interval_table, modal_pred_vs_true, sections_view


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    root = tmp_path_factory.mktemp("sections")
    out, truth = write_sections(root / "sec", deposits=("pbzn_a", "cuni_e"), samples_per_deposit=2,
                                images_per_sample=2, size=(96, 64), seed=1)
    return out, truth


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)  # a random network, the same one every run: the pages below depend on what it predicts
    net = create_model("resunet", in_channels=3, classes=4, width=4, depth=2).eval()
    Checkpoint(net, ClassMap([0, 1, 4, 6]), 0.5, config={"pixel_size_um": 2.0}).save(path)
    return path


def test_synthetic_sections_come_as_a_mineralogist_brings_them(sections):
    out, truth = sections
    found = {s.name: s for s in read_sections(out)}
    assert len(found) == 8 and not list(out.rglob("*.png"))  # no masks beside the images
    assert {s.deposit for s in found.values()} == {"pbzn_a", "cuni_e"} and len({s.sample for s in found.values()}) == 4
    # the second sample of the first deposit is imaged at twice the magnification, declared in samples.csv
    assert found["pbzn_a/PBZN-A-02_1"].pixel_size_um == pytest.approx(1.0)
    assert found["pbzn_a/PBZN-A-01_1"].pixel_size_um == pytest.approx(2.0)
    # the second sample of the second deposit declares its pixel size in its own TIFF tags
    tiff = found["cuni_e/CUNI-E-02_1"]
    assert tiff.path.suffix == ".tif" and tiff.pixel_size_source == "TIFF tags"
    assert tiff.pixel_size_um == pytest.approx(2.0)
    for s in found.values():
        mask = read_mask(truth / f"{s.name}.png")
        assert mask.shape == (64, 96) and set(np.unique(mask)) <= {0, 1, 2, 3, 4, 5, 6, 7, 8, 11}
    again, _ = write_sections(out.parent / "again", deposits=("pbzn_a", "cuni_e"), samples_per_deposit=2,
                              images_per_sample=2, size=(96, 64), seed=1)
    assert (again / "samples.csv").read_bytes() == (out / "samples.csv").read_bytes()
    assert (again / "pbzn_a" / "PBZN-A-01_1.jpg").read_bytes() == (out / "pbzn_a" / "PBZN-A-01_1.jpg").read_bytes()


def test_analysis_runs_once_and_pages_measure_their_own_group(sections, model, tmp_path):
    out, truth = sections
    analysis = ensure_analysis(out, model, tmp_path)
    record = (analysis / "inputs.json").stat().st_mtime_ns
    assert ensure_analysis(out, model, tmp_path) == analysis
    assert (analysis / "inputs.json").stat().st_mtime_ns == record  # the same model and images: not redone
    everything = sections_view(out, tmp_path, n_boot=20)
    assert everything.title == "all sections" and len(everything.sections) == 8 and everything.unit == "µm"
    dep = sections_view(out, tmp_path, deposit="cuni_e", truth=truth, n_boot=20)
    assert {s.deposit for s in dep.sections} == {"cuni_e"} and len(dep.sections) == 4
    assert set(dep.survey.by_sample["sample"]) == {"CUNI-E-01", "CUNI-E-02"}
    sample = sections_view(out, tmp_path, sample="CUNI-E-02", truth=truth, n_boot=20)
    assert [s.sample for s in sample.sections] == ["CUNI-E-02"] * 2
    # the true masks are measured for the same images: predicted against true per sample
    cmp = modal_pred_vs_true(dep, "sample")
    assert cmp.index.names == ["sample", "mineral"]
    np.testing.assert_allclose(cmp["area_error_pp"], cmp["pred_area_pct"] - cmp["true_area_pct"])
    true_bg = dep.truth.by_sample.set_index(["sample", "mineral"]).loc[("CUNI-E-01", "BG"), "area_pct"]
    assert cmp.loc[("CUNI-E-01", "BG"), "true_area_pct"] == pytest.approx(true_bg)
    cells = interval_table(dep.survey.by_sample, "sample", "weight_pct")
    assert cells.shape[0] == 2 and all("(" in c for c in cells.to_numpy().ravel() if c)
    grades = interval_table(dep.survey.assay_by_sample, "sample", "grade_pct", columns="element")
    assert grades.shape[0] == 2 and {"Cu", "S"} <= set(grades.columns)
    assert all("(" in c for c in grades.to_numpy().ravel() if c)
    with pytest.raises(ConfigError, match="no section of deposit 'nowhere'"):
        sections_view(out, tmp_path, deposit="nowhere")
    with pytest.raises(ConfigError, match=r"true mask .* not found"):
        sections_view(out, tmp_path, truth=tmp_path / "nothing")
    # another model means another analysis
    other = tmp_path / "other.pt"
    other.write_bytes(model.read_bytes())
    ensure_analysis(out, other, tmp_path)
    record = json.loads((analysis / "inputs.json").read_text())
    assert record["prediction"]["model"][0] == str(other.resolve())
    assert set(record["masks"]) == {s.name for s in read_sections(out)} and record["failed"] == {}
    # only the tables depend on the gangue density: recomputed from the masks, not predicted again
    masks_before = (analysis / "masks" / "PBZN-A-01_1.png").stat().st_mtime_ns
    rows_before = len(pd.read_csv(analysis / "modal_by_deposit.csv"))
    ensure_analysis(out, other, tmp_path, gangue_density=4.0)
    assert (analysis / "masks" / "PBZN-A-01_1.png").stat().st_mtime_ns == masks_before
    assert json.loads((analysis / "summary.json").read_text())["gangue_density"] == 4.0
    assert len(pd.read_csv(analysis / "modal_by_deposit.csv")) == rows_before  # the model's classes, as before


def test_an_ensemble_analyses_anew_and_is_named(sections, model, tmp_path):
    import torch

    from lumenkit.models.checkpoint import load_checkpoint

    out, _ = sections
    single = ensure_analysis(out, model, tmp_path)
    alone = read_mask(single / "masks" / "PBZN-A-01_1.png")
    record = (single / "inputs.json").stat().st_mtime_ns
    assert ensure_analysis(out, [model], tmp_path) == single  # a list of one is that model: not redone
    assert (single / "inputs.json").stat().st_mtime_ns == record
    other = load_checkpoint(model)  # the same classes, scale and pixel size, sure of background everywhere
    with torch.no_grad():
        other.model.head.bias[0] += 1000.0
    other_path = tmp_path / "other.pt"
    other.save(other_path)
    analysis = ensure_analysis(out, [model, other_path], tmp_path)
    record = json.loads((analysis / "inputs.json").read_text())["prediction"]["model"]
    assert [r[0] for r in record] == [str(model.resolve()), str(other_path.resolve())]
    assert json.loads((analysis / "summary.json").read_text())["model"] == [str(model), str(other_path)]
    assert (alone != 0).any() and (read_mask(analysis / "masks" / "PBZN-A-01_1.png") == 0).all()
    record = (analysis / "inputs.json").stat().st_mtime_ns
    other.save(other_path)  # the second member's file written again: analysed again
    ensure_analysis(out, [model, other_path], tmp_path)
    assert (analysis / "inputs.json").stat().st_mtime_ns != record
    with pytest.raises(ConfigError, match=r"none\.pt: model not found"):
        ensure_analysis(out, [model, tmp_path / "none.pt"], tmp_path)


def test_an_image_that_cannot_be_predicted_is_left_out_and_named(sections, model, tmp_path):
    import shutil

    src = tmp_path / "sec"
    shutil.copytree(sections[0], src)
    (src / "cuni_e" / "CUNI-E-01_1.jpg").write_bytes(b"not a jpeg")
    ensure_analysis(src, model, tmp_path)
    view = sections_view(src, tmp_path, deposit="cuni_e", n_boot=10)
    assert list(view.failed) == ["cuni_e/CUNI-E-01_1"] and "CUNI-E-01_1.jpg" in view.failed["cuni_e/CUNI-E-01_1"]
    assert len(view.sections) == 3 and "cuni_e/CUNI-E-01_1" not in set(view.survey.modal["image"])


def test_missing_model_is_one_line_naming_how_to_get_one(sections, tmp_path):
    with pytest.raises(ConfigError, match="model not found; give a checkpoint"):
        ensure_analysis(sections[0], tmp_path / "none.pt", tmp_path)


def test_the_stages_of_a_sections_report_and_its_pages(sections):
    assert default_stages({"sections": "s"}) == ["03_train", "06_sections"]
    assert default_stages({"sections": "s", "model": "m.pt"}) == ["06_sections"]
    assert default_stages({"data": "d"})[0] == "01_explore" and "06_sections" not in default_stages({"data": "d"})
    pages = group_pages("06_sections", read_sections(sections[0]))
    assert [p[:2] for p in pages] == [("deposit", "cuni_e"), ("deposit", "pbzn_a"), ("sample", "CUNI-E-01"),
                                      ("sample", "CUNI-E-02"), ("sample", "PBZN-A-01"), ("sample", "PBZN-A-02")]
    assert pages[0][2] == "06_sections__deposit_cuni_e.html"


def test_pages_tables_are_written_per_group(sections, model, tmp_path, monkeypatch):
    from lumenkit.workbook.sections import write_view

    ensure_analysis(sections[0], model, tmp_path)
    view = sections_view(sections[0], tmp_path, sample="PBZN-A-02", truth=sections[1], n_boot=10)
    paths = write_view(view, tmp_path / "page")
    names = {p.name for p in paths}
    assert {"modal.csv", "summary.json", "truth_modal.csv", "truth_grains.csv"} <= names
    modal = pd.read_csv(tmp_path / "page" / "modal.csv")
    assert set(modal["image"]) == {"pbzn_a/PBZN-A-02_1", "pbzn_a/PBZN-A-02_2"}

    # a disk that fills up half-way (fsync fails inside the atomic write): the error is one line naming the user's
    # folder, not the temporary one, and the earlier page is kept whole
    import errno
    import os

    import lumenkit.data.imageio as imageio
    from lumenkit.errors import OutputPathError

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = {p.name: p.read_bytes() for p in paths}
    monkeypatch.setattr(imageio.os, "fsync", full_disk)
    for folder, kept in ((tmp_path / "page", True), (tmp_path / "fresh", False)):
        with pytest.raises(OutputPathError) as err:
            write_view(view, folder)
        msg = str(err.value)
        assert msg.startswith(str(folder / "")) and "\n" not in msg and ".tmp" not in msg, msg
        assert "No space left" in msg and ("held are kept" in msg) == kept, msg
        assert not (folder.parent / f".{folder.name}.tmp").exists()
    monkeypatch.setattr(imageio.os, "fsync", os.fsync)
    # the same when a check inside the write fails (a probe of the temporary folder): no temporary path, one fix
    monkeypatch.setattr(imageio.tempfile, "mkdtemp", lambda **kw: full_disk(None))
    with pytest.raises(OutputPathError) as err:
        write_view(view, tmp_path / "probe")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "probe")) and ".tmp" not in msg and msg.count("choose") == 1, msg
    assert "No space left" in msg and "\n" not in msg
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "page").iterdir())} == before
    assert not (tmp_path / "fresh").exists()


@pytest.mark.slow
def test_report_on_sections_without_masks_pages_per_deposit_and_sample_in_chromium(sections, model, tmp_path):
    """The workbook on unlabelled sections: an HTML page overall, per deposit and per sample, checked in Chromium."""
    from lumenkit.workbook.pipeline import run_report

    out, truth = sections
    params = tmp_path / "sections.yaml"
    params.write_text(f"run: s\nsections: {out}\nmodel: {model}\ntruth: {truth}\n"
                      "notebooks:\n  06_sections:\n    n_boot: 10\n")
    res = run_report(params, out=tmp_path / "rep", progress=False)
    names = [s.name for s in res.stages]
    assert res.ok, [s.error for s in res.stages]
    assert names == ["06_sections", "06_sections__deposit_cuni_e", "06_sections__deposit_pbzn_a",
                     "06_sections__sample_CUNI-E-01", "06_sections__sample_CUNI-E-02",
                     "06_sections__sample_PBZN-A-01", "06_sections__sample_PBZN-A-02"]
    assert res.ok, [s.error for s in res.stages]
    rep = tmp_path / "rep"
    head = json.loads((rep / "headlines" / "06_sections__sample_PBZN-A-02.json").read_text())
    assert head["images"] == 2 and head["samples"] == 1 and head["lengths in"] == "µm"
    assert "largest modal error, excl. background (pp of area)" in head
    assert (rep / "sections" / "deposit_cuni_e" / "modal_pred_vs_true.csv").is_file()
    index = res.index.read_text()
    assert all(f"{n}.html" in index for n in names)
    pytest.importorskip("playwright", reason="pip install playwright (drives the system Chromium)")
    from lumenkit.workbook.browser import check_report, chromium_path

    if chromium_path() is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    results = {r["page"]: r for r in check_report(rep)}
    assert set(results) == {"index.html", *(f"{n}.html" for n in names)}
    assert not [(p, r["problems"]) for p, r in results.items() if r["problems"]]
    page = results["06_sections__sample_PBZN-A-02.html"]
    assert "Sections report" in page["headings"] and "Modal mineralogy" in page["headings"]
    bars = [b for f in page["figures"] for b in f["scale_bars"]]
    assert len(bars) == 2 and all(b.endswith("µm") for b in bars)  # one per image of the sample
    assert sum(f["legends"] for f in page["figures"]) >= 2  # the gallery's and the modal bars'


def test_a_flat_field_reference_is_part_of_what_the_analysis_depends_on(sections, model, tmp_path):
    from lumenkit.data.imageio import save_image

    ref = tmp_path / "ref.png"
    save_image(np.full((64, 96, 3), 200, np.uint8), ref)
    analysis = ensure_analysis(sections[0], model, tmp_path, flat_field=ref)
    record = json.loads((analysis / "inputs.json").read_text())
    assert record["prediction"]["flat_field"][0] == str(ref.resolve())
    assert json.loads((analysis / "summary.json").read_text())["flat_field"] == str(ref)
    ensure_analysis(sections[0], model, tmp_path)  # without it: analysed again, uncorrected
    assert json.loads((analysis / "inputs.json").read_text())["prediction"]["flat_field"] is None


def test_pages_skip_samples_that_are_just_their_image_and_refuse_clashing_names(tmp_path):
    from lumenkit.data.sections import Section

    def sec(name, sample, deposit=""):
        return Section(tmp_path / f"{name}.png", name, sample, deposit)

    pages = group_pages("06_sections", [sec("a", "a"), sec("b", "b"), sec("c", "S2", "D"), sec("d", "S2", "D")])
    assert [(k, n) for k, n, _ in pages] == [("deposit", "D"), ("sample", "S2")]
    with pytest.raises(ConfigError, match="make the same page name"):
        group_pages("06_sections", [sec("a", "S 1"), sec("b", "S 1"), sec("c", "S_1"), sec("d", "S_1")])
