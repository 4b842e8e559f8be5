"""Whole-image prediction: resample to the model's scale, tiles with cropped margins, TTA, back to input size."""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import resize_image, target_size
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import SegmentationModel, fuse_for_inference
from lumenkit.runtime.heap import retained_heap

if TYPE_CHECKING:
    from lumenkit.inference.onnx import OnnxModel

RUNTIMES: tuple[str, ...] = ("torch", "onnx")
"""Inference back ends: PyTorch (fused, channels-last) and ONNX Runtime (``pip install onnxruntime``)."""

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


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _unwrap(model: torch.nn.Module) -> SegmentationModel:
    inner = getattr(model, "module", model)  # DistributedDataParallel / DataParallel
    if not isinstance(inner, SegmentationModel):
        raise TypeError(f"expected a lumenkit SegmentationModel or Checkpoint, got {type(model).__name__}")
    return inner


# -- runners: one small adapter per back end --------------------------------------------------------
@runtime_checkable
class Runner(Protocol):
    """What tiled prediction needs from a network, whatever runs it.

    Attributes:
        output_stride: input height and width must be multiples of this.
        classes: number of output classes ``K``.
    """

    output_stride: int
    classes: int

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K, H, W)`` float32 (CPU or the runner's device) of uint8 ``(N, 3, H, W)``."""
        ...


_CACHE: weakref.WeakKeyDictionary[SegmentationModel, dict[str, tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def _state_key(model: SegmentationModel) -> tuple[tuple[int, int, int], ...] | None:
    """Identity, storage and in-place version of every parameter and buffer (``None`` if untrackable)."""
    try:
        return tuple((id(t), t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
    except RuntimeError:  # inference tensors have no version counter: never cache
        return None


def derived_model(model: SegmentationModel, kind: str, build: Callable[[SegmentationModel], Any]) -> Any:
    """``build(model)``, cached per model object until its weights change or it is put back into training.

    The cache holds one entry per ``kind`` (e.g. the fused copy, an ONNX Runtime session) and is keyed weakly,
    so it dies with the model. An entry is rebuilt when any parameter or buffer was replaced or modified in
    place (an optimizer step, ``load_state_dict``, BN statistics updated by a training forward pass), and
    whenever the model is in training mode at call time.

    Args:
        model: the source model.
        kind: cache slot name, one per kind of derived object.
        build: makes the derived object from ``model``.
    """
    slots = _CACHE.setdefault(model, {})
    if model.training:  # put back into training: whatever was derived may be stale
        slots.clear()
    key = _state_key(model)
    hit = slots.get(kind)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    obj = build(model)
    if key is not None and not model.training:
        slots[kind] = (key, obj)
    return obj


def fused_model(model: SegmentationModel, channels_last: bool = True) -> SegmentationModel:
    """The inference copy of ``model`` used by prediction: BN folded into convs, channels-last, cached.

    See :func:`lumenkit.models.resunet.fuse_for_inference` (the folding) and :func:`derived_model` (the caching).
    """
    def build(m: SegmentationModel) -> SegmentationModel:
        fused = fuse_for_inference(m)
        return fused.to(memory_format=torch.channels_last) if channels_last else fused

    return derived_model(model, "fused-cl" if channels_last else "fused", build)


class TorchRunner:
    """Run a lumenkit model with PyTorch: uint8 batch → normalise → network → softmax.

    Args:
        model: a lumenkit segmentation model (or a DDP/DataParallel wrapper of one).
        device: where to run (default: the model's device).
        fuse: use the cached fused, channels-last copy (see :func:`fused_model`); ``False`` runs ``model`` itself,
            switched to eval mode for each call and then restored.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None, fuse: bool = True) -> None:
        self.model = _unwrap(model)
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.fuse = bool(fuse)
        self.output_stride = self.model.output_stride
        self.classes = int(self.model.config["classes"])
        self._net = fused_model(self.model).to(self.device) if self.fuse else None

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K, H, W)`` float32 on the runner's device of uint8 ``(N, 3, H, W)``."""
        x = x.to(self.device)
        with torch.inference_mode():
            if self._net is not None:
                z = self._net.normalize(x).contiguous(memory_format=torch.channels_last)
                return torch.softmax(self._net(z).float(), dim=1)
            m = self.model
            was_training = m.training
            m.eval()
            try:
                return torch.softmax(m(m.normalize(x)).float(), dim=1)
            finally:
                m.train(was_training)


def as_runner(
    model: SegmentationModel | Checkpoint | Runner | torch.nn.Module,
    device: str | torch.device | None = None,
    fuse: bool = True,
    runtime: str | None = None,
) -> Runner:
    """A :class:`Runner` for a model: torch models get a :class:`TorchRunner`, runners pass through.

    Args:
        model: a lumenkit model (or its checkpoint, or a DDP/DataParallel wrapper), or anything with ``.probs``,
            ``.output_stride`` and ``.classes`` (e.g. :class:`lumenkit.inference.OnnxModel`).
        device: torch device (torch models only).
        fuse: fold BatchNorm into convolutions (torch models only).
        runtime: ``None`` (the model's own), ``"torch"``, or ``"onnx"`` (a torch model is exported in memory once
            and run by ONNX Runtime; the session is cached like the fused copy).

    Raises:
        ValueError: an unknown runtime, or ``runtime="torch"`` for an ONNX model.
        CheckpointError: ``runtime="onnx"`` without onnxruntime installed.
        TypeError: ``model`` is none of the above.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if isinstance(model, Checkpoint):
        model = model.model
    if isinstance(model, Runner) and not isinstance(model, torch.nn.Module):
        if runtime == "torch" and not isinstance(model, TorchRunner):
            raise ValueError("runtime='torch' needs a PyTorch checkpoint (model.pt), not an ONNX model")
        return model
    if runtime == "onnx":
        from lumenkit.inference.onnx import OnnxModel

        return derived_model(_unwrap(model), "onnx", OnnxModel.from_model)
    return TorchRunner(model, device=device, fuse=fuse)


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

    The image is reflect-padded by ``margin`` and cut into equal windows of at most ``tile`` px a side (the
    fewest that cover it); only each window's core (the window minus ``margin`` on every side) is kept, so every
    kept pixel sees at least ``margin`` pixels of context. Window origins are multiples of ``2**depth``, so results
    match a single pass over the whole image up to the receptive field beyond the margin. Memory is bounded by
    ``batch`` windows plus the ``(K, H, W)`` output.

    Args:
        model: a lumenkit segmentation model (never modified: by default its cached fused copy runs, see
            :func:`fused_model`), or a :class:`Runner` such as :class:`lumenkit.inference.OnnxModel`.
        image: ``(H, W, 3)`` uint8 RGB at the model's scale.
        tile: window side in pixels fed to the network (rounded down to a multiple of ``2**depth``).
        margin: context pixels cropped from each window side (rounded up to a multiple of ``2**depth / 2``).
        batch: windows per forward pass.
        tta: test-time augmentation (see :func:`tta_transforms`); probabilities are averaged.
        device: where to run a torch model (default: the model's device).
        progress: show a tqdm bar over windows.
        fuse: fold BatchNorm into the convolutions (torch models; ``False`` runs the model as it is, in eval mode).
        runtime: ``None`` (the model's own), ``"torch"`` or ``"onnx"`` (see :func:`as_runner`).

    Raises:
        ValueError: a bad image array, ``tile`` too small for ``margin``, or an unknown runtime.
        CheckpointError: ``runtime="onnx"`` without onnxruntime installed.
    """
    runner = as_runner(model, device=device, fuse=fuse, runtime=runtime)
    _check_image(image)
    stride = runner.output_stride
    m = _round_up(max(0, int(margin)), max(1, stride // 2))
    t = max(stride, (int(tile) // stride) * stride)
    core = t - 2 * m
    if core < stride:
        raise ValueError(
            f"tile={tile} leaves no core after cropping margin={margin} on both sides; "
            f"use tile ≥ 2·margin + {stride} (e.g. tile={_round_up(2 * m + 4 * stride, stride)})"
        )
    h, w = image.shape[:2]
    ys, core_y, wh, ph = _axis_layout(h, core, m, stride)
    xs, core_x, ww, pw = _axis_layout(w, core, m, stride)
    padded = np.pad(image, ((m, ph - h - m), (m, pw - w - m), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    out = torch.empty((runner.classes, h, w), dtype=torch.float32)
    transforms = tta_transforms(tta)
    origins = [(y, x) for y in ys for x in xs]
    step = max(1, int(batch))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(origins), desc="tiles", unit="tile", leave=False)
    try:
        with torch.inference_mode():
            for i in range(0, len(origins), step):
                chunk = origins[i : i + step]
                win = np.stack([padded[y : y + wh, x : x + ww] for y, x in chunk])
                x_t = torch.from_numpy(win).permute(0, 3, 1, 2)  # uint8 NCHW view of NHWC memory (channels-last)
                prob = None
                for fwd, inv in transforms:
                    p = inv(runner.probs(fwd(x_t)))
                    prob = p if prob is None else prob + p
                assert prob is not None
                if len(transforms) > 1:
                    prob = prob / len(transforms)
                prob = prob.cpu()
                for j, (y, x) in enumerate(chunk):
                    ch, cw = min(core_y, h - y), min(core_x, w - x)
                    out[:, y : y + ch, x : x + cw] = prob[j, :, m : m + ch, m : m + cw]
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out


def _check_image(image: Any) -> None:
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


def resize_probs(
    probs: torch.Tensor, size: tuple[int, int], strip: int = 256, keep_probs: bool = False
) -> tuple[np.ndarray, np.ndarray, torch.Tensor | None]:
    """Bring class probabilities to ``size = (width, height)`` and reduce them to labels and confidence.

    Upsampling is bilinear (separable, PyTorch's ``align_corners=False`` convention), done in strips of ``strip``
    output rows so only one strip of full-resolution probabilities exists at a time (along x with
    ``F.interpolate``, along y by blending whole rows); downsampling averages areas.

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
    r0, r1, rl = _linear_weights(h, out_h)
    idx_out = np.empty((out_h, out_w), dtype=np.uint8)
    conf_out = np.empty((out_h, out_w), dtype=np.float32)
    full = torch.empty((k, out_h, out_w), dtype=torch.float32) if keep_probs else None
    for s in range(0, out_h, strip):
        e = min(out_h, s + strip)
        a, b = int(r0[s]), int(r1[e - 1]) + 1  # the source rows this strip reads
        src = probs[:, a:b]
        # along x: PyTorch's bilinear kernel (rows kept as they are: scale 1 on y is the identity)
        cols = src if out_w == w else F.interpolate(src[None], size=(b - a, out_w), mode="bilinear",
                                                    align_corners=False)[0]
        part = torch.lerp(cols[:, r0[s:e] - a], cols[:, r1[s:e] - a], rl[s:e].view(1, -1, 1))  # along y
        conf, idx = part.max(dim=0)
        idx_out[s:e] = idx.to(torch.uint8).numpy()
        conf_out[s:e] = conf.numpy()
        if full is not None:
            full[:, s:e] = part
    return idx_out, conf_out, full


def load_model(path: str | Path) -> Checkpoint | OnnxModel:
    """Read a model for prediction: a lumenkit checkpoint (``model.pt``) or an exported ``.onnx`` file.

    Raises:
        CheckpointError: a missing, corrupt or foreign file, or an ``.onnx`` file without onnxruntime installed.
    """
    if Path(path).suffix.lower() == ".onnx":
        from lumenkit.inference.onnx import load_onnx

        return load_onnx(path)
    return load_checkpoint(path)


def predict_image(
    model_or_ckpt: SegmentationModel | Checkpoint | OnnxModel | str | Path,
    image: np.ndarray,
    input_scale: float | None = None,
    *,
    model_scale: float | None = None,
    class_map: ClassMap | None = None,
    tile: int = 768,
    margin: int = 64,
    batch: int = 1,
    tta: bool | str = False,
    output_size: tuple[int, int] | None = None,
    return_probs: bool = False,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = False,
    fuse: bool = True,
    runtime: str | None = None,
    retain_heap: bool = True,
) -> dict[str, Any]:
    """Predict a whole image at the model's scale and return results at the input's resolution.

    Args:
        model_or_ckpt: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel` (or the path of
            a ``model.pt`` or ``model.onnx``), or a bare model.
        image: ``(H, W, 3)`` uint8 RGB.
        input_scale: scale of ``image`` relative to native ×100 (1.0 = 3396×2547); default: the model's scale.
        model_scale: scale to predict at (default: the checkpoint's; for a bare model, ``input_scale``).
        class_map: maps model indices to LumenStone codes (default: the checkpoint's; a bare model without one
            returns model indices as "codes").
        tile: window side in pixels at model scale, including margins (memory grows with ``batch · tile²``).
        margin: context pixels cropped from each window side.
        batch: windows per forward pass.
        tta: test-time augmentation: ``False``, ``True``/``"d4"`` (8 passes) or ``"flip"`` (4 passes).
        output_size: ``(width, height)`` of the outputs (default: the input's size), e.g. a mask's stored size.
        return_probs: also return ``probs``, ``(K, H, W)`` float32 at the output resolution.
        device: where to run (default: the model's device).
        threads: torch intra-op threads for this call (default: leave torch's setting, which uses all cores);
            ONNX Runtime sessions take theirs when loaded (:func:`lumenkit.inference.onnx.load_onnx`).
        progress: show a tqdm bar over windows.
        fuse: run torch models with BatchNorm folded into the convolutions (same result, faster).
        runtime: ``None`` (the model's own), ``"torch"``, or ``"onnx"`` (a torch model is exported in memory once
            and run by ONNX Runtime).
        retain_heap: keep freed memory in glibc's heap during the call (:func:`lumenkit.runtime.retained_heap`: the
            window activations above glibc's mmap threshold are not page-faulted in afresh for every window);
            the free memory is returned when the outermost such block ends.

    Returns:
        ``{"codes": (H, W) uint8 LumenStone codes, "indices": (H, W) uint8 model indices,
        "confidence": (H, W) float32 max probability, "probs": (K, H, W) float32 (if asked),
        "model_scale": float}``.

    Raises:
        CheckpointError: a path that is not a lumenkit checkpoint or exported model, or an ONNX model without
            onnxruntime installed.
        ValueError: a bad image array, a non-positive scale, ``tile`` too small for ``margin``, or an unknown
            runtime.
    """
    from lumenkit.inference.onnx import OnnxModel

    if isinstance(model_or_ckpt, (str, Path)):
        model_or_ckpt = load_model(model_or_ckpt)
    model: SegmentationModel | Runner
    if isinstance(model_or_ckpt, (Checkpoint, OnnxModel)):
        model = model_or_ckpt.model if isinstance(model_or_ckpt, Checkpoint) else model_or_ckpt
        model_scale = model_or_ckpt.scale if model_scale is None else model_scale
        class_map = model_or_ckpt.class_map if class_map is None else class_map
    else:
        model = model_or_ckpt if isinstance(model_or_ckpt, Runner) else _unwrap(model_or_ckpt)
    if model_scale is None:
        model_scale = input_scale if input_scale is not None else 1.0
    if input_scale is None:
        input_scale = model_scale
    if not (input_scale > 0 and model_scale > 0):
        raise ValueError(f"scales must be positive, got input_scale={input_scale}, model_scale={model_scale}")
    _check_image(image)
    h, w = image.shape[:2]
    out_size = (w, h) if output_size is None else (int(output_size[0]), int(output_size[1]))
    factor = model_scale / input_scale
    work = image if abs(factor - 1) < 1e-9 else resize_image(image, target_size((w, h), factor))
    with retained_heap(retain_heap), _threads(threads):
        probs = predict_probs(model, work, tile=tile, margin=margin, batch=batch, tta=tta, device=device,
                              progress=progress, fuse=fuse, runtime=runtime)
        idx, conf, full = resize_probs(probs, out_size, keep_probs=return_probs)
    del probs
    codes = class_map.to_code(idx) if class_map is not None else idx
    out: dict[str, Any] = {"codes": codes, "indices": idx, "confidence": conf, "model_scale": float(model_scale)}
    if return_probs:
        assert full is not None
        out["probs"] = full.numpy()
    return out


# -- files ----------------------------------------------------------------------------------------
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def collect_images(paths: Sequence[str | Path], exclude: Path | None = None) -> tuple[list[Path], list[str]]:
    """Image files named directly or found (recursively) in folders, and messages for paths that do not exist.

    Files given by name are kept whatever their suffix (a bad one is reported when read); in folders only
    ``.jpg/.jpeg/.png/.tif/.tiff`` files count, hidden files and ``exclude`` (the output folder) are skipped.
    A folder in LumenStone layout (with an ``imgs`` subfolder) is searched under ``imgs`` only, not its masks.
    """
    files: list[Path] = []
    missing: list[str] = []
    ex = exclude.resolve() if exclude is not None else None
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted((p / "imgs" if (p / "imgs").is_dir() else p).rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not f.name.startswith("."):
                    if ex is not None and ex in f.resolve().parents:
                        continue
                    files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            missing.append(f"{p}: no such file or folder")
    return files, missing


def scale_of(path: Path, default: float = 1.0) -> float:
    """Scale of an image file from the nearest ``dataset.yaml`` up to three folders above it (else ``default``).

    Raises:
        ConfigError: a malformed ``dataset.yaml``.
    """
    from lumenkit.data.datasets import DatasetInfo

    for parent in list(path.resolve().parents)[:3]:
        if (parent / "dataset.yaml").exists():
            return DatasetInfo.read(parent).scale
    return default


def _nearest(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` sampled at the pixel centres of a ``shape = (H, W)`` grid (nearest neighbour)."""
    h, w = mask.shape
    if (h, w) == tuple(shape[:2]):
        return mask
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.intp), w - 1)
    return mask[ys[:, None], xs[None, :]]


@dataclass
class PredictionReport:
    """Outcome of :func:`predict_files`.

    Attributes:
        composition: one row per predicted image: size, scale, area % per mineral label, mean confidence.
        failures: ``(path, message)`` for every input that could not be predicted.
        out: the output folder.
        rank, world_size: this process's rank and the number of processes that shared the files (1 alone).
    """

    composition: pd.DataFrame
    failures: list[tuple[str, str]]
    out: Path
    rank: int = 0
    world_size: int = 1

    @property
    def ok(self) -> bool:
        """``True`` when every input was predicted."""
        return not self.failures


def predict_files(
    checkpoint: Checkpoint | OnnxModel | str | Path,
    paths: Sequence[str | Path],
    out: str | Path,
    scale: float | None = None,
    tile: int = 768,
    margin: int = 64,
    batch: int = 1,
    tta: bool | str = False,
    alpha: float = 0.45,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    runtime: str | None = None,
    retain_heap: bool = True,
    device: str | None = None,
) -> PredictionReport:
    """Predict image files and write, per image, a mask, an overlay and a confidence map, plus a composition CSV.

    Output layout (masks where :func:`lumenkit.mineralogy.analysis.read_masks` expects them)::

        OUT/NAME.png              predicted LumenStone codes (8-bit, input resolution)
        OUT/overlays/NAME.jpg     mask colours over the image
        OUT/confidence/NAME.png   max class probability × 255 (8-bit)
        OUT/composition.csv       area % per mineral for every image

    A file that cannot be read or predicted is reported (``on_error(path, message)``) and skipped.

    When the model runs at a smaller scale than the file's, the file is decoded directly at the model's scale
    (reduced-size JPEG decoding, see :func:`lumenkit.data.imageio.read_image`); masks and confidence maps are still
    written at the file's own resolution, the overlay (a preview) at the resolution the model saw.

    Under ``torchrun --nproc-per-node N`` (or in a process group already initialised) the files are shared out
    between the processes (every N-th file in sorted order); each writes its own masks, overlays and confidence
    maps, the composition rows are gathered, and the first process writes ``composition.csv``, in the order of a
    single-process run. Every process returns the whole report. On the CPU each process gets its share of the cores
    as torch threads.

    Args:
        checkpoint: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel`, or the path of a
            ``model.pt`` or ``model.onnx``.
        paths: image files and/or folders (searched recursively).
        out: output folder.
        scale: scale of the inputs relative to native ×100; default from the nearest ``dataset.yaml``, else 1.0.
        tile: window side at model scale (see :func:`predict_image`).
        margin: context cropped from each window side.
        batch: windows per forward pass.
        tta: test-time augmentation (``False``, ``True``/``"d4"``, ``"flip"``).
        alpha: overlay opacity.
        progress: show a progress bar over images (the first process's share under torchrun).
        on_error: called with ``(path, message)`` for each failure (by the process that met it).
        runtime: ``None`` (the model's own), ``"torch"`` or ``"onnx"`` (see :func:`predict_image`).
        retain_heap: keep freed memory in glibc's heap until the last file is done (see :func:`predict_image`);
            the process holds its peak memory until then.
        device: where a torch model runs: ``"auto"`` (CUDA when available, the local rank's GPU under torchrun),
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None``: where the model is (a loaded checkpoint: the CPU).

    Raises:
        CheckpointError: the model cannot be loaded (nothing is predicted then), or an ONNX model without
            onnxruntime installed.
        ConfigError: ``device`` asks for CUDA and none is available.
    """
    from lumenkit.data.colours import overlay
    from lumenkit.data.imageio import image_size, read_image, save_image, write_text
    from lumenkit.errors import LumenkitError
    from lumenkit.runtime.devices import dist_init, resolve_device, usable_cores

    ckpt = load_model(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    dev = resolve_device(device) if device is not None else None
    out = Path(out)
    files, missing = collect_images(paths, exclude=out)
    names = _output_names(files)
    rank, world, started_here = dist_init(dev if dev is not None else torch.device("cpu"))
    try:
        threads = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))) if world > 1 else None
        failures = [(m.split(":")[0], m) for m in missing]
        for path, msg in failures if rank == 0 else []:
            if on_error is not None:
                on_error(path, msg)
        labels = ckpt.class_map.labels
        rows: list[tuple[int, dict[str, Any]]] = []
        mine = list(range(rank, len(files), world))
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(mine, desc="predict" if world == 1 else f"predict (1 of {world} processes)", unit="image")
        errors: list[tuple[int, str, str]] = []
        with retained_heap(retain_heap), _threads(threads):  # one block for all files: freed buffers serve the next
            for k in bar if bar is not None else mine:
                f, name = files[k], names[k]
                try:
                    s = float(scale) if scale is not None else scale_of(f)
                    if not s > 0:
                        raise ValueError(f"scale must be positive, got {s}")
                    size = image_size(f)
                    factor = min(1.0, ckpt.scale / s)  # decode straight at the model's scale when that is smaller
                    image = read_image(f, factor=factor)
                    res = predict_image(ckpt, image, ckpt.scale if factor < 1 else s, tile=tile, margin=margin,
                                        batch=batch, tta=tta, output_size=size, runtime=runtime, device=dev,
                                        retain_heap=retain_heap)
                except (LumenkitError, ValueError, OSError) as e:
                    errors.append((k, str(f), str(e)))
                    if on_error is not None:
                        on_error(str(f), str(e))
                    continue
                codes = res["codes"]
                save_image(codes, out / f"{name}.png")
                save_image(overlay(image, _nearest(codes, image.shape[:2]), alpha=alpha),
                           out / "overlays" / f"{name}.jpg")
                conf8 = np.clip(res["confidence"] * 255 + 0.5, 0, 255).astype(np.uint8)
                save_image(conf8, out / "confidence" / f"{name}.png")
                counts = np.bincount(res["indices"].ravel(), minlength=len(labels))[: len(labels)]
                row: dict[str, Any] = {"image": name, "path": str(f), "width": codes.shape[1],
                                       "height": codes.shape[0], "scale": s}
                row.update({lbl: 100.0 * c / codes.size for lbl, c in zip(labels, counts, strict=True)})
                row["mean_confidence"] = float(res["confidence"].mean())
                rows.append((k, row))
        if world > 1:
            import torch.distributed as dist

            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, (rows, errors))
            rows = [r for p in parts for r in p[0]]
            errors = [e for p in parts for e in p[1]]
        failures += [(path, msg) for _, path, msg in sorted(errors)]
        comp = pd.DataFrame([r for _, r in sorted(rows, key=lambda kr: kr[0])],
                            columns=["image", "path", "width", "height", "scale", *labels, "mean_confidence"])
        if rank == 0:
            write_text(out / "composition.csv", comp.to_csv(index=False, float_format="%.4f"))
        if world > 1:
            dist.barrier()  # every process returns once composition.csv is there
    finally:
        if started_here:
            import torch.distributed as dist

            dist.destroy_process_group()
    return PredictionReport(comp, failures, out, rank, world)


def _output_names(files: Sequence[Path]) -> list[str]:
    """Output stem of each file: its own, or ``PARENT_STEM`` (then ``PARENT_STEM_2``, ...) for repeated stems."""
    used: set[str] = set()
    names = []
    for f in files:
        name = f.stem if f.stem not in used else f"{f.parent.name}_{f.stem}"
        i = 2
        while name in used:
            name, i = f"{f.parent.name}_{f.stem}_{i}", i + 1
        used.add(name)
        names.append(name)
    return names
