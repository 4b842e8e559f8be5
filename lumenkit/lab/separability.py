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


def _draw(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` of the pixel positions ``(ys, xs)``, drawn without replacement (all of them where fewer)."""
    if len(ys) <= n:
        return ys, xs
    keep = rng.choice(len(ys), n, replace=False)
    return ys[keep], xs[keep]


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
            ys, xs = _draw(rng, ys, xs, per_image)
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


def separability(samples: pd.DataFrame, folds: int = 5, seed: int = 0,
                 feature_sets: dict[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Out-of-fold balanced accuracy and ROC AUC of telling ``is_a`` from not, per feature set.

    Args:
        samples: rows of :func:`sample_pixels`.
        folds: image-grouped folds (fewer when fewer images hold both classes).
        seed: seed of the classifier.
        feature_sets: name → columns of ``samples`` (default :data:`FEATURE_SETS`).

    Returns:
        One row per feature set: ``features``, ``balanced_accuracy``, ``auc``, ``n_a``,
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
    for name, cols in (FEATURE_SETS if feature_sets is None else feature_sets).items():
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


def bright_phase(image: np.ndarray, min_share: float = 0.02) -> np.ndarray:
    """Per-channel median grey level of an image's bright phase: a reference level for its exposure and colour.

    In a polished section of ore the bright phase is the ore minerals against dark gangue and resin (so its level
    moves a little with the mix of ore minerals an image holds: the price of a correction that needs no labels).
    It is the pixels whose brightness (the channel mean) is at or above Otsu's threshold
    (:func:`skimage.filters.threshold_otsu`), or the brightest ``min_share`` of the pixels when Otsu's class is
    smaller (a section with little ore).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        min_share: the smallest share of the pixels the bright phase holds.

    Returns:
        ``(3,)`` float64, 0–255 grey levels.

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` or ``min_share`` is outside (0, 1].
    """
    from skimage.filters import threshold_otsu

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need an (H, W, 3) RGB image, got shape {image.shape}")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    lum = image.astype(np.float32).mean(axis=2)
    cut = float(threshold_otsu(lum)) if lum.max() > lum.min() else float(lum.min())
    cut = min(cut, float(np.quantile(lum, 1 - min_share)))
    return np.median(image[lum >= cut].reshape(-1, 3), axis=0).astype(np.float64)


def normalise_levels(image: np.ndarray, target: Sequence[float], reference: np.ndarray | None = None) -> np.ndarray:
    """``image`` with each channel scaled so that its bright phase's median becomes ``target`` (rounded, clipped).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        target: the bright phase's grey level after the correction, per channel (0–255).
        reference: the image's bright-phase levels (default :func:`bright_phase` of ``image``).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    ref = bright_phase(image) if reference is None else np.asarray(reference, dtype=np.float64)
    gain = np.asarray(target, dtype=np.float64) / np.maximum(ref, 1.0)
    return np.clip(np.rint(image * gain.astype(np.float32)), 0, 255).astype(np.uint8)


def _auc(a: np.ndarray, b: np.ndarray) -> float:
    """Probability that a value of ``a`` exceeds one of ``b`` (ties count half): the ROC AUC of ``a`` above ``b``."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b]))


def levels_study(data: str | Path, a: str | int = "Pn", b: str | int = "Po", scale: float = 0.25,
                 per_image: int = 2000, seed: int = 0, min_pixels: int = 50,
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Is mineral ``a`` told from ``b`` by brightness within an image, across images, or after a per-image correction?

    Two minerals of close reflectance (pentlandite, pyrrhotite) may be ordered consistently inside every image while
    each image's exposure and white balance move both more than their difference: then a model that sees a
    window's colour alone confuses them, and dividing each image by its bright phase (:func:`bright_phase`,
    :func:`normalise_levels`) restores what the within-image comparison shows.

    Args:
        data: dataset folder in LumenStone layout (its ``train`` split, every image).
        a: the first mineral (label or code).
        b: the second mineral.
        scale: working scale relative to native ×100.
        per_image: pixels drawn per class and image for the classifiers.
        seed: seed of the draw and the classifiers.
        min_pixels: images with fewer pixels of either mineral at ``scale`` are left out.

    Returns:
        ``(images, summary, spread)``.

        ``images``: one row per image holding both: ``image``, ``n_A``, ``n_B``, ``lum_A``, ``lum_B`` (median
        brightness, the channel mean, 0–255), ``bright`` (the bright phase's brightness), ``lum_A_corrected``,
        ``lum_B_corrected`` (the same after :func:`normalise_levels` to the images' mean bright phase, per
        channel), ``auc_within`` (the AUC of brightness telling A from B inside the image).

        ``summary``: one row per cue — ``brightness, pooled over images``, ``brightness ÷ bright phase, pooled``
        (per-channel correction), ``brightness within each image (pairs of one image)`` (the AUC over pairs of
        pixels from the same image: the per-image AUCs weighted by ``n_A × n_B``), ``brightness within each image,
        mean over images``, ``colour`` and ``colour ÷ bright phase`` (the classifier of :func:`separability`, out of
        fold by image) — with ``auc``, ``balanced_accuracy`` (classifiers only) and ``images``.

        ``spread``: one row per ``statistic`` of the two minerals' median brightness (grey levels) — the gap
        A − B (mean and sd over images), the share of images where A is brighter, each mineral's sd between
        images, the mean gap over the minerals' pooled sd (Cohen's d) and over its own sd — ``raw`` and
        ``corrected``.

    Raises:
        UnknownClassError: ``a`` or ``b`` is not a LumenStone mineral.
        ConfigError: equal minerals; fewer than two images hold both.
        DatasetNotFoundError, BadImageError, BadMaskError: as :class:`LumenStoneDataset` raises them.
    """
    code_a, code_b, la, lb = _codes(a, b)
    ds = LumenStoneDataset(data, "train", scale=scale)
    rng = np.random.default_rng(seed)
    kept: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []  # name, bright phase, A's and B's pixels
    samples = []
    for i in range(len(ds)):
        mask = ds.load_mask(i)
        where = [np.nonzero(mask == code) for code in (code_a, code_b)]
        if min(len(w[0]) for w in where) < min_pixels:
            continue
        image = ds.read_image(i)
        ref = np.maximum(bright_phase(image), 1.0)
        kept.append((ds.names[i], ref, *(image[w].astype(np.float32) for w in where)))
        for k, (ys, xs) in enumerate(where):
            ys, xs = _draw(rng, ys, xs, per_image)
            rgb = image[ys, xs].astype(np.float32) / 255.0
            samples.append(pd.DataFrame({"image": ds.names[i], "is_a": k == 0,
                                         **{c: rgb[:, j] for j, c in enumerate("RGB")},
                                         **{f"{c}n": rgb[:, j] * 255.0 / ref[j] for j, c in enumerate("RGB")}}))
    if len(kept) < 2:
        raise ConfigError(f"{data}: fewer than two training images hold {min_pixels}+ px of both {la} and {lb} at "
                          f"scale {scale}; choose minerals that occur together or a finer scale")
    goal = np.mean([ref for _, ref, _, _ in kept], axis=0)
    rows, pooled = [], {"raw": ([], []), "corrected": ([], [])}
    for name, ref, pa, pb in kept:
        raw = [p.mean(axis=1) for p in (pa, pb)]
        corrected = [(p * (goal / ref).astype(np.float32)).mean(axis=1) for p in (pa, pb)]
        for k in (0, 1):
            pooled["raw"][k].append(raw[k])
            pooled["corrected"][k].append(corrected[k])
        rows.append({"image": name, "n_A": len(pa), "n_B": len(pb), "lum_A": float(np.median(raw[0])),
                     "lum_B": float(np.median(raw[1])), "bright": float(ref.mean()),
                     "lum_A_corrected": float(np.median(corrected[0])),
                     "lum_B_corrected": float(np.median(corrected[1])), "auc_within": _auc(*raw)})
    images = pd.DataFrame(rows)
    pairs = images["n_A"].astype(float) * images["n_B"]

    def levels(col_a: str, col_b: str) -> dict[str, float]:
        gap, sd_a, sd_b = images[col_a] - images[col_b], images[col_a].std(), images[col_b].std()
        return {"gap": gap.mean(), "gap_sd": gap.std(), "share": (gap > 0).mean(), "sd_a": sd_a, "sd_b": sd_b,
                "d": gap.mean() / np.sqrt((sd_a**2 + sd_b**2) / 2), "paired": gap.mean() / gap.std()}

    raw, cor = levels("lum_A", "lum_B"), levels("lum_A_corrected", "lum_B_corrected")
    named = {"gap": f"{la} − {lb} brightness, mean over images", "gap_sd": f"{la} − {lb} brightness, sd between images",
             "share": f"share of images where {la} is brighter", "sd_a": f"{la} brightness, sd between images",
             "sd_b": f"{lb} brightness, sd between images",
             "d": "mean gap ÷ the minerals' pooled sd between images", "paired": "mean gap ÷ its sd between images"}
    spread = pd.DataFrame([{"statistic": text, "raw": raw[k], "corrected": cor[k]} for k, text in named.items()])
    drawn = pd.concat(samples, ignore_index=True)
    classifiers = separability(drawn, seed=seed, feature_sets={"colour": ("R", "G", "B"),
                                                               "colour ÷ bright phase": ("Rn", "Gn", "Bn")})
    summary = pd.DataFrame(
        [{"cue": "brightness, pooled over images", "auc": _auc(*(np.concatenate(p) for p in pooled["raw"]))},
         {"cue": "brightness ÷ bright phase, pooled",
          "auc": _auc(*(np.concatenate(p) for p in pooled["corrected"]))},
         {"cue": "brightness within each image (pairs of one image)",
          "auc": float((images["auc_within"] * pairs).sum() / pairs.sum())},
         {"cue": "brightness within each image, mean over images", "auc": float(images["auc_within"].mean())}]
        + [{"cue": r.features, "auc": r.auc, "balanced_accuracy": r.balanced_accuracy}
           for r in classifiers.itertuples()])
    summary["images"] = len(images)
    return images, summary, spread


def levels_dataset(src: str | Path, dst: str | Path, target: Sequence[float] | None = None) -> dict[str, object]:
    """A copy of dataset ``src`` at ``dst`` whose images are corrected by :func:`normalise_levels` (masks linked).

    Training and scoring a recipe on the copy measures what a per-image colour correction is worth before it is
    built into the product. Images are written as PNG (lossless); ``dataset.yaml`` records the correction. Each
    image is decoded twice (measured, then corrected) so that one image at a time is held in memory.

    Args:
        src: dataset folder in LumenStone layout (its ``train`` split; ``test`` is not copied).
        dst: new folder (must not exist).
        target: the bright phase's grey level after correction, per channel (default: the mean of the images'
            bright-phase levels, so the copy keeps the dataset's average look).

    Returns:
        ``{"target": [r, g, b], "images": n, "levels": {name: [r, g, b]}}``, the levels measured before correction.

    Raises:
        ConfigError: ``dst`` exists.
        OutputPathError: ``dst`` cannot be written.
        DatasetNotFoundError, BadImageError: as :class:`LumenStoneDataset` for ``src``.
    """
    from lumenkit.data.datasets import DatasetInfo
    from lumenkit.data.imageio import save_image
    from lumenkit.lab.copies import check_copy, finish_copy, link_or_copy, start_copy

    ds = LumenStoneDataset(src, "train")
    check_copy(dst)  # refused (exists, unwritable) before the images are measured; nothing made until they are
    levels = {name: bright_phase(ds.read_image(i)) for i, name in enumerate(ds.names)}
    goal = np.mean(list(levels.values()), axis=0) if target is None else np.asarray(target, dtype=np.float64)
    dst = start_copy(dst)
    for i, name in enumerate(ds.names):
        save_image(normalise_levels(ds.read_image(i), goal, levels[name]), dst / "imgs" / "train" / f"{name}.png")
        link_or_copy(ds.mask_paths[i], dst / "masks" / "train" / ds.mask_paths[i].name)
    meta = DatasetInfo.read(src).to_dict()
    meta["levels"] = {"target": [round(float(v), 2) for v in goal], "source": str(src),
                      "method": "each channel x target / median of the bright phase (Otsu on brightness)"}
    finish_copy(src, dst, meta, ds.names)
    return {"target": [float(v) for v in goal], "images": len(levels),
            "levels": {k: [float(x) for x in v] for k, v in levels.items()}}


def colour_lookalikes(data: str | Path, target: str | int = "Pn", among: Sequence[str | int] = ("Ccp", "Po"),
                      scale: float = 0.25, per_image: int = 2000, seed: int = 0,
                      min_pixels: int = 200) -> pd.DataFrame:
    """Which mineral ``target``'s pixels in each image look like by colour alone, learnt from the other images.

    A network that reads colour calls a mineral by the colour it had in the images it learnt from. Where one image's
    illumination or white balance differs, its ``target`` pixels can carry the colour another mineral has elsewhere,
    and colour learnt from the other images cannot tell them apart. This study asks that per image: a colour
    classifier (RGB only; :class:`~sklearn.ensemble.HistGradientBoostingClassifier`, classes balanced) learns
    ``target`` and ``among`` from the sampled pixels of every *other* image (leave one image out) and calls this
    image's ``target`` pixels. Beside it, each image's median colour of ``target`` and its blue-to-red ratio (the
    tint that separates the yellow of chalcopyrite from the paler sulphides).

    Args:
        data: dataset folder in LumenStone layout (its ``train`` split, every image).
        target: the mineral whose pixels are called (label or code, e.g. ``"Pn"``).
        among: the other minerals the classifier knows (labels or codes).
        scale: working scale relative to native ×100 (images and masks resampled as the training loader does).
        per_image: pixels drawn per mineral and image.
        seed: seed of the draw and the classifier.
        min_pixels: images with fewer ``target`` pixels at ``scale`` get no row (they still teach the others);
            at least 1.

    Returns:
        One row per image holding ``min_pixels`` or more of ``target``: ``image``, ``n`` (its ``target`` pixels
        at ``scale``), ``R``, ``G``, ``B`` (the median of its sampled ``target`` pixels, 0–255), ``blue_red``
        (B ÷ R of the medians), and ``as_<label>`` for ``target`` and each of ``among`` (the share of the image's
        sampled ``target`` pixels called that mineral; NaN where the other images hold ``target`` and nothing
        else of ``among``, so there is nothing to call it against); last, a row ``image = "pooled"`` with the
        shares weighted by ``n`` (over the images that have them) and the medians over the images.

    Raises:
        UnknownClassError: a label is not a LumenStone mineral.
        ConfigError: ``among`` empty, ``target`` among ``among`` or a mineral twice; ``min_pixels`` below 1;
            fewer than two images hold ``target`` or none holds ``min_pixels`` of it.
        DatasetNotFoundError, BadImageError, BadMaskError: as :class:`LumenStoneDataset` raises them.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    minerals = [mineral(target), *(mineral(m) for m in among)]
    codes = [m.code for m in minerals]
    if len(set(codes)) != len(codes) or len(codes) < 2:
        raise ConfigError("give a target mineral and at least one other, each once")
    if min_pixels < 1:
        raise ConfigError(f"min_pixels must be at least 1, got {min_pixels}")
    labels = [m.label for m in minerals]
    ds = LumenStoneDataset(data, "train", scale=scale)
    rng = np.random.default_rng(seed)
    drawn: list[pd.DataFrame] = []
    counts: dict[str, int] = {}
    for i in range(len(ds)):
        mask = ds.load_mask(i)
        where = [np.nonzero(mask == code) for code in codes]
        if not any(len(w[0]) for w in where):
            continue
        image = ds.read_image(i)
        counts[ds.names[i]] = len(where[0][0])
        for k, (ys, xs) in enumerate(where):
            ys, xs = _draw(rng, ys, xs, per_image)
            if len(ys):
                rgb = image[ys, xs].astype(np.float32)
                drawn.append(pd.DataFrame({"image": ds.names[i], "k": k, "R": rgb[:, 0], "G": rgb[:, 1],
                                           "B": rgb[:, 2]}))
    samples = pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame(columns=["image", "k", "R", "G", "B"])
    called = [name for name, n in counts.items() if n >= min_pixels]
    if sum(n > 0 for n in counts.values()) < 2 or not called:
        raise ConfigError(f"{data}: fewer than two training images hold {labels[0]} at scale {scale} "
                          f"(or none {min_pixels}+ px); choose a mineral of this class set or a finer scale")
    rows = []
    for name in called:
        own = samples[(samples["image"] == name) & (samples["k"] == 0)]
        rest = samples[samples["image"] != name]
        x_own = own[["R", "G", "B"]].to_numpy(np.float32)
        present = np.unique(rest["k"].to_numpy())
        if len(present) == 1:  # the other images hold the target only: nothing to call its pixels against
            shares = np.full(len(codes), np.nan)
        else:
            clf = HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=seed)
            clf.fit(rest[["R", "G", "B"]].to_numpy(np.float32), rest["k"].to_numpy())
            picked = clf.predict(x_own)
            shares = np.array([(picked == k).mean() for k in range(len(codes))])
        med = np.median(x_own, axis=0)
        rows.append({"image": name, "n": counts[name], "R": med[0], "G": med[1], "B": med[2],
                     "blue_red": med[2] / max(med[0], 1.0), **{f"as_{la}": s for la, s in zip(labels, shares,
                                                                                             strict=True)}})
    table = pd.DataFrame(rows)
    weights = table["n"].to_numpy(np.float64)
    pooled = {"image": "pooled", "n": int(weights.sum()),
              **{c: float(table[c].median()) for c in ("R", "G", "B", "blue_red")},
              **{f"as_{la}": _weighted_mean(table[f"as_{la}"].to_numpy(np.float64), weights) for la in labels}}
    return pd.concat([table, pd.DataFrame([pooled])], ignore_index=True)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Mean of ``values`` weighted by ``weights`` over the finite values (NaN when none is)."""
    ok = np.isfinite(values)
    return float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")
