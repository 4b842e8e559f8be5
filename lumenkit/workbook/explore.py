"""Dataset overview for notebook 01: images per split and deposit, class shares, co-occurrence in images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.datasets import LumenStoneDataset, list_splits
from lumenkit.workbook.imbalance import deposit_shares, image_shares, pixel_counts, presence, shares


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

    from lumenkit.data.colours import colour_of

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

    from lumenkit.data.colours import colour_of

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
