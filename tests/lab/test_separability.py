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


def _exposures(root, factors=(0.7, 0.8, 0.9, 1.0, 1.1, 1.25), seed=0):
    """Pn always 8 % brighter than Po inside an image; each image's exposure moves both by far more."""
    from lumenkit.data.imageio import save_image, write_text

    rng = np.random.default_rng(seed)
    for i, f in enumerate(factors):
        image = np.full((96, 128, 3), 30, np.float64)
        mask = np.zeros((96, 128), np.uint8)
        for (y, x), code, level in (((10, 10), 5, 150), ((10, 70), 7, 162), ((55, 10), 5, 150)):
            mask[y:y + 30, x:x + 50] = code
            image[y:y + 30, x:x + 50] = level
        image = np.clip(image * f + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
        save_image(image, root / "imgs" / "train" / f"e{i}.png")
        save_image(mask, root / "masks" / "train" / f"e{i}.png")
    write_text(root / "dataset.yaml", "name: exposures\nscale: 0.5\nclasses: [0, 5, 7]\n")
    return root


def test_bright_phase_is_the_median_of_the_ore_and_survives_little_ore():
    from lumenkit.lab.separability import bright_phase, normalise_levels

    image = np.full((100, 100, 3), 20, np.uint8)
    image[:40, :40] = (200, 180, 160)
    assert bright_phase(image).tolist() == [200, 180, 160]
    image[:40, :40] = 20
    image[0, :10] = 240  # 0.1 % ore: the brightest 2 % are taken, mostly gangue
    assert bright_phase(image).tolist() == [20, 20, 20]
    assert bright_phase(image, min_share=0.001).tolist() == [240, 240, 240]
    out = normalise_levels(image, (120, 120, 120), reference=np.array([240.0, 240.0, 240.0]))
    assert out[0, 0].tolist() == [120, 120, 120] and out[50, 50].tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="RGB"):
        bright_phase(image[..., 0])


def test_levels_study_finds_the_order_inside_images_that_exposure_hides_across_them(tmp_path):
    from lumenkit.lab.separability import levels_study

    images, summary, spread = levels_study(_exposures(tmp_path / "e"), "Pn", "Po", scale=0.5, per_image=200)
    assert len(images) == 6 and (images["lum_A"] > images["lum_B"]).all()
    auc = summary.set_index("cue")["auc"]
    assert auc["brightness within each image (pairs of one image)"] > 0.99
    assert auc["brightness within each image, mean over images"] > 0.99
    assert auc["brightness ÷ bright phase, pooled"] > 0.99
    assert auc["brightness, pooled over images"] < 0.8  # exposure overlaps the two minerals across images
    spread = spread.set_index("statistic")
    assert spread.loc["share of images where Pn is brighter"].tolist() == [1, 1]
    sd = spread.loc["Pn brightness, sd between images"]
    assert sd["corrected"] < sd["raw"] / 5
    ratio = spread.loc["mean gap ÷ the minerals' pooled sd between images"]
    assert ratio["raw"] < 1 < 5 < ratio["corrected"]


def test_the_levels_copy_corrects_every_image_to_one_level_and_links_the_masks(tmp_path, capsys):
    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.lab.cli import main
    from lumenkit.lab.separability import bright_phase

    src = _exposures(tmp_path / "e")
    assert main(["levels-copy", "--data", str(src), "--out", str(tmp_path / "n")]) == 0
    assert "6 images" in capsys.readouterr().out
    copy = LumenStoneDataset(tmp_path / "n", "train")
    levels = np.array([bright_phase(copy.read_image(i)) for i in range(len(copy))])
    assert np.ptp(levels, axis=0).max() <= 3  # raw: 0.7× to 1.25× of one level
    assert (copy.read_mask(2) == LumenStoneDataset(src, "train").read_mask(2)).all()
    assert main(["levels-copy", "--data", str(src), "--out", str(tmp_path / "n")]) == 2
    assert "exists" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["levels-copy", "--data", str(src), "--out", str(blocker / "n")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose another --out" in err
    bad = src / "imgs" / "train" / f"{LumenStoneDataset(src, 'train').names[3]}.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: the measuring pass fails, before anything is written
    assert main(["levels-copy", "--data", str(src), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and bad.name in err and not (tmp_path / "m").exists()


def test_a_copy_keeps_only_the_deposit_rows_of_its_images(tmp_path):
    import shutil

    import pandas as pd

    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.data.imageio import write_text
    from lumenkit.lab.separability import levels_dataset

    src = _exposures(tmp_path / "e")
    for kind in ("imgs", "masks"):
        (src / kind / "test").mkdir()
        shutil.copyfile(src / kind / "train" / "e0.png", src / kind / "test" / "t9.png")
    write_text(src / "deposits.csv", "image,deposit\ne0,A\ne1,B\nt9,C\n")  # t9: a test image, not copied
    levels_dataset(src, tmp_path / "n")
    assert pd.read_csv(tmp_path / "n" / "deposits.csv")["image"].tolist() == ["e0", "e1"]
    assert len(LumenStoneDataset(tmp_path / "n", "train")) == 6


def test_the_levels_option_writes_the_summary_and_the_images(tmp_path, capsys):
    import pandas as pd

    from lumenkit.lab.cli import main

    src = _exposures(tmp_path / "e")
    out = tmp_path / "lv.csv"
    assert main(["separability", "--levels", "--data", str(src), "--scales", "0.5", "--per-image", "100",
                 "--out", str(out)]) == 0
    assert "brightness within each image" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 6 and len(pd.read_csv(tmp_path / "lv_images.csv")) == 6
    assert len(pd.read_csv(tmp_path / "lv_spread.csv")) == 7
    assert main(["separability", "--levels", "--data", str(src), "--scales", "0.5", "0.25",
                 "--out", str(out)]) == 2
    assert "one value to --scales" in capsys.readouterr().err


def test_the_study_corrects_as_the_copy_does_and_refuses_minerals_that_never_meet(tmp_path):
    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.errors import ConfigError
    from lumenkit.lab.separability import levels_dataset, levels_study

    src = _exposures(tmp_path / "e")
    images = levels_study(src, "Pn", "Po", scale=0.5, per_image=50)[0]
    levels_dataset(src, tmp_path / "n")
    copy = LumenStoneDataset(tmp_path / "n", "train")
    for i, row in images.iterrows():
        image, mask = copy.read_image(i), copy.read_mask(i)
        assert np.median(image[mask == 7].mean(axis=1)) == pytest.approx(row["lum_A_corrected"], abs=1)
        assert np.median(image[mask == 5].mean(axis=1)) == pytest.approx(row["lum_B_corrected"], abs=1)
    with pytest.raises(ConfigError, match="fewer than two training images hold 50"):
        levels_study(src, "Pn", "Ccp", scale=0.5)


def test_a_channel_without_light_gives_finite_levels(tmp_path):
    from lumenkit.lab.separability import bright_phase, normalise_levels

    image = np.zeros((40, 40, 3), np.uint8)
    image[:20, :, :2] = 200  # no blue at all
    ref = bright_phase(image)
    assert ref.tolist() == [200, 200, 0]
    out = normalise_levels(image, (150, 150, 150), ref)
    assert out[0, 0].tolist() == [150, 150, 0] and np.isfinite(out).all()


def _tinted(root, casts=(1.0, 1.0, 1.0, 0.8), seed=0):
    """Ccp yellow (B/R 0.6) and Pn pale (B/R 0.85) in every image; the last image's blue is dimmed by a cast.

    The first image's pentlandite is half as large as the others', so pooling by pixels and by images differ.
    """
    from lumenkit.data.imageio import save_image, write_text

    rng = np.random.default_rng(seed)
    for i, blue in enumerate(casts):
        image = np.full((64, 96, 3), 40, np.float64)
        mask = np.zeros((64, 96), np.uint8)
        for x0, code, rgb in ((4, 1, (200, 180, 120)), (50, 7, (200, 185, 170))):
            y1 = 32 if (i == 0 and code == 7) else 56
            mask[8:y1, x0:x0 + 40] = code
            image[8:y1, x0:x0 + 40] = rgb
        image[..., 2] *= blue
        image = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        save_image(image, root / "imgs" / "train" / f"t{i}.png")
        save_image(mask, root / "masks" / "train" / f"t{i}.png")
    write_text(root / "dataset.yaml", "name: tinted\nscale: 0.5\nclasses: [0, 1, 7]\n")
    return root


def test_lookalikes_single_out_the_image_whose_tint_makes_pentlandite_look_like_chalcopyrite(tmp_path):
    from lumenkit.lab.separability import colour_lookalikes

    table = colour_lookalikes(_tinted(tmp_path / "t"), "Pn", ["Ccp"], scale=0.5, per_image=100).set_index("image")
    assert list(table.index) == ["t0", "t1", "t2", "t3", "pooled"]
    assert (table.loc[["t0", "t1", "t2"], "as_Pn"] > 0.95).all()  # learnt from images of the same tint
    assert table.loc["t3", "as_Ccp"] > 0.95  # its blue dimmed by 0.8: B/R 0.68, nearer chalcopyrite's 0.6
    assert table.loc["t3", "blue_red"] == pytest.approx(0.85 * 0.8, abs=0.03)
    assert table.loc["t0", "n"] == 24 * 40 and table.loc["t1", "n"] == 48 * 40  # stored at the scale asked
    shares, n = table.loc[["t0", "t1", "t2", "t3"], "as_Ccp"], table.loc[["t0", "t1", "t2", "t3"], "n"]
    assert table.loc["pooled", "as_Ccp"] == pytest.approx((shares * n).sum() / n.sum())  # by pixels, not images
    assert table.loc["pooled", "as_Ccp"] > shares.mean() + 0.02


def test_lookalikes_say_nan_where_the_other_images_hold_nothing_to_compare_with(tmp_path):
    from lumenkit.data.imageio import read_mask, save_image
    from lumenkit.errors import ConfigError
    from lumenkit.lab.separability import colour_lookalikes

    root = _tinted(tmp_path / "t", casts=(1.0, 1.0))
    mask = root / "masks" / "train" / "t1.png"
    m = read_mask(mask)
    m[m == 1] = 0  # t1: pentlandite only, so t0 is called against pentlandite alone
    save_image(m, mask)
    table = colour_lookalikes(root, "Pn", ["Ccp"], scale=0.5, per_image=50).set_index("image")
    assert np.isnan(table.loc["t0", ["as_Pn", "as_Ccp"]].to_numpy(float)).all()
    assert table.loc["t1", "as_Pn"] > 0.95 and table.loc["pooled", "as_Pn"] == table.loc["t1", "as_Pn"]
    with pytest.raises(ConfigError, match="min_pixels"):
        colour_lookalikes(root, "Pn", ["Ccp"], scale=0.5, min_pixels=0)


def test_lookalikes_cli_writes_the_table_and_refuses_what_it_cannot_measure(tmp_path, capsys):
    from lumenkit.lab.cli import main

    root = _tinted(tmp_path / "t")
    out = tmp_path / "l.csv"
    assert main(["lookalikes", "Pn", "--among", "Ccp", "--data", str(root), "--scale", "0.5", "--per-image", "50",
                 "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "image,n,R,G,B,blue_red,as_Pn,as_Ccp"
    capsys.readouterr()
    assert main(["lookalikes", "Pn", "--among", "Pn", "--data", str(root), "--out", str(out)]) == 2
    assert "each once" in capsys.readouterr().err
    assert main(["lookalikes", "Po", "--among", "Ccp", "--data", str(root), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "fewer than two training images hold Po" in err and err.count("\n") == 1
