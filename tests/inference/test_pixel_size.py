"""Physical pixel size: a model records the µm per pixel it was trained at; prediction resamples sections by it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import write_fake_dataset

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import DatasetInfo, LumenStoneDataset
from lumenkit.data.imageio import save_image, write_text
from lumenkit.errors import ConfigError
from lumenkit.inference.predict import input_scale_for, predict_files
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model


def model(pixel_size_um=None, scale=0.25):
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    config = {"pixel_size_um": pixel_size_um} if pixel_size_um is not None else {}
    return Checkpoint(net, ClassMap([0, 1, 2]), scale, config=config)


def test_dataset_yaml_pixel_size_follows_the_working_scale(tmp_path):
    root = write_fake_dataset(tmp_path / "d", scale=None)
    write_text(root / "dataset.yaml", "name: d\nscale: 0.5\nclasses: [0, 1, 2]\npixel_size_um: 1.3\n")
    assert DatasetInfo.read(root).pixel_size_um == 1.3 and DatasetInfo.read(root).to_dict()["pixel_size_um"] == 1.3
    assert LumenStoneDataset(root).pixel_size_um == pytest.approx(1.3)
    assert LumenStoneDataset(root, scale=0.25).pixel_size_um == pytest.approx(2.6)  # half the pixels: twice the µm
    write_text(root / "dataset.yaml", "name: d\nscale: 0.5\npixel_size_um: -1\n")
    with pytest.raises(ConfigError, match="'pixel_size_um' must be the positive side of one stored pixel"):
        DatasetInfo.read(root)


def test_the_scale_of_an_image_from_the_two_pixel_sizes():
    assert model(2.6).pixel_size_um == 2.6 and model().pixel_size_um is None
    assert input_scale_for(model(2.6, 0.25), 2.6) == pytest.approx(0.25)  # the same magnification
    assert input_scale_for(model(2.6, 0.25), 1.3) == pytest.approx(0.5)  # twice the magnification
    assert input_scale_for(model(), 1.3) is None and input_scale_for(model(2.6), None) is None


def test_predict_resamples_by_pixel_size_metadata_or_parameter(tmp_path):
    img = np.full((64, 96, 3), 100, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "in" / "x20.tif", img, photometric="rgb", resolution=(10_000 / 1.3, 10_000 / 1.3),
                     resolutionunit="CENTIMETER") if (tmp_path / "in").mkdir() is None else None
    save_image(img, tmp_path / "in" / "plain.png")
    rep = predict_files(model(2.6, 0.25), [tmp_path / "in"], tmp_path / "out", pixel_size_um=5.2, progress=False)
    rows = pd.read_csv(tmp_path / "out" / "composition.csv").set_index("image")
    assert rep.ok and rows.loc["x20", "pixel_size_um"] == pytest.approx(1.3)
    assert rows.loc["x20", "scale"] == pytest.approx(0.5)  # from its TIFF tags
    assert rows.loc["plain", "scale"] == pytest.approx(0.125) and rows.loc["plain", "pixel_size_um"] == 5.2
    rep = predict_files(model(2.6, 0.25), [tmp_path / "in"], tmp_path / "out2", scale=1.0, progress=False)
    assert (pd.read_csv(tmp_path / "out2" / "composition.csv")["scale"] == 1.0).all()  # an explicit scale wins
