"""FlatField from a reference frame: exact removal of a known vignetting field, resampling, and bad references."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from lumenkit.data.flatfield import FlatField, as_flatfield
from lumenkit.data.imageio import save_image
from lumenkit.errors import BadImageError, LumenkitError

H, W = 48, 64
LAMP = np.array([1.0, 0.92, 0.85])  # a warm lamp: blue weaker than red


def vignetting(h: int = H, w: int = W) -> np.ndarray:
    """A smooth radial fall-off, 1 at the centre and 0.7 in the corners, ``(h, w, 1)``."""
    yy, xx = np.mgrid[:h, :w]
    r2 = ((yy + 0.5 - h / 2) ** 2 + (xx + 0.5 - w / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return (1 - 0.3 * r2)[..., None]


def test_a_flat_grey_under_vignetting_and_a_warm_lamp_comes_out_flat_within_rounding():
    standard, grey = 230.0, 100.0  # the reference's reflectance level and the scene's
    light = vignetting() * LAMP
    reference = np.round(standard * light).astype(np.uint8)
    shot = np.round(grey * light).astype(np.uint8)
    assert np.ptp(shot) > 30  # visibly shaded and coloured before
    fixed = FlatField.from_reference(reference, sigma=0, target=standard)(shot).astype(float)
    # the only error left is the 8-bit rounding of the shot and of the reference, carried through the gain
    gain = standard / reference.min()
    bound = 0.5 * gain * (1 + grey / standard) + 0.5
    assert bound < 2
    assert np.abs(fixed - grey).max() <= bound
    assert np.abs(fixed - grey).max() <= 1  # in fact, for these numbers: to the grey level, ±1


def test_correction_is_exact_when_the_reference_is_brighter_than_the_target():
    """Gains below 1 shrink the shot's rounding error below half a level: the clean image comes back bit for bit."""
    rng = np.random.default_rng(0)
    reference = np.round(250 * vignetting() * LAMP).astype(np.uint8)  # 149..250, all above the target 128
    clean = rng.integers(0, 131, (H, W, 3)).astype(np.uint8)
    shot = np.round(clean * reference.astype(float) / 128).astype(np.uint8)
    ff = FlatField.from_reference(reference, sigma=0, target=128)
    assert np.array_equal(ff(shot), clean)
    # a reference saved at twice the resolution (each pixel repeated) is resampled to exactly the same gains
    big = FlatField.from_reference(np.kron(reference, np.ones((2, 2, 1), np.uint8)), sigma=0, target=128)
    assert np.array_equal(big(shot), clean)
    assert big(shot[:24, :32]).shape == (24, 32, 3)  # another size of the same frame is resampled, the cache too


def test_a_reference_file_is_read_and_remembered(tmp_path):
    reference = np.round(230 * vignetting() * LAMP).astype(np.uint8)
    save_image(reference, tmp_path / "blank field.png")
    ff = as_flatfield(tmp_path / "blank field.png")
    assert ff.source == str(tmp_path / "blank field.png")
    assert np.array_equal(ff.gains, FlatField.from_reference(reference).gains)
    assert as_flatfield(ff) is ff and FlatField.from_reference(reference).source is None
    with pytest.raises(TypeError, match="FlatField or the path"):
        as_flatfield(3)  # type: ignore[arg-type]


def test_frames_of_another_aspect_ratio_are_refused_by_check_frame(tmp_path):
    save_image(np.full((H, W, 3), 200, np.uint8), tmp_path / "ref.png")
    ff = FlatField.from_reference(tmp_path / "ref.png")
    ff.check_frame((W, H))
    ff.check_frame((2 * W, 2 * H))
    ff.check_frame((W // 2 + 1, H // 2))  # within a pixel: rounding of a reduced decode
    with pytest.raises(BadImageError, match=re.escape(f"a.png: 64×64 px does not have the aspect ratio of the "
                                                      f"flat-field reference {tmp_path / 'ref.png'} (64×48 px)")):
        ff.check_frame((64, 64), "a.png")


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


BAD_REFERENCES = {
    "missing": (None, "image file does not exist"),
    "truncated": (_png(np.full((H, W, 3), 200, np.uint8))[:60], "corrupt or truncated"),
    "not an image": (b"exposure log\n", "not a readable image"),
    "all black": (_png(np.zeros((H, W, 3), np.uint8)), "near-black regions"),
    "black corner": (_png(np.pad(np.full((H - 20, W - 20, 3), 200, np.uint8), ((20, 0), (20, 0), (0, 0)))),
                     "near-black regions"),
    "grayscale": (_png(np.full((H, W), 200, np.uint8)), "grayscale"),
}


@pytest.mark.parametrize("case", list(BAD_REFERENCES))
def test_a_bad_reference_file_is_one_error_naming_it_and_the_fix(tmp_path, case):
    content, fragment = BAD_REFERENCES[case]
    ref = tmp_path / "ref é.png"
    if content is not None:
        ref.write_bytes(content)
    with pytest.raises(BadImageError) as e:
        FlatField.from_reference(ref)
    msg = str(e.value)
    assert isinstance(e.value, LumenkitError) and isinstance(e.value, ValueError)
    assert msg.startswith(f"{ref}: ") and fragment in msg and "flat-field reference" in msg
    assert msg.endswith("camera settings as the sections") and "\n" not in msg


def test_a_bad_reference_array_is_refused():
    with pytest.raises(BadImageError, match=r"must be an \(H, W, 3\) RGB image, got shape \(8, 8\)"):
        FlatField.from_reference(np.full((8, 8), 200, np.uint8))
    with pytest.raises(BadImageError, match=r"^reference image: flat-field reference has near-black regions"):
        FlatField.from_reference(np.zeros((8, 8, 3), np.uint8))
