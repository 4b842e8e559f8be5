"""Drive the explorer without a browser: controls change the rendered array as expected."""

import numpy as np
import pytest
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.colours import PALETTE
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.workbook.widgets import Explorer


@pytest.fixture
def ckpt():
    torch.manual_seed(0)
    m = create_model("resunet", width=4, depth=2, classes=3)
    m.eval()
    return Checkpoint(model=m, class_map=ClassMap([0, 1, 2]), scale=0.5)


def test_image_opacity_toggles_and_zoom_change_the_render(fake_dataset):
    ex = Explorer(fake_dataset)
    assert ex.picker.options[0] == "tr00" and ex.name == "tr00"
    first = ex.render()
    assert first.shape == (64, 96, 3)
    ex.picker.value = "tr01"
    assert ex.name == "tr01" and not np.array_equal(ex.render(), first)
    # the fixture image is the palette colour of its mask: at opacity 0 the render is the image itself
    ex.opacity.value = 0.0
    assert np.array_equal(ex.render(), ex.image)
    ex.opacity.value = 1.0
    on = np.isin(ex.truth, ex.shown_codes)
    assert np.array_equal(ex.render()[on], PALETTE[ex.truth[on]])
    # turning a mineral off leaves its pixels as the image
    ex.opacity.value = 0.5
    grey = ex.image.copy()
    grey[:] = 128
    ex.image = grey
    ex.refresh()
    ex.toggles[1].value = False
    r = ex.render()
    assert (r[ex.truth == 1] == 128).all() and not (r[ex.truth == 2] == 128).all()
    ex.zoom_x.value = (0.5, 1.0)
    ex.zoom_y.value = (0.0, 0.5)
    assert ex.render().shape == (32, 48, 3)
    comp = ex.composition_table()
    assert comp["pixels"].sum() == 32 * 48
    assert "Ccp" in ex.composition.value and ex.view.value[:4] == b"\x89PNG"


def test_deposit_filter_and_split_switch(fake_dataset):
    ex = Explorer(fake_dataset)
    assert ex.deposit.options == ("(all)", "dep0", "dep1")
    ex.deposit.value = "dep1"
    assert all(n in ("tr01", "tr03", "tr05") for n in ex.picker.options)
    ex.split.value = "test"
    assert ex.picker.options == ("te00", "te01")


def test_identify_upload_and_statistics(fake_dataset, ckpt, tmp_path):
    ex = Explorer(fake_dataset, model=ckpt, out_dir=tmp_path / "out")
    ex.run_model()
    assert ex.source.value == "prediction" and ex.prediction.shape == ex.truth.shape
    assert set(np.unique(ex.prediction)) <= {0, 1, 2}
    png = (fake_dataset / "imgs" / "train" / "tr02.png").read_bytes()
    assert ex.open_upload("new section.png", png)
    assert ex.truth is None and ex.prediction.shape == (64, 96) and "identified" in ex.message.value
    stats = ex.statistics()
    assert abs(stats["composition"]["area_pct"].sum() - 100) < 1e-9 and "ecd_px" in stats["grains"]
    paths = [ex.save(k) for k in ("mask", "overlay", "composition")]
    assert all(p.exists() for p in paths) and paths[0].name == "new section_prediction_mask.png"


def test_bad_upload_shows_message_not_traceback(fake_dataset, ckpt):
    ex = Explorer(fake_dataset, model=ckpt)
    assert not ex.open_upload("notes.jpg", b"this is text, not an image")
    assert "notes.jpg" in ex.message.value and "not a readable image" in ex.message.value
    assert not ex.open_upload("empty.png", b"")
    assert "empty" in ex.message.value


def test_without_model_identify_explains(fake_dataset):
    ex = Explorer(fake_dataset)
    ex.run_model()
    assert "no model" in ex.message.value and ex.identify.disabled


def test_static_figure_for_html_export(fake_dataset):
    fig = Explorer(fake_dataset).static_figure()
    assert len(fig.axes) == 2 and fig.legends
