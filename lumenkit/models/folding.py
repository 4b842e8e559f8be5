"""BatchNorm folded into the preceding convolutions, for fast inference (same outputs up to rounding)."""

from __future__ import annotations

import copy

from torch import nn

from lumenkit.models.resunet import SegmentationModel


# -- inference-time fusion ------------------------------------------------------------------------
def _fuse_children(module: nn.Module) -> int:
    """Fold every ``Conv2d → BatchNorm2d`` pair of direct children (recursively) in place; returns the count."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    n = 0
    names = list(module._modules)
    for i, name in enumerate(names):
        child = module._modules[name]
        if child is None:
            continue
        nxt = module._modules[names[i + 1]] if i + 1 < len(names) else None
        if type(child) is nn.Conv2d and type(nxt) is nn.BatchNorm2d and nxt.track_running_stats:
            module._modules[name] = fuse_conv_bn_eval(child, nxt)
            module._modules[names[i + 1]] = nn.Identity()
            n += 1
        else:
            n += _fuse_children(child)
    return n


def fuse_for_inference(model: SegmentationModel) -> SegmentationModel:
    """An inference-only copy of ``model`` with every BatchNorm folded into the convolution before it.

    In eval mode ``BN(conv(x)) = γ·(W∗x − μ)/√(σ²+ε) + β`` is itself a convolution with weights
    ``W·γ/√(σ²+ε)`` and bias ``β − γ·μ/√(σ²+ε)``, so each ``conv → BN → ReLU`` becomes ``conv → ReLU``: one
    pass over the activations less per convolution and no separate BN kernel. Outputs equal the eval-mode
    outputs of ``model`` within float rounding (≈1e-6 relative).

    The original is left untouched (its training mode included); the copy is in eval mode, has
    ``requires_grad=False`` everywhere, keeps ``config``, ``mean``, ``std`` and ``output_stride``, and must not be
    trained (it has no BatchNorm left).

    Args:
        model: a lumenkit segmentation model (trained or not; BN running statistics are used).

    Returns:
        The fused copy, on the same device and dtype as ``model``.
    """
    fused = copy.deepcopy(model).eval()
    _fuse_children(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused
