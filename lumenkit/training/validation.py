"""Whole-image validation during training: the validation images at the model scale, loss and confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.evaluation.metrics import confusion_matrix
from lumenkit.inference.tiling import Tiling
from lumenkit.models.resunet import SegmentationModel
from lumenkit.training.config import TrainConfig


@dataclass
class ValidationData:
    """The validation images of a run, loaded once: at the model scale for the loss, at the stored one for IoU."""

    names: list[str]
    images: list[np.ndarray]  # at the model scale
    masks: list[np.ndarray]  # model indices at the model scale (for the loss)
    stored: list[np.ndarray]  # model indices at the stored resolution (for IoU)


def load_validation(cfg: TrainConfig, class_map: ClassMap, scale: float) -> ValidationData:
    """The images of ``cfg``'s validation split at ``scale``, their masks as model indices at both resolutions.

    Raises:
        ConfigError, DatasetNotFoundError, BadImageError, BadMaskError, UnknownClassError: as the dataset does.
    """
    from lumenkit.data.datasets import LumenStoneDataset

    ds = LumenStoneDataset(cfg.data, "val", scale=scale, class_set=list(class_map.codes), validation=cfg.validation)
    out = ValidationData([], [], [], [])
    for k in range(len(ds)):
        s = ds.load(k)
        out.names.append(s["name"])
        out.images.append(s["image"])
        out.masks.append(class_map.to_index(s["mask"], source=str(ds.mask_paths[k])))
        out.stored.append(class_map.to_index(ds.read_mask(k), source=str(ds.mask_paths[k])))
    return out


def validate(
    model: SegmentationModel,
    val: ValidationData,
    num_classes: int,
    tile: int = Tiling.tile,
    margin: int = Tiling.margin,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Whole-image validation: loss at the model scale, confusion matrix at the masks' stored resolution.

    Images are shared among processes (``i % world_size == rank``) and the sums all-reduced.

    Returns:
        ``{"loss": mean NLL per labelled pixel, "cm": (K, K) int64 summed confusion matrix}``.
    """
    from lumenkit.inference.predict import predict_probs, resize_probs

    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    nll, npx = 0.0, 0
    for i in range(rank, len(val.images), world_size):
        probs = predict_probs(model, val.images[i], tile=tile, margin=margin, batch=2)
        m = torch.from_numpy(val.masks[i].astype(np.int64))
        valid = m != IGNORE
        p_true = probs.gather(0, m.clamp(max=num_classes - 1)[None])[0][valid]
        nll += float(-(p_true.clamp(min=1e-8).log()).sum())
        npx += int(valid.sum())
        h, w = val.stored[i].shape
        idx, _, _ = resize_probs(probs, (w, h))
        cm += confusion_matrix(idx, val.stored[i], num_classes)
    if world_size > 1:
        t = torch.tensor([nll, float(npx)], dtype=torch.float64)
        c = torch.from_numpy(cm)
        dist.all_reduce(t)
        dist.all_reduce(c)
        nll, npx, cm = float(t[0]), int(t[1]), c.numpy()
    return {"loss": nll / max(npx, 1), "cm": cm}
