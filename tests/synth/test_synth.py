import hashlib
from pathlib import Path

import numpy as np
import pytest

from lumenkit.cli import main
from lumenkit.data.catalogue import CLASS_SETS
from lumenkit.data.datasets import DatasetInfo, LumenStoneDataset, pixel_shares
from lumenkit.synth.calibration import srgb_to_lab
from lumenkit.synth.deposits import DEPOSITS, SCHEDULE, Deposit, SynthExistsError, dataset_composition
from lumenkit.synth.render import generate_section
from lumenkit.synth.writer import write_dataset

SIZE = (256, 192)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMENKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth") / "ds", n_train=9, n_test=3, size=SIZE, seed=3)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_registry_spans_both_associations():
    assert len(DEPOSITS) >= 6
    assocs = {d.association for d in DEPOSITS.values()}
    assert assocs == {"S1", "S2"}
    for d in DEPOSITS.values():
        assert set(d.composition) <= set(CLASS_SETS[d.association])
        assert abs(sum(d.composition.values()) - 1) < 1e-9
    used = set().union(*(d.codes for d in DEPOSITS.values()))
    assert used == set(CLASS_SETS["S1"]) | set(CLASS_SETS["S2"])
    with pytest.raises(ValueError, match="sums to"):
        Deposit("x", "x", "S1", {0: 0.5}, grain_size=10)


def test_generate_section_shapes_and_codes():
    for i, key in enumerate(DEPOSITS):
        img, mask = generate_section(key, SIZE, np.random.default_rng(i))
        assert img.shape == (SIZE[1], SIZE[0], 3) and img.dtype == np.uint8
        assert mask.shape == (SIZE[1], SIZE[0]) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= set(DEPOSITS[key].codes)
    from lumenkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown deposit 'nope'; valid keys"):
        generate_section("nope", SIZE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least"):
        generate_section("pbzn_a", (8, 8), np.random.default_rng(0))


def test_generate_section_deterministic():
    a = generate_section("cuni_e", SIZE, np.random.default_rng([5, 1]))
    b = generate_section("cuni_e", SIZE, np.random.default_rng([5, 1]))
    c = generate_section("cuni_e", SIZE, np.random.default_rng([6, 1]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_native_scale_works():
    img, mask = generate_section("pyr_b", (400, 300), np.random.default_rng(0), scale=1.0)
    assert img.shape[:2] == mask.shape == (300, 400)


@pytest.mark.parametrize("key", list(DEPOSITS))
def test_composition_close_to_requested(key):
    dep = DEPOSITS[key]
    acc = np.zeros(256)
    for i in range(8):
        _, m = generate_section(dep, SIZE, np.random.default_rng([11, i]))
        acc += np.bincount(m.ravel(), minlength=256)
    share = acc / acc.sum()
    diff = np.array([abs(share[c] - v) for c, v in dep.composition.items()])
    assert diff.max() < 0.15, (key, diff)
    assert diff.mean() < 0.05, (key, diff)


def test_image_matches_mask_colours_and_reflectance_order():
    img, mask = generate_section("znpb_d", (384, 288), np.random.default_rng(2))
    lab = srgb_to_lab(img.reshape(-1, 3).astype(float))[:, 0]
    m = mask.ravel()
    lum = {c: float(np.median(lab[m == c])) for c in (0, 6, 8) if (m == c).sum() > 200}
    assert lum[6] > lum[8] + 10 > lum[0] + 20  # pyrite > sphalerite > gangue
    # each class region's mean colour is near the class target (rendering and mask aligned)
    from lumenkit.synth.deposits import PHASES

    # (per-image exposure drift and vignetting move a single image by up to ~25 %, as between real images)
    for c in (6, 8):
        mean = img.reshape(-1, 3)[m == c].mean(0)
        assert np.abs(mean - np.array(PHASES[c].rgb)).max() < 50


def test_write_dataset_layout_and_loader(small_ds):
    root = small_ds
    info = DatasetInfo.read(root)
    assert info.scale == 0.5
    assert info.classes == tuple(sorted(set(CLASS_SETS["S1"]) | set(CLASS_SETS["S2"])))
    train = LumenStoneDataset(root, "train")
    test = LumenStoneDataset(root, "test")
    assert len(train) == 9 and len(test) == 3
    assert train.validate() == [] and test.validate() == []
    assert not set(train.names) & set(test.names)
    assert train.names[0].startswith(tuple(DEPOSITS))
    sample = train[0]
    assert sample["image"].shape[:2] == sample["mask"].shape == (SIZE[1], SIZE[0])
    assert sample["deposit"] in DEPOSITS
    assert set(train.deposits["association"]) == {"S1", "S2"}
    assert len(train.deposits) == 12


def test_write_dataset_deterministic_and_prefix_stable(tmp_path, small_ds):
    a = write_dataset(tmp_path / "a", n_train=9, n_test=3, size=SIZE, seed=3)
    assert _digest(a) == _digest(small_ds)
    b = write_dataset(tmp_path / "b", n_train=2, n_test=0, size=SIZE, seed=3)
    da, db = _digest(a), _digest(b)
    for k in db:
        if k.startswith(("imgs/train", "masks/train")):
            assert db[k] == da[k]  # images do not depend on the dataset size
    c = write_dataset(tmp_path / "c", n_train=2, n_test=0, size=SIZE, seed=4)
    assert _digest(c)["imgs/train/pbzn_a_000.jpg"] != db["imgs/train/pbzn_a_000.jpg"]


def test_unknown_deposit_is_a_one_line_config_error_before_writing(tmp_path):
    from lumenkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown deposit 'atlantis'; valid keys: "):
        write_dataset(tmp_path / "ds", 1, 0, size=SIZE, deposits=["atlantis"])
    assert not (tmp_path / "ds").exists()


def test_overwrite_refused_then_allowed(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SynthExistsError, match="overwrite"):
        write_dataset(out, 1, 0, size=SIZE)
    assert (out / "keep.txt").exists()
    write_dataset(out, 1, 0, size=SIZE, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_dataset_imbalance_like_real_s1():
    comp = dataset_composition(SCHEDULE)
    assert 12 < comp[0] / comp[1] < 25  # background ≈ 17× chalcopyrite
    assert min(comp.values()) < comp[1]  # a mineral rarer still than chalcopyrite


def test_measured_imbalance(small_ds):
    shares = pixel_shares(LumenStoneDataset(small_ds, "train").class_counts())
    assert shares["BG"] > 5 * shares["Ccp"]
    assert shares.min() < shares["Ccp"]


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--images", "2", "--test", "1", "--size", "128x96"]) == 0
    assert len(LumenStoneDataset(out, "test")) == 1
    assert main(["synth", "--out", str(out), "--images", "2", "--size", "128x96"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # a nominal physical scale: 1 µm per native pixel, so 2 µm per pixel at the stored scale 0.5
    ds = LumenStoneDataset(out, "train")
    assert ds.info.pixel_size_um == pytest.approx(2.0) and ds.stored_scale == pytest.approx(0.5)
    assert LumenStoneDataset(out, "train", scale=0.25).pixel_size_um == pytest.approx(4.0)


def test_cli_synth_sections(tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "sections"
    assert main(["synth", "--sections", "--out", str(out), "--images", "1", "--size", "128x96"]) == 0
    table = pd.read_csv(out / "samples.csv")
    assert len(table) == 6 and table["deposit"].nunique() == 3 and table["sample"].nunique() == 6
    assert sorted(p.relative_to(tmp_path / "sections_masks").as_posix()
                  for p in (tmp_path / "sections_masks").rglob("*.png")) == sorted(f"{n}.png" for n in table["image"])
    assert main(["synth", "--sections", "--out", str(out), "--images", "1", "--size", "128x96"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_grains_are_coherent_not_speckled():
    """Large deposits paint a few big smooth grains, not a salt-and-pepper of fragments (real: ~10^5 px)."""
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=bool)
    largest, n_regions = [], []
    for i in range(3):
        _, mask = generate_section("znpb_d", (512, 384), np.random.default_rng([21, i]))
        areas = []
        for c in np.unique(mask):
            lab, _ = ndimage.label(mask == c, structure=eight)
            areas.append(np.bincount(lab.ravel())[1:])
        a = np.concatenate(areas)
        largest.append(a.max() / mask.size)
        n_regions.append(int((a >= 50).sum()))
    assert max(largest) > 0.25  # one grain/aggregate covers over a quarter of the view
    assert np.mean(largest) > 0.15
    assert np.median(n_regions) < 80  # few sizeable regions, not hundreds of fragments
