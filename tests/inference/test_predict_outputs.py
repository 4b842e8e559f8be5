"""What `predict_files` writes for other programs: palette masks, the ImageJ lookup table, pixel-size sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from lumenkit.data.catalogue import CATALOGUE, ClassMap
from lumenkit.data.imageio import read_mask, save_image
from lumenkit.inference.predict import predict_files, predict_image
from lumenkit.inference.tiling import Tiling
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import create_model

TILING = Tiling(tile=64, margin=8)


@pytest.fixture(scope="module")
def ckpt() -> Checkpoint:
    torch.manual_seed(2)
    net = create_model("resunet", in_channels=3, classes=3, width=4, depth=2).eval()
    with torch.no_grad():  # a steep head: every class wins somewhere on a noisy section
        net.head.weight.normal_(0, 10)
        net.head.bias.zero_()
    return Checkpoint(net, ClassMap([0, 3, 11]), 0.5, config={"pixel_size_um": 2.6})


def section(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    img[10:40, 10:50] = (230, 200, 40)
    img[45:70, 40:90] = (40, 60, 200)
    return img


def test_predicted_masks_are_palette_pngs_of_the_codes_with_an_imagej_lut(ckpt, tmp_path):
    img = section()
    save_image(img, tmp_path / "in" / "s.png")
    rep = predict_files(ckpt, [tmp_path / "in"], tmp_path / "out", scale=0.5, tiling=TILING, progress=False)
    assert rep.ok
    codes = predict_image(ckpt, img, 0.5, tiling=TILING)["codes"]
    present = np.unique(codes)
    assert set(present) == {0, 3, 11}  # the check below compares colours of several codes
    with Image.open(tmp_path / "out" / "s.png") as im:
        assert im.mode == "P"
        raw = np.asarray(im).copy()
        palette = np.array(im.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(raw, codes)  # pixel values are the codes, unchanged
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "s.png"), codes)
    for c in present:
        assert tuple(palette[c]) == CATALOGUE[int(c)].colour, f"code {c}"
    assert tuple(palette[255]) == (255, 255, 255)
    lut = (tmp_path / "out" / "lumenstone.lut").read_bytes()
    assert len(lut) == 768
    r, g, b = (np.frombuffer(lut, dtype=np.uint8)[k * 256:(k + 1) * 256] for k in range(3))
    for c in present:
        assert (r[c], g[c], b[c]) == CATALOGUE[int(c)].colour
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_composition_says_where_each_pixel_size_came_from(ckpt, tmp_path):
    img = section()
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "tags.tif", img, photometric="rgb", resolution=(10_000 / 1.3, 10_000 / 1.3),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "in" / "ome.ome.tif", img, photometric="rgb", ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": 5.2, "PhysicalSizeY": 5.2})
    save_image(img, tmp_path / "in" / "plain.png")
    kw = {"tiling": TILING, "progress": False}

    rows = predict_files(ckpt, [tmp_path / "in"], tmp_path / "a", pixel_size_um=2.6, **kw).composition
    rows = rows.set_index("image")
    assert list(rows.columns).index("pixel_size_source") == list(rows.columns).index("pixel_size_um") + 1
    assert rows.loc["tags", "pixel_size_source"] == "TIFF tags" and rows.loc["tags", "pixel_size_um"] == 1.3
    assert rows.loc["ome.ome", "pixel_size_source"] == "OME-XML" and rows.loc["ome.ome", "pixel_size_um"] == 5.2
    assert rows.loc["plain", "pixel_size_source"] == "parameter" and rows.loc["plain", "pixel_size_um"] == 2.6
    on_disk = pd.read_csv(tmp_path / "a" / "composition.csv").set_index("image")
    assert list(on_disk["pixel_size_source"]) == list(rows["pixel_size_source"])

    unknown = pd.read_csv(predict_files(ckpt, [tmp_path / "in" / "plain.png"], tmp_path / "b", **kw).out
                          / "composition.csv")
    assert unknown["pixel_size_um"].isna().all() and unknown["pixel_size_source"].isna().all()

    # a mapping decides for the files it names: (size, source) pairs keep their source, bare sizes are the caller's
    given = {tmp_path / "in" / "plain.png": (1.3, "samples.csv"), tmp_path / "in" / "tags.tif": 2.6,
             tmp_path / "in" / "ome.ome.tif": (None, None)}
    rows = predict_files(ckpt, [tmp_path / "in"], tmp_path / "c", pixel_size_um=given, **kw).composition
    rows = rows.set_index("image")
    assert rows.loc["plain", "pixel_size_source"] == "samples.csv" and rows.loc["plain", "pixel_size_um"] == 1.3
    assert rows.loc["plain", "scale"] == pytest.approx(1.0)  # 0.5 · 2.6 / 1.3: the source's size is the one used
    assert rows.loc["tags", "pixel_size_source"] == "parameter" and rows.loc["tags", "pixel_size_um"] == 2.6
    assert pd.isna(rows.loc["ome.ome", "pixel_size_source"]) and pd.isna(rows.loc["ome.ome", "pixel_size_um"])
