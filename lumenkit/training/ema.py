"""Exponential moving average of a model's weights and BatchNorm statistics."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of a model's parameters and buffers (BatchNorm running statistics).

    ``update(net, step)`` moves the average towards ``net`` by ``1 − d`` with ``d = min(decay, (1 + step) /
    (10 + step))``; integer buffers (BatchNorm's batch counters) are copied.  ``model`` is a separate copy in
    eval mode without gradients, ready to validate, save or export.

    Raises:
        ValueError: ``decay`` outside ``(0, 1)``.
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(net).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _pairs(self, net: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, ...]]]:
        mine = [*self.model.parameters()] + [b for b in self.model.buffers() if b.is_floating_point()]
        theirs = [*net.parameters()] + [b for b in net.buffers() if b.is_floating_point()]
        ints = [(a, b) for a, b in zip(self.model.buffers(), net.buffers(), strict=True) if not a.is_floating_point()]
        return mine, theirs, ints

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> float:
        """Fold ``net``'s current weights into the average after optimizer step ``step`` (1-based); returns ``d``."""
        d = min(self.decay, (1 + step) / (10 + step))
        mine, theirs, ints = self._pairs(net)
        torch._foreach_lerp_(mine, [t.detach() for t in theirs], 1.0 - d)
        for a, b in ints:
            a.copy_(b)
        return d

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (CPU tensors) for ``last.pt``."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore an average saved by :meth:`state_dict`."""
        self.model.load_state_dict(state)
