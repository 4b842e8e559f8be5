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


def test_refine_sweep_scores_what_evaluate_scores(tmp_path, capsys):
    """The sweep's bilinear and refined rows are ``lumenkit evaluate`` without and with ``--refine``."""
    import torch

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.data.datasets import ValidationSplit
    from lumenkit.evaluation.evaluate import evaluate
    from lumenkit.inference.refine import Refine
    from lumenkit.lab.cli import main
    from lumenkit.lab.studies import refine_sweep
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    root = write_fake_dataset(tmp_path / "d", n_train=6, size=(96, 64))
    torch.manual_seed(0)
    net = create_model("resunet", width=4, depth=2, classes=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.5)
    Checkpoint(net, ClassMap([0, 1, 2]), 0.25).save(tmp_path / "m.pt")
    split = ValidationSplit(n_val=3)
    table = refine_sweep(root, tmp_path / "m.pt", [(2, 1e-3), (1, 1e-2)], split="val", validation=split)
    assert list(table["setting"]) == ["bilinear", "r=2, eps=0.001", "r=1, eps=0.01"]
    plain = evaluate(root, tmp_path / "m.pt", split="val", validation=split, baselines=False, progress=False)
    refined = evaluate(root, tmp_path / "m.pt", split="val", validation=split, baselines=False, progress=False,
                       predict_kwargs={"refine": Refine(2, 1e-3)})
    assert table.loc[0, "mean_iou"] == pytest.approx(plain.scores.mean_iou, abs=1e-12)
    assert table.loc[1, "mean_iou"] == pytest.approx(refined.scores.mean_iou, abs=1e-12)
    assert table.loc[1, "pixel_accuracy"] == pytest.approx(refined.scores.pixel_accuracy, abs=1e-12)
    assert main(["refine", "--data", str(root), "--model", str(tmp_path / "m.pt"), "--settings", "2:x",
                 "--out", str(tmp_path / "t.csv")]) == 2
    assert "radius:eps" in capsys.readouterr().err
