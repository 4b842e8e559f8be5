"""Simulated strokes: sparse labels made from full LumenStone masks, to measure how label-efficient training is.

A mineralogist who labels by hand paints a few thin strokes inside grains of each mineral, not every pixel.
:func:`simulate_strokes` imitates that on a fully labelled mask: strokes of ``width`` px and about ``length`` px along
the medial axis of each class's regions (so they stay inside grains, away from boundaries), the same share of the
budget for every class present (a user strokes every mineral, rare or not), until about ``fraction`` of the image's
pixels are labelled; everything else becomes 255 (unlabelled). :func:`sparse_dataset` writes a copy of a dataset
whose training masks are strokes and whose validation masks stay whole, so a model trained on strokes is scored on
fully labelled images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lumenkit.data.catalogue import IGNORE


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius: radius + 1, -radius: radius + 1]
    return x * x + y * y <= radius * radius + radius


def simulate_strokes(
    mask: np.ndarray, fraction: float, rng: np.random.Generator, width: int = 3, length: int = 40
) -> np.ndarray:
    """Strokes inside the grains of every class of ``mask`` covering about ``fraction`` of its pixels.

    Args:
        mask: ``(H, W)`` LumenStone codes, fully labelled (255 pixels stay unlabelled).
        fraction: share of the image's pixels to label (0.01 = 1 %), split equally between the classes present;
            a class with too little room for its share gives the rest to the others.
        rng: random generator (stroke positions).
        width: stroke width in px.
        length: stroke length in px along the medial axis.

    Returns:
        ``(H, W)`` uint8 mask: the true code on stroke pixels, 255 elsewhere.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    from skimage.morphology import skeletonize

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    codes = [int(c) for c in np.flatnonzero(np.bincount(mask.ravel(), minlength=256)) if c != IGNORE]
    out = np.full(mask.shape, IGNORE, dtype=np.uint8)
    brush = _disk(max(0, width // 2))
    axes, room = {}, {}
    for c in codes:
        region = mask == c
        inner = ndi.binary_erosion(region, brush, border_value=0) if width > 1 else region
        axis = skeletonize(inner if inner.any() else region)
        axes[c] = (axis, region)
        room[c] = int((ndi.binary_dilation(axis, brush) & region).sum())
    budget = fraction * mask.size
    share = {c: 0.0 for c in codes}
    left = [c for c in codes if room[c] > 0]
    remaining = budget
    while left and remaining > 0.5:  # equal shares, what a class cannot take goes to the others
        each = remaining / len(left)
        for c in list(left):
            take = min(each, room[c] - share[c])
            share[c] += take
            remaining -= take
            if room[c] - share[c] < 1:
                left.remove(c)
    for c in codes:
        if share[c] < 1:
            continue
        axis, region = axes[c]
        ys, xs = np.nonzero(axis)
        painted = np.zeros(mask.shape, dtype=bool)
        per_stroke, strokes = 2.0 * width * length, 0  # a first guess; then the measured pixels per stroke
        for _ in range(12):  # add strokes until the class's share is reached (strokes overlap at junctions)
            have = int(painted.sum())
            need = share[c] - have
            if need < 0.5 * per_stroke:
                break
            n = max(1, int(need / per_stroke))
            pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
            strokes += len(pick)
            seeds = np.ones(mask.shape, dtype=bool)
            seeds[ys[pick], xs[pick]] = False
            near = ndi.distance_transform_edt(seeds) <= length / 2
            stroke = ndi.binary_dilation(axis & near, brush) & region
            painted |= stroke
            per_stroke = max(1.0, painted.sum() / strokes)
        out[painted] = c
    return out


def sparse_dataset(
    src: str | Path, dst: str | Path, fraction: float, seed: int = 0, validation: object | None = None,
    width: int = 3, length: int = 40,
) -> dict[str, float]:
    """A copy of dataset ``src`` at ``dst`` whose training masks are simulated strokes (validation masks whole).

    Images are linked (or copied where links are impossible); ``dataset.yaml`` says ``labels: sparse`` and fixes
    the validation split (the images of ``validation``, default the seed-0 split) so the copy is scored on whole
    masks; the ``test`` split is not copied.

    Args:
        src: dataset folder in LumenStone layout.
        dst: new folder (must not exist).
        fraction: share of each training image's pixels labelled (see :func:`simulate_strokes`).
        seed: seed of the strokes (image ``i`` uses ``(seed, i)``).
        validation: a :class:`lumenkit.data.ValidationSplit` (default ``ValidationSplit()``).
        width: stroke width in px at the stored resolution.
        length: stroke length in px at the stored resolution.

    Returns:
        ``{"labelled_fraction": ..., "images": ...}`` over the training (non-validation) images.

    Raises:
        ConfigError: ``dst`` exists.
        OutputPathError: ``dst`` cannot be written.
        DatasetNotFoundError, ...: as :class:`lumenkit.data.LumenStoneDataset` for ``src``.
    """
    from lumenkit.data.datasets import DatasetInfo, LumenStoneDataset, ValidationSplit
    from lumenkit.data.imageio import save_image
    from lumenkit.lab.copies import finish_copy, link_or_copy, start_copy

    validation = validation if validation is not None else ValidationSplit()
    val = LumenStoneDataset(src, "val", validation=validation)
    train = LumenStoneDataset(src, "train")
    dst = start_copy(dst)
    labelled = total = 0
    for i, name in enumerate(train.names):
        link_or_copy(train.image_paths[i], dst / "imgs" / "train" / train.image_paths[i].name)
        mask = train.read_mask(i)
        if name not in val.names:
            mask = simulate_strokes(mask, fraction, np.random.default_rng([seed, i]), width, length)
            labelled += int((mask != IGNORE).sum())
            total += mask.size
        save_image(mask, dst / "masks" / "train" / f"{name}.png")
    info = DatasetInfo.read(src)
    info.labels, info.validation = "sparse", tuple(sorted(val.names))
    meta = info.to_dict()
    meta["strokes"] = {"fraction": fraction, "seed": seed, "width": width, "length": length, "source": str(src)}
    finish_copy(src, dst, meta, train.names)
    return {"labelled_fraction": labelled / max(total, 1), "images": len(train) - len(val)}
