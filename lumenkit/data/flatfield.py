"""Flat-field and white-balance calibration from a reference image of a mirror or a blank field.

Reflected-light images darken towards the corners (vignetting) and drift in colour between lamps and imaging days.
Imaging a featureless reference (a polished mirror, a blank area of resin, a reflectance standard) under the same
conditions gives, per pixel and channel, the illumination; dividing by it and rescaling to a neutral target makes
images comparable to the training lab's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lumenkit.data.imageio import read_image


@dataclass
class FlatField:
    """Per-pixel, per-channel gains estimated from a reference image; call it on an image to correct it.

    Attributes:
        gains: ``(H, W, 3)`` float32 multiplicative correction at the reference's resolution (resampled to the
            image's size when applied).
        target: the grey level (0–255) the reference maps to, per channel.
    """

    gains: np.ndarray
    target: np.ndarray

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
            BadImageError: unreadable reference file.
            ValueError: a reference with dark (near-zero) regions, which cannot be a blank field.
        """
        ref = read_image(reference) if isinstance(reference, (str, Path)) else np.asarray(reference)
        f = ref.astype(np.float32)
        diag = float(np.hypot(*f.shape[:2]))
        illum = ndi.gaussian_filter(f, sigma=(sigma * diag, sigma * diag, 0), mode="nearest")
        if illum.min() < 5:
            raise ValueError(
                "reference image has near-black regions; image a mirror or a blank, evenly lit field as reference"
            )
        means = illum.reshape(-1, 3).mean(0)
        level = float(target) if target is not None else float(means.mean())
        tgt = np.full(3, level, np.float32) if white_balance else (means * level / means.mean()).astype(np.float32)
        return cls(gains=(tgt / illum).astype(np.float32), target=tgt)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Corrected copy of an ``(H, W, 3)`` uint8 image (gains resampled to its size)."""
        g = self.gains
        h, w = image.shape[:2]
        if g.shape[:2] != (h, w):
            g = np.stack([resize_image_float(g[..., c], (w, h)) for c in range(3)], -1)
        return np.clip(image.astype(np.float32) * g + 0.5, 0, 255).astype(np.uint8)


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


