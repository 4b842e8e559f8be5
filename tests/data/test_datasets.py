import numpy as np
import pytest
from conftest import write_fake_dataset
from PIL import Image

from lumenkit.data.colours import PALETTE
from lumenkit.data.datasets import (
    DatasetInfo,
    LumenStoneDataset,
    ValidationSplit,
    open_splits,
    pixel_shares,
    validation_folds,
    validation_split,
)
from lumenkit.errors import (
    BadImageError,
    BadMaskError,
    ConfigError,
    DatasetNotFoundError,
    EmptySplitError,
    MaskSizeError,
    MissingMaskError,
    UnknownClassError,
)


def test_open_and_load_at_stored_scale(fake_dataset):
    ds = LumenStoneDataset(fake_dataset)
    assert len(ds) == 6 and ds.stored_scale == 0.5 and ds.class_map.codes == (0, 1, 2)
    assert ds.classes is ds.class_map  # a class set given: it is the model's classes, whatever the masks hold
    s = ds[0]
    assert s["image"].shape == (64, 96, 3) and s["mask"].shape == (64, 96)
    # the fixture paints each class in its palette colour: image and mask are aligned
    assert np.array_equal(s["image"], PALETTE[s["mask"]])
    assert s["deposit"] == "dep0" and s["name"] == "tr00"


def test_load_at_other_scale_resamples_both(fake_dataset):
    ds = LumenStoneDataset(fake_dataset, scale=0.25)
    s = ds.load("tr01")
    assert s["image"].shape == (32, 48, 3) and s["mask"].shape == (32, 48)
    assert set(np.unique(s["mask"])) <= {0, 1, 2}
    # interior pixels of the downscaled pair still agree in colour
    agree = np.all(np.abs(s["image"].astype(int) - PALETTE[s["mask"]].astype(int)) < 2, axis=-1)
    assert agree.mean() > 0.85
    assert ds.read_mask(1).shape == (64, 96)  # stored resolution for metrics
    up = LumenStoneDataset(fake_dataset, scale=1.0)[0]
    assert up["image"].shape == (128, 192, 3)


def test_validation_split_is_fixed_and_order_independent():
    names = [f"a{i:02d}" for i in range(59)]
    tr, va = validation_split(names, 10, seed=0)
    tr2, va2 = validation_split(list(reversed(names)), 10, seed=0)
    assert va == va2 and tr == tr2 and len(va) == 10 and not set(tr) & set(va)
    assert validation_split(names, 10, seed=1)[1] != va
    with pytest.raises(ValueError, match="between 1 and"):
        validation_split(names[:3], 3)


def old_validation_names(names, n_val, seed):
    """The split lumenkit carved before folds existed, written out."""
    names = sorted(names)
    perm = np.random.default_rng(seed).permutation(len(names))
    return sorted(names[i] for i in perm[:n_val])


@pytest.mark.parametrize("n, n_val, folds", [(59, 10, 6), (23, 5, 5), (7, 3, 3), (6, 2, 3), (11, 10, 2)])
def test_validation_folds_partition_the_images(n, n_val, folds):
    names = [f"a{i:02d}" for i in range(1, n + 1)]
    assert validation_folds(n, n_val) == folds
    vals = [validation_split(names, n_val, seed=4, fold=f) for f in range(folds)]
    seen = [name for _, va in vals for name in va]
    assert sorted(seen) == names and len(seen) == len(set(seen))  # every image in exactly one fold
    assert [len(va) for _, va in vals] == [n_val] * (folds - 1) + [n - (folds - 1) * n_val]
    for tr, va in vals:
        assert tr == sorted(set(names) - set(va))
    # fold f is the f-th block of the seeded permutation of the sorted names
    perm = np.random.default_rng(4).permutation(n)
    assert vals[-1][1] == sorted(names[i] for i in perm[(folds - 1) * n_val:])


def test_fold_zero_is_the_split_lumenkit_always_carved():
    names = [f"a{i:02d}" for i in range(1, 60)]
    for n_val, seed in ((10, 0), (10, 1), (5, 7), (58, 3)):
        want = old_validation_names(names, n_val, seed)
        assert validation_split(names, n_val, seed)[1] == want
        assert validation_split(list(reversed(names)), n_val, seed, fold=0)[1] == want
    # the S1 splits the README's results were measured on
    assert validation_split(names, 10, 0)[1] == ["a05", "a09", "a17", "a21", "a28", "a35", "a43", "a52", "a53", "a57"]
    assert validation_split(names, 10, 1)[1] == ["a04", "a07", "a16", "a17", "a24", "a25", "a34", "a36", "a53", "a59"]
    assert validation_split(names, 10, 0, fold=1)[1] != validation_split(names, 10, 0)[1]


def test_a_fold_out_of_range_names_the_valid_range(fake_dataset):
    names = [f"a{i:02d}" for i in range(1, 60)]
    assert len(validation_split(names, 10, 0, fold=5)[1]) == 9
    for fold in (6, -1, 100):
        with pytest.raises(ValueError, match=r"val_fold=.* out of range.*folds 0 to 5 \(valid range \[0, 6\)\)"):
            validation_split(names, 10, 0, fold=fold)
    with pytest.raises(ValueError, match="out of range"):
        validation_split(names, 10, 0, fold=1.0)
    with pytest.raises(ValueError, match=r"folds 0 to 2 \(valid range \[0, 3\)\)"):
        LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 0, 3))
    with pytest.raises(ValueError, match="between 1 and"):
        validation_folds(3, 3)


def test_fit_and_val_of_every_fold(fake_dataset):
    vals = []
    for fold in range(3):
        sp = open_splits(fake_dataset, validation=ValidationSplit(2, 1, fold))
        assert len(sp["val"]) == 2 and len(sp["fit"]) == 4 and not set(sp["fit"].names) & set(sp["val"].names)
        assert sp["val"].names == LumenStoneDataset(fake_dataset, "val", validation=ValidationSplit(2, 1, fold)).names
        vals += sp["val"].names
    assert sorted(vals) == LumenStoneDataset(fake_dataset).names
    split = ValidationSplit(2, 1)
    names = LumenStoneDataset(fake_dataset, "val", validation=split).names
    assert names == open_splits(fake_dataset, split)["val"].names


def test_fit_val_test_splits(fake_dataset):
    sp = open_splits(fake_dataset, validation=ValidationSplit(2, 0))
    assert len(sp["fit"]) == 4 and len(sp["val"]) == 2 and len(sp["test"]) == 2
    assert not set(sp["fit"].names) & set(sp["val"].names)


def test_class_counts_cached_by_content(fake_dataset, monkeypatch):
    ds = LumenStoneDataset(fake_dataset)
    df = ds.class_counts()
    assert list(df.columns) == ["BG", "Ccp", "Gl", "ignore"]
    assert (df.drop(columns="ignore").sum(axis=1) == 96 * 64).all()
    manual = np.bincount(ds.read_mask(0).ravel(), minlength=3)[:3]
    assert df.iloc[0, :3].tolist() == manual.tolist()
    assert abs(pixel_shares(df).sum() - 1) < 1e-12
    # rewriting a mask with other content changes the counts (cache keyed by content, not by name)
    Image.fromarray(np.full((64, 96), 2, np.uint8)).save(ds.mask_paths[0])
    df2 = LumenStoneDataset(fake_dataset).class_counts()
    assert df2.iloc[0].tolist() == [0, 0, 96 * 64, 0]


def test_missing_folder_and_split(tmp_path, fake_dataset):
    with pytest.raises(DatasetNotFoundError, match="make data"):
        LumenStoneDataset(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match=r"splits here: \['test', 'train'\]"):
        LumenStoneDataset(fake_dataset, split="validation")


def test_empty_split(tmp_path):
    (tmp_path / "d" / "imgs" / "train").mkdir(parents=True)
    with pytest.raises(EmptySplitError, match="holds no images"):
        LumenStoneDataset(tmp_path / "d")


def test_image_without_mask(fake_dataset):
    (fake_dataset / "masks" / "train" / "tr03.png").unlink()
    with pytest.raises(MissingMaskError, match=r"tr03\.png: image has no mask"):
        LumenStoneDataset(fake_dataset)


def test_mask_of_another_size(fake_dataset):
    Image.fromarray(np.zeros((63, 96), np.uint8)).save(fake_dataset / "masks" / "train" / "tr02.png")
    ds = LumenStoneDataset(fake_dataset)
    with pytest.raises(MaskSizeError, match=r"tr02\.png: mask is 96×63 but its image is 96×64"):
        ds.load("tr02")
    problems = ds.validate()
    assert len(problems) == 1 and "tr02" in problems[0]


def test_codes_outside_class_set(fake_dataset):
    m = np.zeros((64, 96), np.uint8)
    m[0, 0] = 9
    Image.fromarray(m).save(fake_dataset / "masks" / "train" / "tr01.png")
    ds = LumenStoneDataset(fake_dataset)
    with pytest.raises(UnknownClassError, match=r"tr01\.png: class codes \[9\]"):
        ds.load(1)
    with pytest.raises(UnknownClassError, match="outside the class set"):
        ds.class_counts()
    assert LumenStoneDataset(fake_dataset, class_set="ALL").load(1)["mask"][0, 0] == 9


@pytest.mark.parametrize(("array", "match"), [
    (np.zeros((64, 96, 3), np.uint8), "colour image"),
    (np.zeros((64, 96), np.uint16), "8-bit"),
])
def test_rgb_and_16bit_masks(fake_dataset, array, match):
    Image.fromarray(array).save(fake_dataset / "masks" / "train" / "tr00.png")
    with pytest.raises(BadMaskError, match=match):
        LumenStoneDataset(fake_dataset).load(0)


def test_corrupt_and_truncated_image(fake_dataset):
    p = fake_dataset / "imgs" / "train" / "tr00.png"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(BadImageError, match=r"tr00\.png"):
        LumenStoneDataset(fake_dataset).load(0)


def test_dataset_yaml_wrong_types(fake_dataset):
    y = fake_dataset / "dataset.yaml"
    for text, match in [
        ("scale: half\n", "'scale' must be a number"),
        ("scale: 0.5\nclasses: 3\n", "'classes' must be a list"),
        ("scale: 0.5\nclasses: [0, 99]\n", "unknown codes"),
        ("class_set: S7\n", "unknown class set"),
        ("- a\n- b\n", "must be a mapping"),
        ("scale: [\n", "not valid YAML"),
    ]:
        y.write_text(text)
        with pytest.raises(ConfigError, match=match):
            DatasetInfo.read(fake_dataset)


def test_deposits_csv_naming_missing_images(fake_dataset):
    p = fake_dataset / "deposits.csv"
    p.write_text(p.read_text() + "ghost,depX,Cu-Ni\n")
    with pytest.raises(ConfigError, match="ghost"):
        LumenStoneDataset(fake_dataset)
    p.write_text("name,where\nx,y\n")
    with pytest.raises(ConfigError, match="missing column"):
        LumenStoneDataset(fake_dataset)


def test_no_yaml_defaults_to_native_scale_and_codes_found(tmp_path):
    root = write_fake_dataset(tmp_path / "plain", scale=None, deposits=False, codes=(0, 4))
    ds = LumenStoneDataset(root)
    assert ds.stored_scale == 1.0 and ds.class_map is None and ds.deposit("tr00") == ""
    assert ds.codes == (0, 4) and ds.classes.codes == (0, 4) and ds.classes.labels == ["BG", "Brt"]
    assert list(ds.class_counts().columns) == ["BG", "Brt", "ignore"]
    m = np.zeros((64, 96), np.uint8)
    m[0, 0] = 200  # no mineral has this code, and no class set says what it is
    Image.fromarray(m).save(root / "masks" / "train" / "tr01.png")
    with pytest.raises(UnknownClassError, match=r"tr01\.png: class code\(s\) \[200\]"):
        _ = LumenStoneDataset(root).classes


@pytest.mark.parametrize("scale", [0, -1.0, 5.0, float("nan")])
def test_scale_out_of_range_is_refused_also_with_a_pixel_size(fake_dataset, scale):
    yaml = fake_dataset / "dataset.yaml"
    yaml.write_text(yaml.read_text() + "pixel_size_um: 1.2\n")  # scale 0 used to divide by zero here first
    with pytest.raises(ValueError, match=r"scale must be in \(0, 4\] relative to native"):
        LumenStoneDataset(fake_dataset, scale=scale)


def test_non_ascii_and_space_names(tmp_path):
    from lumenkit.data.imageio import save_image

    root = tmp_path / "ünï code"
    img, mask = np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8)
    save_image(img, root / "imgs" / "train" / "шлиф 1.png")
    save_image(mask, root / "masks" / "train" / "шлиф 1.png")
    ds = LumenStoneDataset(root)
    assert ds.names == ["шлиф 1"] and ds[0]["mask"].shape == (16, 16)


def test_plot_returns_figure(fake_dataset):
    from lumenkit.workbook.figures import plot_dataset_sample

    fig = plot_dataset_sample(LumenStoneDataset(fake_dataset), 0)
    assert fig.axes and fig.legends


@pytest.mark.real
def test_real_lumenstone_s1_opens_as_is(real_s1):
    ds = LumenStoneDataset(real_s1)
    assert len(ds) == 59 and ds.stored_scale == 0.5 and ds.class_map.codes == (0, 1, 2, 4, 6, 8, 11)
    s = ds.load(0, scale=0.25)
    assert s["image"].shape == (637, 849, 3) and s["mask"].shape == (637, 849)
    shares = pixel_shares(ds.class_counts())
    assert 12 < shares["BG"] / shares["Ccp"] < 25  # the S1 imbalance the sampler has to fight
    assert len(LumenStoneDataset(real_s1, "val").names) == 10


@pytest.mark.real
def test_real_lumenstone_s2_opens_as_is(real_s1):
    ds = LumenStoneDataset(real_s1.parent / "S2_v1_x05")
    assert len(ds) == 23 and ds.class_map.codes == (0, 1, 3, 5, 7)
    assert ds.validate() == []


def test_content_hash_changes_with_any_byte(fake_dataset):
    ds = LumenStoneDataset(fake_dataset)
    h = ds.content_hash()
    assert h == LumenStoneDataset(fake_dataset).content_hash() and len(h) == 40
    m = ds.mask_paths[3]
    arr = np.asarray(Image.open(m)).copy()
    arr[0, 0] = 2 if arr[0, 0] != 2 else 1
    Image.fromarray(arr).save(m)
    assert LumenStoneDataset(fake_dataset).content_hash() != h


def test_combine_keeps_each_sources_validation_split(tmp_path):
    from lumenkit.cli import main
    from lumenkit.data.datasets import ValidationSplit, combine_datasets

    a = write_fake_dataset(tmp_path / "A", n_train=6, codes=(0, 1, 2), seed=1)
    b = write_fake_dataset(tmp_path / "B", n_train=5, codes=(0, 3, 5), seed=2)
    out = combine_datasets([a, b], tmp_path / "AB", n_val=[2, 1], seed=3)
    val, fit = LumenStoneDataset(out, "val"), LumenStoneDataset(out, "fit")
    want = (["A__" + n for n in LumenStoneDataset(a, "val", validation=ValidationSplit(2, 3)).names]
            + ["B__" + n for n in LumenStoneDataset(b, "val", validation=ValidationSplit(1, 3)).names])
    assert val.names == sorted(want) and len(fit) == 11 - 3 and not set(fit.names) & set(val.names)
    # fixed: n_val/seed do not apply
    assert LumenStoneDataset(out, "val", validation=ValidationSplit(7, 9)).names == val.names
    assert val.class_map.codes == (0, 1, 2, 3, 5) and val.stored_scale == 0.5
    assert len(LumenStoneDataset(out, "test")) == 4
    item = fit[fit.names.index("B__tr00")] if "B__tr00" in fit.names else fit[-1]
    src = b if item["name"].startswith("B__") else a
    np.testing.assert_array_equal(item["mask"], LumenStoneDataset(src, "train")[item["name"][3:]]["mask"])
    assert fit.deposits.loc["A__tr00", "deposit"] == "dep0"
    with pytest.raises(ConfigError, match="exists"):
        combine_datasets([a, b], out)
    c = write_fake_dataset(tmp_path / "C", scale=0.25)
    with pytest.raises(ConfigError, match="different scales"):
        combine_datasets([a, c], tmp_path / "AC")
    assert main(["combine", str(a), str(b), "--out", str(tmp_path / "AB2"), "--n-val", "2,1", "--copy"]) == 0
    assert not (tmp_path / "AB2" / "imgs" / "train" / "A__tr00.png").is_symlink()
    assert main(["combine", str(a), "--out", str(tmp_path / "X")]) == 2


def test_combine_carves_each_sources_fold(tmp_path):
    from lumenkit.cli import main
    from lumenkit.data.datasets import combine_datasets

    a = write_fake_dataset(tmp_path / "A", n_train=6, codes=(0, 1, 2), seed=1)
    b = write_fake_dataset(tmp_path / "B", n_train=5, codes=(0, 3, 5), seed=2)
    fold0 = LumenStoneDataset(combine_datasets([a, b], tmp_path / "AB0", n_val=2, seed=3), "val").names
    assert fold0 == LumenStoneDataset(combine_datasets([a, b], tmp_path / "ABd", n_val=2, seed=3, fold=0), "val").names
    out = combine_datasets([a, b], tmp_path / "AB2", n_val=2, seed=3, fold=2)
    want = (["A__" + n for n in LumenStoneDataset(a, "val", validation=ValidationSplit(2, 3, 2)).names]
            + ["B__" + n for n in LumenStoneDataset(b, "val", validation=ValidationSplit(2, 3, 2)).names])
    assert LumenStoneDataset(out, "val").names == sorted(want) and len(want) == 2 + 1  # B's last fold holds one
    assert not set(want) & set(fold0)
    with pytest.raises(ConfigError, match=r"B: val_fold=3 is out of range.*folds 0 to 2"):
        combine_datasets([a, b], tmp_path / "AB3", n_val=[1, 2], seed=3, fold=3)  # A has 6 folds, B 3
    assert main(["combine", str(a), str(b), "--out", str(tmp_path / "ABc"), "--n-val", "2", "--seed", "3",
                 "--val-fold", "2"]) == 0
    assert LumenStoneDataset(tmp_path / "ABc", "val").names == sorted(want)


def test_a_bad_fixed_validation_list_is_named(tmp_path):
    a = write_fake_dataset(tmp_path / "A")
    (a / "dataset.yaml").write_text("name: a\nscale: 0.5\nvalidation: [tr00, zz99]\n")
    with pytest.raises(ConfigError, match=r"not in train: \['zz99'\]"):
        LumenStoneDataset(a, "val")
    assert len(LumenStoneDataset(a, "train")) == 6
    (a / "dataset.yaml").write_text("name: a\nscale: 0.5\nvalidation: tr00\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        LumenStoneDataset(a, "train")


def test_validation_split_object_carves_records_and_reopens(fake_dataset):
    split = ValidationSplit(2, 1, 1)
    fit, val = split.carve(LumenStoneDataset(fake_dataset).names)
    assert val == LumenStoneDataset(fake_dataset, "val", validation=split).names
    assert fit == LumenStoneDataset(fake_dataset, "fit", validation=split).names
    assert split.folds(6) == 3
    assert ValidationSplit.from_dict(split.to_dict()) == split
    assert ValidationSplit.from_dict(None) == ValidationSplit() == ValidationSplit(10, 0, 0)
    assert ValidationSplit.from_dict({"n_val": 4}, seed=7) == ValidationSplit(4, 7, 0)

    from types import SimpleNamespace

    ckpt = SimpleNamespace(config={"train": {"n_val": 3, "val_seed": 2, "val_fold": 1}})
    assert ValidationSplit.of_model(ckpt) == ValidationSplit(3, 2, 1)
    assert ValidationSplit.of_model(ckpt, fold=0) == ValidationSplit(3, 2, 0)
    assert ValidationSplit.of_model(object()) == ValidationSplit()
