"""Tiled prediction of an array at the model's scale: the tiling spec, the window layout, TTA, resampling back."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lumenkit.errors import ConfigError
from lumenkit.inference.runners import Runner, as_runner
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import SegmentationModel

TTA_MODES: tuple[str, ...] = ("flip", "d4")
"""Test-time augmentation sets: ``flip`` (identity, h-, v-, hv-flip: 4 passes), ``d4`` (flips × rot90: 8 passes)."""

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def tta_transforms(mode: bool | str | None) -> list[Transform]:
    """``(forward, inverse)`` pairs acting on ``(N, C, H, W)`` tensors for a TTA mode.

    Args:
        mode: ``False``/``None`` (identity only), ``True`` or ``"d4"`` (8 dihedral transforms), ``"flip"`` (4).

    Raises:
        ValueError: for an unknown mode.
    """
    if not mode:
        return [(lambda x: x, lambda x: x)]
    mode = "d4" if mode is True else str(mode)
    if mode not in TTA_MODES:
        raise ValueError(f"unknown tta {mode!r}; use False, True, or one of {', '.join(TTA_MODES)}")
    out: list[Transform] = []
    if mode == "flip":
        for dims in ((), (-1,), (-2,), (-2, -1)):
            f = (lambda d: (lambda x: torch.flip(x, d) if d else x))(dims)
            out.append((f, f))
        return out
    for k in range(4):
        for flip in (False, True):
            def fwd(x: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                return torch.rot90(torch.flip(x, (-1,)) if flip else x, k, (-2, -1))

            def inv(y: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                y = torch.rot90(y, -k, (-2, -1))
                return torch.flip(y, (-1,)) if flip else y

            out.append((fwd, inv))
    return out


_LEAST = {"tile": (1, "window side in px at model scale"), "margin": (0, "context px cropped from each window side"),
          "batch": (1, "windows per forward pass")}


@dataclass(frozen=True)
class Tiling:
    """How a whole image is cut into windows for the network, and how often each window is seen (TTA).

    The image (at the model's scale) is reflect-padded by ``margin`` and cut into equal windows of at most ``tile``
    px a side, the fewest that cover it; only each window's core (the window minus ``margin`` on every side) is
    kept, so every kept pixel sees at least ``margin`` pixels of context. Memory grows with ``batch · tile²``.

    Attributes:
        tile: window side in px at model scale, margins included (rounded down to a multiple of the model's
            ``2**depth``).
        margin: context px cropped from each window side (rounded up to a multiple of ``2**depth / 2``).
        batch: windows per forward pass.
        tta: test-time augmentation, probabilities averaged: ``False``, ``True`` or ``"d4"`` (flips × rot90, 8
            passes), ``"flip"`` (4 passes).

    Raises:
        ConfigError: a value out of range (the message names the fix), e.g. ``Tiling(tile=100, margin=64)``.
    """

    tile: int = 768
    margin: int = 64
    batch: int = 1
    tta: bool | str = False

    def __post_init__(self) -> None:
        for name, (least, what) in _LEAST.items():
            value = getattr(self, name)
            try:
                number = operator.index(value)
            except TypeError:
                number = None
            if number is None or isinstance(value, bool) or number < least:
                raise ConfigError(f"Tiling: {name}={value!r} must be a whole number ≥ {least} ({what}), e.g. "
                                  f"{name}={getattr(Tiling, name)}")
            object.__setattr__(self, name, int(number))
        if self.tile <= 2 * self.margin:
            raise ConfigError(f"Tiling: tile={self.tile} leaves no core after cropping margin={self.margin} on both "
                              f"sides; use tile > 2·margin, e.g. tile={_round_up(2 * self.margin + 256, 32)}")
        if not (self.tta is False or self.tta is True or (isinstance(self.tta, str) and self.tta in TTA_MODES)):
            raise ConfigError(f"Tiling: tta={self.tta!r} is no test-time augmentation; use False (none), True or "
                              "'d4' (flips × rot90, 8 passes) or 'flip' (4 passes)")

    def layout(self, height: int, width: int, stride: int) -> Windows:
        """The windows of an ``height × width`` image for a network whose input sides are multiples of ``stride``.

        Window origins are multiples of ``stride``, so results match a single pass over the whole image up to the
        receptive field beyond the margin.

        Raises:
            ConfigError: ``tile`` leaves no core of at least ``stride`` px once the margin is rounded up.
        """
        m = _round_up(self.margin, max(1, stride // 2))
        t = max(stride, (self.tile // stride) * stride)
        core = t - 2 * m
        if core < stride:
            raise ConfigError(
                f"tile={self.tile} leaves no core after cropping margin={self.margin} on both sides; "
                f"use tile ≥ 2·margin + {stride} (e.g. tile={_round_up(2 * m + 4 * stride, stride)})"
            )
        ys, core_y, wh, ph = _axis_layout(height, core, m, stride)
        xs, core_x, ww, pw = _axis_layout(width, core, m, stride)
        return Windows(m, tuple(ys), tuple(xs), (core_y, core_x), (wh, ww), (ph, pw))


@dataclass(frozen=True)
class Windows:
    """Where the windows of one image lie, in px at model scale (see :meth:`Tiling.layout`).

    Attributes:
        margin: context cropped from each window side (the tiling's, rounded up to the network's grid).
        ys, xs: core starts along each axis; window ``(y, x)`` of the padded image holds the core at ``(y, x)``.
        core: ``(height, width)`` of a core (the last along an axis is cut at the image's edge).
        window: ``(height, width)`` of every window fed to the network.
        padded: ``(height, width)`` of the image padded by ``margin`` that the windows are cut from.
    """

    margin: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    core: tuple[int, int]
    window: tuple[int, int]
    padded: tuple[int, int]

    @property
    def origins(self) -> list[tuple[int, int]]:
        """``(y, x)`` of every window, row by row."""
        return [(y, x) for y in self.ys for x in self.xs]


def _axis_layout(length: int, core: int, margin: int, stride: int) -> tuple[list[int], int, int, int]:
    """Core starts along one axis, the core and window lengths, and the padded length (all in pixels).

    The fewest cores of at most ``core`` px cover the axis, shrunk evenly (so a 425-px side with 384-px cores gets
    two 224-px cores, not two 384-px ones). Every start is a multiple of ``stride``, so pooling grids line up with a
    single-pass prediction; ``2 * margin`` must be a multiple of ``stride``.
    """
    n = -(-length // core)
    even = _round_up(-(-length // n), stride)
    starts = [i * even for i in range(n)]
    window = even + 2 * margin
    return starts, even, window, starts[-1] + window


def predict_probs(
    model: SegmentationModel | Checkpoint | Runner,
    image: np.ndarray,
    tile: int = 768,
    margin: int = 64,
    batch: int = 1,
    tta: bool | str = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    *,
    fuse: bool = True,
    runtime: str | None = None,
) -> torch.Tensor:
    """Softmax probabilities ``(K, H, W)`` (float32, CPU) of an image already at the model's scale.

    The image is cut into windows as :class:`Tiling` ``(tile, margin, batch, tta)`` says (see there); memory is
    bounded by ``batch`` windows plus the ``(K, H, W)`` output.

    Args:
        model: a lumenkit segmentation model (never modified: by default its cached fused copy runs, see
            :func:`lumenkit.inference.runners.fused_model`), or a :class:`~lumenkit.inference.runners.Runner` such
            as :class:`lumenkit.inference.OnnxModel`.
        image: ``(H, W, 3)`` uint8 RGB at the model's scale.
        tile: window side in px, margins included (:attr:`Tiling.tile`).
        margin: context px cropped from each window side (:attr:`Tiling.margin`).
        batch: windows per forward pass.
        tta: test-time augmentation (:attr:`Tiling.tta`, see :func:`tta_transforms`).
        device: where to run a torch model (default: the model's device).
        progress: show a tqdm bar over windows.
        fuse: fold BatchNorm into the convolutions (torch models; ``False`` runs the model as it is, in eval mode).
        runtime: ``None`` (the model's own), ``"torch"`` or ``"onnx"`` (see
            :func:`~lumenkit.inference.runners.as_runner`).

    Raises:
        ValueError: a bad image array, or an unknown runtime.
        ConfigError: a bad tiling, e.g. ``tile`` too small for ``margin``.
        CheckpointError: ``runtime="onnx"`` without onnxruntime installed.
    """
    runner = as_runner(model, device=device, fuse=fuse, runtime=runtime)
    check_image(image)
    tiling = Tiling(tile, margin, batch, tta)
    h, w = image.shape[:2]
    lay = tiling.layout(h, w, runner.output_stride)
    m, (core_y, core_x), (wh, ww), (ph, pw) = lay.margin, lay.core, lay.window, lay.padded
    padded = np.pad(image, ((m, ph - h - m), (m, pw - w - m), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    out = torch.empty((runner.classes, h, w), dtype=torch.float32)
    transforms = tta_transforms(tta)
    origins = lay.origins
    with _bar(len(origins), progress) as bar, torch.inference_mode():
        for i in range(0, len(origins), tiling.batch):
            chunk = origins[i : i + tiling.batch]
            prob = _window_probs(runner, np.stack([padded[y : y + wh, x : x + ww] for y, x in chunk]), transforms)
            for j, (y, x) in enumerate(chunk):
                ch, cw = min(core_y, h - y), min(core_x, w - x)
                out[:, y : y + ch, x : x + cw] = prob[j, :, m : m + ch, m : m + cw]
            if bar is not None:
                bar.update(len(chunk))
    return out


def _window_probs(runner: Runner, windows: np.ndarray, transforms: list[Transform]) -> torch.Tensor:
    """Probabilities ``(N, K, h, w)`` on the CPU of ``(N, h, w, 3)`` uint8 windows, averaged over the transforms."""
    x_t = torch.from_numpy(windows).permute(0, 3, 1, 2)  # uint8 NCHW view of NHWC memory (channels-last)
    prob = None
    for fwd, inv in transforms:
        p = inv(runner.probs(fwd(x_t)))
        prob = p if prob is None else prob + p
    assert prob is not None
    if len(transforms) > 1:
        prob = prob / len(transforms)
    return prob.cpu()


@contextlib.contextmanager
def _bar(total: int, enabled: bool) -> Iterator[Any]:
    """A tqdm bar over ``total`` windows (``None`` when not ``enabled``), closed when the block ends."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="tiles", unit="tile", leave=False)
    try:
        yield bar
    finally:
        bar.close()


def check_image(image: Any) -> None:
    """Refuse anything but an ``(H, W, 3)`` uint8 RGB array with a message naming the fix.

    Raises:
        ValueError: a wrong type, shape or dtype, or an empty image.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got a {desc}; read files with lumenkit.data.imageio.read_image"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty (shape {image.shape})")


def _linear_weights(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of bilinear resampling (PyTorch's ``align_corners=False`` convention)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = (src - i0).float()
    return i0, i1, lam


def _along_x(src: torch.Tensor, out_w: int) -> torch.Tensor:
    """``(K, R, w)`` source rows resampled to width ``out_w`` by PyTorch's bilinear kernel (rows unchanged)."""
    if out_w == src.shape[2]:
        return src
    return F.interpolate(src[None], size=(src.shape[1], out_w), mode="bilinear", align_corners=False)[0]


def _row_runs(
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor], a: int, s: int, e: int
) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
    """Runs of output rows ``[s, e)`` that blend the same two source rows, as ``(i, j, u, v, lam)``.

    ``i:j`` are the run's rows relative to ``s``, ``u`` and ``v`` its two source rows relative to ``a``, ``lam`` the
    ``(j - i,)`` blend weights: one broadcast ``torch.lerp`` per run instead of one per output row.
    """
    r0, r1, rl = weights
    lo, hi = r0[s:e].tolist(), r1[s:e].tolist()
    i = 0
    while i < e - s:
        j = i + 1
        while j < e - s and lo[j] == lo[i] and hi[j] == hi[i]:
            j += 1
        yield i, j, lo[i] - a, hi[i] - a, rl[s + i: s + j]
        i = j


def upsample_rows(
    src: torch.Tensor, a: int, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor], s: int, e: int, out_w: int
) -> torch.Tensor:
    """Output rows ``[s, e)`` of the bilinear upsampling of probabilities, from the source rows they read.

    Args:
        src: ``(K, b - a, w)`` source rows ``a`` to ``b`` (at least rows ``r0[s]`` to ``r1[e - 1]``).
        a: index of ``src``'s first row.
        weights: ``(r0, r1, lambda)`` of :func:`_linear_weights` for the whole output height.
        s: first output row.
        e: end (exclusive) of the output rows.
        out_w: output width.

    Each output row depends only on its own two source rows, so strips of any size give the same values:
    :func:`resize_probs` and the streamed mosaic (:mod:`lumenkit.inference.mosaic`) both call this.
    """
    cols = _along_x(src, out_w)
    # along y: the output rows between one pair of source rows blended in one broadcast lerp (no gathered copies
    # of the source rows; the same torch.lerp per element, so the same values as blending row by row)
    out = torch.empty((cols.shape[0], e - s, out_w), dtype=cols.dtype)
    for i, j, u, v, lam in _row_runs(weights, a, s, e):
        torch.lerp(cols[:, u: u + 1], cols[:, v: v + 1], lam.view(1, -1, 1), out=out[:, i:j])
    return out


def upsample_labels(
    src: torch.Tensor, a: int, weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor], s: int, e: int, out_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and confidence of output rows ``[s, e)`` of the bilinear upsampling, without upsampling every class.

    The same values as ``upsample_rows(src, a, weights, s, e, out_w).max(dim=0)`` at a fraction of the cost. Along
    y each output pixel blends two vectors of class probabilities (its two source rows, already interpolated along
    x); where both vectors have their maximum at the same class ``c``, so has every blend of them (a convex
    combination keeps ``p_c ≥ p_j`` for all ``j``), and the blended maximum is the blend of the two maxima. So the
    label there is ``c`` and the confidence one blended channel; only where the two rows' labels differ — along
    class boundaries — are all classes blended and compared, with the same ``torch.lerp`` as
    :func:`upsample_rows`. (In floating point a blend of two near-equal maxima could round the other way; the
    label then follows exact arithmetic.) Written here because no library offers an argmax-aware upsampling.

    Args:
        src: ``(K, b - a, w)`` source rows ``a`` to ``b``, as :func:`upsample_rows`.
        a: index of ``src``'s first row.
        weights: ``(r0, r1, lambda)`` of :func:`_linear_weights` for the whole output height.
        s: first output row.
        e: end (exclusive) of the output rows.
        out_w: output width.

    Returns:
        ``(confidence, indices)``: ``(e - s, out_w)`` float32 maximum probability and uint8 class index.
    """
    cols = _along_x(src, out_w)
    top, arg = cols.max(dim=0)  # per source row: the maximum and its class, (b - a, out_w)
    arg = arg.to(torch.uint8)
    conf = torch.empty((e - s, out_w), dtype=cols.dtype)
    idx = torch.empty((e - s, out_w), dtype=torch.uint8)
    for i, j, u, v, lam in _row_runs(weights, a, s, e):
        w = lam.view(-1, 1)
        torch.lerp(top[u: u + 1], top[v: v + 1], w, out=conf[i:j])
        idx[i:j] = arg[u]
        if u != v:
            xs = torch.nonzero(arg[u] != arg[v]).flatten()
            if 4 * xs.numel() > out_w:  # boundaries everywhere: blending whole rows is cheaper than gathering
                mc, mi = torch.lerp(cols[:, u: u + 1], cols[:, v: v + 1], w.view(1, -1, 1)).max(dim=0)
                conf[i:j], idx[i:j] = mc, mi.to(torch.uint8)
            elif xs.numel():
                mc, mi = torch.lerp(cols[:, u, xs][:, None], cols[:, v, xs][:, None], w.view(1, -1, 1)).max(dim=0)
                conf[i:j, xs] = mc
                idx[i:j, xs] = mi.to(torch.uint8)
    return conf, idx


def confidence_u8(confidence: np.ndarray) -> np.ndarray:
    """Max class probability as 8-bit (× 255, rounded half up): the confidence maps ``predict`` writes."""
    return np.clip(confidence * 255 + 0.5, 0, 255).astype(np.uint8)


def resize_probs(
    probs: torch.Tensor,
    size: tuple[int, int],
    strip: int = 256,
    keep_probs: bool = False,
    guided: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """Bring class probabilities to ``size = (width, height)`` and reduce them to labels and confidence.

    Upsampling is bilinear (separable, PyTorch's ``align_corners=False`` convention), done in strips of ``strip``
    output rows so only one strip of full-resolution probabilities exists at a time (along x with
    ``F.interpolate``, along y by blending whole rows); downsampling averages areas.

    With ``guided = (a, b, guide)`` — the coefficients of :func:`lumenkit.inference.refine.guided_coefficients`
    and the ``(H, W)`` brightness of the image at the output size — upsampling is edge-aware instead: the
    coefficient maps are upsampled the same way and the probabilities are ``a·guide + b`` (the fast guided
    filter); the confidence is then clipped to [0, 1].

    Returns:
        ``(indices, confidence, probs)``: ``(H, W)`` uint8 model indices, ``(H, W)`` float32 max probability,
        and the ``(K, H, W)`` probabilities when ``keep_probs`` (else ``None``).
    """
    k, h, w = probs.shape
    out_w, out_h = size
    if (out_h, out_w) == (h, w):
        conf, idx = probs.max(dim=0)
        return idx.to(torch.uint8).numpy(), conf.numpy(), probs if keep_probs else None
    if out_h <= h and out_w <= w:
        small = F.interpolate(probs[None], size=(out_h, out_w), mode="area")[0]
        conf, idx = small.max(dim=0)
        return idx.to(torch.uint8).numpy(), conf.numpy(), small if keep_probs else None
    weights = _linear_weights(h, out_h)
    r0, r1, _ = weights
    idx_out = np.empty((out_h, out_w), dtype=np.uint8)
    conf_out = np.empty((out_h, out_w), dtype=np.float32)
    full = torch.empty((k, out_h, out_w), dtype=torch.float32) if keep_probs else None
    for s in range(0, out_h, strip):
        e = min(out_h, s + strip)
        a, b = int(r0[s]), int(r1[e - 1]) + 1  # the source rows this strip reads
        if guided is None and full is None:
            conf, idx = upsample_labels(probs[:, a:b], a, weights, s, e, out_w)
            idx_out[s:e] = idx.numpy()
            conf_out[s:e] = conf.numpy()
            continue
        if guided is None:
            part = upsample_rows(probs[:, a:b], a, weights, s, e, out_w)
        else:
            ga, gb, guide = guided
            part = torch.addcmul(upsample_rows(gb[:, a:b], a, weights, s, e, out_w),
                                 upsample_rows(ga[:, a:b], a, weights, s, e, out_w), guide[None, s:e])
        conf, idx = part.max(dim=0)
        if guided is not None:
            conf = conf.clamp_(0.0, 1.0)
        idx_out[s:e] = idx.to(torch.uint8).numpy()
        conf_out[s:e] = conf.numpy()
        if full is not None:
            full[:, s:e] = part
    return idx_out, conf_out, full
