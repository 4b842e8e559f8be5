import os

import numpy as np
import pytest
from PIL import Image

from lumenkit.data.imageio import (
    atomic_write,
    codes_from_colour_mask,
    read_image,
    read_mask,
    resize_mask,
    save_image,
    target_size,
    write_json,
)
from lumenkit.errors import BadImageError, BadMaskError, MaskSizeError


@pytest.fixture
def rgb(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    p = tmp_path / "img.png"
    save_image(arr, p)
    return p, arr


def test_read_image_round_trip_and_area_downscale(rgb):
    p, arr = rgb
    assert np.array_equal(read_image(p), arr)
    half = read_image(p, factor=0.5)
    assert half.shape == (32, 48, 3)
    expected = arr.reshape(32, 2, 48, 2, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(half.astype(float) - expected).max() <= 1.0


def test_jpeg_reduced_decode_close_to_box_average(tmp_path):
    yy, xx = np.mgrid[:256, :384]
    arr = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    p = tmp_path / "smooth.jpg"
    save_image(arr, p, quality=95)
    full = read_image(p).astype(float)
    quarter = read_image(p, factor=0.25).astype(float)
    assert quarter.shape == (64, 96, 3)
    ref = full.reshape(64, 4, 96, 4, 3).mean(axis=(1, 3))
    assert np.abs(quarter - ref).mean() < 3.0


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"this is not an image", "not a readable image")],
)
def test_bad_image_files(tmp_path, content, match):
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(BadImageError, match=match) as e:
        read_image(p)
    assert "bad.jpg" in str(e.value)


def test_truncated_jpeg(tmp_path):
    p = tmp_path / "t.jpg"
    save_image(np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="corrupt or truncated"):
        read_image(p)


def test_grayscale_and_16bit_images_are_refused(tmp_path):
    g = tmp_path / "gray.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(g)
    with pytest.raises(BadImageError, match="grayscale"):
        read_image(g)
    t = tmp_path / "deep.tif"
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(t)
    with pytest.raises(BadImageError, match="not supported"):
        read_image(t)


def test_opaque_rgba_is_accepted_transparent_is_not(tmp_path):
    a = np.full((8, 8, 4), 255, np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    assert read_image(p).shape == (8, 8, 3)
    a[0, 0, 3] = 0
    Image.fromarray(a).save(p)
    with pytest.raises(BadImageError, match="alpha"):
        read_image(p)


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path, monkeypatch):
    import lumenkit.data.imageio as lio

    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(p)
    monkeypatch.setattr(lio, "MAX_PIXELS", 5000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        read_image(p)


def test_mask_checks(tmp_path):
    m = tmp_path / "m.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(m)
    assert read_mask(m, expected_size=(12, 10)).shape == (10, 12)
    with pytest.raises(MaskSizeError, match="12×10 but its image is 13×10"):
        read_mask(m, expected_size=(13, 10))
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(m)
    with pytest.raises(BadMaskError, match="codes_from_colour_mask"):
        read_mask(m)
    Image.fromarray(np.zeros((10, 12), np.uint16)).save(m)
    with pytest.raises(BadMaskError, match="8-bit"):
        read_mask(m)


def test_codes_from_colour_mask():
    from lumenkit.data.colours import PALETTE

    codes = np.array([[0, 1], [8, 11]], np.uint8)
    assert np.array_equal(codes_from_colour_mask(PALETTE[codes]), codes)
    with pytest.raises(BadMaskError, match="not in the palette"):
        codes_from_colour_mask(np.full((2, 2, 3), 7, np.uint8))


def test_resize_mask_majority_and_nearest_keep_codes():
    m = np.zeros((4, 6), np.uint8)
    m[:2, :2] = 5
    m[0, 2] = 9  # a lone pixel loses the vote
    down = resize_mask(m, (3, 2))
    assert down.tolist() == [[5, 0, 0], [0, 0, 0]]
    rng = np.random.default_rng(0)
    r = rng.choice(np.array([0, 3, 255], np.uint8), size=(37, 53))
    for size in [(20, 14), (80, 60), (53, 37)]:
        out = resize_mask(r, size)
        assert out.shape == (size[1], size[0])
        assert set(np.unique(out)) <= {0, 3, 255}


def test_target_size_rounds_half_up():
    assert target_size((1698, 1273), 0.5) == (849, 637)
    assert target_size((3, 3), 0.01) == (1, 1)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "out.json"
    write_json(p, {"a": 1})
    with pytest.raises(RuntimeError), atomic_write(p, "w") as f:
        f.write("partial")
        raise RuntimeError("boom")
    assert p.read_text().strip().startswith("{")
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    p = tmp_path / "perm.txt"
    write_json(p, {})
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_while_writing_is_an_output_path_error_and_leaves_nothing(tmp_path):
    import errno

    from lumenkit.data.imageio import atomic_write
    from lumenkit.errors import OutputPathError

    target = tmp_path / "out.bin"
    with pytest.raises(OutputPathError, match=r"out.bin") as err, atomic_write(target) as f:
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.reason == "No space left on device"  # for callers that report under another name
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="mine"), atomic_write(target):
        raise OSError(errno.ENOENT, "mine")  # not the disk's: passes unchanged
