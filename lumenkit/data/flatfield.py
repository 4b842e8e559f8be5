"""Flat-field and white-balance calibration from a reference image of a mirror or a blank field.

Reflected-light images darken towards the corners (vignetting) and drift in colour between lamps and imaging days.
Imaging a featureless reference (a polished mirror, a blank area of resin, a reflectance standard) under the same
conditions gives, per pixel and channel, the illumination; dividing by it and rescaling to a neutral target makes
images comparable to the training lab's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lumenkit.data.imageio import read_image
from lumenkit.errors import BadImageError


@dataclass
class FlatField:
    """Per-pixel, per-channel gains estimated from a reference image; call it on an image to correct it.

    Attributes:
        gains: ``(H, W, 3)`` float32 multiplicative correction at the reference's resolution (resampled to the
            image's size when applied).
        target: the grey level (0–255) the reference maps to, per channel.
        source: the reference image's file when read from one (``None`` for an array); recorded in the outputs of
            :func:`lumenkit.inference.predict_files` and :func:`lumenkit.mineralogy.analyse_sections`.

    A reference frame of another size than an image is resampled to it (bilinear: the gains are smooth) when both
    have the same aspect ratio, e.g. a reference saved at full resolution and images saved at half, or an image
    decoded at the model's scale; :meth:`check_frame` refuses another aspect ratio (another camera frame or a crop,
    which stretching would not fit).
    """

    gains: np.ndarray
    target: np.ndarray
    source: str | None = None
    _resized: tuple[tuple[int, int], np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_reference(
        cls, reference: np.ndarray | str | Path, sigma: float = 0.02, target: float | None = None,
        white_balance: bool = True,
    ) -> FlatField:
        """Estimate gains from a reference image.

        Args:
            reference: ``(H, W, 3)`` uint8 image of a mirror / blank field, or its file path.
            sigma: smoothing of the illumination estimate, as a fraction of the image diagonal (removes dust,
                scratches and noise from the reference).
            target: grey level the reference maps to (default: the reference's mean brightness).
            white_balance: also equalise the channels (the reference becomes neutral grey); with False only
                the spatial shading is corrected and the lamp's colour is kept.

        Raises:
            BadImageError: a missing, unreadable or non-RGB reference file or array, or a reference with dark
                (near-zero) regions, which cannot be a blank field (the message names the file and the fix;
                a :class:`ValueError` too).
        """
        source = str(reference) if isinstance(reference, (str, Path)) else None
        name = source or "reference image"
        fix = ("image a mirror or a blank, evenly reflecting standard with the same objective, lamp, exposure and "
               "camera settings as the sections")
        if source is not None:
            try:
                ref = read_image(reference)
            except BadImageError as e:
                text = str(e).removeprefix(f"{source}: ")
                raise BadImageError(f"{source}: flat-field reference cannot be used ({text}); {fix}") from None
        else:
            ref = np.asarray(reference)
        if ref.ndim != 3 or ref.shape[2] != 3 or min(ref.shape[:2]) < 1:
            raise BadImageError(f"{name}: a flat-field reference must be an (H, W, 3) RGB image, got shape "
                                f"{ref.shape}; {fix}")
        f = ref.astype(np.float32)
        diag = float(np.hypot(*f.shape[:2]))
        illum = ndi.gaussian_filter(f, sigma=(sigma * diag, sigma * diag, 0), mode="nearest")
        if illum.min() < 5:
            raise BadImageError(
                f"{name}: flat-field reference has near-black regions (smoothed minimum {illum.min():.1f} of 255), "
                f"so it is no blank field; {fix}"
            )
        means = illum.reshape(-1, 3).mean(0)
        level = float(target) if target is not None else float(means.mean())
        tgt = np.full(3, level, np.float32) if white_balance else (means * level / means.mean()).astype(np.float32)
        return cls(gains=(tgt / illum).astype(np.float32), target=tgt, source=source)

    def check_frame(self, size: tuple[int, int], image: str | Path = "image") -> None:
        """Refuse an image of ``size = (width, height)`` whose aspect ratio differs from the reference frame's.

        Within one pixel (or 1 %) of the reference's aspect ratio the gains are resampled to the image; otherwise
        the image comes from another camera frame or is a crop, which no resampling of the reference fits.

        Raises:
            BadImageError: the aspect ratios differ (the message names the image, the reference and the fix).
        """
        rh, rw = self.gains.shape[:2]
        w, h = int(size[0]), int(size[1])
        if abs(rw * h / rh - w) > max(1.0, 0.01 * w):
            ref = f" {self.source}" if self.source else ""
            raise BadImageError(
                f"{image}: {w}×{h} px does not have the aspect ratio of the flat-field reference{ref} ({rw}×{rh} "
                "px); take the reference with the same camera frame as the images (or crop it as they are cropped)"
            )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Corrected copy of an ``(H, W, 3)`` uint8 image (gains resampled to its size, the last size kept)."""
        g = self.gains
        h, w = image.shape[:2]
        if g.shape[:2] != (h, w):
            if self._resized is not None and self._resized[0] == (h, w):
                g = self._resized[1]
            else:
                g = np.stack([resize_image_float(g[..., c], (w, h)) for c in range(3)], -1)
                self._resized = ((h, w), g)
        return np.clip(image.astype(np.float32) * g + 0.5, 0, 255).astype(np.uint8)


def as_flatfield(value: FlatField | str | Path) -> FlatField:
    """``value`` itself, or the :class:`FlatField` of a reference frame file (default smoothing and target).

    Raises:
        BadImageError: an unusable reference file (see :meth:`FlatField.from_reference`).
        TypeError: neither a FlatField nor a path.
    """
    if isinstance(value, FlatField):
        return value
    if isinstance(value, (str, Path)):
        return FlatField.from_reference(value)
    raise TypeError(f"flatfield must be a FlatField or the path of a reference frame, got {type(value).__name__}")


def resize_image_float(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a smooth float map to ``size = (width, height)``."""
    h, w = channel.shape
    zoom = (size[1] / h, size[0] / w)
    out = ndi.zoom(channel, zoom, order=1, mode="nearest", grid_mode=True)
    return out[: size[1], : size[0]]


def white_balance_gains(reference: np.ndarray) -> np.ndarray:
    """Per-channel gains making the mean colour of a neutral reference grey (green kept fixed)."""
    m = reference.reshape(-1, 3).astype(np.float64).mean(0)
    return (m[1] / m).astype(np.float32)


