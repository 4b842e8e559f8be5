"""lumenkit.lab.separability: which cue (colour, texture, context) tells two minerals apart."""

import numpy as np
import pytest
from conftest import write_fake_dataset


def _same_colour_other_surroundings(root, n=4, seed=0):
    """Pn and Po squares of one identical grey: Pn always in white background, Po in black."""
    from lumenkit.data.imageio import save_image, write_text

    rng = np.random.default_rng(seed)
    for i in range(n):
        image = np.zeros((128, 256, 3), np.uint8)
        image[:, :128] = 255
        mask = np.zeros((128, 256), np.uint8)
        for x0, code in ((0, 7), (128, 5)):
            y, x = rng.integers(20, 90), x0 + rng.integers(20, 90)
            image[y:y + 16, x:x + 16] = 128
            mask[y:y + 16, x:x + 16] = code
        save_image(image, root / "imgs" / "train" / f"s{i}.png")
        save_image(mask, root / "masks" / "train" / f"s{i}.png")
    write_text(root / "dataset.yaml", "name: fake\nscale: 0.5\nclasses: [0, 5, 7]\n")
    return root


def test_context_separates_what_colour_cannot(tmp_path):
    from lumenkit.lab.separability import sample_pixels, separability

    root = _same_colour_other_surroundings(tmp_path / "ctx")
    samples = sample_pixels(root, "Pn", "Po", 0.5, per_image=100)
    assert samples["is_a"].sum() == (~samples["is_a"]).sum() == 4 * 100
    table = separability(samples, folds=4).set_index("features")
    assert table.loc["colour", "auc"] == pytest.approx(0.5, abs=0.05)
    assert table.loc["+context", "auc"] > 0.95 and table.loc["+context", "balanced_accuracy"] > 0.9


def test_pair_study_reports_separability_and_ceilings_per_scale(tmp_path):
    from lumenkit.lab.separability import FEATURE_SETS, pair_study

    root = write_fake_dataset(tmp_path / "d", n_train=4, codes=(0, 5, 7))  # each class its own exact colour
    table = pair_study(root, "Pn", "Po", scales=(0.5, 0.25), per_image=50)
    assert list(table["scale"]) == [0.5] * len(FEATURE_SETS) + [0.25] * len(FEATURE_SETS)
    assert (table.loc[table["features"] == "colour", "balanced_accuracy"] > 0.95).all()
    full = table[table["scale"] == 0.5]
    assert (full["ceiling_iou_Pn"] == 1).all() and (table[table["scale"] == 0.25]["ceiling_iou_Pn"] < 1).all()


def test_bad_pairs_are_one_line_errors(tmp_path, capsys):
    from lumenkit.lab.cli import main

    root = write_fake_dataset(tmp_path / "d", n_train=2, codes=(0, 1, 2))
    out = tmp_path / "o.csv"
    assert main(["separability", "--data", str(root), "--minerals", "Pn", "Xx", "--out", str(out)]) == 2
    assert "unknown class label 'Xx'" in capsys.readouterr().err
    assert main(["separability", "--data", str(root), "--out", str(out)]) == 2  # neither Pn nor Po in the masks
    err = capsys.readouterr().err
    assert "no pixel of Pn or Po" in err and err.count("\n") == 1 and not out.exists()
