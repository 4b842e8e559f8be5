"""The paper's residual U-Net (encoder → decoder → head), a model factory, FLOP counts and checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

BLOCKS: tuple[str, ...] = ("residual", "plain", "separable", "inverted")
"""Convolution block kinds (:class:`ConvBlock`): ``residual`` (the paper's two-branch block), ``plain`` (two 3×3
convs), ``separable`` (the paper's block with depthwise-separable 3×3 convs), ``inverted`` (MobileNetV2's inverted
residuals beside the paper's 1×1 shortcut)."""

CONTEXTS: tuple[str, ...] = ("none", "aspp")
"""Context modules a :class:`ResUNet` can put at its bottleneck."""


DEFAULT_MEAN: tuple[float, float, float] = (127.5, 127.5, 127.5)


"""Default per-channel input mean (0–255 units) when training did not measure one."""


DEFAULT_STD: tuple[float, float, float] = (64.0, 64.0, 64.0)


"""Default per-channel input standard deviation (0–255 units)."""


# -- building blocks ------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _separable_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3×3 conv→BN→ReLU, then pointwise 1×1 conv→BN→ReLU (about 1/8 of a 3×3 conv's FLOPs)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


INVERTED_EXPANSION = 4
"""Channel expansion of the ``inverted`` block's hidden layer (MobileNetV2 uses 6; 4 keeps its FLOPs near the paper's
block at these widths)."""


def _inverted_bn(cin: int, cout: int, expansion: int = INVERTED_EXPANSION) -> nn.Sequential:
    """MobileNetV2's inverted residual body (the linear projection ends it without ReLU).

    1×1 expansion to ``expansion × cin`` →BN→ReLU, depthwise 3×3 →BN→ReLU, 1×1 projection to ``cout`` →BN.
    """
    hidden = expansion * cin
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
    )


class ConvBlock(nn.Module):
    """The paper's block: ``(1×1 conv→BN→ReLU) + (3×3 conv→BN→ReLU→3×3 conv→BN→ReLU)``.

    With ``kind="plain"`` only the 3×3 branch is used (a classic U-Net block); with ``kind="separable"`` the two
    3×3 convolutions are depthwise-separable (a lighter block with the paper's 1×1 shortcut); with
    ``kind="inverted"`` each is an inverted residual (MobileNetV2's: 1×1 expansion ×4, depthwise 3×3, linear 1×1
    projection; the second with its identity shortcut), again beside the paper's 1×1 shortcut.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kind: ``"residual"``, ``"plain"``, ``"separable"`` or ``"inverted"``.

    Raises:
        ValueError: for an unknown ``kind``.
    """

    def __init__(self, in_channels: int, out_channels: int, kind: str = "residual") -> None:
        super().__init__()
        if kind not in BLOCKS:
            raise ValueError(f"unknown block {kind!r}; valid blocks: {', '.join(BLOCKS)}")
        self.inner = None
        if kind == "separable":
            self.body = nn.Sequential(_separable_bn_relu(in_channels, out_channels),
                                      _separable_bn_relu(out_channels, out_channels))
        elif kind == "inverted":
            self.body = _inverted_bn(in_channels, out_channels)
            self.inner = _inverted_bn(out_channels, out_channels)  # same channels: identity shortcut around it
        else:
            self.body = nn.Sequential(
                _conv_bn_relu(in_channels, out_channels, 3), _conv_bn_relu(out_channels, out_channels, 3)
            )
        self.shortcut = _conv_bn_relu(in_channels, out_channels, 1) if kind != "plain" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``(N, C_in, H, W)``; returns ``(N, C_out, H, W)``."""
        y = self.body(x)
        if self.inner is not None:
            y = y + self.inner(y)
        return y if self.shortcut is None else y + self.shortcut(x)


class UNetEncoder(nn.Module):
    """Encoder: ``depth`` levels plus a bottleneck, channels ``width·(1, 2, 4, …, 2**depth)``, 2×2 max-pool.

    Attributes:
        out_channels: channels of each returned feature map, finest first (``depth + 1`` entries).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, depth: int = 4, block: str = "residual") -> None:
        super().__init__()
        self.out_channels: tuple[int, ...] = tuple(width * 2**i for i in range(depth + 1))
        chans = (in_channels, *self.out_channels)
        self.stages = nn.ModuleList(ConvBlock(chans[i], chans[i + 1], block) for i in range(depth + 1))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 1, 2, …, ``2**depth`` (the last is the bottleneck)."""
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


class ContextModule(nn.Module):
    """Context at the bottleneck: DeepLab's atrous spatial pyramid.

    The features, 3×3 convolutions dilated 2 and 4, and the window's mean feature, fused by a 1×1 convolution.
    The mean is over the window the network sees (tiled prediction: each window's own), so the module adds the
    context of a whole window to every position without changing the U-Net's resolution. Every operation exports
    to ONNX (the pooling is global).

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = max(8, channels // 4)
        self.branches = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)),
            *(nn.Sequential(nn.Conv2d(channels, c, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(c),
                            nn.ReLU(inplace=True)) for d in (2, 4)),
        ])
        self.pooled = nn.Sequential(nn.Conv2d(channels, c, 1), nn.ReLU(inplace=True))  # no BN on a 1×1 map
        self.fuse = nn.Sequential(nn.Conv2d(channels + 4 * c, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` → ``(N, C, H, W)`` with the window's context mixed in."""
        g = self.pooled(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3])
        return self.fuse(torch.cat([x, *(b(x) for b in self.branches), g], dim=1))


class UNetDecoder(nn.Module):
    """Decoder: per level a 2×2 transposed convolution, concatenation with the skip, then the same block."""

    def __init__(self, encoder_channels: Sequence[int], block: str = "residual") -> None:
        super().__init__()
        ch = list(encoder_channels)
        levels = list(reversed(range(len(ch) - 1)))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in levels)
        self.blocks = nn.ModuleList(ConvBlock(2 * ch[i], ch[i], block) for i in levels)
        self.out_channels = ch[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Fuse encoder features (finest first) into a full-resolution map of ``out_channels``."""
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1]), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return x


class SegmentationModel(nn.Module):
    """Encoder → decoder → 1×1 head; subclasses build the parts, ``forward`` is fixed.

    Inputs are float tensors already normalised with :meth:`normalize`; outputs are class logits.

    Attributes:
        config: keyword arguments that rebuild this model with :func:`create_model` (includes ``arch``).
        mean, std: per-channel input normalisation in 0–255 units.
        output_stride: input height and width must be multiples of this (``2**depth``).
    """

    encoder: nn.Module
    decoder: nn.Module
    head: nn.Module
    config: dict[str, Any]
    output_stride: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the padded shape when ``x`` does not fit the model.

        Raises:
            ValueError: wrong rank, wrong channel count, or sides not divisible by ``output_stride``.
        """
        cin = self.config["in_channels"]
        if x.ndim != 4 or x.shape[1] != cin:
            raise ValueError(f"expected input of shape (N, {cin}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.output_stride
        if h % s or w % s:
            ph, pw = -(-h // s) * s, -(-w // s) * s
            raise ValueError(
                f"input height and width must be divisible by {s} (2**depth); got {h}×{w}. "
                f"Pad the input to {ph}×{pw} (e.g. torch.nn.functional.pad(x, (0, {pw - w}, 0, {ph - h}), "
                "mode='reflect')) or use lumenkit.inference.predict.predict_image, which tiles and pads for you"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes, H, W)`` for a normalised input ``(N, in_channels, H, W)``.

        Raises:
            ValueError: if the input shape does not fit (see :meth:`check_input_shape`).
        """
        self.check_input_shape(x)
        feats = self.encoder(x)
        context = getattr(self, "context", None)
        if context is not None:
            feats = [*feats[:-1], context(feats[-1])]
        return self.head(self.decoder(feats))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float, normalised copy of a uint8 (or 0–255 float) batch ``(N, C, H, W)``."""
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in eval mode under ``torch.inference_mode()`` (the model is switched to eval)."""
        self.eval()
        return self.forward(x)


class ResUNet(SegmentationModel):
    """Khvostikov et al.'s residual U-Net.

    Args:
        in_channels: input channels (3 for RGB).
        classes: output classes (logits per class).
        width: channels of the first level, ``f``; levels have ``f·(1, 2, 4, 8, 16)`` at depth 4.
        depth: encoder levels before the bottleneck (input sides must be multiples of ``2**depth``).
        block: ``"residual"`` (the paper's), ``"plain"``, ``"separable"`` (depthwise-separable 3×3 convolutions) or
            ``"inverted"`` (MobileNetV2's inverted residuals, :class:`ConvBlock`).
        context: ``"none"`` (the paper's) or ``"aspp"`` (:class:`ContextModule` at the bottleneck).
        mean: per-channel input mean, 0–255 units (stored with the model so inference can normalise).
        std: per-channel input standard deviation, 0–255 units.

    Raises:
        ValueError: for non-positive sizes, a mean/std of the wrong length, a ``std`` value ≤ 0, an unknown block,
            or an unknown context.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 7,
        width: int = 16,
        depth: int = 4,
        block: str = "residual",
        context: str = "none",
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("classes", classes), ("width", width), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need {in_channels} values (one per input channel)")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.config = {
            "arch": "resunet",
            "in_channels": in_channels,
            "classes": classes,
            "width": width,
            "depth": depth,
            "block": block,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        self.output_stride = 2**depth
        if context not in CONTEXTS:
            raise ValueError(f"unknown context {context!r}; valid: {', '.join(CONTEXTS)}")
        if context != "none":  # recorded only when used: configs of the paper's network stay as they were
            self.config["context"] = context
        self.encoder = UNetEncoder(in_channels, width, depth, block)
        self.context = ContextModule(self.encoder.out_channels[-1]) if context == "aspp" else None
        self.decoder = UNetDecoder(self.encoder.out_channels, block)
        self.head = nn.Conv2d(self.decoder.out_channels, classes, 1)


ARCHITECTURES: dict[str, Callable[..., SegmentationModel]] = {"resunet": ResUNet}


"""Model constructors by name, for :func:`create_model`."""


def create_model(arch: str = "resunet", **kwargs: Any) -> SegmentationModel:
    """Build a model by architecture name.

    Args:
        arch: architecture name (see :data:`ARCHITECTURES`).
        **kwargs: the architecture's arguments (``in_channels``, ``classes``, ``width``, ``depth``, ...).

    Raises:
        KeyError: for an unknown architecture; the message lists the valid names.
    """
    try:
        ctor = ARCHITECTURES[arch.lower()]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; valid names: {', '.join(sorted(ARCHITECTURES))}") from None
    return ctor(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: SegmentationModel, height: int = 1024, width: int = 1024) -> float:
    """Floating-point operations of one forward pass on an ``height × width`` input (2 per multiply-add).

    Counts convolutions and transposed convolutions (everything else is a few percent); runs the model once
    on the meta device, so it is fast and allocates nothing.

    Args:
        model: the model whose architecture (its ``config``) is counted; its weights are not used.
        height: input height in px.
        width: input width in px.

    Returns:
        FLOPs (divide by ``height * width / 1e6`` for FLOP per megapixel).

    Raises:
        ValueError: ``height`` or ``width`` is not a multiple of the model's ``output_stride`` (``2**depth``).
    """
    total = 0.0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        w = mod.weight
        if isinstance(mod, nn.ConvTranspose2d):  # every input pixel scatters a k×k×C_out stamp
            total += 2.0 * inp[0].numel() / inp[0].shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
        else:
            total += 2.0 * out.numel() / out.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]

    cfg = dict(model.config)
    meta = create_model(cfg.pop("arch"), **cfg).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            meta.eval()(torch.empty(1, cfg["in_channels"], height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total
