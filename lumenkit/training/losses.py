"""Training losses: cross-entropy (ignore 255, optional class weights) with an optional soft Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lumenkit.data.catalogue import IGNORE


# -- losses ---------------------------------------------------------------------------------------
class SegmentationLoss(nn.Module):
    """Cross-entropy (ignore 255, optional class weights) plus an optional soft Dice term.

    A batch whose pixels are all 255 gives a loss of 0 (with a gradient graph), never NaN, so every
    process in distributed training still takes part in the gradient all-reduce.
    """

    def __init__(self, weight: torch.Tensor | None = None, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight if weight is not None else None)
        self.dice_weight = float(dice_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``(N, K, H, W)`` logits against ``(N, H, W)`` int64 indices (255 ignored)."""
        logits = logits.float()
        valid = target != IGNORE
        w = self.weight
        total = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, reduction="sum")
        denom = (w[target[valid]].sum() if w is not None else valid.sum()).clamp(min=1)
        loss = total / denom
        if self.dice_weight > 0:
            k = logits.shape[1]
            prob = logits.softmax(1) * valid.unsqueeze(1)
            onehot = F.one_hot(target.clamp(max=k - 1) * valid, k).permute(0, 3, 1, 2) * valid.unsqueeze(1)
            inter = (prob * onehot).sum((0, 2, 3))
            card = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
            present = onehot.sum((0, 2, 3)) > 0
            dice = (2 * inter + 1) / (card + 1)
            # masked mean over the classes present (no boolean indexing: static shapes for torch.compile)
            dl = ((1 - dice) * present).sum() / present.sum().clamp(min=1)
            loss = loss + self.dice_weight * dl
        return loss
