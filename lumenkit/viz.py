"""Colours, overlays and figures for masks (so notebooks need no plotting code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .classes import CATALOGUE, IGNORE

PALETTE: np.ndarray = np.zeros((256, 3), dtype=np.uint8)
"""Display colour for every code 0–255 (LumenStone codes from the catalogue; 255 = white)."""
for _c, _m in CATALOGUE.items():
    PALETTE[_c] = _m.colour
PALETTE[IGNORE] = (255, 255, 255)


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
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    sel = np.zeros(256, dtype=bool)
    sel[list(show) if show is not None else [c for c in CATALOGUE if c != 0]] = True
    on = sel[mask]
    out = image.astype(np.float32)
    out[on] = (1 - alpha) * out[on] + alpha * PALETTE[mask[on]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def legend_handles(codes: Sequence[int]) -> list[Any]:
    """Matplotlib patches naming each mineral, for ``ax.legend(handles=...)``."""
    from matplotlib.patches import Patch

    return [
        Patch(
            facecolor=np.array(CATALOGUE[c].colour) / 255,
            edgecolor="k",
            label=f"{CATALOGUE[c].label} — {CATALOGUE[c].name}",
        )
        for c in codes
    ]


def plot_sample(sample: dict[str, Any], codes: Sequence[int] | None = None, alpha: float = 0.45) -> Any:
    """Figure: image | mask | overlay, with a legend of the minerals present. Returns the Figure."""
    import matplotlib.pyplot as plt

    image, mask = sample["image"], sample["mask"]
    present = [int(c) for c in np.flatnonzero(np.bincount(mask.ravel(), minlength=256)) if c != IGNORE]
    codes = [c for c in (codes or present) if c in present]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    axes[0].imshow(image)
    axes[0].set_title(f"{sample.get('name', '')}  {sample.get('deposit', '')}".strip())
    axes[1].imshow(colour_mask(mask), interpolation="nearest")
    axes[1].set_title("mask")
    axes[2].imshow(overlay(image, mask, alpha))
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_axis_off()
    fig.legend(handles=legend_handles(codes), loc="outside lower center", ncol=min(4, len(codes)), frameon=False)
    return fig
