"""Colours, overlays and figures for masks (so notebooks need no plotting code)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.colours import colour_mask, colour_of, overlay
from lumenkit.data.pictures import nice_length_um, scale_bar_label
from lumenkit.evaluation.robustness import PERTURBATIONS


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


def plot_dataset_sample(dataset: Any, sample: dict[str, Any] | int | str, alpha: float = 0.45) -> Any:
    """Figure of one sample of a :class:`~lumenkit.data.LumenStoneDataset` (index, name or loaded sample).

    The image, its mask and an overlay, with a legend of the minerals of the dataset's class set present.
    """
    if not isinstance(sample, dict):
        sample = dataset.load(sample)
    codes = dataset.class_map.codes if dataset.class_map else None
    return plot_sample(sample, codes=codes, alpha=alpha)


def plot_modal(deposit_modal: Any, title: str = "Modal mineralogy (area %, 95% interval over images)") -> Any:
    """Grouped bars of area % per mineral and deposit with interval whiskers; returns the Figure.

    Args:
        deposit_modal: output of :func:`lumenkit.mineralogy.analysis.deposit_modal` (index deposit, mineral).
        title: axes title.
    """
    import matplotlib.pyplot as plt

    df = deposit_modal.reset_index()
    deps = list(dict.fromkeys(df["deposit"]))
    minerals = list(dict.fromkeys(df["mineral"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(deps) * len(minerals) / 3), 4), constrained_layout=True)
    width = 0.8 / len(minerals)
    x = np.arange(len(deps))
    for j, mineral in enumerate(minerals):
        sub = df[df["mineral"] == mineral].set_index("deposit").reindex(deps)
        err = np.stack([sub["area_pct"] - sub["ci_low"], sub["ci_high"] - sub["area_pct"]]).clip(0)
        ax.bar(x + j * width, sub["area_pct"], width, yerr=err, capsize=2, label=mineral,
               color=colour_of(mineral), edgecolor="k", linewidth=0.5)
    ax.set_xticks(x + 0.4 - width / 2, [d or "(no deposit)" for d in deps])
    ax.set_ylabel("area %")
    ax.set_title(title)
    ax.legend(ncol=min(len(minerals), 8), fontsize=8, frameon=False)
    return fig


def plot_grain_sizes(grain_table: Any, column: str | None = None) -> Any:
    """Cumulative grain-size distributions (area-weighted, log diameter) per mineral; returns the Figure."""
    import matplotlib.pyplot as plt

    column = column or ("ecd_um" if "ecd_um" in grain_table else "ecd_px")
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for mineral, g in grain_table.groupby("mineral"):
        d = np.sort(g[column].to_numpy(float))
        w = np.cumsum(d**2)
        ax.step(d, w / w[-1], where="post", label=f"{mineral} ({len(d)} grains)", color=colour_of(str(mineral)))
    ax.set_xscale("log")
    ax.set_xlabel(f"equivalent circle diameter ({'µm' if column.endswith('um') else 'px'})")
    ax.set_ylabel("cumulative area fraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_contacts(contacts: Any, title: str = "Shared boundary length (share of each mineral's boundary)") -> Any:
    """Heat map of a contact matrix, each row normalised to its mineral's total boundary; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = contacts.div(contacts.sum(axis=1).replace(0, np.nan), axis=0)
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(rows), 0.8 + 0.7 * len(rows)), constrained_layout=True)
    sns.heatmap(100 * rows, annot=True, fmt=".0f", cmap="viridis", ax=ax, cbar_kws={"label": "% of row boundary"})
    ax.set_title(title)
    return fig


def plot_confusion(confusion: np.ndarray, labels: Sequence[str], title: str = "Confusion (row-normalised, %)") -> Any:
    """Heat map of a confusion matrix normalised per true class (rows); returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    cm = np.asarray(confusion, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = 100 * cm / cm.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(labels), 0.8 + 0.65 * len(labels)), constrained_layout=True)
    sns.heatmap(rows, annot=True, fmt=".0f", cmap="Blues", xticklabels=labels, yticklabels=labels, ax=ax,
                cbar_kws={"label": "% of true class"}, vmin=0, vmax=100)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def plot_error_panels(image: np.ndarray, true: np.ndarray, pred: np.ndarray, title: str = "") -> Any:
    """Image | truth | prediction | errors (red where prediction ≠ truth), with a mineral legend; returns the Figure.

    Args:
        image: ``(H, W, 3)`` uint8 at the masks' resolution.
        true: ``(H, W)`` LumenStone codes (255 = ignore, drawn white).
        pred: ``(H, W)`` LumenStone codes.
        title: figure title (e.g. image name and its IoU).
    """
    import matplotlib.pyplot as plt

    err = image.copy() // 3
    wrong = (pred != true) & (true != IGNORE)
    err[wrong] = (230, 30, 30)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4), constrained_layout=True)
    for ax, im, t in zip(axes, [image, colour_mask(true), colour_mask(pred), err],
                         ["image", "truth", "prediction", f"errors ({wrong.mean():.1%} of pixels)"]):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(t)
        ax.set_axis_off()
    codes = sorted({int(c) for c in np.unique(np.concatenate([true.ravel()[::7], pred.ravel()[::7]])) if c != IGNORE})
    fig.legend(handles=legend_handles(codes), loc="outside lower center", ncol=min(4, len(codes)), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_confidence(confidence: Any) -> Any:
    """Error rate against model confidence (bars: share of pixels per confidence bin); returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    x = np.arange(len(confidence))
    share = confidence["pixels"] / max(1, confidence["pixels"].sum())
    ax.bar(x, share, color="#bbb", label="share of pixels")
    ax.plot(x, confidence["error_rate"], "o-", color="C3", label="error rate")
    ax.set_xticks(x, confidence.index, rotation=45, ha="right")
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    ax.set_title("Error rate against confidence")
    return fig


def plot_history(history: Any) -> Any:
    """Training curves from ``history.csv``: losses, learning rate, validation IoU per class; returns the Figure."""
    import matplotlib.pyplot as plt

    h = history
    fig, axes = plt.subplots(1, 3, figsize=(16, 4), constrained_layout=True)
    axes[0].plot(h["epoch"], h["train_loss"], "o-", label="train")
    axes[0].plot(h["epoch"], h["val_loss"], "o-", label="validation")
    axes[0].set_title("loss")
    axes[0].legend(frameon=False)
    axes[1].plot(h["epoch"], h["lr"], "o-")
    axes[1].set_yscale("log")
    axes[1].set_title("learning rate (×0.1 on plateau of the validation loss)")
    for col in [c for c in h.columns if c.startswith("iou_")]:
        axes[2].plot(h["epoch"], h[col], "-", color=colour_of(col[4:]), label=col[4:], lw=1.5)
    axes[2].plot(h["epoch"], h["val_miou"], "k-o", lw=2.5, label="mean")
    axes[2].set_ylim(0, 1)
    axes[2].set_title("validation IoU")
    axes[2].legend(fontsize=8, ncol=2, frameon=False)
    for ax in axes:
        ax.set_xlabel("epoch")
    return fig


def plot_curves(curves: pd.DataFrame) -> Any:
    """Mean IoU against strength, one panel per perturbation, clean level dashed; returns the Figure."""
    import matplotlib.pyplot as plt

    clean = float(curves.loc[curves["perturbation"] == "none", "mean_iou"].iloc[0])
    names = [n for n in PERTURBATIONS if n in set(curves["perturbation"])]
    cols = 4
    rows = int(np.ceil(len(names) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, constrained_layout=True)
    for ax, n in zip(axes.ravel(), names):
        g = curves[curves["perturbation"] == n]
        p = PERTURBATIONS[n]
        x = [p.neutral, *g["strength"]]
        y = [clean, *g["mean_iou"]]
        order = np.argsort(x)
        ax.plot(np.array(x)[order], np.array(y)[order], "o-")
        ax.axhline(clean, ls="--", color="grey")
        ax.set_title(n)
        ax.set_xlabel(p.unit, fontsize=8)
        ax.set_ylim(0, 1)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    axes[0, 0].set_ylabel("mean IoU")
    return fig


_GIDS = itertools.count(1)


def _gid(kind: str) -> str:
    """A page-unique SVG id for a figure element a reader (or a browser test) looks for: legend, scale bar."""
    return f"lumenkit-{kind}-{next(_GIDS)}"


def add_scale_bar(ax: Any, width_px: int, pixel_size_um: float, fraction: float = 0.2) -> Any:
    """Draw a scale bar of a round length in µm in the lower right of an image axes; returns the bar artist.

    Args:
        ax: axes showing an image ``width_px`` pixels wide in data coordinates (``imshow`` default extent).
        width_px: image width in px.
        pixel_size_um: µm per displayed pixel.
        fraction: longest bar as a share of the width (the length is 1, 2 or 5 × 10ⁿ µm below it).

    In SVG output the label's group has an id starting ``lumenkit-scale-bar`` (the bar's ends in ``-bar``).
    """
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = nice_length_um(width_px, pixel_size_um, fraction)
    label = scale_bar_label(length)
    bar = AnchoredSizeBar(ax.transData, length / pixel_size_um, label, "lower right", pad=0.4, color="white",
                          frameon=True, size_vertical=max(1.0, width_px / 150), fontproperties=FontProperties(size=8))
    bar.patch.set_facecolor("black")
    bar.patch.set_alpha(0.55)
    gid = _gid("scale-bar")  # on the label and the bar themselves: an anchored box writes no SVG group of its own
    bar.txt_label.get_children()[0].set_gid(gid)
    bar.size_bar.get_children()[0].set_gid(f"{gid}-bar")
    ax.add_artist(bar)
    return bar


def plot_section_gallery(
    items: Sequence[tuple[Any, np.ndarray, np.ndarray]], columns: int = 3, alpha: float = 0.45, max_side: int = 420
) -> Any:
    """Overlays of sections with their names, a scale bar in µm on each whose pixel size is known, and one legend.

    Args:
        items: ``(section, image, mask)`` triples (a :class:`~lumenkit.data.sections.Section`, ``(H, W, 3)`` uint8,
            ``(H, W)`` LumenStone codes), e.g. :meth:`lumenkit.workbook.sections.SectionsView.images`.
        columns: panels per row.
        alpha: mask opacity.
        max_side: longest side of each panel in px (larger images are shown reduced; the scale bar follows).

    Returns:
        The Figure (the legend names the minerals present in any panel; its SVG id starts ``lumenkit-legend``).
    """
    import matplotlib.pyplot as plt

    n = max(1, len(items))
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.6), constrained_layout=True,
                             squeeze=False)
    present: set[int] = set()
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (section, image, mask) in zip(axes.ravel(), items, strict=False):
        step = max(1, -(-max(mask.shape) // max_side))
        m = mask[::step, ::step]
        ax.imshow(overlay(image[::step, ::step], m, alpha), interpolation="nearest")
        present.update(int(c) for c in np.flatnonzero(np.bincount(m.ravel(), minlength=256)))
        px = getattr(section, "pixel_size_um", None)
        ax.set_title(f"{section.name}\n{section.sample}" + (f" · {px:g} µm/px" if px else " · pixel size unknown"),
                     fontsize=8)
        if px:
            add_scale_bar(ax, m.shape[1], px * step)
    codes = [c for c in sorted(present) if c in CATALOGUE and c != IGNORE]
    legend = fig.legend(handles=legend_handles(codes), loc="outside lower center", ncol=min(4, max(1, len(codes))),
                        frameon=False, fontsize=8)
    legend.set_gid(_gid("legend"))
    return fig


def plot_group_modal(table: pd.DataFrame, by: str, value: str = "area_pct", title: str | None = None) -> Any:
    """Stacked bars of the pooled modal mineralogy per group (sample or deposit) with each mineral's interval.

    Args:
        table: ``Survey.by_sample`` or ``Survey.by_deposit`` (columns ``by``, ``mineral``, ``VALUE``,
            ``VALUE_low``, ``VALUE_high``).
        by: the group column (``"sample"`` or ``"deposit"``).
        value: ``"area_pct"`` or ``"weight_pct"``.
        title: axes title (default: what is shown).

    Returns:
        The Figure: one horizontal bar per group, minerals stacked in catalogue colours (background, usually most
        of the area, is left out so the minerals are readable); the intervals are in ``table`` (stacked bars
        cannot show them honestly).
    """
    import matplotlib.pyplot as plt

    df = table[table["mineral"] != "BG"]
    groups = list(dict.fromkeys(table[by]))
    minerals = list(dict.fromkeys(df["mineral"]))
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.45 * len(groups)), constrained_layout=True)
    left = np.zeros(len(groups))
    for mineral in minerals:
        v = df[df["mineral"] == mineral].set_index(by)[value].reindex(groups).fillna(0).to_numpy()
        ax.barh(groups, v, left=left, label=mineral, color=colour_of(mineral), edgecolor="k", linewidth=0.4)
        left += v
    ax.invert_yaxis()
    what = "area" if value.startswith("area") else "weight"
    ax.set_xlabel(f"{what} % of the section (background and gangue not drawn)")
    ax.set_title(title or f"Modal mineralogy by {by} ({what} %, pooled over images)")
    if minerals:
        legend = fig.legend(ncol=min(len(minerals), 6), fontsize=8, frameon=False, loc="outside lower center")
        legend.set_gid(_gid("legend"))
    else:
        ax.text(0.5, 0.5, "no mineral but background", transform=ax.transAxes, ha="center", va="center")
    return fig
