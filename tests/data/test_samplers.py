from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fake_dataset

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.data.samplers import (
    BalancedSampler,
    PatchDataset,
    UniformSampler,
    clear_map_cache,
    compute_maps,
    cut,
    load_arrays,
    load_masks,
    void_borders,
)


def blob_masks(n: int = 6, size: tuple[int, int] = (120, 160), seed: int = 0) -> list[np.ndarray]:
    """Masks with background 0, a common class 1 (large blobs) and a rare class 2 (small blobs)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.ogrid[:h, :w]
    out = []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[(yy - y) ** 2 + (xx - x) ** 2 < 30**2] = 1
        if i % 2 == 0:  # the rare class lives in half the images only
            y, x = rng.integers(10, h - 10), rng.integers(10, w - 10)
            m[(yy - y) ** 2 + (xx - x) ** 2 < 5**2] = 2
        out.append(m)
    return out


def patch_counts(s, masks, positions, k=3):
    p = s.patch_size
    tot = np.zeros(k, np.int64)
    for i, y, x in positions:
        tot += np.bincount(cut(masks[i], y, x, p, 255).ravel(), minlength=256)[:k]
    return tot


def test_strength_zero_is_uniform_statistically():
    masks = blob_masks()
    b = BalancedSampler(masks, patch_size=32, num_classes=3, strength=0.0, seed=1)
    u = UniformSampler(masks, patch_size=32, num_classes=3, seed=2)
    for _ in range(3000):
        b.draw()
        u.draw()
    # (uniform positions under-weight image borders, so compare with the uniform sampler, not raw shares)
    np.testing.assert_allclose(b.shares(), u.shares(), atol=0.03)
    strong = BalancedSampler(masks, patch_size=32, num_classes=3, strength=1.0, seed=1)
    for _ in range(3000):
        strong.draw()
    assert strong.shares()[2] > 5 * b.shares()[2]


def test_rare_class_served_far_above_natural_share():
    masks = blob_masks()
    natural = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=3)[:3] / sum(m.size for m in masks)
    b = BalancedSampler(masks, patch_size=32, num_classes=3, grid=8, seed=0)
    u = UniformSampler(masks, patch_size=32, num_classes=3, seed=0)
    for _ in range(1500):
        b.draw()
        u.draw()
    assert natural[2] < 0.01
    assert b.shares()[2] > 10 * natural[2]
    assert b.quality() > u.quality() + 0.05  # a 5-px grain fills at most 8 % of a 32-px patch
    assert b.served.dtype == np.int64 and b.served.shape == (3,)


def test_served_counts_are_exact_and_positions_valid():
    masks = blob_masks()
    s = BalancedSampler(masks, patch_size=40, num_classes=3, grid=8, seed=3)
    pos = [s.draw() for _ in range(200)]
    for i, y, x in pos:
        h, w = masks[i].shape
        assert 0 <= y <= h - 40 and 0 <= x <= w - 40
    np.testing.assert_array_equal(s.served, patch_counts(s, masks, pos))
    assert s.history == pos


def test_maps_zero_where_patch_would_leave_image():
    m = np.zeros((100, 130), np.uint8)
    m[90:, 120:] = 1  # class 1 only in the bottom-right corner
    maps = compute_maps(m, patch_size=32, num_classes=2, alpha=1.0, grid=4)
    assert maps.ny == (100 - 32) // 4 + 1 and maps.nx == (130 - 32) // 4 + 1
    dense = maps.dense(1)
    assert dense.shape == (maps.ny, maps.nx)
    assert np.isclose(dense.sum(), 1.0)
    ys, xs = np.nonzero(dense)
    assert (ys * 4 + 32 <= 100).all() and (xs * 4 + 32 <= 130).all()
    # the window fraction is the box filter of the class indicator
    iy, ix = maps.ny - 1, maps.nx - 1
    y0, x0 = iy * 4, ix * 4
    frac = (m[y0 : y0 + 32, x0 : x0 + 32] == 1).mean()
    raw = np.diff(maps.cdf[1], prepend=0.0)
    j = np.flatnonzero(maps.pos[1] == iy * maps.nx + ix)[0]
    assert np.isclose(raw[j], frac)


def test_same_seed_same_stream_and_different_seed_differs():
    masks = blob_masks()
    first = BalancedSampler(masks, patch_size=32, num_classes=3, strength=0.7, seed=5).draw()
    s1 = BalancedSampler(masks, patch_size=32, num_classes=3, strength=0.7, seed=5)
    s2 = BalancedSampler(masks, patch_size=32, num_classes=3, strength=0.7, seed=5)
    s3 = BalancedSampler(masks, patch_size=32, num_classes=3, strength=0.7, seed=6)
    x1, x2, x3 = (list(iter_n(s, 100)) for s in (s1, s2, s3))
    assert x1 == x2 and x1 != x3 and x1[0] == first


def iter_n(s, n):
    s.length = n
    return iter(s)


def test_small_images_are_padded():
    masks = [np.ones((20, 50), np.uint8), np.zeros((80, 80), np.uint8)]
    images = [np.full((20, 50, 3), 7, np.uint8), np.full((80, 80, 3), 9, np.uint8)]
    s = BalancedSampler(masks, patch_size=64, num_classes=2, grid=8, seed=0)
    ds = PatchDataset(images, masks, s, length=20)
    seen = set()
    for smp in ds:
        i, y, x = smp["position"].tolist()
        assert smp["image"].shape == (3, 64, 64) and smp["mask"].shape == (64, 64)
        if i == 0:
            assert (y, x) == (0, 0)
            assert (smp["mask"][20:] == 255).all() and (smp["mask"][:, 50:] == 255).all()
            assert (smp["mask"][:20, :50] == 1).all() and (smp["image"][:, :20, :50] == 7).all()
        seen.add(i)
    assert seen == {0, 1}


def test_void_border():
    m = np.zeros((64, 64), np.uint8)
    m[:, 32:] = 1
    v = void_borders(m, 2)
    assert (v[:, 30:34] == 255).all()
    assert (v[:, :30] == 0).all() and (v[:, 34:] == 1).all()
    s = BalancedSampler([m], patch_size=16, num_classes=2, grid=4, void_border=2, seed=0)
    pos, patch = s.draw_with_mask()
    _, y, x = pos
    np.testing.assert_array_equal(patch, v[y : y + 16, x : x + 16])
    assert s.served.sum() == (patch != 255).sum()


def test_cache_keyed_by_content():
    clear_map_cache()
    masks = blob_masks(2)
    a = BalancedSampler(masks, patch_size=32, num_classes=3, seed=0)
    b = BalancedSampler([m.copy() for m in masks], patch_size=32, num_classes=3, seed=0)
    assert a.maps[0] is b.maps[0]  # same content → cached maps reused
    changed = [m.copy() for m in masks]
    changed[0][:40, :40] = 2
    c = BalancedSampler(changed, patch_size=32, num_classes=3, seed=0)
    assert c.maps[0] is not a.maps[0]
    assert not np.array_equal(c.probability_map(0, 2), a.probability_map(0, 2))
    assert c.maps[1] is a.maps[1]
    d = BalancedSampler(masks, patch_size=32, num_classes=3, alpha=1.0, seed=0)
    assert d.maps[0] is not a.maps[0]  # parameters are part of the key


def test_disk_cache_roundtrip():
    clear_map_cache()
    masks = blob_masks(2)
    a = BalancedSampler(masks, patch_size=32, num_classes=3, cache="disk", seed=0)
    clear_map_cache()
    b = BalancedSampler(masks, patch_size=32, num_classes=3, cache="disk", seed=0)
    assert a.maps[0] is not b.maps[0]
    for k in range(3):
        np.testing.assert_array_equal(a.maps[0].cdf[k], b.maps[0].cdf[k])
    assert [a.draw() for _ in range(20)] == [b.draw() for _ in range(20)]


def test_bad_input_errors():
    with pytest.raises(ValueError, match="num_classes"):
        BalancedSampler([np.full((40, 40), 5, np.uint8)], patch_size=16, num_classes=3)
    with pytest.raises(ValueError, match="strength"):
        BalancedSampler(blob_masks(1), patch_size=16, strength=2)
    with pytest.raises(ValueError, match="no masks"):
        UniformSampler([], patch_size=16)
    s = UniformSampler(blob_masks(1), patch_size=16, num_classes=3)
    with pytest.raises(ValueError, match="sizes differ"):
        PatchDataset([np.zeros((10, 10, 3), np.uint8)], blob_masks(1), s)


def test_coverage_map_counts_patches():
    masks = blob_masks(2)
    s = UniformSampler(masks, patch_size=32, num_classes=3, seed=0)
    pos = [s.draw() for _ in range(50)]
    cov = s.coverage_map(0)
    ref = np.zeros(masks[0].shape, np.float32)
    for i, y, x in pos:
        if i == 0:
            ref[y : y + 32, x : x + 32] += 1
    np.testing.assert_allclose(cov, ref)
    assert s.coverage_map(0, max_size=40).shape[1] <= 40


def _loader(ds, workers, context="fork"):
    return torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers,
                                       multiprocessing_context=context if workers else None)


def test_dataloader_spawn_accumulator_is_shared():
    masks = blob_masks(2)
    images = [np.zeros((*m.shape, 3), np.uint8) for m in masks]
    s = UniformSampler(masks, patch_size=32, num_classes=3, seed=0)
    batches = list(_loader(PatchDataset(images, masks, s, length=16), 2, "spawn"))
    served = sum(np.bincount(b["mask"].numpy().ravel(), minlength=256)[:3] for b in batches)
    np.testing.assert_array_equal(s.served, served)


def test_dataloader_workers_distinct_reproducible_and_truthful():
    masks = blob_masks()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*m.shape, 3), dtype=np.uint8) for m in masks]

    def run(epoch=0):
        s = BalancedSampler(masks, patch_size=32, num_classes=3, grid=8, seed=0)
        ds = PatchDataset(images, masks, s, length=40, seed=11)
        ds.set_epoch(epoch)
        batches = list(_loader(ds, 2))
        return s, batches

    s, batches = run()
    pos = torch.cat([b["position"] for b in batches]).tolist()
    assert len(pos) == 40
    # batches alternate between the two workers: worker streams must differ
    w0 = [tuple(p) for b in batches[0::2] for p in b["position"].tolist()]
    w1 = [tuple(p) for b in batches[1::2] for p in b["position"].tolist()]
    assert w0 != w1 and len(set(w0) & set(w1)) < len(w0) // 2
    # the shared accumulator counts exactly what the workers served
    served = sum(np.bincount(b["mask"].numpy().ravel(), minlength=256)[:3] for b in batches)
    np.testing.assert_array_equal(s.served, served)
    assert s.quality() == pytest.approx(1 - (served.max() - served.min()) / served.sum())
    # same seed → same streams; another epoch → new streams
    _, again = run()
    assert all(torch.equal(a["position"], b["position"]) for a, b in zip(batches, again, strict=True))
    _, other = run(epoch=1)
    assert not all(torch.equal(a["position"], b["position"]) for a, b in zip(batches, other, strict=True))
    # images stay aligned with the positions
    for b in batches:
        for img, (i, y, x) in zip(b["image"], b["position"].tolist(), strict=True):
            np.testing.assert_array_equal(img.numpy().transpose(1, 2, 0), images[i][y : y + 32, x : x + 32])


def test_patch_dataset_main_process_and_augment_alignment():
    from lumenkit.data.augment import Augment

    masks = blob_masks()
    colours = np.array([[10, 20, 30], [200, 100, 0], [0, 250, 120]], np.uint8)
    images = [colours[m] for m in masks]
    s = BalancedSampler(masks, patch_size=32, num_classes=3, seed=0)
    ds = PatchDataset(images, masks, s, length=30, augment=Augment(rotate_deg=20, scale=(0.8, 1.25), image_order=0))
    n = 0
    for smp in ds:
        img = smp["image"].numpy().transpose(1, 2, 0)
        mask = smp["mask"].numpy()
        assert smp["mask"].dtype == torch.int64 and smp["image"].dtype == torch.uint8
        ok = mask != 255
        np.testing.assert_array_equal(img[ok], colours[mask[ok]])
        n += 1
    assert n == 30


def test_load_arrays_and_masks(tmp_path: Path):
    root = write_fake_dataset(tmp_path / "fake", n_train=3, codes=(0, 2, 6))
    ds = LumenStoneDataset(root)
    images, masks = load_arrays(ds, ClassMap([0, 2, 6]))
    assert len(images) == len(masks) == 3
    assert images[0].dtype == np.uint8 and images[0].shape[:2] == masks[0].shape
    assert set(np.unique(np.concatenate([m.ravel() for m in masks]))) <= {0, 1, 2}
    lm = load_masks(ds, ClassMap([0, 2, 6]))
    for a, b in zip(masks, lm, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="class"):
        load_arrays(LumenStoneDataset(write_fake_dataset(tmp_path / "noyaml", n_train=1, scale=None)))


@pytest.mark.real
def test_real_s1_quality(real_s1: Path):
    ds = LumenStoneDataset(real_s1)
    masks = load_masks(ds)
    s = BalancedSampler(masks, patch_size=256, num_classes=len(ds.class_map), seed=0)
    for _ in range(2000):
        s.draw()
    assert s.quality() >= 0.8


def test_notebook_02_runs(tmp_path: Path):
    pm = pytest.importorskip("papermill")
    root = write_fake_dataset(tmp_path / "fake", n_train=4, size=(160, 120), codes=(0, 1, 2))
    out = tmp_path / "out"
    nb = Path(__file__).resolve().parents[2] / "notebooks" / "02_imbalance.ipynb"
    pm.execute_notebook(str(nb), str(tmp_path / "02.ipynb"), cwd=str(nb.parent), kernel_name="python3",
                        progress_bar=False,
                        parameters={"data": str(root), "patch_size": 32, "n_patches": 200, "run_dir": str(out)})
    summary = json.loads((out / "imbalance" / "imbalance.json").read_text())
    assert "balancing quality (balanced / uniform)" in json.loads((out / "headlines" / "02_imbalance.json").read_text())
    for key in ("quality_balanced", "quality_uniform", "rarest_share_balanced", "rarest_share_uniform"):
        assert 0 <= summary[key] <= 1
    assert summary["quality_balanced"] > summary["quality_uniform"]
    assert set(summary["shares"]["balanced"]) == {"BG", "Ccp", "Gl"}
    assert (out / "imbalance" / "imbalance_vs_n.csv").exists()


def test_state_dict_roundtrip():
    masks = blob_masks(2)
    a = BalancedSampler(masks, patch_size=32, num_classes=3, seed=0)
    for _ in range(30):
        a.draw()
    b = BalancedSampler(masks, patch_size=32, num_classes=3, seed=0)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.served, b.served)
    with pytest.raises(ValueError, match="classes"):
        UniformSampler(masks, patch_size=32, num_classes=4).load_state_dict(a.state_dict())
