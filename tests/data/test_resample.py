"""Area downsampling: exact footprints, and the same pixels whether an image is resampled whole or in bands."""

import numpy as np
import pytest

from lumenkit.data.resample import area_resize, area_rows, area_weights, source_rows, to_uint8


def test_weights_cover_each_footprint_exactly():
    w = area_weights(10, 4).toarray()  # footprints of 2.5 samples
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[0], [0.4, 0.4, 0.2, 0, 0, 0, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(w[1], [0, 0, 0.2, 0.4, 0.4, 0, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(w.sum(axis=0), 0.4, rtol=1e-6)  # every sample counts equally in total
    with pytest.raises(ValueError, match="1 ≤ n_out ≤ n_in"):
        area_weights(4, 5)


def test_integer_factor_is_the_block_mean_rounded_half_up():
    img = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    block = img.reshape(8, 8, 6, 8, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(area_resize(img, (6, 8)), np.floor(block + 0.5).astype(np.uint8))


@pytest.mark.parametrize("shape,size", [((803, 1000), (125, 100)), ((755, 997), (249, 189)), ((97, 61), (20, 29))])
@pytest.mark.parametrize("band", [1, 7, 50])
def test_bands_give_the_same_pixels_as_the_whole_image(shape, size, band):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    whole = area_resize(img, size)
    out = np.empty_like(whole)
    for a in range(0, size[1], band):
        b = min(size[1], a + band)
        lo, hi = source_rows(shape[0], size[1], a, b)
        out[a:b] = to_uint8(area_rows(img[lo:hi], lo, shape[0], size, a, b))
    np.testing.assert_array_equal(out, whole)
    with pytest.raises(ValueError, match="need source rows"):
        area_rows(img[10:20], 10, shape[0], size, 0, 3)
