"""A few optimizer steps on painted strokes, in seconds: the inner step of the interactive painting loop.

:func:`lumenkit.training.train` is the reproducible run (validation split, checkpoints, history, time budget);
the painting loop (:class:`lumenkit.workbook.painter.StrokePainter`) needs something smaller: a handful of steps on
the one or few images a user is painting, no validation split to carve from them, the model kept in memory. This
module does that with the training run's own parts — the balanced sampler, the patch augmentation of the
configuration, the segmentation loss and Adam — so the strokes it learns from are drawn and weighted as in a run.
The strokes are saved in the dataset layout as they are painted, so ``lumenkit train --preset finetune --init
RUN/model.pt --data FOLDER`` reproduces the loop's result as a proper run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.models.checkpoint import Checkpoint

if TYPE_CHECKING:
    from lumenkit.training.config import TrainConfig


def finetune_steps(
    ckpt: Checkpoint,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    steps: int = 20,
    config: TrainConfig | None = None,
    seed: int = 0,
) -> Checkpoint:
    """Fine-tune a copy of ``ckpt`` for ``steps`` optimizer steps on images and sparse masks at its scale.

    Args:
        ckpt: the model to start from (left unchanged).
        images: ``(H, W, 3)`` uint8 images at the model's scale.
        masks: ``(H, W)`` LumenStone codes at the same size, 255 where unlabelled (strokes). Codes the model does not
            predict get new head channels (:func:`lumenkit.training.init.adapt_model`).
        steps: optimizer steps.
        config: a :class:`lumenkit.training.TrainConfig` for batch, patch size, learning rate and augmentation
            (default: preset ``finetune``).
        seed: seed of the new head channels and of the patch stream.

    Returns:
        A new :class:`Checkpoint` (``config["interactive"]`` counts the steps taken from the first model).

    Raises:
        ConfigError: no labelled pixel in any mask, or patches larger than the images.
    """
    from lumenkit.data.samplers import BalancedSampler, PatchDataset
    from lumenkit.errors import ConfigError
    from lumenkit.training.config import TrainConfig
    from lumenkit.training.init import adapt_model
    from lumenkit.training.loop import patch_augment
    from lumenkit.training.losses import SegmentationLoss

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_preset("finetune")
    painted = sorted({int(c) for m in masks for c in np.unique(m) if c != IGNORE})
    if not painted:
        raise ConfigError("no stroke painted yet: paint at least one stroke of a mineral, then fine-tune")
    codes = list(ckpt.class_map.codes) + [c for c in painted if c not in ckpt.class_map.codes]
    class_map = ClassMap(codes)
    net, *_ = adapt_model(ckpt.model, ckpt.class_map, class_map, seed)
    index_masks = [class_map.to_index(m, source="painted strokes") for m in masks]
    side = min(min(m.shape) for m in index_masks)
    stride = 2 ** int(net.config["depth"])
    patch = max(stride, min(cfg.patch_size, side // stride * stride))
    if patch > side:
        raise ConfigError(f"the image ({side} px at the model's scale) is smaller than one patch of {patch} px")
    sampler = BalancedSampler(index_masks, patch, len(class_map), strength=1.0, alpha=cfg.alpha, kappa=cfg.kappa,
                              grid=min(cfg.grid, patch), seed=seed)
    sampler.record_history = False
    patches = PatchDataset(list(images), index_masks, sampler, length=steps * cfg.batch_size,
                           augment=patch_augment(cfg), seed=seed)
    loader = torch.utils.data.DataLoader(patches, batch_size=cfg.batch_size)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    loss_fn = SegmentationLoss()
    net.train()
    for batch in loader:
        x = net.normalize(batch["image"])
        loss = loss_fn(net(x), batch["mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    done = int((ckpt.config or {}).get("interactive", {}).get("steps", 0)) + steps
    config_out = {**(ckpt.config or {}), "interactive": {"steps": done, "classes": codes}}
    return Checkpoint(net, class_map, ckpt.scale, [], None, config_out)
