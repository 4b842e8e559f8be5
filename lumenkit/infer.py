"""Whole-image prediction: resample to the model's scale, tiles with cropped margins, TTA, back to input size."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .classes import ClassMap
from .io import resize_image, target_size
from .model import Checkpoint, SegmentationModel, load_checkpoint

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


def predict_probs(
    model: SegmentationModel,
    image: np.ndarray,
    tile: int = 512,
    margin: int = 64,
    batch: int = 2,
    tta: bool | str = False,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Softmax probabilities ``(K, H, W)`` (float32, CPU) of an image already at the model's scale.

    The image is reflect-padded by ``margin`` and cut into equal windows of at most ``tile`` px a side (the
    fewest that cover it); only each window's core (the window minus ``margin`` on every side) is kept, so every
    kept pixel sees at least ``margin`` pixels of context. Window origins are multiples of ``2**depth``, so results
    match a single pass over the whole image up to the receptive field beyond the margin. Memory is bounded by
    ``batch`` windows plus the ``(K, H, W)`` output.

    Args:
        model: a lumenkit segmentation model (switched to eval mode for the call, then restored).
        image: ``(H, W, 3)`` uint8 RGB at the model's scale.
        tile: window side in pixels fed to the network (rounded down to a multiple of ``2**depth``).
        margin: context pixels cropped from each window side (rounded up to a multiple of ``2**depth / 2``).
        batch: windows per forward pass.
        tta: test-time augmentation (see :func:`tta_transforms`); probabilities are averaged.
        device: where to run (default: the model's device).
        progress: show a tqdm bar over windows.

    Raises:
        ValueError: a bad image array, or ``tile`` too small for ``margin``.
    """
    model = _unwrap(model)
    _check_image(image)
    stride = model.output_stride
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
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    k = model.config["classes"]
    out = torch.empty((k, h, w), dtype=torch.float32)
    transforms = tta_transforms(tta)
    origins = [(y, x) for y in ys for x in xs]
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(origins), desc="tiles", unit="tile", leave=False)
    try:
        with torch.inference_mode():
            for i in range(0, len(origins), max(1, int(batch))):
                chunk = origins[i : i + max(1, int(batch))]
                win = np.stack([padded[y : y + wh, x : x + ww] for y, x in chunk])
                x_t = torch.from_numpy(win).to(dev).permute(0, 3, 1, 2)
                x_t = model.normalize(x_t).contiguous(memory_format=torch.channels_last)
                prob = None
                for fwd, inv in transforms:
                    p = inv(torch.softmax(model(fwd(x_t)).float(), dim=1))
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
        model.train(was_training)
    return out


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got a {desc}; read files with lumenkit.io.read_image"
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
    output rows so only one strip of full-resolution probabilities exists at a time; downsampling averages areas.

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
    c0, c1, cl = _linear_weights(w, out_w)
    r0, r1, rl = _linear_weights(h, out_h)
    idx_out = np.empty((out_h, out_w), dtype=np.uint8)
    conf_out = np.empty((out_h, out_w), dtype=np.float32)
    full = torch.empty((k, out_h, out_w), dtype=torch.float32) if keep_probs else None
    for s in range(0, out_h, strip):
        e = min(out_h, s + strip)
        lam = rl[s:e].view(1, -1, 1)
        rows = probs[:, r0[s:e]] * (1 - lam) + probs[:, r1[s:e]] * lam  # (K, strip, w)
        part = rows[:, :, c0] * (1 - cl) + rows[:, :, c1] * cl  # (K, strip, out_w)
        conf, idx = part.max(dim=0)
        idx_out[s:e] = idx.to(torch.uint8).numpy()
        conf_out[s:e] = conf.numpy()
        if full is not None:
            full[:, s:e] = part
    return idx_out, conf_out, full


def predict_image(
    model_or_ckpt: SegmentationModel | Checkpoint | str | Path,
    image: np.ndarray,
    input_scale: float | None = None,
    *,
    model_scale: float | None = None,
    class_map: ClassMap | None = None,
    tile: int = 512,
    margin: int = 64,
    batch: int = 2,
    tta: bool | str = False,
    output_size: tuple[int, int] | None = None,
    return_probs: bool = False,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict a whole image at the model's scale and return results at the input's resolution.

    Args:
        model_or_ckpt: a :class:`~lumenkit.model.Checkpoint` (or its path), or a bare model.
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
        threads: torch intra-op threads for this call (default: leave torch's setting).
        progress: show a tqdm bar over windows.

    Returns:
        ``{"codes": (H, W) uint8 LumenStone codes, "indices": (H, W) uint8 model indices,
        "confidence": (H, W) float32 max probability, "probs": (K, H, W) float32 (if asked),
        "model_scale": float}``.

    Raises:
        CheckpointError: a path that is not a lumenkit checkpoint.
        ValueError: a bad image array, a non-positive scale, or ``tile`` too small for ``margin``.
    """
    if isinstance(model_or_ckpt, (str, Path)):
        model_or_ckpt = load_checkpoint(model_or_ckpt)
    if isinstance(model_or_ckpt, Checkpoint):
        model = model_or_ckpt.model
        model_scale = model_or_ckpt.scale if model_scale is None else model_scale
        class_map = model_or_ckpt.class_map if class_map is None else class_map
    else:
        model = _unwrap(model_or_ckpt)
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
    with _threads(threads):
        probs = predict_probs(model, work, tile=tile, margin=margin, batch=batch, tta=tta, device=device,
                              progress=progress)
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
    from .data import DatasetInfo

    for parent in list(path.resolve().parents)[:3]:
        if (parent / "dataset.yaml").exists():
            return DatasetInfo.read(parent).scale
    return default


@dataclass
class PredictionReport:
    """Outcome of :func:`predict_files`.

    Attributes:
        composition: one row per predicted image: size, scale, area % per mineral label, mean confidence.
        failures: ``(path, message)`` for every input that could not be predicted.
        out: the output folder.
    """

    composition: pd.DataFrame
    failures: list[tuple[str, str]]
    out: Path

    @property
    def ok(self) -> bool:
        """``True`` when every input was predicted."""
        return not self.failures


def predict_files(
    checkpoint: Checkpoint | str | Path,
    paths: Sequence[str | Path],
    out: str | Path,
    scale: float | None = None,
    tile: int = 512,
    margin: int = 64,
    batch: int = 2,
    tta: bool | str = False,
    alpha: float = 0.45,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> PredictionReport:
    """Predict image files and write, per image, a mask, an overlay and a confidence map, plus a composition CSV.

    Output layout (masks where :func:`lumenkit.analysis.read_masks` expects them)::

        OUT/NAME.png              predicted LumenStone codes (8-bit, input resolution)
        OUT/overlays/NAME.jpg     mask colours over the image
        OUT/confidence/NAME.png   max class probability × 255 (8-bit)
        OUT/composition.csv       area % per mineral for every image

    A file that cannot be read or predicted is reported (``on_error(path, message)``) and skipped.

    Args:
        checkpoint: a :class:`~lumenkit.model.Checkpoint` or the path of ``model.pt``.
        paths: image files and/or folders (searched recursively).
        out: output folder.
        scale: scale of the inputs relative to native ×100; default from the nearest ``dataset.yaml``, else 1.0.
        tile: window side at model scale (see :func:`predict_image`).
        margin: context cropped from each window side.
        batch: windows per forward pass.
        tta: test-time augmentation (``False``, ``True``/``"d4"``, ``"flip"``).
        alpha: overlay opacity.
        progress: show a progress bar over images.
        on_error: called with ``(path, message)`` for each failure.

    Raises:
        CheckpointError: the checkpoint cannot be loaded (nothing is predicted then).
    """
    from .errors import LumenkitError
    from .io import read_image, save_image, write_text
    from .viz import overlay

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    out = Path(out)
    files, missing = collect_images(paths, exclude=out)
    failures = [(m.split(":")[0], m) for m in missing]
    for path, msg in failures:
        if on_error is not None:
            on_error(path, msg)
    labels = ckpt.class_map.labels
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(files, desc="predict", unit="image")
    for f in bar if bar is not None else files:
        try:
            s = float(scale) if scale is not None else scale_of(f)
            image = read_image(f)
            res = predict_image(ckpt, image, s, tile=tile, margin=margin, batch=batch, tta=tta)
        except (LumenkitError, ValueError, OSError) as e:
            failures.append((str(f), str(e)))
            if on_error is not None:
                on_error(str(f), str(e))
            continue
        name = f.stem if f.stem not in used else f"{f.parent.name}_{f.stem}"
        i = 2
        while name in used:
            name, i = f"{f.parent.name}_{f.stem}_{i}", i + 1
        used.add(name)
        codes = res["codes"]
        save_image(codes, out / f"{name}.png")
        save_image(overlay(image, codes, alpha=alpha), out / "overlays" / f"{name}.jpg")
        save_image(np.clip(res["confidence"] * 255 + 0.5, 0, 255).astype(np.uint8), out / "confidence" / f"{name}.png")
        counts = np.bincount(res["indices"].ravel(), minlength=len(labels))[: len(labels)]
        row: dict[str, Any] = {"image": name, "path": str(f), "width": codes.shape[1], "height": codes.shape[0],
                               "scale": s}
        row.update({lbl: 100.0 * c / codes.size for lbl, c in zip(labels, counts, strict=True)})
        row["mean_confidence"] = float(res["confidence"].mean())
        rows.append(row)
    comp = pd.DataFrame(rows, columns=["image", "path", "width", "height", "scale", *labels, "mean_confidence"])
    write_text(out / "composition.csv", comp.to_csv(index=False, float_format="%.4f"))
    return PredictionReport(comp, failures, out)
