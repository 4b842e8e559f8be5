from __future__ import annotations

import numpy as np
import pytest

from lumenkit.data.augment import Augment, affine, photometric

COLOURS = np.array([[10, 20, 30], [200, 100, 0], [0, 250, 120], [90, 90, 250]], np.uint8)


def pair(size=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    yy, xx = np.ogrid[:h, :w]
    for c in (1, 2, 3):
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[(yy - y) ** 2 + (xx - x) ** 2 < 12**2] = c
    mask[0, :5] = 255
    return COLOURS[np.minimum(mask, 3)].copy(), mask


@pytest.mark.parametrize("kw", [{}, {"rotate_deg": 30}, {"scale": (0.7, 1.4)}, {"rotate_deg": 10, "scale": (0.9, 1.1)}])
def test_image_and_mask_stay_aligned(kw):
    image, mask = pair()
    aug = Augment(image_order=0, **kw)
    rng = np.random.default_rng(1)
    for _ in range(20):
        im2, m2 = aug(image, mask, rng=rng)
        assert im2.dtype == np.uint8 and m2.dtype == np.uint8
        assert im2.flags.c_contiguous and m2.flags.c_contiguous
        ok = m2 != 255
        np.testing.assert_array_equal(im2[ok], COLOURS[m2[ok]])
        assert set(np.unique(m2)) <= {0, 1, 2, 3, 255}  # nearest: no invented labels


def test_flips_rot90_preserve_label_histogram():
    image, mask = pair((40, 40))
    aug = Augment()
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        _, m2 = aug(image, mask, rng=rng)
        np.testing.assert_array_equal(np.bincount(m2.ravel(), minlength=256), np.bincount(mask.ravel(), minlength=256))
        seen.add(m2.tobytes())
    assert len(seen) > 4


def test_rotation_fills_outside_with_ignore_and_bilinear_stays_close():
    image, mask = pair((64, 64))
    im2, m2 = affine(image, mask, 45.0, 1.0, image_order=1)
    assert m2[0, 0] == 255 and m2[-1, -1] == 255
    assert im2.shape == image.shape and im2.dtype == np.uint8
    assert np.abs(im2[32, 32].astype(int) - image[32, 32].astype(int)).max() <= 1  # centre is fixed
    im0, m0 = affine(image, mask, 0.0, 1.0)
    np.testing.assert_array_equal(m0, mask)
    np.testing.assert_array_equal(im0, image)
    # zoom in: fewer ignore pixels than rotation, none at the centre
    _, m3 = affine(image, mask, 0.0, 1.5)
    assert (m3 != 255).sum() >= (mask != 255).sum() - 5


def test_photometric_is_modest_and_leaves_mask():
    image, mask = pair()
    aug = Augment(flips=False, rot90=False, brightness=0.05, gamma=0.05, white_balance=0.02)
    im2, m2 = aug(image, mask, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(m2, mask)
    assert np.abs(im2.astype(int) - image.astype(int)).max() <= 0.15 * 255
    np.testing.assert_array_equal(photometric(image, 1.0, 1.0, np.ones(3)), image)


def test_same_rng_same_result_and_seed_default():
    image, mask = pair()
    aug = Augment.mild()
    a = aug(image, mask, rng=np.random.default_rng(3))
    b = aug(image, mask, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = Augment.mild(seed=4)(image, mask)
    d = Augment.mild(seed=4)(image, mask)
    np.testing.assert_array_equal(c[0], d[0])
    assert "rotate_deg=15.0" in repr(aug)


def test_errors():
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="brightness"):
        Augment(brightness=-0.1)
    image, mask = pair()
    with pytest.raises(ValueError, match="sizes differ"):
        Augment()(image, mask[:10])
    with pytest.raises(ValueError, match="uint8"):
        Augment()(image.astype(np.float32), mask)


def test_noise_and_blur_change_texture_not_colour_or_mask():
    rng = np.random.default_rng(0)
    flat = np.full((64, 64, 3), 120, np.uint8)
    mask = (rng.random((64, 64)) < 0.5).astype(np.uint8)
    noisy, m = Augment(flips=False, rot90=False, noise=20.0)(flat, mask, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(m, mask)
    assert 0.5 < noisy.astype(float).std() < 20.5  # σ drawn from [0, 20]
    assert abs(noisy.astype(float).mean() - 120) < 1.0
    checker = np.where((np.indices((64, 64)).sum(0) % 2)[..., None] == 1, 200, 40).astype(np.uint8).repeat(3, 2)
    aug = Augment(flips=False, rot90=False, blur=2.0)
    outs = [aug(checker, mask, rng=np.random.default_rng(s))[0] for s in range(8)]
    blurred = [o for o in outs if not np.array_equal(o, checker)]
    assert 0 < len(blurred) < 8  # half the patches on average
    assert all(o.astype(float).std() < checker.astype(float).std() for o in blurred)
    assert all(abs(o.astype(float).mean() - checker.astype(float).mean()) < 2 for o in blurred)


def test_noise_and_blur_off_leave_the_random_stream_unchanged():
    image, mask = pair()
    a = Augment(brightness=0.05)(image, mask, rng=np.random.default_rng(5))
    b = Augment(brightness=0.05, noise=0.0, blur=0.0)(image, mask, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="noise"):
        Augment(noise=-1)
