"""Display colours of the minerals and mask overlays (numpy only; figures live in :mod:`lumenkit.workbook.figures`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lumenkit.data.catalogue import CATALOGUE, IGNORE

PALETTE: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
"""Display colour for every code 0–255 (LumenStone codes from the catalogue; 255 = white)."""
for _c, _m in CATALOGUE.items():
    PALETTE[_c] = _m.colour


PALETTE[IGNORE] = (255, 255, 255)

IMAGEJ_LUT_SIZE: int = 768
"""Size in bytes of an ImageJ/Fiji binary lookup table: 256 reds, then 256 greens, then 256 blues."""


def imagej_lut_bytes() -> bytes:
    """:data:`PALETTE` as an ImageJ/Fiji binary ``.lut`` (:data:`IMAGEJ_LUT_SIZE` bytes: R×256, G×256, B×256).

    ImageJ's ``LutLoader`` reads a file of exactly 768 bytes this way; a mask of LumenStone codes opened in Fiji
    with this table shows each mineral in its catalogue colour (255 = ignore white), pixel values unchanged.
    """
    return np.ascontiguousarray(PALETTE.astype(np.uint8).T).tobytes()


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 display colours of a mask of LumenStone codes."""
    return PALETTE[np.asarray(mask, dtype=np.uint8)]


def overlay(
    image: np.ndarray, mask: np.ndarray, alpha: float = 0.45, show: Sequence[int] | None = None
) -> np.ndarray:
    """Blend mask colours over an RGB image.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` LumenStone codes.
        alpha: mask opacity in [0, 1].
        show: codes to draw (default all but background 0 and ignore 255).

    Returns:
        ``(H, W, 3)`` uint8 blended image.

    Raises:
        ValueError: ``image`` and ``mask`` differ in height or width.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    sel = np.zeros(256, dtype=bool)
    sel[list(show) if show is not None else [c for c in CATALOGUE if c != 0]] = True
    on = sel[mask]
    out = image.astype(np.float32)
    out[on] = (1 - alpha) * out[on] + alpha * PALETTE[mask[on]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def colour_of(label: str) -> tuple[float, float, float]:
    """Display colour of a class label as matplotlib RGB in 0–1 (grey for an unknown label)."""
    for m in CATALOGUE.values():
        if m.label == label:
            return tuple(np.array(m.colour) / 255)  # type: ignore[return-value]
    return (0.5, 0.5, 0.5)
