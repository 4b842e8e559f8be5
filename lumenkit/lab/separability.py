"""What separates two minerals at each model scale: colour, texture or context, measured on labelled pixels.

S2's pentlandite (flames and grains inside pyrrhotite, of similar colour) is the class the models miss. Before a
recipe is chosen for it, this study asks the pixels: sampled from both classes' labelled pixels of every image at
each candidate scale, how well does a classifier that sees only

* ``colour`` — the pixel's RGB,
* ``+texture`` — plus the local spread of brightness (standard deviation in 5×5 and 11×11 windows) and the
  gradient magnitude,
* ``+context`` — plus the mean colour of the surroundings (33×33 and 97×97 windows: about a network's receptive
  field, in pixels at that scale)

tell them apart, scored by balanced accuracy and ROC AUC out of fold, images grouped so that no image is in both
the training and the scoring folds. Beside it, the resolution ceiling: the IoU of each of the two classes when the
true mask is taken to that scale and back (:func:`lumenkit.lab.studies.scale_ceiling`), i.e. how much of the class
survives the scale at all.

The classifier is scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier` (non-linear, class
weights balanced): a measure of what the features carry, not a model to use. Features are hand-built with
:mod:`scipy.ndimage` filters because what is asked is exactly which named cue carries the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from lumenkit.data.catalogue import mineral
from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.errors import ConfigError

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "colour": ("R", "G", "B"),
    "+texture": ("R", "G", "B", "std5", "std11", "grad"),
    "+context": ("R", "G", "B", "std5", "std11", "grad", "R33", "G33", "B33", "R97", "G97", "B97"),
}
"""Feature sets, each adding to the one before."""


def pixel_features(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel features of an RGB image: colour, local texture and the mean colour of the surroundings.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        Name → (H, W) float32 map, names as in :data:`FEATURE_SETS`: ``R``/``G``/``B`` (0–1), ``std5``/``std11``
        (standard deviation of brightness, the channel mean, in 5×5 / 11×11 windows), ``grad`` (Sobel gradient
        magnitude of brightness smoothed with σ = 1 px), ``R33`` … ``B97`` (mean colour in 33×33 / 97×97 windows).
    """
    rgb = image.astype(np.float32) / 255.0
    lum = rgb.mean(axis=2)
    out = {c: rgb[..., k] for k, c in enumerate("RGB")}
    for w in (5, 11):
        m = ndimage.uniform_filter(lum, w, mode="reflect")
        m2 = ndimage.uniform_filter(lum * lum, w, mode="reflect")
        out[f"std{w}"] = np.sqrt(np.maximum(m2 - m * m, 0.0))
    smooth = ndimage.gaussian_filter(lum, 1.0)
    out["grad"] = np.hypot(ndimage.sobel(smooth, 0), ndimage.sobel(smooth, 1)).astype(np.float32)
    for w in (33, 97):
        for k, c in enumerate("RGB"):
            out[f"{c}{w}"] = ndimage.uniform_filter(rgb[..., k], w, mode="reflect")
    return out


def _codes(a: str | int, b: str | int) -> tuple[int, int, str, str]:
    ma, mb = mineral(a), mineral(b)
    if ma.code == mb.code:
        raise ConfigError(f"{ma.label} against itself: give two different minerals")
    return ma.code, mb.code, ma.label, mb.label


def sample_pixels(data: str | Path, a: str | int, b: str | int, scale: float, per_image: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """Features of up to ``per_image`` random labelled pixels of each of minerals ``a`` and ``b`` per training image.

    Args:
        data: dataset folder in LumenStone layout (its ``train`` split, every image).
        a: the first mineral (LumenStone label or code, e.g. ``"Pn"``).
        b: the second mineral (e.g. ``"Po"``).
        scale: working scale relative to native ×100 (images and masks resampled as the training loader does).
        per_image: pixels drawn per class and image (all of them where fewer).
        seed: seed of the draw.

    Returns:
        One row per pixel: ``image`` (name), ``is_a`` (bool) and every feature of :func:`pixel_features`.

    Raises:
        UnknownClassError: ``a`` or ``b`` is not a LumenStone mineral.
        ConfigError: equal minerals; neither class in any image.
        DatasetNotFoundError, BadImageError, BadMaskError: as :class:`LumenStoneDataset` raises them.
    """
    code_a, code_b, la, lb = _codes(a, b)
    ds = LumenStoneDataset(data, "train", scale=scale)
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(len(ds)):
        mask = ds.load_mask(i)
        picks = []
        for code in (code_a, code_b):
            ys, xs = np.nonzero(mask == code)
            if len(ys) > per_image:
                keep = rng.choice(len(ys), per_image, replace=False)
                ys, xs = ys[keep], xs[keep]
            picks.append((ys, xs, code == code_a))
        if not any(len(ys) for ys, _, _ in picks):
            continue
        feats = pixel_features(ds.read_image(i))
        for ys, xs, is_a in picks:
            if len(ys):
                parts.append(pd.DataFrame({"image": ds.names[i], "is_a": is_a,
                                           **{k: v[ys, xs] for k, v in feats.items()}}))
    if not parts:
        raise ConfigError(f"{data}: no pixel of {la} or {lb} in the training masks; choose minerals of this class set")
    return pd.concat(parts, ignore_index=True)


def separability(samples: pd.DataFrame, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold balanced accuracy and ROC AUC of telling ``is_a`` from not, per feature set.

    Args:
        samples: rows of :func:`sample_pixels`.
        folds: image-grouped folds (fewer when fewer images hold both classes).
        seed: seed of the classifier.

    Returns:
        One row per feature set of :data:`FEATURE_SETS`: ``features``, ``balanced_accuracy``, ``auc``, ``n_a``,
        ``n_b``, ``images``.

    Raises:
        ConfigError: one of the classes has no sampled pixel, or fewer than two images hold pixels.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import GroupKFold

    y = samples["is_a"].to_numpy(bool)
    groups = samples["image"].to_numpy()
    n_groups = len(np.unique(groups))
    if y.all() or not y.any() or n_groups < 2:
        raise ConfigError("both minerals need sampled pixels in at least two images to measure separability")
    k = min(folds, n_groups)
    rows = []
    for name, cols in FEATURE_SETS.items():
        x = samples[list(cols)].to_numpy(np.float32)
        prob = np.zeros(len(y))
        for fit, test in GroupKFold(n_splits=k).split(x, y, groups):
            if y[fit].all() or not y[fit].any():
                prob[test] = y[fit].mean()
                continue
            clf = HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=seed)
            clf.fit(x[fit], y[fit])
            prob[test] = clf.predict_proba(x[test])[:, 1]
        rows.append({"features": name, "balanced_accuracy": balanced_accuracy_score(y, prob >= 0.5),
                     "auc": roc_auc_score(y, prob), "n_a": int(y.sum()), "n_b": int((~y).sum()),
                     "images": n_groups})
    return pd.DataFrame(rows)


def pair_study(data: str | Path, a: str | int = "Pn", b: str | int = "Po",
               scales: Sequence[float] = (0.5, 0.25, 0.125), per_image: int = 2000, seed: int = 0) -> pd.DataFrame:
    """:func:`separability` of ``a`` against ``b`` at each scale, with each class's resolution ceiling there.

    Args:
        data: dataset folder in LumenStone layout (its ``train`` split).
        a: the first mineral (label or code).
        b: the second mineral (label or code).
        scales: model scales to test, relative to native ×100.
        per_image: pixels drawn per class and image.
        seed: seed of the draw and the classifier.

    Returns:
        One row per scale and feature set: ``scale``, ``features``, ``balanced_accuracy``, ``auc``, ``n_a``,
        ``n_b``, ``images``, ``ceiling_iou_A`` and ``ceiling_iou_B`` (A, B the labels: the IoU a perfect model at
        that scale could reach for each class, over every training image).

    Raises:
        UnknownClassError, ConfigError: as :func:`sample_pixels` and :func:`separability`.
    """
    from lumenkit.lab.studies import scale_ceiling

    _, _, la, lb = _codes(a, b)
    out = []
    for s in scales:
        ceiling = scale_ceiling(data, s, split="train")
        iou = dict(zip(ceiling.labels, ceiling.iou, strict=True))
        table = separability(sample_pixels(data, a, b, s, per_image, seed), seed=seed)
        table.insert(0, "scale", s)
        table[f"ceiling_iou_{la}"] = iou.get(la, np.nan)
        table[f"ceiling_iou_{lb}"] = iou.get(lb, np.nan)
        out.append(table)
    return pd.concat(out, ignore_index=True)
