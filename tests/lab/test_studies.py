"""lumenkit.workbook.explore: per-class grey levels between images (exposure spread)."""

import numpy as np
import pytest
from conftest import write_fake_dataset


def test_class_grey_levels_measure_a_darker_exposure(tmp_path):
    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.data.imageio import read_image, save_image
    from lumenkit.lab.studies import class_grey_levels, exposure_spread

    root = write_fake_dataset(tmp_path / "d", n_train=4, size=(96, 64))
    path = root / "imgs" / "train" / "tr01.png"
    save_image((read_image(path).astype(np.float32) * 0.8 + 0.5).astype(np.uint8), path)  # one image 20 % darker
    ds = LumenStoneDataset(root, "train")
    levels = class_grey_levels(ds, scale=None, min_pixels=5)
    assert list(levels.columns) == ds.classes.labels and list(levels.index) == ds.names
    bg = levels[ds.classes.labels[0]]  # the fake images give each class one exact colour
    assert bg["tr00"] == bg["tr02"] and bg["tr01"] == pytest.approx(0.8 * bg["tr00"], abs=1)
    spread = exposure_spread(levels)
    assert spread.loc[bg.name, "low"] == pytest.approx(0.8, abs=0.02) and spread.loc[bg.name, "high"] == 1
    assert spread.loc[bg.name, "images"] == 4
    # a class with fewer pixels than min_pixels in every image: NaN, not a median of a handful
    assert class_grey_levels(ds, scale=None, min_pixels=10**6).isna().all().all()
