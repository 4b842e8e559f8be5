"""Mineralogy of masks: modal composition, grains, contacts (association) and deposit aggregation.

Works on masks of LumenStone codes (true or predicted). Lengths are in pixels unless a pixel size in µm is given;
areas in px² or µm². Pixels with code 255 (ignore) are excluded from every figure.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from lumenkit.data.catalogue import CATALOGUE, IGNORE

BACKGROUND = 0
SIZE_CLASSES_UM: tuple[float, ...] = (10.0, 50.0, 100.0, 500.0)
"""Default grain-size class edges on the equivalent circle diameter, in µm (px when no pixel size is given)."""

_EIGHT = np.ones((3, 3), dtype=bool)


def _label(code: int) -> str:
    return CATALOGUE[code].label if code in CATALOGUE else str(code)


def _codes_in(mask: np.ndarray, codes: Sequence[int] | None) -> list[int]:
    if codes is not None:
        return list(codes)
    present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    return [int(c) for c in present if c != IGNORE]


def modal_composition(mask: np.ndarray, codes: Sequence[int] | None = None) -> pd.DataFrame:
    """Area share of each mineral in a mask.

    Args:
        mask: ``(H, W)`` LumenStone codes; 255 pixels are excluded.
        codes: classes to report (default: those present); absent ones get 0.

    Returns:
        DataFrame indexed by label with ``code``, ``pixels``, ``area_pct`` (of all labelled pixels) and
        ``ore_pct`` (of non-background pixels; NaN for background).
    """
    counts = np.bincount(np.asarray(mask, dtype=np.uint8).ravel(), minlength=256)
    codes = _codes_in(mask, codes)
    px = np.array([counts[c] for c in codes], dtype=np.int64)
    total = counts[:IGNORE].sum()
    ore = total - counts[BACKGROUND]
    df = pd.DataFrame({"code": codes, "pixels": px}, index=pd.Index([_label(c) for c in codes], name="mineral"))
    df["area_pct"] = 100.0 * px / total if total else np.nan
    df["ore_pct"] = [np.nan if c == BACKGROUND else (100.0 * n / ore if ore else np.nan) for c, n in zip(codes, px)]
    return df


def grains(
    mask: np.ndarray, pixel_size_um: float | None = None, codes: Sequence[int] | None = None
) -> pd.DataFrame:
    """One row per grain: connected component (8-connectivity) of each non-background mineral.

    Args:
        mask: ``(H, W)`` LumenStone codes.
        pixel_size_um: side of one pixel in µm; adds ``*_um`` columns when given.
        codes: minerals to analyse (default: every non-background code present).

    Returns:
        DataFrame with ``mineral``, ``code``, ``area_px`` (pixels of the grain, holes excluded), ``ecd_px``
        (equivalent circle diameter 2√(area/π)), ``elongation`` (major/minor axis of the second-moment ellipse,
        ≥ 1), ``solidity`` (area / convex-hull area of the pixel squares, ≤ 1), ``holes`` (enclosed regions of
        other classes), ``touches_edge`` (the grain may be cut by the image border), ``y``, ``x`` (centroid, px),
        and ``area_um2``, ``ecd_um`` when ``pixel_size_um`` is given.
    """
    mask = np.asarray(mask, dtype=np.uint8)
    rows = []
    yy, xx = np.indices(mask.shape, dtype=np.float64)
    for code in _codes_in(mask, codes):
        if code == BACKGROUND:
            continue
        lab, n = ndi.label(mask == code, structure=_EIGHT)
        if n == 0:
            continue
        flat = lab.ravel()
        area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
        sy = np.bincount(flat, yy.ravel(), n + 1)[1:]
        sx = np.bincount(flat, xx.ravel(), n + 1)[1:]
        syy = np.bincount(flat, (yy * yy).ravel(), n + 1)[1:]
        sxx = np.bincount(flat, (xx * xx).ravel(), n + 1)[1:]
        sxy = np.bincount(flat, (xx * yy).ravel(), n + 1)[1:]
        cy, cx = sy / area, sx / area
        # central moments; + 1/12 for the spread of a unit pixel square
        vyy = syy / area - cy**2 + 1 / 12
        vxx = sxx / area - cx**2 + 1 / 12
        vxy = sxy / area - cx * cy
        tr, det = vyy + vxx, vyy * vxx - vxy**2
        disc = np.sqrt(np.maximum(tr**2 / 4 - det, 0))
        l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-12)
        elong = np.sqrt(l1 / l2)
        edge = np.zeros(n + 1, dtype=bool)
        edge[np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))] = True
        objs = ndi.find_objects(lab)
        solidity = np.empty(n)
        holes = np.zeros(n, dtype=np.int64)
        for i, sl in enumerate(objs):
            sub = lab[sl] == i + 1
            solidity[i] = area[i] / _hull_area(sub)
            filled = ndi.binary_fill_holes(sub)
            if filled.sum() > area[i]:
                holes[i] = ndi.label(filled & ~sub, structure=_EIGHT)[1]
        ecd = 2 * np.sqrt(area / np.pi)
        df = pd.DataFrame(
            {
                "mineral": _label(code),
                "code": code,
                "area_px": area.astype(np.int64),
                "ecd_px": ecd,
                "elongation": elong,
                "solidity": np.minimum(solidity, 1.0),
                "holes": holes,
                "touches_edge": edge[1:],
                "y": cy,
                "x": cx,
            }
        )
        rows.append(df)
    cols = ["mineral", "code", "area_px", "ecd_px", "elongation", "solidity", "holes", "touches_edge", "y", "x"]
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)
    if pixel_size_um is not None:
        out["area_um2"] = out["area_px"].astype(float) * pixel_size_um**2
        out["ecd_um"] = out["ecd_px"].astype(float) * pixel_size_um
    return out


def _hull_area(sub: np.ndarray) -> float:
    """Area of the convex hull of the pixel squares of a binary object (px²)."""
    from scipy.spatial import ConvexHull, QhullError

    edge = sub & ~ndi.binary_erosion(sub)
    ys, xs = np.nonzero(edge)
    pts = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)]).astype(float)
    try:
        return float(ConvexHull(pts).volume)
    except (QhullError, ValueError):  # collinear points: a one-pixel-wide line
        return float(sub.sum())


def size_classes(
    grain_table: pd.DataFrame, edges: Sequence[float] = SIZE_CLASSES_UM, column: str | None = None
) -> pd.DataFrame:
    """Grain counts per mineral and size class of equivalent circle diameter.

    Args:
        grain_table: output of :func:`grains`.
        edges: class edges (µm if the table has ``ecd_um``, else px).
        column: diameter column (default ``ecd_um`` when present, else ``ecd_px``).

    Returns:
        DataFrame: rows by mineral, columns by size class label (e.g. ``"10–50"``).
    """
    column = column or ("ecd_um" if "ecd_um" in grain_table else "ecd_px")
    unit = "µm" if column.endswith("um") else "px"
    bins = [0.0, *edges, np.inf]
    labels = [f"<{edges[0]:g} {unit}"] + [f"{a:g}–{b:g} {unit}" for a, b in itertools.pairwise(edges)]
    labels.append(f"≥{edges[-1]:g} {unit}")
    cats = pd.cut(grain_table[column].astype(float), bins=bins, labels=labels, right=False)
    return pd.crosstab(grain_table["mineral"], cats).reindex(columns=labels, fill_value=0)


def contact_matrix(mask: np.ndarray, codes: Sequence[int] | None = None) -> pd.DataFrame:
    """Shared boundary length between every pair of classes, in pixel edges (px).

    Each pair of 4-neighbour pixels with different codes adds one pixel edge to both entries of the symmetric
    matrix; edges touching ignore (255) pixels are skipped. Two squares sharing a side of n pixels have a contact
    of n.

    Args:
        mask: ``(H, W)`` LumenStone codes.
        codes: classes in the matrix (default: those present).

    Returns:
        Symmetric DataFrame (labels × labels) of boundary lengths with a zero diagonal.
    """
    mask = np.asarray(mask, dtype=np.uint8)
    codes = _codes_in(mask, codes)
    k = len(codes)
    lut = np.full(256, k, dtype=np.int64)
    lut[codes] = np.arange(k)
    idx = lut[mask]
    m = np.zeros((k + 1, k + 1), dtype=np.int64)
    for a, b in ((idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])):
        sel = (a != b) & (a < k) & (b < k)
        m += np.bincount(a[sel] * (k + 1) + b[sel], minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
    m = m[:k, :k]
    m = m + m.T
    lab = [_label(c) for c in codes]
    return pd.DataFrame(m, index=pd.Index(lab, name="mineral"), columns=lab)


def locking(contacts: pd.DataFrame, background: str = "BG") -> pd.DataFrame:
    """Per mineral, the fraction of its boundary against background vs against other minerals.

    A high ``free_fraction`` (boundary against gangue/background) indicates liberated grains, a high
    ``locked_fraction`` intergrowth with other minerals.

    Returns:
        DataFrame indexed by mineral (background excluded) with ``boundary_px``, ``free_fraction``,
        ``locked_fraction``.
    """
    total = contacts.sum(axis=1)
    bg = contacts[background] if background in contacts else pd.Series(0, index=contacts.index)
    out = pd.DataFrame({"boundary_px": total})
    with np.errstate(invalid="ignore", divide="ignore"):
        out["free_fraction"] = bg / total.replace(0, np.nan)
    out["locked_fraction"] = 1 - out["free_fraction"]
    return out.drop(index=background, errors="ignore")


def image_summary(
    masks: Mapping[str, np.ndarray], codes: Sequence[int], deposits: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Per-image modal composition in long form: rows (image, deposit, mineral) with pixels and area %."""
    rows = []
    for name, m in masks.items():
        df = modal_composition(m, codes).reset_index()
        df.insert(0, "image", name)
        df.insert(1, "deposit", (deposits or {}).get(name, ""))
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def deposit_modal(
    per_image: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Modal composition per deposit (pixels pooled over its images) with a bootstrap interval over images.

    Args:
        per_image: output of :func:`image_summary`.
        n_boot: bootstrap resamples of the deposit's images.
        ci: interval coverage.
        seed: bootstrap seed.

    Returns:
        DataFrame indexed by (deposit, mineral) with ``area_pct``, ``ci_low``, ``ci_high`` and ``images``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for dep, g in per_image.groupby("deposit", sort=True):
        px = g.pivot_table(index="image", columns="mineral", values="pixels", aggfunc="sum", sort=False)
        arr = px.to_numpy(dtype=np.float64)
        pooled = 100 * arr.sum(0) / arr.sum()
        pick = rng.integers(0, len(arr), size=(n_boot, len(arr)))
        boot = arr[pick].sum(1)
        boot = 100 * boot / boot.sum(1, keepdims=True)
        lo, hi = np.percentile(boot, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        for j, mineral in enumerate(px.columns):
            out.append((dep, mineral, pooled[j], lo[j], hi[j], len(arr)))
    return pd.DataFrame(out, columns=["deposit", "mineral", "area_pct", "ci_low", "ci_high", "images"]).set_index(
        ["deposit", "mineral"]
    )


def compare_modal(true_modal: pd.DataFrame, pred_modal: pd.DataFrame) -> pd.DataFrame:
    """Predicted against true modal composition (outputs of :func:`deposit_modal` or :func:`modal_composition`).

    Returns:
        DataFrame with ``true_pct``, ``pred_pct`` and ``abs_error_pct`` (percentage points) on the union index.
    """
    t = true_modal["area_pct"].rename("true_pct")
    p = pred_modal["area_pct"].rename("pred_pct")
    df = pd.concat([t, p], axis=1).fillna(0.0)
    df["abs_error_pct"] = (df["pred_pct"] - df["true_pct"]).abs()
    return df


def grain_size_shift(true_grains: pd.DataFrame, pred_grains: pd.DataFrame, column: str = "ecd_px") -> pd.DataFrame:
    """Per mineral, grain counts and median diameter true vs predicted, with the two-sample KS distance."""
    from scipy.stats import ks_2samp

    rows = []
    for mineral in sorted(set(true_grains["mineral"]) | set(pred_grains["mineral"])):
        a = true_grains.loc[true_grains["mineral"] == mineral, column].to_numpy(float)
        b = pred_grains.loc[pred_grains["mineral"] == mineral, column].to_numpy(float)
        ks = float(ks_2samp(a, b).statistic) if len(a) and len(b) else np.nan
        rows.append((mineral, len(a), len(b), np.median(a) if len(a) else np.nan,
                     np.median(b) if len(b) else np.nan, ks))
    return pd.DataFrame(
        rows, columns=["mineral", "grains_true", "grains_pred", "median_true", "median_pred", "ks_distance"]
    ).set_index("mineral")


def sum_contacts(matrices: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Sum contact matrices of several images (aligned on labels, missing pairs as 0)."""
    total: pd.DataFrame | None = None
    for m in matrices:
        total = m if total is None else total.add(m, fill_value=0)
    if total is None:
        return pd.DataFrame()
    return total.fillna(0).astype(np.int64)


def read_masks(folder: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read predicted masks ``FOLDER/NAME.png`` (LumenStone codes) for the given image names.

    Raises:
        DatasetNotFoundError: the folder or one of the masks is missing.
        BadMaskError: a mask file is corrupt or not single-channel 8-bit.
    """
    from lumenkit.data.imageio import read_mask
    from lumenkit.errors import DatasetNotFoundError

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: prediction folder not found; run `lumenkit predict --out {folder}`")
    out = {}
    for n in names:
        p = folder / f"{n}.png"
        if not p.exists():
            raise DatasetNotFoundError(f"{p}: no predicted mask for image {n!r}; rerun `lumenkit predict` on it")
        out[n] = read_mask(p)
    return out


@dataclass
class MineralogyTables:
    """Every table of a deposit report (each also written as CSV by :meth:`to_csv`)."""

    per_image: pd.DataFrame
    deposit_modal: pd.DataFrame
    grains: pd.DataFrame
    size_classes: pd.DataFrame
    contacts: dict[str, pd.DataFrame]
    locking: pd.DataFrame

    def to_csv(self, folder: str | Path, prefix: str = "") -> list[Path]:
        """Write every table as ``FOLDER/PREFIXname.csv`` atomically; returns the paths."""
        from lumenkit.data.imageio import write_text

        folder = Path(folder)
        paths = []
        tables: dict[str, pd.DataFrame] = {
            "modal_per_image": self.per_image,
            "modal_per_deposit": self.deposit_modal,
            "grains": self.grains,
            "size_classes": self.size_classes,
            "locking": self.locking,
        }
        tables.update({f"contacts_{_slug(d)}": m for d, m in self.contacts.items()})
        for name, df in tables.items():
            p = folder / f"{prefix}{name}.csv"
            write_text(p, df.to_csv())
            paths.append(p)
        return paths


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in str(text)) or "all"


def mineralogy(
    masks: Mapping[str, np.ndarray],
    codes: Sequence[int],
    deposits: Mapping[str, str] | None = None,
    pixel_size_um: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> MineralogyTables:
    """All deposit-report tables for a set of masks (true or predicted).

    Args:
        masks: image name → ``(H, W)`` LumenStone codes.
        codes: class set (rows/columns of every table).
        deposits: image name → deposit (images without one go to ``""``).
        pixel_size_um: pixel side in µm, for grain sizes in µm.
        n_boot: bootstrap resamples for deposit intervals.
        seed: bootstrap seed.
    """
    deposits = dict(deposits or {})
    per_image = image_summary(masks, codes, deposits)
    dep_modal = deposit_modal(per_image, n_boot=n_boot, seed=seed)
    gtabs = []
    contacts: dict[str, list[pd.DataFrame]] = {}
    for name, m in masks.items():
        g = grains(m, pixel_size_um, codes)
        g.insert(0, "image", name)
        g.insert(1, "deposit", deposits.get(name, ""))
        gtabs.append(g)
        contacts.setdefault(deposits.get(name, ""), []).append(contact_matrix(m, codes))
    gt = pd.concat(gtabs, ignore_index=True) if gtabs else grains(np.zeros((1, 1), np.uint8))
    dep_contacts = {d: sum_contacts(ms) for d, ms in contacts.items()}
    lock = pd.concat({d: locking(c) for d, c in dep_contacts.items()}, names=["deposit", "mineral"])
    sizes = pd.concat(
        {d: size_classes(g) for d, g in gt.groupby("deposit")} if len(gt) else {}, names=["deposit", "mineral"]
    ) if len(gt) else pd.DataFrame()
    return MineralogyTables(per_image, dep_modal, gt, sizes, dep_contacts, lock)
