"""Dataset overview for notebook 01: images per split and deposit, class shares, co-occurrence in images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import LumenStoneDataset, list_splits
from .imbalance import deposit_shares, image_shares, pixel_counts, presence, shares


def images_per_deposit(data: str | Path) -> pd.DataFrame:
    """Image counts: rows = deposit (``"?"`` when ``deposits.csv`` does not list an image), columns = split."""
    rows = {}
    for split in list_splits(data):
        ds = LumenStoneDataset(data, split)
        rows[split] = pd.Series([ds.deposit(n) or "?" for n in ds.names]).value_counts()
    return pd.DataFrame(rows).fillna(0).astype(int).rename_axis("deposit")


def cooccurrence(counts: pd.DataFrame) -> pd.DataFrame:
    """Number of images in which each pair of classes both occur (diagonal: images containing the class)."""
    p = (counts.drop(columns=["deposit"], errors="ignore") > 0).astype(int)
    return p.T @ p


def class_tables(ds: LumenStoneDataset) -> dict[str, Any]:
    """Every table notebook 01 shows.

    Keys: ``counts``, ``shares``, ``image_shares``, ``deposit_shares``, ``presence``, ``cooccurrence``.
    """
    counts = pixel_counts(ds)
    return {
        "counts": counts,
        "shares": shares(counts),
        "image_shares": image_shares(counts),
        "deposit_shares": deposit_shares(counts),
        "presence": presence(counts),
        "cooccurrence": cooccurrence(counts),
    }


def plot_overview(tables: dict[str, Any]) -> Any:
    """Figure: dataset-wide class shares, presence in images, and co-occurrence heat map."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from .viz import colour_of

    labels = list(tables["shares"].index)
    colours = [colour_of(lab) for lab in labels]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), constrained_layout=True)
    axes[0].bar(labels, 100 * tables["shares"].to_numpy(), color=colours, edgecolor="k")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("% of labelled pixels (log)")
    axes[0].set_title("pixel share per class")
    axes[1].bar(labels, 100 * tables["presence"].to_numpy(), color=colours, edgecolor="k")
    axes[1].set_ylabel("% of images")
    axes[1].set_title("images containing the class")
    sns.heatmap(tables["cooccurrence"], annot=True, fmt="d", cmap="mako", ax=axes[2], cbar=False)
    axes[2].set_title("images where both classes occur")
    for ax in axes[:2]:
        ax.tick_params(axis="x", rotation=45)
    return fig


def plot_image_shares(tables: dict[str, Any], max_images: int = 60) -> Any:
    """Stacked bars of class shares per image (first ``max_images``), grouped by deposit when known."""
    import matplotlib.pyplot as plt

    from .viz import colour_of

    sh = tables["image_shares"]
    if "deposit" in tables["counts"]:
        order = tables["counts"]["deposit"].sort_values(kind="stable").index
        sh = sh.loc[order]
    sh = sh.iloc[:max_images]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(sh)), 4), constrained_layout=True)
    bottom = np.zeros(len(sh))
    for lab in sh.columns:
        ax.bar(range(len(sh)), 100 * sh[lab], bottom=bottom, color=colour_of(lab), label=lab, width=0.9)
        bottom += 100 * sh[lab].to_numpy()
    ax.set_xticks(range(len(sh)), sh.index, rotation=90, fontsize=7)
    ax.set_ylabel("% of image")
    ax.set_title("composition of each image")
    ax.legend(ncol=len(sh.columns), fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return fig


def class_grey_levels(ds: LumenStoneDataset, scale: float | None = 0.125, min_pixels: int = 200) -> pd.DataFrame:
    """Median grey level of each class in each image: how bright a mineral looks from one image to the next.

    The grey level of a pixel is the mean of its R, G, B values (0–255).  A mineral's reflectance varies little
    (sphalerite most, with its iron content), so most of the difference between images of the same class is
    exposure and lamp, which a model working on absolute intensities must be trained to tolerate
    (``TrainConfig.exposure``).

    Args:
        ds: dataset (any split).
        scale: scale the images and masks are read at, relative to native (default 1/8: fast, medians unchanged);
            ``None`` reads at the dataset's working scale.
        min_pixels: fewer pixels of a class than this in an image (at ``scale``) give NaN, not a median.

    Returns:
        Rows = images (by name), columns = class labels, values = median grey level (NaN where absent or too few).

    Raises:
        Dataset errors as in :meth:`lumenkit.data.LumenStoneDataset.load`.
    """
    cmap = ds.classes
    rows = {}
    for name in ds.names:
        sample = ds.load(name, scale=scale)
        grey = sample["image"].astype(np.float32).mean(axis=2)
        mask = sample["mask"]
        row = {}
        for code, label in zip(cmap.codes, cmap.labels, strict=True):
            sel = mask == code
            row[label] = float(np.median(grey[sel])) if sel.sum() >= min_pixels else np.nan
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("image")


def exposure_spread(levels: pd.DataFrame) -> pd.DataFrame:
    """Per class, the spread of :func:`class_grey_levels` between images.

    Returns:
        Rows = classes, columns ``images`` (with a median), ``median``, ``min``, ``max`` (grey levels 0–255) and
        ``low``/``high`` (min / median and max / median: the exposure factors an augmentation must cover; e.g.
        0.75 and 1.25 for ±25 %).
    """
    out = pd.DataFrame({
        "images": levels.notna().sum(),
        "median": levels.median(),
        "min": levels.min(),
        "max": levels.max(),
    })
    out["low"] = out["min"] / out["median"]
    out["high"] = out["max"] / out["median"]
    return out.rename_axis("class")
