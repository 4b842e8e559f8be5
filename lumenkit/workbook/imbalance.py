"""Class-imbalance analysis: pixel shares, presence, imbalance ratios and uniform vs balanced patch sampling.

Everything notebook 02 shows is computed here and returned as DataFrames, Figures and plain text; results are
written as files by :func:`write_results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import CATALOGUE, ClassMap
from lumenkit.data.imageio import write_json, write_text
from lumenkit.data.samplers import (
    DEFAULT_ALPHA,
    DEFAULT_GRID,
    DEFAULT_KAPPA,
    BalancedSampler,
    UniformSampler,
    load_masks,
)

STRENGTHS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Balancing strengths compared by :func:`analyse`."""


def open_dataset(data: str | Path, class_set: str = "", split: str = "train") -> Any:
    """Open a LumenStone-layout dataset with a class set (``""`` = from ``dataset.yaml`` or codes found).

    Raises:
        DatasetNotFoundError: the folder or split is missing (the message says how to create the data).
    """
    from lumenkit.data.datasets import LumenStoneDataset

    ds = LumenStoneDataset(data, split=split, class_set=class_set or None)
    if ds.class_map is None:
        ds.class_map = ClassMap(ds.codes)
    return ds


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def pixel_counts(dataset: Any) -> pd.DataFrame:
    """Pixels per image (rows) and class (columns, labels) at the stored resolution, without ``ignore``.

    A ``deposit`` column is added when ``deposits.csv`` lists the images.
    """
    counts = dataset.class_counts().drop(columns=["ignore"], errors="ignore")
    if len(dataset.deposits):
        counts.insert(0, "deposit", [dataset.deposit(n) or "?" for n in counts.index])
    return counts


def _numeric(counts: pd.DataFrame) -> pd.DataFrame:
    return counts.drop(columns=["deposit"], errors="ignore")


def shares(counts: pd.DataFrame) -> pd.Series:
    """Dataset-wide fraction of labelled pixels per class (sums to 1)."""
    c = _numeric(counts).sum()
    return c / max(int(c.sum()), 1)


def image_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Per-image fraction of labelled pixels per class (rows sum to 1)."""
    c = _numeric(counts)
    return c.div(c.sum(axis=1).clip(lower=1), axis=0)


def deposit_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Per-deposit fraction of labelled pixels per class; empty when no deposits are known."""
    if "deposit" not in counts:
        return pd.DataFrame()
    c = counts.groupby("deposit").sum()
    return c.div(c.sum(axis=1).clip(lower=1), axis=0)


def presence(counts: pd.DataFrame) -> pd.Series:
    """Fraction of images in which each class has at least one pixel."""
    return (_numeric(counts) > 0).mean()


def imbalance_ratios(counts: pd.DataFrame) -> pd.Series:
    """Pixels of the commonest class divided by pixels of each class (1 for the commonest; inf if absent)."""
    c = _numeric(counts).sum().astype(np.float64)
    return (c.max() / c.where(c > 0)).fillna(np.inf)


# ------------------------------------------------------------------------------------------------
# sampling simulation
# ------------------------------------------------------------------------------------------------
def _checkpoints(n: int, points: int = 25) -> np.ndarray:
    return np.unique(np.geomspace(min(10, n), n, points).astype(int))


def simulate(sampler: Any, n: int, labels: list[str], name: str) -> pd.DataFrame:
    """Draw ``n`` patches and record served shares and quality at ~25 log-spaced checkpoints.

    Returns:
        Long DataFrame with columns ``sampler, patches, class, share, quality``.
    """
    rows = []
    stops = set(_checkpoints(n).tolist())
    for t in range(1, n + 1):
        sampler.draw()
        if t in stops:
            sh, q = sampler.shares(), sampler.quality()
            rows += [{"sampler": name, "patches": t, "class": lab, "share": float(sh[k]), "quality": q}
                     for k, lab in enumerate(labels)]
    return pd.DataFrame(rows)


@dataclass
class ImbalanceResult:
    """Everything notebook 02 shows.

    Attributes:
        labels: class labels in model-index order.
        counts: pixels per image and class (and ``deposit``), stored resolution.
        natural: dataset-wide pixel shares.
        vs_n: served share and quality against patches drawn, uniform and balanced.
        vs_strength: served share and quality after ``n_patches`` for each strength.
        balanced: the balanced sampler after ``n_patches`` draws (its history gives coverage maps).
        uniform: the uniform sampler after ``n_patches`` draws.
        params: the parameters of the analysis.
    """

    labels: list[str]
    counts: pd.DataFrame
    natural: pd.Series
    vs_n: pd.DataFrame
    vs_strength: pd.DataFrame
    balanced: BalancedSampler
    uniform: UniformSampler
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def rarest(self) -> str:
        """Label of the class with the smallest natural pixel share (among classes present)."""
        nat = self.natural[self.natural > 0]
        return str(nat.idxmin())

    def summary(self) -> dict[str, Any]:
        """Headline figures as a flat-ish JSON-ready dict."""
        r = self.rarest
        k = self.labels.index(r)
        sh_b, sh_u = self.balanced.shares(), self.uniform.shares()
        ratio = imbalance_ratios(self.counts)
        vs = self.vs_strength.drop_duplicates("strength").set_index("strength")["quality"]
        return {
            "quality_balanced": self.balanced.quality(),
            "quality_uniform": self.uniform.quality(),
            "rarest_class": r,
            "rarest_share_natural": float(self.natural[r]),
            "rarest_share_uniform": float(sh_u[k]),
            "rarest_share_balanced": float(sh_b[k]),
            "imbalance_ratio": float(np.nanmax(ratio.replace(np.inf, np.nan).to_numpy())),
            "n_images": len(self.counts),
            "shares": {
                "natural": {lab: float(self.natural[lab]) for lab in self.labels},
                "uniform": dict(zip(self.labels, map(float, sh_u), strict=True)),
                "balanced": dict(zip(self.labels, map(float, sh_b), strict=True)),
            },
            "presence": {lab: float(v) for lab, v in presence(self.counts).items()},
            "quality_vs_strength": {f"{s:g}": float(q) for s, q in vs.items()},
            "params": self.params,
        }


def analyse(
    dataset: Any,
    patch_size: int = 256,
    strength: float = 1.0,
    n_patches: int = 2000,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    kappa: float = DEFAULT_KAPPA,
    grid: int = DEFAULT_GRID,
    strengths: tuple[float, ...] = STRENGTHS,
) -> ImbalanceResult:
    """Pixel statistics of a dataset and a simulation of uniform vs balanced patch sampling.

    Args:
        dataset: a :class:`lumenkit.data.LumenStoneDataset` with a class map (see :func:`open_dataset`).
        patch_size: patch side in px at the dataset's working scale.
        strength: balancing strength of the main balanced run (0 = uniform, 1 = fully balanced).
        n_patches: patches drawn per simulated run.
        seed: seed of every sampler.
        alpha: map sharpening power.
        kappa: image-choice exponent.
        grid: position-grid stride in px.
        strengths: strengths compared in ``vs_strength``.

    Raises:
        ValueError: for ``n_patches < 1`` or sampler parameters out of range.
    """
    if n_patches < 1:
        raise ValueError(f"n_patches must be ≥ 1, got {n_patches}")
    cm = dataset.class_map
    labels = cm.labels
    counts = pixel_counts(dataset)
    masks = load_masks(dataset, cm)
    k = len(cm)
    kw = {"patch_size": patch_size, "num_classes": k, "alpha": alpha, "kappa": kappa, "grid": grid}
    uniform = UniformSampler(masks, patch_size, k, seed=seed)
    balanced = BalancedSampler(masks, strength=strength, seed=seed, **kw)
    vs_n = pd.concat([simulate(uniform, n_patches, labels, "uniform"),
                      simulate(balanced, n_patches, labels, f"balanced (strength {strength:g})")],
                     ignore_index=True)
    rows = []
    for s in strengths:
        sm = BalancedSampler(masks, strength=s, seed=seed, **kw)
        sm.record_history = False
        for _ in range(n_patches):
            sm.draw()
        q, sh = sm.quality(), sm.shares()
        rows += [{"strength": s, "class": lab, "share": float(sh[j]), "quality": q} for j, lab in enumerate(labels)]
    params = {"data": str(dataset.root), "class_set": list(cm.codes), "scale": dataset.scale,
              "patch_size": patch_size, "strength": strength, "n_patches": n_patches, "seed": seed,
              "alpha": alpha, "kappa": kappa, "grid": balanced.grid}
    return ImbalanceResult(labels, counts, shares(counts), vs_n, pd.DataFrame(rows), balanced, uniform, params)


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _palette(labels: list[str]) -> dict[str, Any]:
    by_label = {m.label: np.array(m.colour) / 255 for m in CATALOGUE.values()}
    return {lab: by_label.get(lab, (0.5, 0.5, 0.5)) for lab in labels}


def plot_shares(res: ImbalanceResult) -> Any:
    """Bar chart: dataset pixel share and image-level presence per class (log share axis). Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    pres = presence(res.counts)
    df = pd.DataFrame({"class": res.labels, "pixel share": res.natural[res.labels].to_numpy(),
                       "images containing it": pres[res.labels].to_numpy()})
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), constrained_layout=True)
    pal = _palette(res.labels)
    sns.barplot(df, x="class", y="pixel share", hue="class", palette=pal, ax=axes[0], legend=False)
    axes[0].set_yscale("log")
    axes[0].set_title("share of labelled pixels (log scale)")
    for i, v in enumerate(df["pixel share"]):
        axes[0].text(i, v, f"{100 * v:.1f}%", ha="center", va="bottom", fontsize=8)
    sns.barplot(df, x="class", y="images containing it", hue="class", palette=pal, ax=axes[1], legend=False)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("fraction of images where the class occurs")
    return fig


def plot_image_shares(res: ImbalanceResult) -> Any:
    """Stacked bars: class share within every image (grouped by deposit when known). Returns the Figure."""
    import matplotlib.pyplot as plt

    sh = image_shares(res.counts)[res.labels]
    if "deposit" in res.counts:
        order = res.counts.sort_values("deposit").index
        sh = sh.loc[order]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(sh) + 2), 3.8), constrained_layout=True)
    pal = _palette(res.labels)
    bottom = np.zeros(len(sh))
    for lab in res.labels:
        ax.bar(range(len(sh)), sh[lab], bottom=bottom, color=pal[lab], label=lab, width=0.9)
        bottom += sh[lab].to_numpy()
    ax.set_xticks(range(len(sh)), sh.index, rotation=90, fontsize=7)
    ax.set_ylabel("share of the image's labelled pixels")
    ax.set_xlim(-0.5, len(sh) - 0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    ax.set_title("class shares per image")
    return fig


def plot_deposit_shares(res: ImbalanceResult) -> Any:
    """Heat map of class shares per deposit (a note when no deposits are known). Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    dep = deposit_shares(res.counts)
    fig, ax = plt.subplots(figsize=(8, 0.5 * max(len(dep), 2) + 1.5), constrained_layout=True)
    if dep.empty:
        ax.text(0.5, 0.5, "no deposits.csv: shares per deposit unavailable", ha="center", va="center")
        ax.set_axis_off()
        return fig
    sns.heatmap(100 * dep[res.labels], annot=True, fmt=".1f", cmap="viridis", ax=ax,
                cbar_kws={"label": "% of labelled pixels"})
    ax.set_title("class shares per deposit (%)")
    return fig


def plot_vs_n(res: ImbalanceResult) -> Any:
    """Served share per class and balancing quality against patches drawn, uniform vs balanced. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    names = list(dict.fromkeys(res.vs_n["sampler"]))
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(5 * (len(names) + 1), 3.8), constrained_layout=True)
    pal = _palette(res.labels)
    for ax, name in zip(axes, names, strict=False):
        d = res.vs_n[res.vs_n["sampler"] == name]
        sns.lineplot(d, x="patches", y="share", hue="class", palette=pal, ax=ax, legend=ax is axes[0])
        ax.set_xscale("log")
        ax.set_ylim(0, None)
        ax.set_title(f"{name}: served share")
    q = res.vs_n.drop_duplicates(["sampler", "patches"])
    sns.lineplot(q, x="patches", y="quality", hue="sampler", ax=axes[-1])
    axes[-1].set_xscale("log")
    axes[-1].set_ylim(0, 1)
    axes[-1].set_title("balancing quality 1 − (max − min)/sum")
    return fig


def plot_vs_strength(res: ImbalanceResult) -> Any:
    """Served share per class and quality after ``n_patches`` against balancing strength. Returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    sns.lineplot(res.vs_strength, x="strength", y="share", hue="class", palette=_palette(res.labels),
                 marker="o", ax=axes[0])
    axes[0].set_title(f"served share after {res.params.get('n_patches')} patches")
    q = res.vs_strength.drop_duplicates("strength")
    sns.lineplot(q, x="strength", y="quality", marker="o", ax=axes[1])
    axes[1].set_ylim(0, 1)
    axes[1].set_title("balancing quality")
    return fig


def plot_coverage(res: ImbalanceResult, dataset: Any, n_images: int = 3, max_size: int = 400) -> Any:
    """Image | balanced coverage | uniform coverage for the images holding most of the rarest class.

    Coverage = number of served patches covering each pixel (from the samplers' histories).  Returns the Figure.
    """
    import matplotlib.pyplot as plt

    k = res.labels.index(res.rarest)
    order = np.argsort(-res.balanced.class_pixels[:, k])[: max(1, n_images)]
    fig, axes = plt.subplots(len(order), 3, figsize=(13, 3.3 * len(order)), squeeze=False, constrained_layout=True)
    for row, i in zip(axes, order, strict=True):
        img = dataset.read_image(int(i))
        f = max(1, int(np.ceil(max(img.shape[:2]) / max_size)))
        row[0].imshow(img[::f, ::f])
        row[0].set_title(f"{dataset.names[i]}: {res.balanced.class_pixels[i, k]} px of {res.rarest}")
        for ax, sm, name in ((row[1], res.balanced, "balanced"), (row[2], res.uniform, "uniform")):
            cov = sm.coverage_map(int(i), max_size=max_size)
            im = ax.imshow(cov, cmap="magma")
            ax.set_title(f"{name}: patches covering each pixel")
            fig.colorbar(im, ax=ax, shrink=0.8)
        for ax in row:
            ax.set_axis_off()
    return fig


# ------------------------------------------------------------------------------------------------
# text and files
# ------------------------------------------------------------------------------------------------
def conclusion(res: ImbalanceResult) -> str:
    """A short plain-language conclusion computed from the results (Markdown)."""
    s = res.summary()
    r = s["rarest_class"]
    common = str(res.natural.idxmax())
    pres = s["presence"][r]
    vs = s["quality_vs_strength"]
    lo_s, hi_s = min(vs, key=float), max(vs, key=float)
    return (
        f"**Imbalance.** The commonest class, {common}, covers {100 * res.natural[common]:.1f} % of the labelled "
        f"pixels; the rarest, {r}, only {100 * s['rarest_share_natural']:.2f} % (a ratio of "
        f"{s['imbalance_ratio']:.0f} : 1), and it occurs in {100 * pres:.0f} % of the {s['n_images']} images.\n\n"
        f"**Sampling.** After {res.params['n_patches']} patches of {res.params['patch_size']} px, uniform patches "
        f"serve {r} at {100 * s['rarest_share_uniform']:.2f} % with balancing quality {s['quality_uniform']:.2f}; "
        f"the balanced sampler (strength {res.params['strength']:g}) serves it at "
        f"{100 * s['rarest_share_balanced']:.2f} % with quality {s['quality_balanced']:.2f} "
        f"(1 = every class served equally). Quality goes from {vs[lo_s]:.2f} at strength {lo_s} to "
        f"{vs[hi_s]:.2f} at strength {hi_s}.\n\n"
        "**Caveat.** A patch cut around a small grain of a rare mineral still brings along the background and "
        "its neighbours, so served shares can approach but never reach perfect balance (quality 1)."
    )


def write_results(out_dir: str | Path, res: ImbalanceResult) -> dict[str, Path]:
    """Write ``imbalance.json`` (summary) and CSV tables into ``out_dir``; returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / "imbalance.json", "pixel_counts": out / "imbalance_pixel_counts.csv",
             "vs_n": out / "imbalance_vs_n.csv", "vs_strength": out / "imbalance_vs_strength.csv"}
    write_json(paths["summary"], res.summary())
    write_text(paths["pixel_counts"], res.counts.to_csv())
    write_text(paths["vs_n"], res.vs_n.to_csv(index=False))
    write_text(paths["vs_strength"], res.vs_strength.to_csv(index=False))
    return paths


def headline(res: ImbalanceResult) -> dict[str, str]:
    """The two figures the report index shows: balancing quality, and the rarest class's natural vs served share."""
    s = res.summary()
    return {
        "balancing quality (balanced / uniform)": f"{s['quality_balanced']:.2f} / {s['quality_uniform']:.2f}",
        f"rarest class {s['rarest_class']}: share natural / served":
            f"{s['rarest_share_natural']:.1%} / {s['rarest_share_balanced']:.1%}",
    }
