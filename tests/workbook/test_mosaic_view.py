"""Mosaics in the workbook: analysed streamed, shown as overviews, any region at full resolution, nothing whole."""

import numpy as np
import pytest
import tifffile
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import save_image
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.synth.render import generate_section
from lumenkit.workbook import sections as sections_mod
from lumenkit.workbook.sections import ensure_analysis, sections_view
from lumenkit.workbook.widgets import MosaicViewer


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaics")
    torch.manual_seed(0)
    net = create_model("resunet", in_channels=3, classes=4, width=4, depth=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.6)
    Checkpoint(net, ClassMap([0, 1, 4, 6]), 0.25).save(tmp / "model.pt")
    image, _ = generate_section("pbzn_a", (1203, 1001), np.random.default_rng(0), scale=1.0)
    folder = tmp / "sections"
    folder.mkdir()
    with tifffile.TiffWriter(folder / "whole.tif", bigtiff=True) as tw:
        tw.write(image, tile=(256, 256), photometric="rgb", compression="zlib", subifds=1)
        tw.write(image[::2, ::2], tile=(256, 256), photometric="rgb", compression="zlib", subfiletype=1)
    save_image(image[:300, :400], folder / "field.png")
    out = ensure_analysis(folder, tmp / "model.pt", tmp / "run", pixel_size_um=0.5, mosaic_pixels=1_000_000)
    return folder, tmp / "run", out, image


def test_a_mosaic_is_analysed_streamed_and_its_mask_stays_on_disk(analysed):
    folder, run, out, _ = analysed
    import json

    record = json.loads((out / "inputs.json").read_text())
    assert record["masks"] == {"field": "masks/field.png", "whole": "masks/whole.tif"}
    view = sections_view(folder, run, pixel_size_um=0.5)
    assert [s.name for s, _ in view.mosaics()] == ["whole"]
    widths = dict(zip(view.survey.sections["image"], view.survey.sections["width"], strict=True))
    assert widths == {"field": 400, "whole": 1203}
    assert (view.survey.grains["image"] == "whole").sum() > 20


def test_the_gallery_shows_a_mosaic_as_its_overview_with_a_true_scale(analysed, monkeypatch):
    folder, run, _, _ = analysed
    monkeypatch.setattr(sections_mod, "OVERVIEW_SIDE", 500)
    view = sections_view(folder, run, pixel_size_um=0.5)
    items = {s.name: (s, picture, mask) for s, picture, mask in view.images()}
    s, picture, mask = items["whole"]
    assert picture.shape[:2] == mask.shape == (334, 401) and s.pixel_size_um == pytest.approx(1.5)  # 3× reduced
    assert items["field"][1].shape == (300, 400, 3) and items["field"][0].pixel_size_um == 0.5


def test_the_viewer_reads_a_region_at_full_resolution(analysed):
    folder, _, out, image = analysed
    mask = tifffile.imread(out / "masks" / "whole.tif")
    v = MosaicViewer(folder / "whole.tif", out / "masks" / "whole.tif", pixel_size_um=0.5, max_side=600)
    assert v.overview.shape[:2] == v.overview_mask.shape and v.overview_step == 3
    v.zoom_x.value, v.zoom_y.value = (0.1, 0.3), (0.5, 0.7)
    y0, y1, x0, x1 = v.box
    np.testing.assert_array_equal(v.region, image[y0:y1, x0:x1])
    np.testing.assert_array_equal(v.region_mask, mask[y0:y1, x0:x1])
    assert v.region_step == 1 and "full resolution" in v.caption.value and "mm" in v.caption.value
    before = v.region_view.value
    for t in v.toggles.values():
        t.value = False
    assert v.region_view.value != before  # minerals hidden: the image alone
    v.zoom_x.value, v.zoom_y.value = (0.0, 1.0), (0.0, 1.0)
    assert v.region_step == 3 and "reduced 3×" in v.caption.value and max(v.region.shape[:2]) <= 600


def test_the_viewer_takes_the_pixel_size_from_the_file_and_draws_a_static_view(analysed, tmp_path):
    """What an HTML export shows: overview with the zoom outlined, the region, a legend, scale bars in µm."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    folder, _, out, image = analysed
    tagged = tmp_path / "tagged.tif"  # 0.5 µm per pixel in the TIFF's resolution tags (20 000 px per cm)
    tifffile.imwrite(tagged, image, tile=(256, 256), photometric="rgb", resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")
    v = MosaicViewer(tagged, out / "masks" / "whole.tif", max_side=600)
    assert v.pixel_size_um == pytest.approx(0.5)
    assert MosaicViewer(folder / "whole.tif", out / "masks" / "whole.tif").pixel_size_um is None
    fig = v.static_figure()
    overview_ax, region_ax = fig.axes
    assert overview_ax.images[0].get_array().shape[:2] == v.overview.shape[:2]
    assert region_ax.images[0].get_array().shape[:2] == v.region.shape[:2]
    outline = [p for p in overview_ax.patches if isinstance(p, Rectangle)]
    y0, y1, x0, x1 = (b / v.overview_step for b in v.box)
    assert len(outline) == 1 and outline[0].get_width() == pytest.approx(x1 - x0)
    assert outline[0].get_height() == pytest.approx(y1 - y0)
    bars = [a for ax in fig.axes for a in ax.artists]
    assert len(bars) == 2 and all("µm" in b.txt_label.get_children()[0].get_text() for b in bars)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == len(v.toggles) > 0
    plt.close(fig)
    for t in v.toggles.values():
        t.value = False
    fig = v.static_figure()
    assert not fig.legends  # nothing shown, nothing named
    plt.close(fig)


@pytest.mark.slow
def test_the_explore_notebook_shows_a_mosaic(analysed, fake_dataset, tmp_path, monkeypatch):
    """Notebook 01 with ``mosaic`` set: the overview and the region drawn, the viewer displayed."""
    from pathlib import Path

    import papermill as pm

    monkeypatch.delenv("MPLBACKEND")  # the kernel's own inline backend, as a report renders it

    folder, _, out, _ = analysed
    nb = Path(__file__).resolve().parents[2] / "notebooks" / "01_explore.ipynb"
    done = pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), progress_bar=False, cwd=str(tmp_path),
                               parameters={"data": str(fake_dataset), "mosaic": str(folder / "whole.tif"),
                                           "mosaic_mask": str(out / "masks" / "whole.tif"),
                                           "mosaic_pixel_size_um": 0.5})
    cell = next(c for c in done.cells if c.cell_type == "code" and "MosaicViewer(" in c.source)
    kinds = [o.get("output_type") for o in cell.outputs]
    data = [set(o.get("data", {})) for o in cell.outputs]
    assert "error" not in kinds
    assert any("image/png" in d or "image/svg+xml" in d for d in data)  # the static view
    assert any("application/vnd.jupyter.widget-view+json" in d for d in data)  # the live viewer
