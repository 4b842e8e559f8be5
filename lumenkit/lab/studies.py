"""One-off studies behind published figures: scale ceiling, exposure spread, settings of the guided refinement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import IGNORE
from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
from lumenkit.data.imageio import resize_mask
from lumenkit.evaluation.metrics import (
    Scores,
    confusion_matrix,
    sum_confusions,
)


def scale_ceiling(
    data: str | Path,
    scale: float,
    split: str = "val",
    class_set: str | list[int] | None = None,
    validation: ValidationSplit | None = None,
) -> Scores:
    """What a perfect model working at ``scale`` could score: the true masks taken to ``scale`` and back.

    Each mask of the split is read at ``scale`` (relative to native ×100, as :class:`LumenStoneDataset` loads it:
    block majority for integer factors), brought back to the stored size by nearest-neighbour sampling and compared
    with the stored mask, summed over the split as :func:`evaluate` does.  Its mean IoU bounds from above what
    resolution alone lets a model at that scale reach (boundary pixels and grains thinner than a pixel are lost);
    a model's probabilities are brought back bilinearly, so it can do slightly better on boundaries.

    Args:
        data: dataset folder in LumenStone layout.
        scale: the model scale to test, relative to native (e.g. 0.25, 0.125).
        split: split to read (``val``/``fit`` are carved from ``train`` by ``validation``).
        class_set: class set or codes (default: the dataset's).
        validation: the validation images carved from ``train`` (default ``ValidationSplit()``: 10 images, seed 0,
            fold 0).

    Returns:
        :class:`lumenkit.evaluation.metrics.Scores` of the summed confusion matrix (rows: stored masks).

    Raises:
        ConfigError: ``validation`` out of range; dataset errors as in :class:`LumenStoneDataset`.
    """
    validation = validation if validation is not None else ValidationSplit()
    ds = LumenStoneDataset(data, split, scale=scale, class_set=class_set, validation=validation)
    cmap = ds.classes
    mats = []
    for i in range(len(ds)):
        stored = cmap.to_index(ds.read_mask(i), source=str(ds.mask_paths[i]))
        low = cmap.to_index(ds.load(i)["mask"], source=str(ds.mask_paths[i]))
        back = resize_mask(low, (stored.shape[1], stored.shape[0]))
        back = np.where(back == IGNORE, stored, back)  # an unlabelled block: no verdict, count it as right
        mats.append(confusion_matrix(back, stored, len(cmap)))
    return Scores(sum_confusions(mats), cmap.labels)


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


def refine_sweep(
    data: str | Path,
    model: str | Path,
    settings: list[tuple[int, float]],
    split: str = "fit",
    validation: ValidationSplit | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Mean IoU and pixel accuracy of bilinear against guided upsampling (:mod:`lumenkit.inference.refine`).

    The network runs once per image (at the model's scale, as ``lumenkit evaluate`` runs it); its probabilities are
    then brought to the mask's resolution bilinearly and with each ``(radius, eps)`` setting, guided by the image at
    the mask's resolution, and scored there. Run it on the ``fit`` split (the model's training images) to choose a
    setting without looking at the validation images that report it.

    Args:
        data: dataset folder in LumenStone layout.
        model: checkpoint.
        settings: ``(radius, eps)`` pairs to try.
        split: split to score (``fit``: training images of the model's validation split).
        validation: the validation split (default: the model's own).
        limit: score only the first ``limit`` images of the split.

    Returns:
        One row per setting (``bilinear`` first): ``setting``, ``radius``, ``eps``, ``mean_iou``,
        ``pixel_accuracy``, then the IoU of each class.
    """
    from dataclasses import asdict

    from lumenkit.inference.refine import Refine, brightness, guided_coefficients
    from lumenkit.inference.tiling import Tiling, predict_probs, resize_probs
    from lumenkit.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(model)
    validation = validation if validation is not None else ValidationSplit.of_model(ckpt)
    ds = LumenStoneDataset(data, split, class_set=ckpt.class_map.codes, validation=validation)
    cmap = ckpt.class_map
    names = ["bilinear", *(f"r={r}, eps={e:g}" for r, e in settings)]
    mats: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        true = cmap.to_index(ds.read_mask(i), source=str(ds.mask_paths[i]))
        size = (true.shape[1], true.shape[0])
        small = ds.read_image(i, scale=ckpt.scale)
        probs = predict_probs(ckpt, small, **asdict(Tiling()))
        mats["bilinear"].append(confusion_matrix(resize_probs(probs, size)[0], true, len(cmap)))
        guide = brightness(ds.read_image(i, scale=ds.stored_scale))
        low = brightness(small)
        for name, (r, e) in zip(names[1:], settings, strict=True):
            ga, gb = guided_coefficients(probs, low, Refine(radius=r, eps=e))
            mats[name].append(confusion_matrix(resize_probs(probs, size, guided=(ga, gb, guide))[0], true, len(cmap)))
    rows = []
    for name, (r, e) in zip(names, [(0, 0.0), *settings], strict=True):
        sc = Scores(sum_confusions(mats[name]), cmap.labels)
        rows.append({"setting": name, "radius": r, "eps": e, "mean_iou": sc.mean_iou, "pixel_accuracy":
                     sc.pixel_accuracy, **dict(zip(cmap.labels, sc.iou, strict=True))})
    return pd.DataFrame(rows)
