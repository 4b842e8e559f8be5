"""Edge-aware upsampling of class probabilities guided by the full-resolution image (fast guided filter).

The network sees the section at a fraction of its resolution (1/8 of LumenStone's native by default), so the class
probabilities it returns are smooth across every grain boundary; bilinear upsampling keeps them smooth, and each
boundary pixel at full resolution is a guess. Minerals in reflected light differ above all in reflectance, so
their boundaries are edges of the image's brightness. The guided filter (He, Sun and Tang, *Guided image
filtering*, TPAMI 2013) fits, in every window, each class probability as a linear function of the guide's
brightness, ``q = a·I + b``; the fast variant (He and Sun, *Fast guided filter*, 2015) fits ``a`` and ``b`` at the
low resolution the probabilities have and upsamples the two coefficient maps instead of the probabilities: at full
resolution each probability then follows the image's edges, for the price of upsampling twice the channels.

The fit preserves the sum over classes (``Σa = 0, Σb = 1``), so the refined values are still probabilities up to
rounding (they can step slightly outside [0, 1]; the confidence is clipped).

Why by hand: OpenCV's ``ximgproc.guidedFilter`` needs opencv-contrib (~60 MB) and filters at full resolution only
(box filters of every class over every full-resolution pixel); the low-resolution fit is a few average-pooling
calls in PyTorch, which lumenkit already uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lumenkit.errors import ConfigError

_LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of R, G, B in the guide's brightness."""


@dataclass(frozen=True)
class Refine:
    """Settings of the guided upsampling of class probabilities (``--refine``).

    Attributes:
        radius: half-side of the fitting window in px at the model's scale (a window of 2·radius + 1 px).
        eps: regularisation of the fit in squared brightness units (brightness in [0, 1]): edges weaker than
            about √eps in brightness are smoothed over as bilinear upsampling would.

    Raises:
        ConfigError: a radius below 1 or a non-positive eps.
    """

    radius: int = 2
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if int(self.radius) != self.radius or self.radius < 1:
            raise ConfigError(f"refine radius must be a whole number of px ≥ 1, got {self.radius}")
        if not self.eps > 0:
            raise ConfigError(f"refine eps must be positive, got {self.eps}")


def brightness(image: np.ndarray) -> torch.Tensor:
    """``(H, W)`` float32 brightness in [0, 1] of an ``(H, W, 3)`` uint8 RGB image (BT.601 luma)."""
    w = torch.tensor(_LUMA, dtype=torch.float32) / 255.0
    return torch.from_numpy(np.asarray(image, dtype=np.float32)) @ w  # a fresh, writable float copy


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the ``(2r + 1)²`` window of each pixel (windows cut by the border average what they hold)."""
    return F.avg_pool2d(x[None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0]


def guided_coefficients(
    probs: torch.Tensor, guide: torch.Tensor, refine: Refine
) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-averaged coefficients ``(a, b)`` of the guided filter, each ``(K, h, w)``, at the probabilities' size.

    Args:
        probs: ``(K, h, w)`` class probabilities at the model's scale.
        guide: ``(h, w)`` brightness of the image at the same size (the image the network saw).
        refine: window radius and regularisation.

    Raises:
        ValueError: ``guide`` and ``probs`` of different sizes.
    """
    if tuple(guide.shape) != tuple(probs.shape[1:]):
        raise ValueError(f"guide {tuple(guide.shape)} and probabilities {tuple(probs.shape[1:])} differ in size")
    r = int(refine.radius)
    g = guide[None]
    mean_i = _box(g, r)
    var_i = _box(g * g, r) - mean_i**2
    mean_p = _box(probs, r)
    cov = _box(probs * g, r) - mean_i * mean_p
    a = cov / (var_i + refine.eps)
    b = mean_p - a * mean_i
    return _box(a, r), _box(b, r)
