"""Per-class colour and grain-size statistics of datasets, to calibrate synthetic sections against real ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from lumenkit.data.catalogue import CATALOGUE, IGNORE

REFERENCE_SCALE: float = 0.5
"""Grain areas are reported in pixels at this scale (the real sample's ×0.5), whatever the dataset's scale."""


_D65 = np.array([0.95047, 1.0, 1.08883])


_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB colours (0–255, any leading shape ``(..., 3)``) to CIELAB (D65 white, 2° observer).

    Args:
        rgb: array of sRGB values in 0–255 (integer or float).

    Returns:
        float64 array of the same shape: ``L*`` in 0–100, ``a*`` and ``b*`` roughly in −128…127.

    Raises:
        ValueError: if the last axis is not of length 3.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected colours with a last axis of length 3, got shape {rgb.shape}")
    c = np.clip(rgb / 255.0, 0.0, 1.0)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB_TO_XYZ.T / _D65
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def delta_e(rgb1: Sequence[float] | np.ndarray, rgb2: Sequence[float] | np.ndarray) -> float:
    """CIE76 colour difference ΔE*ab between two sRGB colours given in 0–255.

    ΔE ≈ 1 is a just-noticeable difference; under about 5 two flat patches look alike.
    """
    return float(np.linalg.norm(srgb_to_lab(np.asarray(rgb1)) - srgb_to_lab(np.asarray(rgb2))))


@dataclass
class ClassStats:
    """Colour and grain statistics of one class over a set of images.

    Attributes:
        code: LumenStone class code.
        pixels: number of pixels of the class.
        share: fraction of all labelled pixels (ignore excluded).
        mean_rgb: mean sRGB colour (0–255).
        std_rgb: per-channel standard deviation (0–255).
        grain_areas: areas of the class's connected regions (8-connected), in pixels at ×0.5.
        lab_sample: a random sample of the class's pixels in CIELAB, ``(n, 3)``, for plots.
    """

    code: int
    pixels: int = 0
    share: float = 0.0
    mean_rgb: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    std_rgb: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    grain_areas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lab_sample: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def label(self) -> str:
        """The class label (e.g. ``"Ccp"``)."""
        return CATALOGUE[self.code].label

    @property
    def mean_lab(self) -> np.ndarray:
        """Mean colour in CIELAB (of the mean sRGB colour)."""
        return srgb_to_lab(self.mean_rgb)

    @property
    def median_grain(self) -> float:
        """Median area of the class's connected regions, px at ×0.5 (NaN if none)."""
        return float(np.median(self.grain_areas)) if len(self.grain_areas) else float("nan")

    @property
    def weighted_median_grain(self) -> float:
        """Area-weighted median region area, px at ×0.5: half the class's pixels lie in larger regions."""
        a = np.sort(self.grain_areas)
        if not len(a):
            return float("nan")
        cum = np.cumsum(a)
        return float(a[np.searchsorted(cum, cum[-1] / 2)])


def collect_stats(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    codes: Sequence[int] | None = None,
    scale: float = REFERENCE_SCALE,
    samples_per_image: int = 2000,
    min_grain: int = 2,
    seed: int = 0,
) -> dict[int, ClassStats]:
    """Accumulate per-class colour and grain statistics over ``(image, mask)`` pairs.

    Args:
        pairs: ``(H, W, 3)`` uint8 images with ``(H, W)`` masks of LumenStone codes (255 ignored).
        codes: classes to report (default: every code found).
        scale: scale of the images relative to native ×100; grain areas are converted to px at ×0.5.
        samples_per_image: pixels per class and image kept (at random) for the CIELAB sample.
        min_grain: connected regions smaller than this many px (at the images' own scale) are not counted
            as grains (isolated mislabelled pixels).
        seed: seed of the pixel sampling.

    Returns:
        ``{code: ClassStats}`` in code order.

    Raises:
        ValueError: if an image and its mask differ in size.
    """
    rng = np.random.default_rng(seed)
    s1: dict[int, np.ndarray] = {}
    s2: dict[int, np.ndarray] = {}
    n: dict[int, int] = {}
    areas: dict[int, list[np.ndarray]] = {}
    labs: dict[int, list[np.ndarray]] = {}
    area_factor = (REFERENCE_SCALE / scale) ** 2
    eight = np.ones((3, 3), dtype=bool)
    for image, mask in pairs:
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
        flat = image.reshape(-1, 3)
        m = mask.ravel()
        present = np.flatnonzero(np.bincount(m, minlength=256))
        for c in present:
            c = int(c)
            if c == IGNORE or (codes is not None and c not in codes):
                continue
            idx = np.flatnonzero(m == c)
            px = flat[idx].astype(np.float64)
            s1[c] = s1.get(c, 0) + px.sum(0)
            s2[c] = s2.get(c, 0) + (px * px).sum(0)
            n[c] = n.get(c, 0) + len(idx)
            take = idx if len(idx) <= samples_per_image else rng.choice(idx, samples_per_image, replace=False)
            labs.setdefault(c, []).append(srgb_to_lab(flat[take]))
            lab, k = ndimage.label(mask == c, structure=eight)
            a = np.bincount(lab.ravel(), minlength=k + 1)[1:]
            areas.setdefault(c, []).append(a[a >= min_grain] * area_factor)
    total = sum(n.values()) or 1
    out: dict[int, ClassStats] = {}
    for c in sorted(set(codes) if codes is not None else set(n)):
        if c not in n:
            out[c] = ClassStats(code=c)
            continue
        mean = s1[c] / n[c]
        std = np.sqrt(np.maximum(s2[c] / n[c] - mean**2, 0))
        out[c] = ClassStats(
            code=c, pixels=n[c], share=n[c] / total, mean_rgb=mean, std_rgb=std,
            grain_areas=np.concatenate(areas[c]), lab_sample=np.concatenate(labs[c]),
        )
    return out


def dataset_stats(
    root: str | Path, split: str = "train", max_images: int | None = None, association: str | None = None,
    **kwargs: Any,
) -> dict[int, ClassStats]:
    """Statistics of one split of a LumenStone-layout folder at its stored scale (see :func:`collect_stats`).

    Args:
        root: dataset folder.
        split: split to read.
        max_images: read at most this many images (the first, in name order).
        association: only images whose ``deposits.csv`` association is this (e.g. ``"S1"``); the class set
            reported is then that association's (:data:`lumenkit.data.catalogue.CLASS_SETS`).
        **kwargs: passed to :func:`collect_stats`.

    Raises:
        DatasetNotFoundError, EmptySplitError, BadImageError, BadMaskError: as for
            :class:`lumenkit.data.LumenStoneDataset`.
        ValueError: no image of that association.
    """
    from lumenkit.data.catalogue import CLASS_SETS
    from lumenkit.data.datasets import LumenStoneDataset

    ds = LumenStoneDataset(root, split)
    names = ds.names
    codes = ds.class_map.codes if ds.class_map is not None else None
    if association is not None:
        names = [n for n in names if ds.deposits["association"].get(n, "") == association]
        if not names:
            raise ValueError(f"{root}: no {split} images of association {association!r} in deposits.csv")
        codes = CLASS_SETS.get(association, codes)
    if max_images is not None:
        names = names[:max_images]
    pairs = ((s["image"], s["mask"]) for s in (ds.load(n) for n in names))
    return collect_stats(pairs, codes=codes, scale=ds.stored_scale, **kwargs)


def compare(real: Mapping[int, ClassStats], synthetic: Mapping[int, ClassStats]) -> pd.DataFrame:
    """Table of real against synthetic statistics, one row per class present in ``real``.

    Columns: label, real/synthetic mean±std RGB, ΔE (CIE76 of the means), pixel shares, median and
    area-weighted median region areas (px at ×0.5).
    """
    rows = []
    for c, r in real.items():
        if r.pixels == 0:
            continue
        s = synthetic.get(c, ClassStats(code=c))
        rows.append({
            "code": c,
            "class": r.label,
            "real RGB": _fmt_rgb(r.mean_rgb, r.std_rgb),
            "synthetic RGB": _fmt_rgb(s.mean_rgb, s.std_rgb),
            "ΔE": delta_e(r.mean_rgb, s.mean_rgb) if s.pixels else float("nan"),
            "real share": r.share,
            "synthetic share": s.share,
            "real median grain": r.median_grain,
            "synthetic median grain": s.median_grain,
            "real weighted median grain": r.weighted_median_grain,
            "synthetic weighted median grain": s.weighted_median_grain,
        })
    return pd.DataFrame(rows).set_index("code")


def _fmt_rgb(mean: np.ndarray, std: np.ndarray) -> str:
    if not np.all(np.isfinite(mean)):
        return "—"
    return "{:.0f},{:.0f},{:.0f} ± {:.0f},{:.0f},{:.0f}".format(*mean, *std)


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    """Render a :func:`compare` table as a GitHub markdown table (numbers rounded for reading)."""
    cols = list(table.columns)
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for _, row in table.iterrows():
        cells = []
        for col in cols:
            v = row[col]
            if isinstance(v, float):
                if "share" in col:
                    cells.append(f"{v:.3f}")
                elif col == "ΔE":
                    cells.append(f"{v:.1f}")
                else:
                    cells.append("—" if not np.isfinite(v) else f"{v:.0f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
