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

from lumenkit.data.catalogue import CATALOGUE, IGNORE

BACKGROUND = 0
SIZE_CLASSES_UM: tuple[float, ...] = (10.0, 50.0, 100.0, 500.0)
"""Default grain-size class edges on the equivalent circle diameter, in µm (px when no pixel size is given)."""

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
    return modal_from_pixels(counts, _codes_in(mask, codes))


def modal_from_pixels(counts: np.ndarray, codes: Sequence[int]) -> pd.DataFrame:
    """:func:`modal_composition` from pixel counts: ``counts[c]`` pixels of code ``c`` (length 256)."""
    codes = list(codes)
    px = np.array([counts[c] for c in codes], dtype=np.int64)
    total = counts[:IGNORE].sum()
    ore = total - counts[BACKGROUND]
    df = pd.DataFrame({"code": codes, "pixels": px}, index=pd.Index([_label(c) for c in codes], name="mineral"))
    df["area_pct"] = 100.0 * px / total if total else np.nan
    df["ore_pct"] = [np.nan if c == BACKGROUND else (100.0 * n / ore if ore else np.nan) for c, n in zip(codes, px)]
    return df


GRAIN_COLUMNS: tuple[str, ...] = (
    "mineral", "code", "area_px", "ecd_px", "perimeter_px", "feret_max_px", "feret_min_px", "orientation_deg",
    "elongation", "solidity", "holes", "touches_edge", "y", "x", "boundary_px", "free_boundary_px",
)
"""Columns of :func:`grains` (``*_um`` / ``*_um2`` twins of the lengths and areas follow when a pixel size is
given)."""

_LENGTHS = ("ecd", "perimeter", "feret_max", "feret_min", "boundary", "free_boundary")


def grains(
    mask: np.ndarray, pixel_size_um: float | None = None, codes: Sequence[int] | None = None
) -> pd.DataFrame:
    """One row per grain: connected component (8-connectivity) of each non-background mineral.

    Computed for the whole mask at once by :func:`lumenkit.mineralogy.grains.measure` (whole-image array
    operations; ``skimage.measure.regionprops`` measured 0.6–6 s per property on a native section, see there).

    Args:
        mask: ``(H, W)`` LumenStone codes.
        pixel_size_um: side of one pixel in µm; adds ``*_um`` (and ``area_um2``) columns when given.
        codes: minerals to analyse (default: every non-background code present).

    Returns:
        DataFrame with

        - ``mineral``, ``code``;
        - ``area_px`` (pixels of the grain, holes excluded), ``ecd_px`` (equivalent circle diameter 2√(area/π));
        - ``perimeter_px``: length of the grain's outline through the midpoints of its boundary pixel edges
          (marching squares at 0.5, i.e. the pixel outline with convex corners cut at 45°, from 2×2 bit-quads)
          times :data:`lumenkit.mineralogy.grains.ISOTROPIC` = π / (8(√2 − 1)) ≈ 0.948, which makes it unbiased
          over edge directions: a digital disc reads π·ECD within 1 % from ECD ≈ 80 px; a w×h axis-aligned
          rectangle reads 0.948·(2(w+h) − 4 + 2√2) (straight edges: −5.2 % … +2.6 % depending on direction);
        - ``feret_max_px``, ``feret_min_px``: largest and smallest caliper diameter of the convex hull of the
          pixel squares (a w×h rectangle: √(w²+h²) and min(w, h)); scikit-image has no minimum Feret, and its
          ``feret_diameter_max`` uses the hull of pixel centres (w×h rectangle: √((w−1)²+(h−1)²)) and is slow;
        - ``orientation_deg``: direction of the major axis of the second-moment ellipse in degrees, in [0, 180),
          counter-clockwise from the image x axis as seen on screen (ImageJ's "Angle"; horizontal 0, vertical 90);
          0 for isotropic grains (squares, discs);
        - ``elongation`` (major/minor axis of the second-moment ellipse, ≥ 1), ``solidity`` (area / convex-hull
          area of the pixel squares, ≤ 1);
        - ``holes``: enclosed regions (4-connected) of other classes, from the Euler number;
        - ``touches_edge`` (the grain may be cut by the image border), ``y``, ``x`` (centroid, px);
        - ``boundary_px``: pixel edges shared with other labelled classes (as in :func:`contact_matrix`: edges
          against 255 and along the image border are not counted); ``free_boundary_px``: of those, against
          background/gangue (code 0);
        - when ``pixel_size_um`` is given: ``area_um2``, ``ecd_um``, ``perimeter_um``, ``feret_max_um``,
          ``feret_min_um``, ``boundary_um``, ``free_boundary_um``.
    """
    from lumenkit.mineralogy.grains import measure

    mask = np.asarray(mask, dtype=np.uint8)
    return grain_frame(measure(mask, grain_codes(_codes_in(mask, codes))), pixel_size_um)


def grain_codes(codes: Sequence[int]) -> list[int]:
    """The codes whose connected components are grains: every code but background and ignore."""
    return [int(c) for c in codes if c not in (BACKGROUND, IGNORE)]


def grain_frame(m: Mapping[str, np.ndarray], pixel_size_um: float | None = None) -> pd.DataFrame:
    """The table of :func:`grains` from the measurements of :func:`lumenkit.mineralogy.grains.measure`."""
    area = m["area"]
    vyy, vxx, vxy = m["vyy"], m["vxx"], m["vxy"]
    tr = vyy + vxx
    disc = np.hypot((vyy - vxx) / 2, vxy)  # = sqrt(tr²/4 − det) without its cancellation
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-12)
    # major axis at 0.5·atan2(2vxy, vxx − vyy) with y pointing down; negate for counter-clockwise on screen
    angle = -0.5 * np.degrees(np.arctan2(2 * vxy, vxx - vyy))
    angle = np.where(np.abs(vxy) + np.abs(vxx - vyy) < 1e-9, 0.0, np.mod(angle, 180.0))
    out = pd.DataFrame(
        {
            "mineral": [_label(int(c)) for c in m["code"]],
            "code": m["code"].astype(np.int64),
            "area_px": area.astype(np.int64),
            "ecd_px": 2 * np.sqrt(area / np.pi),
            "perimeter_px": m["perimeter"],
            "feret_max_px": m["feret_max"],
            "feret_min_px": m["feret_min"],
            "orientation_deg": np.where(angle >= 180.0 - 1e-9, 0.0, angle),
            "elongation": np.sqrt(l1 / l2),
            "solidity": np.minimum(area / np.maximum(m["hull_area"], 1e-12), 1.0),
            "holes": m["holes"],
            "touches_edge": m["touches_edge"].astype(bool),
            "y": m["cy"],
            "x": m["cx"],
            "boundary_px": m["boundary"].astype(np.int64),
            "free_boundary_px": m["free_boundary"].astype(np.int64),
        },
        columns=list(GRAIN_COLUMNS),
    )
    if pixel_size_um is not None:
        out["area_um2"] = out["area_px"].astype(float) * pixel_size_um**2
        for k in _LENGTHS:
            out[f"{k}_um"] = out[f"{k}_px"].astype(float) * pixel_size_um
    return out


def size_classes(
    grain_table: pd.DataFrame, edges: Sequence[float] = SIZE_CLASSES_UM, column: str | None = None
) -> pd.DataFrame:
    """Grain counts per mineral and size class of equivalent circle diameter.

    Args:
        grain_table: output of :func:`grains`.
        edges: class edges (µm if the table has ``ecd_um``, else px).
        column: diameter column (default ``ecd_um`` when present, else ``ecd_px``).

    Returns:
        DataFrame: rows by mineral, columns by size class label (e.g. ``"10–50 µm"``).

    Raises:
        ValueError: ``edges`` empty, not positive or not increasing.
    """
    g, _, labels, _ = _size_class_table(grain_table, edges, column)
    return pd.crosstab(g["mineral"], g["size_class"]).reindex(columns=labels, fill_value=0)


def _size_class_table(
    grain_table: pd.DataFrame, edges: Sequence[float], column: str | None
) -> tuple[pd.DataFrame, str, list[str], np.ndarray]:
    """Grain table with a ``size_class`` categorical, the unit, the class labels and the class bounds."""
    column = column or ("ecd_um" if "ecd_um" in grain_table else "ecd_px")
    unit = "µm" if column.endswith("um") else "px"
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
        raise ValueError(f"size class edges must be at least one, positive and increasing, got {edges}")
    bins = np.array([0.0, *edges, np.inf])
    labels = [f"<{edges[0]:g} {unit}"] + [f"{a:g}–{b:g} {unit}" for a, b in itertools.pairwise(edges)]
    labels.append(f"≥{edges[-1]:g} {unit}")
    g = grain_table.copy()
    g["size_class"] = pd.cut(g[column].astype(float), bins=bins, labels=labels, right=False)
    return g, unit, labels, bins


def size_distribution(
    grain_table: pd.DataFrame,
    edges: Sequence[float] = SIZE_CLASSES_UM,
    column: str | None = None,
    by: Sequence[str] = ("mineral",),
) -> pd.DataFrame:
    """Grain size distribution per mineral by size class, with cumulative passing curves (tidy).

    Classes are half-open ``[lower, upper)`` on the equivalent circle diameter (or ``column``); the first starts
    at 0, the last is open (``upper`` = inf).

    Args:
        grain_table: output of :func:`grains` (several images concatenated are fine).
        edges: inner class edges, µm when the table has ``ecd_um`` (default :data:`SIZE_CLASSES_UM`), else px.
        column: diameter column (default ``ecd_um`` when present, else ``ecd_px``).
        by: grouping columns (e.g. ``("image", "mineral")``).

    Returns:
        One row per group × size class (every class, empty ones with 0): ``*by``, ``size_class``,
        ``lower_um``/``upper_um`` (``_px`` without a pixel size), ``grains``, ``area_um2`` (``area_px``),
        ``count_pct`` and ``area_pct`` (share of the group's grains / area in the class) and ``passing_count_pct``,
        ``passing_area_pct`` (cumulative: share finer than ``upper``; 100 in the last class).

    Raises:
        ValueError: ``edges`` empty, not positive or not strictly increasing.
    """
    by = list(by)
    g, unit, labels, bins = _size_class_table(grain_table, edges, column)
    suffix = "um" if unit == "µm" else "px"
    area_col = "area_um2" if suffix == "um" and "area_um2" in g else "area_px"
    out_area = "area_um2" if suffix == "um" else "area_px"
    cols = [*by, "size_class", f"lower_{suffix}", f"upper_{suffix}", "grains", out_area, "count_pct", "area_pct",
            "passing_count_pct", "passing_area_pct"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    agg = g.groupby([*by, "size_class"], observed=False, sort=True).agg(
        grains=(area_col, "size"), area=(area_col, "sum")
    )
    agg = agg.reset_index()
    groups = g[by].drop_duplicates()
    agg = groups.merge(agg, on=by, how="left")
    agg["size_class"] = pd.Categorical(agg["size_class"], categories=labels, ordered=True)
    agg = agg.sort_values([*by, "size_class"], kind="stable").reset_index(drop=True)
    agg[["grains", "area"]] = agg[["grains", "area"]].fillna(0)
    code = agg["size_class"].cat.codes.to_numpy()
    agg.insert(len(by) + 1, f"lower_{suffix}", bins[code])
    agg.insert(len(by) + 2, f"upper_{suffix}", bins[code + 1])
    grp = agg.groupby(by, sort=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        agg["count_pct"] = 100 * agg["grains"] / grp["grains"].transform("sum")
        agg["area_pct"] = 100 * agg["area"] / grp["area"].transform("sum")
        agg["passing_count_pct"] = 100 * grp["grains"].cumsum() / grp["grains"].transform("sum")
        agg["passing_area_pct"] = 100 * grp["area"].cumsum() / grp["area"].transform("sum")
    agg["grains"] = agg["grains"].astype(np.int64)
    agg = agg.rename(columns={"area": out_area})
    agg["size_class"] = agg["size_class"].astype(str)
    return agg[cols]


def free_boundary_by_size(
    grain_table: pd.DataFrame,
    edges: Sequence[float] = SIZE_CLASSES_UM,
    column: str | None = None,
    by: Sequence[str] = ("mineral",),
) -> pd.DataFrame:
    """Association by size class: each mineral's boundary against gangue/background (code 0) vs other minerals.

    Sums the per-grain pixel-edge boundaries of :func:`grains` over the grains of each size class (classes as in
    :func:`size_distribution`). ``free_fraction`` 1 means the mineral's grains of that size are bounded only by
    gangue (liberated), 0 that they are wholly locked in other minerals.

    Args:
        grain_table: output of :func:`grains` (several images concatenated are fine).
        edges: inner class edges on ``column``: µm when the table has ``ecd_um`` (:func:`grains` was given a pixel
            size; default :data:`SIZE_CLASSES_UM`), else px; with an explicit ``column``, in its unit (µm for a
            name ending in ``um``).
        column: diameter column (default ``ecd_um`` when present, else ``ecd_px``).
        by: grouping columns (e.g. ``("image", "mineral")``).

    Returns:
        One row per group × size class: ``*by``, ``size_class``, ``grains``, ``boundary_um`` and
        ``free_boundary_um`` (``_px`` without a pixel size), ``free_fraction``, ``locked_fraction`` (NaN for classes
        without boundary).

    Raises:
        ValueError: ``edges`` empty, not positive or not strictly increasing.
    """
    by = list(by)
    g, unit, labels, _ = _size_class_table(grain_table, edges, column)
    suffix = "um" if unit == "µm" and "boundary_um" in g else "px"
    cols = [*by, "size_class", "grains", f"boundary_{suffix}", f"free_boundary_{suffix}", "free_fraction",
            "locked_fraction"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    agg = g.groupby([*by, "size_class"], observed=False, sort=True).agg(
        grains=(f"boundary_{suffix}", "size"),
        boundary=(f"boundary_{suffix}", "sum"),
        free=(f"free_boundary_{suffix}", "sum"),
    ).reset_index()
    agg = g[by].drop_duplicates().merge(agg, on=by, how="left")
    agg["size_class"] = pd.Categorical(agg["size_class"], categories=labels, ordered=True)
    agg = agg.sort_values([*by, "size_class"], kind="stable").reset_index(drop=True)
    agg[["grains", "boundary", "free"]] = agg[["grains", "boundary", "free"]].fillna(0)
    agg["grains"] = agg["grains"].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        agg["free_fraction"] = agg["free"] / agg["boundary"].replace(0, np.nan)
    agg["locked_fraction"] = 1 - agg["free_fraction"]
    agg["size_class"] = agg["size_class"].astype(str)
    agg = agg.rename(columns={"boundary": f"boundary_{suffix}", "free": f"free_boundary_{suffix}"})
    return agg[cols]


@dataclass
class SectionAnalysis:
    """Every per-section table: modal composition, grains, size distribution, contacts, locking, association."""

    modal: pd.DataFrame
    grains: pd.DataFrame
    size_distribution: pd.DataFrame
    contacts: pd.DataFrame
    locking: pd.DataFrame
    association: pd.DataFrame


def analyse_mask(
    mask: np.ndarray,
    pixel_size_um: float | None = None,
    codes: Sequence[int] | None = None,
    edges: Sequence[float] = SIZE_CLASSES_UM,
) -> SectionAnalysis:
    """The full mineralogy of one mask (the unit timed by ``benchmarks/bench_analysis.py``).

    Args:
        mask: ``(H, W)`` LumenStone codes (255 ignored).
        pixel_size_um: pixel side in µm (sizes, size classes and boundaries in µm); px when None.
        codes: class set (default: those present).
        edges: size class edges (µm, or px without a pixel size).
    """
    mask = np.asarray(mask, dtype=np.uint8)
    codes = _codes_in(mask, codes)
    g = grains(mask, pixel_size_um, codes)
    contacts = contact_matrix(mask, codes)
    return SectionAnalysis(
        modal=modal_composition(mask, codes),
        grains=g,
        size_distribution=size_distribution(g, edges),
        contacts=contacts,
        locking=locking(contacts),
        association=free_boundary_by_size(g, edges),
    )


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
    lut = contact_lut(codes)
    m = np.zeros((len(codes) + 1,) * 2, dtype=np.int64)
    for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1, :], mask[1:, :])):
        m += pair_counts(a, b, lut)
    return contact_frame(m, codes)


def contact_lut(codes: Sequence[int]) -> np.ndarray:
    """Code → row of the contact count matrix: ``codes`` in order, then one row for ignore and other codes."""
    k = len(codes)
    lut = np.full(256, k, dtype=np.int64)
    lut[list(codes)] = np.arange(k)
    lut[IGNORE] = k
    return lut


def pair_counts(a: np.ndarray, b: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``(k + 1, k + 1)`` counts of neighbour pairs ``a[i] != b[i]`` by class (rows of :func:`contact_lut`)."""
    k1 = int(lut.max()) + 1
    sel = a != b  # only the few differing pairs are mapped (the uint8 comparison is the whole-image cost)
    ia, ib = lut[a[sel]], lut[b[sel]]
    return np.bincount(ia * k1 + ib, minlength=k1 * k1).reshape(k1, k1)


def contact_frame(m: np.ndarray, codes: Sequence[int]) -> pd.DataFrame:
    """The symmetric table of :func:`contact_matrix` from directed pair counts (:func:`pair_counts`)."""
    k = len(codes)
    m = m[:k, :k]
    m = m + m.T
    lab = [_label(c) for c in codes]
    return pd.DataFrame(m, index=pd.Index(lab, name="mineral"), columns=lab)


def locking(contacts: pd.DataFrame, background: str = "BG", unit: str = "px") -> pd.DataFrame:
    """Per mineral, the fraction of its boundary against background vs against other minerals.

    A high ``free_fraction`` (boundary against gangue/background) indicates liberated grains, a high
    ``locked_fraction`` intergrowth with other minerals.

    Args:
        contacts: contact matrix (:func:`contact_matrix`, or a sum of them), boundary length in ``unit``.
        background: the label of the background column.
        unit: ``"px"`` or ``"um"``, the unit of ``contacts``; it names the total's column.

    Returns:
        DataFrame indexed by mineral (background excluded) with ``boundary_px`` (or ``boundary_um``),
        ``free_fraction``, ``locked_fraction``.
    """
    total = contacts.sum(axis=1)
    bg = contacts[background] if background in contacts else pd.Series(0, index=contacts.index)
    out = pd.DataFrame({f"boundary_{unit}": total})
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


def pooled_shares(per_image: np.ndarray, pick: np.ndarray, ci: float) -> tuple[np.ndarray, ...]:
    """Shares in % of amounts pooled over images, and a percentile bootstrap interval over the images.

    Args:
        per_image: ``(images, minerals)`` amounts (pixels, µm², mass, ...).
        pick: ``(resamples, images)`` image indices of each bootstrap resample.
        ci: interval coverage.

    Returns:
        ``(pooled, low, high)``, each one value per mineral.
    """
    pooled = 100 * per_image.sum(0) / max(per_image.sum(), 1e-300)
    boot = per_image[pick].sum(1)
    boot = 100 * boot / np.maximum(boot.sum(1, keepdims=True), 1e-300)
    lo, hi = np.percentile(boot, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return pooled, lo, hi


def deposit_modal(
    per_image: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Modal composition per deposit (pixels pooled over its images) with a bootstrap interval over images.

    Args:
        per_image: output of :func:`image_summary`.
        n_boot: bootstrap resamples of the deposit's images.
        ci: interval coverage as a fraction, e.g. 0.95 (the 2.5th to 97.5th percentile of the resamples).
        seed: bootstrap seed.

    Returns:
        DataFrame indexed by (deposit, mineral) with ``area_pct``, ``ci_low``, ``ci_high`` and ``images``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for dep, g in per_image.groupby("deposit", sort=True):
        px = g.pivot_table(index="image", columns="mineral", values="pixels", aggfunc="sum", sort=False)
        arr = px.to_numpy(dtype=np.float64)
        pooled, lo, hi = pooled_shares(arr, rng.integers(0, len(arr), size=(n_boot, len(arr))), ci)
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


def grain_size_shift(
    true_grains: pd.DataFrame, pred_grains: pd.DataFrame, column: str | None = None
) -> pd.DataFrame:
    """Per mineral, grain counts and median diameter true vs predicted, with the two-sample KS distance.

    Args:
        true_grains: grain table (:func:`grains`) of the true masks.
        pred_grains: grain table of the predicted masks.
        column: the diameter compared (default ``ecd_um``, the equivalent circle diameter in µm, when both tables
            have it, else ``ecd_px`` in pixels); the medians are in its unit.

    Returns:
        One row per mineral: ``grains_true``, ``grains_pred``, ``median_true``, ``median_pred``, ``unit`` (of the
        medians: ``"µm"`` or ``"px"``) and ``ks_distance`` (0–1; NaN where either side has no grain).
    """
    from scipy.stats import ks_2samp

    if column is None:
        column = "ecd_um" if "ecd_um" in true_grains and "ecd_um" in pred_grains else "ecd_px"

    rows = []
    for mineral in sorted(set(true_grains["mineral"]) | set(pred_grains["mineral"])):
        a = true_grains.loc[true_grains["mineral"] == mineral, column].to_numpy(float)
        b = pred_grains.loc[pred_grains["mineral"] == mineral, column].to_numpy(float)
        ks = float(ks_2samp(a, b).statistic) if len(a) and len(b) else np.nan
        rows.append((mineral, len(a), len(b), np.median(a) if len(a) else np.nan,
                     np.median(b) if len(b) else np.nan, ks))
    out = pd.DataFrame(
        rows, columns=["mineral", "grains_true", "grains_pred", "median_true", "median_pred", "ks_distance"]
    ).set_index("mineral")
    out.insert(4, "unit", "µm" if column.endswith("_um") else "px")
    return out


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
