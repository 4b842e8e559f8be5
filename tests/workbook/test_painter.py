"""The painting loop, headless: paint strokes, fine-tune a few steps, the prediction changes; strokes reload."""

import numpy as np
import pytest
import torch

from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.data.imageio import read_mask, save_image
from lumenkit.errors import ConfigError
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model
from lumenkit.synth.render import generate_section
from lumenkit.workbook.painter import StrokePainter, stamp


@pytest.fixture
def setup(tmp_path):
    image, mask = generate_section("pbzn_a", (320, 256), np.random.default_rng(0), scale=0.25)
    save_image(image, tmp_path / "section.png")
    torch.manual_seed(0)
    net = create_model("resunet", width=4, depth=2, classes=2).eval()
    return tmp_path, image, mask, Checkpoint(net, ClassMap([0, 1]), 0.25)


def test_stamp_paints_discs_along_the_stroke():
    labels = np.full((20, 30), IGNORE, np.uint8)
    assert stamp(labels, 4, [(2, 10), (27, 10)], 1.5) > 0
    assert (labels[10, 2:28] == 4).all() and (labels[10, 0] == IGNORE) and (labels[13, 10] == IGNORE)
    assert set(np.unique(labels)) == {4, IGNORE}


def test_paint_finetune_and_the_prediction_changes(setup):
    folder, _image, mask, ck = setup
    p = StrokePainter(folder / "section.png", ck, folder / "strokes", scale=0.25, steps=4)
    before = p.prediction.copy()
    ys, xs = np.nonzero(mask == 2)  # paint strokes on a class the model does not know (code 2: galena)
    p.paint(2, [(float(xs[0]), float(ys[0])), (float(xs[0]) + 3, float(ys[0]))], 2)
    ys, xs = np.nonzero(mask == 0)
    p.paint(0, [(float(xs[10]), float(ys[10])), (float(xs[10]), float(ys[10]) + 5)], 2)
    assert p.finetune(wait=True) is not None
    assert "fine-tuned 4 steps" in p.status.value
    assert p.ckpt is not ck and 2 in p.ckpt.class_map.codes
    assert not np.array_equal(p.prediction, before)
    boxes = p.suggest(k=2, window=32)
    assert len(boxes) == 2 and all(0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 256 for x0, y0, x1, y1 in boxes)
    # the strokes are files in the dataset layout, and a new painter on the folder resumes them
    saved = read_mask(folder / "strokes" / "masks" / "train" / "section.png")
    np.testing.assert_array_equal(saved, p.labels)
    assert LumenStoneDataset(folder / "strokes", "train").sparse
    again = StrokePainter(folder / "section.png", ck, folder / "strokes", scale=0.25)
    np.testing.assert_array_equal(again.labels, p.labels)


def test_mouse_strokes_land_at_image_pixels(setup):
    folder, *_, ck = setup
    p = StrokePainter(folder / "section.png", ck, folder / "s", scale=0.25, max_side=160)  # shown at half size
    p.mineral.value, p.brush.value = 4, 2
    p._on_down(10, 20)
    p._on_move(30, 20)
    p._on_up(40, 20)
    assert (p.labels[40, 20:80] == 4).all() and (p.labels == 4).sum() < 300


def test_nothing_to_learn_from_and_unknown_codes(setup):
    folder, *_, ck = setup
    p = StrokePainter(folder / "section.png", ck, folder / "s", scale=0.25)
    assert p.finetune(wait=True) is None and "paint at least one stroke" in p.status.value
    with pytest.raises(ConfigError, match="not a mineral"):
        p.paint(200, [(1, 1)], 2)
