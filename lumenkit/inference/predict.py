"""Whole-image prediction at the model's scale back to the input's size, and batch prediction of image files.

The tiling itself (windows, margins, TTA, resampling of probabilities) is :mod:`lumenkit.inference.tiling`; the back
ends that run the network are :mod:`lumenkit.inference.runners`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import resize_image, target_size
from lumenkit.inference.loading import input_scale_for, load_model
from lumenkit.inference.loading import sharing as _sharing
from lumenkit.inference.refine import Refine
from lumenkit.inference.runners import Runner, unwrap_model
from lumenkit.inference.tiling import Tiling, check_image, confidence_u8, predict_probs, resize_probs
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.resunet import SegmentationModel
from lumenkit.runtime.heap import retained_heap

if TYPE_CHECKING:
    from lumenkit.data.flatfield import FlatField
    from lumenkit.inference.ensemble import Ensemble
    from lumenkit.inference.onnx import OnnxModel


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


def predict_image(
    model_or_ckpt: SegmentationModel | Checkpoint | OnnxModel | Ensemble | str | Path | Sequence[str | Path],
    image: np.ndarray,
    input_scale: float | None = None,
    *,
    model_scale: float | None = None,
    class_map: ClassMap | None = None,
    tiling: Tiling | None = None,
    output_size: tuple[int, int] | None = None,
    return_probs: bool = False,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = False,
    fuse: bool = True,
    runtime: str | None = None,
    refine: Refine | None = None,
    guide: np.ndarray | None = None,
) -> dict[str, Any]:
    """Predict a whole image at the model's scale and return results at the input's resolution.

    The call runs in a :func:`lumenkit.runtime.retained_heap` block, which follows the process-level setting
    (:func:`lumenkit.runtime.set_heap_retention`, ``lumenkit --no-retain-heap``).

    Args:
        model_or_ckpt: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel` (or the path of
            a ``model.pt`` or ``model.onnx``), an :class:`~lumenkit.inference.ensemble.Ensemble` (or a list of
            paths: their probabilities averaged), or a bare model.
        image: ``(H, W, 3)`` uint8 RGB.
        input_scale: scale of ``image`` relative to native ×100 (1.0 = 3396×2547); default: the model's scale.
        model_scale: scale to predict at, relative to native ×100 like ``input_scale`` (default: the checkpoint's
            training scale; for a bare model, ``input_scale``, else 1.0); ``image`` is resampled by
            ``model_scale / input_scale`` before prediction.
        class_map: maps model indices to LumenStone codes (default: the checkpoint's; a bare model without one
            returns model indices as "codes").
        tiling: windows, margins, batch and test-time augmentation at model scale (default ``Tiling()``: 768-px
            windows, 64-px margins, one window per pass, no TTA).
        output_size: ``(width, height)`` of the outputs (default: the input's size), e.g. a mask's stored size.
        return_probs: also return ``probs``, ``(K, H, W)`` float32 at the output resolution.
        device: where to run (default: the model's device).
        threads: torch intra-op threads for this call (default: leave torch's setting, which uses all cores);
            ONNX Runtime sessions take theirs when loaded (:func:`lumenkit.inference.onnx.load_onnx`).
        progress: show a tqdm bar over windows.
        fuse: run torch models with BatchNorm folded into the convolutions (same result, faster).
        runtime: ``None`` (the model's own), ``"torch"``, or ``"onnx"`` (a torch model is exported in memory once
            and run by ONNX Runtime).
        refine: upsample the probabilities guided by the image's edges (:mod:`lumenkit.inference.refine`)
            instead of bilinearly; applies when the output is larger than the model's scale. The guide is
            ``guide``, else the image itself resampled to ``output_size`` when that differs.
        guide: ``(H, W, 3)`` uint8 RGB of the section at ``output_size`` guiding ``refine`` (e.g. the
            full-resolution image when ``image`` was decoded at the model's scale).

    Returns:
        ``{"codes": (H, W) uint8 LumenStone codes, "indices": (H, W) uint8 model indices,
        "confidence": (H, W) float32 max probability, "probs": (K, H, W) float32 (if asked),
        "model_scale": float}``.

    Raises:
        CheckpointError: a path that is not a lumenkit checkpoint or exported model, or an ONNX model without
            onnxruntime installed.
        ValueError: a bad image array, a non-positive scale, or an unknown runtime.
        ConfigError: ``tile`` too small for ``margin`` at this model's grid.
    """
    model, input_scale, model_scale, class_map = _model_and_scales(model_or_ckpt, input_scale, model_scale, class_map)
    check_image(image)
    h, w = image.shape[:2]
    out_size = (w, h) if output_size is None else (int(output_size[0]), int(output_size[1]))
    factor = model_scale / input_scale
    work = image if abs(factor - 1) < 1e-9 else resize_image(image, target_size((w, h), factor))
    with retained_heap(), _threads(threads):
        probs = predict_probs(model, work, **asdict(tiling if tiling is not None else Tiling()), device=device,
                              progress=progress, fuse=fuse, runtime=runtime)
        guided = None
        if refine is not None and out_size[0] > probs.shape[2] and out_size[1] > probs.shape[1]:
            from lumenkit.inference.refine import brightness, guided_coefficients

            ga, gb = guided_coefficients(probs, brightness(work), refine)
            if guide is None:
                guide = image if out_size == (w, h) else resize_image(image, out_size)
            if guide.shape[:2] != (out_size[1], out_size[0]):
                raise ValueError(f"guide is {guide.shape[1]}×{guide.shape[0]} px, the output {out_size[0]}×"
                                 f"{out_size[1]}")
            guided = (ga, gb, brightness(guide))
        idx, conf, full = resize_probs(probs, out_size, keep_probs=return_probs, guided=guided)
    del probs
    codes = class_map.to_code(idx) if class_map is not None else idx
    out: dict[str, Any] = {"codes": codes, "indices": idx, "confidence": conf, "model_scale": float(model_scale)}
    if return_probs:
        assert full is not None
        out["probs"] = full.numpy()
    return out


def _model_and_scales(
    model_or_ckpt: SegmentationModel | Checkpoint | OnnxModel | Ensemble | str | Path | Sequence[str | Path],
    input_scale: float | None,
    model_scale: float | None,
    class_map: ClassMap | None,
) -> tuple[SegmentationModel | Runner, float, float, ClassMap | None]:
    """``(model, input_scale, model_scale, class_map)`` with the defaults of :func:`predict_image` filled in.

    Raises:
        CheckpointError: a path that is not a lumenkit checkpoint or exported model.
        ValueError: a non-positive scale.
    """
    from lumenkit.inference.ensemble import Ensemble
    from lumenkit.inference.onnx import OnnxModel

    if isinstance(model_or_ckpt, (str, Path, list, tuple)):
        model_or_ckpt = load_model(model_or_ckpt)
    model: SegmentationModel | Runner | Ensemble
    if isinstance(model_or_ckpt, (Checkpoint, OnnxModel, Ensemble)):
        model = model_or_ckpt.model if isinstance(model_or_ckpt, Checkpoint) else model_or_ckpt
        model_scale = model_or_ckpt.scale if model_scale is None else model_scale
        class_map = model_or_ckpt.class_map if class_map is None else class_map
    else:
        model = model_or_ckpt if isinstance(model_or_ckpt, Runner) else unwrap_model(model_or_ckpt)
    if model_scale is None:
        model_scale = input_scale if input_scale is not None else 1.0
    if input_scale is None:
        input_scale = model_scale
    if not (input_scale > 0 and model_scale > 0):
        raise ValueError(f"scales must be positive, got input_scale={input_scale}, model_scale={model_scale}")
    return model, input_scale, model_scale, class_map


# -- files ----------------------------------------------------------------------------------------
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")

PixelSize = float | None | tuple[float | None, str | None]
"""A file's pixel size as :func:`predict_files` takes it per file: µm per pixel (``None``: unknown), or
``(µm per pixel, source)`` with the source in :attr:`lumenkit.data.Section.pixel_size_source`'s terms."""


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
    checkpoint: Checkpoint | OnnxModel | Ensemble | str | Path | Sequence[str | Path],
    paths: Sequence[str | Path],
    out: str | Path,
    scale: float | None = None,
    tiling: Tiling | None = None,
    alpha: float = 0.45,
    progress: bool = True,
    on_error: Callable[[str, str], None] | None = None,
    runtime: str | None = None,
    device: str | None = None,
    pixel_size_um: float | Mapping[str | Path, PixelSize] | None = None,
    flatfield: FlatField | str | Path | None = None,
    mosaic_pixels: int | None = None,
    refine: Refine | None = None,
) -> PredictionReport:
    """Predict image files and write, per image, a mask, an overlay and a confidence map, plus a composition CSV.

    Output layout (masks where :func:`lumenkit.mineralogy.analysis.read_masks` expects them)::

        OUT/NAME.png              predicted LumenStone codes (8-bit palette PNG, input resolution)
        OUT/overlays/NAME.jpg     mask colours over the image
        OUT/confidence/NAME.png   max class probability × 255 (8-bit)
        OUT/composition.csv       area % per mineral for every image
        OUT/lumenstone.lut        the minerals' colours as an ImageJ/Fiji lookup table (768 bytes)

    A mask's pixel values are the LumenStone codes (255 = ignore); its PNG palette holds the catalogue colours
    (:func:`lumenkit.data.imageio.save_palette_mask`), so any viewer shows the minerals in colour while
    :func:`lumenkit.data.imageio.read_mask` (or ``np.asarray(PIL.Image.open(p))``, and ImageJ/Fiji) gets the codes;
    readers that convert palettes to RGB (imageio, scikit-image, OpenCV, napari's default reader) get colours.
    ``composition.csv`` has one row per image: ``image``, ``path``, ``width``, ``height`` (px), ``scale``,
    ``pixel_size_um`` (µm per pixel, empty when unknown), ``pixel_size_source`` (where that came from, as in
    ``lumenkit analyse``'s ``sections.csv``: ``samples.csv``, ``OME-XML``, ``TIFF tags``, ``parameter``, or empty),
    [``flat_field``], the area % of each class label, and ``mean_confidence``.

    A file that cannot be read or predicted is reported (``on_error(path, message)``) and skipped.

    With ``flatfield`` each image is corrected (flat-field and white balance, :class:`lumenkit.data.FlatField`)
    before prediction; the overlays show the corrected image (what the model saw) and ``composition.csv`` gains a
    ``flat_field`` column naming the reference frame.

    When the model runs at a smaller scale than the file's, the file is decoded directly at the model's scale
    (reduced-size JPEG decoding, see :func:`lumenkit.data.imageio.read_image`); masks and confidence maps are still
    written at the file's own resolution, the overlay (a preview) at the resolution the model saw.

    Under ``torchrun --nproc-per-node N`` (or in a process group already initialised) the files are shared out
    between the processes (every N-th file in sorted order); each writes its own masks, overlays and confidence
    maps, the composition rows are gathered, and the first process writes ``composition.csv``, in the order of a
    single-process run. Every process returns the whole report. On the CPU each process gets its share of the cores
    as torch threads. The loop over files is one :func:`lumenkit.runtime.retained_heap` block (the process-level
    setting): freed buffers serve the next file, and the process holds its peak memory until the last is done.

    Args:
        checkpoint: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel`, or the path of a
            ``model.pt`` or ``model.onnx``; an :class:`~lumenkit.inference.ensemble.Ensemble`, or a list of paths
            (their probabilities averaged).
        paths: image files and/or folders (searched recursively).
        out: output folder.
        scale: scale of the inputs relative to LumenStone's native images (1.0 = 3396×2547 px at ×100): how much
            larger or smaller the same section looks in them. Given, it wins. Otherwise, when the model records the
            pixel size it was trained at and a file's pixel size is known (its TIFF/OME metadata, else
            ``pixel_size_um``), the file is resampled by the ratio of the two; otherwise the scale comes from the
            nearest ``dataset.yaml``, else 1.0.
        tiling: windows, margins, batch and test-time augmentation at model scale (default ``Tiling()``).
        alpha: opacity of the mask colours in the overlays, 0 (image only) to 1 (mask colours only).
        progress: show a progress bar over images (the first process's share under torchrun).
        on_error: called with ``(path, message)`` for each failure (by the process that met it).
        runtime: ``None`` (the model's own), ``"torch"`` or ``"onnx"`` (see :func:`predict_image`).
        device: where a torch model runs: ``"auto"`` (CUDA when available, the local rank's GPU under torchrun),
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None``: where the model is (a loaded checkpoint: the CPU).
        pixel_size_um: µm per pixel of the files that do not declare their own (see ``scale``; source
            ``parameter``); or a mapping file → µm per pixel that decides for every file it names, a value being
            the size (source ``parameter``) or a ``(size, source)`` pair, e.g. a section's ``pixel_size_um`` and
            ``pixel_size_source`` from :func:`lumenkit.data.sections.read_sections`.
        refine: upsample the probabilities guided by each image's edges (:mod:`lumenkit.inference.refine`; the
            image is then decoded at full resolution); mosaics are refined too, streamed row by row with the values
            of the whole image refined (:func:`lumenkit.inference.mosaic.predict_mosaic`).
        mosaic_pixels: TIFFs of at least this many pixels are predicted as mosaics, streamed into tiled BigTIFF
            (:func:`lumenkit.inference.mosaic.predict_mosaic`); default
            :data:`lumenkit.data.mosaic.MOSAIC_PIXELS` (64 MP).
        flatfield: a :class:`~lumenkit.data.FlatField`, or the image file of a reference frame (a blank, evenly
            reflecting standard or mirror imaged with the same objective, lamp, exposure and camera settings) to
            build one from; each image is corrected before prediction. A reference of another size is resampled
            to each image (and to the size an image is decoded at); an image of another aspect ratio than the
            reference is reported and skipped (:meth:`~lumenkit.data.FlatField.check_frame`).

    Raises:
        CheckpointError: the model cannot be loaded (nothing is predicted then), or an ONNX model without
            onnxruntime installed.
        ConfigError: ``device`` asks for CUDA and none is available.
        BadImageError: the flat-field reference is missing, unreadable or dark (nothing is predicted then).
        OutputPathError: ``out`` cannot be written (checked before any prediction; nothing is written then).
    """
    from lumenkit.data.flatfield import as_flatfield
    from lumenkit.data.imageio import check_writable
    from lumenkit.runtime.devices import resolve_device

    ckpt = load_model(checkpoint) if isinstance(checkpoint, (str, Path, list, tuple)) else checkpoint
    ff = as_flatfield(flatfield) if flatfield is not None else None
    out = check_writable(out, folder=True)
    dev = resolve_device(device) if device is not None else None
    job = _FileJob(ckpt, Path(out), scale, tiling if tiling is not None else Tiling(), alpha, runtime, dev,
                   pixel_size_um, ff, refine)
    files, missing = collect_images(paths, exclude=job.out)
    with _sharing(dev) as (rank, world):
        failures = [(m.split(":")[0], m) for m in missing]
        if rank == 0 and on_error is not None:
            for path, msg in failures:
                on_error(path, msg)
        from lumenkit.data.mosaic import is_mosaic

        mosaics = [k for k, f in enumerate(files) if is_mosaic(f, mosaic_pixels)]
        rows, errors = _gather(*_predict_share(job, files, rank, world, progress, on_error, skip=set(mosaics)),
                               world)
        more_rows, more_errors = _predict_mosaics(job, files, mosaics, rank, progress, on_error)
        rows, errors = rows + more_rows, errors + more_errors
        failures += [(path, msg) for _, path, msg in sorted(errors)]
        comp = _write_composition(job, rows, rank, world)
    return PredictionReport(comp, failures, job.out, rank, world)


@dataclass
class _FileJob:
    """What :func:`predict_files` does with one file: predict it, write its outputs, give its composition row."""

    ckpt: Checkpoint | OnnxModel | Ensemble
    out: Path
    scale: float | None
    tiling: Tiling
    alpha: float
    runtime: str | None
    device: torch.device | None
    pixel_size_um: float | Mapping[str | Path, PixelSize] | None = None
    flatfield: FlatField | None = None
    refine: Refine | None = None
    _sizes: dict[str, tuple[float | None, str | None]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.pixel_size_um, Mapping):  # resolved once, not per file
            self.pixel_size_um = {str(Path(k).resolve()): v for k, v in self.pixel_size_um.items()}

    @property
    def labels(self) -> list[str]:
        """Class labels in model order (the composition's columns)."""
        return list(self.ckpt.class_map.labels)

    def predict(self, f: Path) -> tuple[float, np.ndarray, dict[str, Any]]:
        """``(scale of the file, the image as the model saw it, predict_image's result at the file's size)``.

        With a flat field the image is corrected after decoding (at the size it is decoded at), before prediction.

        Raises:
            LumenkitError, ValueError, OSError: the file cannot be read or predicted.
        """
        from lumenkit.data.imageio import image_size, read_image

        s = self.file_scale(f)
        if not s > 0:
            raise ValueError(f"scale must be positive, got {s}")
        size = image_size(f)
        if self.flatfield is not None:
            self.flatfield.check_frame(size, f)
        # decode straight at the model's scale when that is smaller (at full resolution to guide a refinement)
        factor = 1.0 if self.refine is not None else min(1.0, self.ckpt.scale / s)
        image = read_image(f, factor=factor)
        if self.flatfield is not None:
            image = self.flatfield(image)
        res = predict_image(self.ckpt, image, self.ckpt.scale if factor < 1 else s, tiling=self.tiling,
                            output_size=size, runtime=self.runtime, device=self.device, refine=self.refine)
        seen = min(1.0, self.ckpt.scale / s)
        if self.refine is not None and seen < 1:  # the overlay shows the image as the model saw it, as without
            image = resize_image(image, target_size(size, seen))
        return s, image, res

    def file_pixel_size(self, f: Path) -> float | None:
        """µm per pixel of file ``f`` (``None`` when unknown).

        The caller's mapping when it names ``f``, else the file's TIFF/OME metadata, else the caller's single
        ``pixel_size_um``.

        Raises:
            ConfigError: the file's TIFF/OME metadata declare non-square pixels.
        """
        return self._pixel_size(f)[0]

    def file_pixel_size_source(self, f: Path) -> str | None:
        """Where :meth:`file_pixel_size` of ``f`` came from (``None`` when the size is unknown).

        In :attr:`lumenkit.data.Section.pixel_size_source`'s terms: ``"OME-XML"`` or ``"TIFF tags"`` (the file's
        metadata), ``"parameter"`` (the caller's ``pixel_size_um``), or the source a ``(size, source)`` mapping
        value names (e.g. ``"samples.csv"``).

        Raises:
            ConfigError: the file's TIFF/OME metadata declare non-square pixels.
        """
        return self._pixel_size(f)[1]

    def _pixel_size(self, f: Path) -> tuple[float | None, str | None]:
        """``(µm per pixel, source)`` of ``f``, the file's metadata read once (scale, overlay and row ask)."""
        from lumenkit.data.sections import metadata_pixel_size_um

        key = str(Path(f).resolve())
        if key not in self._sizes:
            given = self.pixel_size_um
            if isinstance(given, Mapping) and key in given:
                value = given[key]
                size, source = value if isinstance(value, tuple) else (value, "parameter")
            else:
                size, source = metadata_pixel_size_um(f)
                if size is None and given is not None and not isinstance(given, Mapping):
                    size, source = given, "parameter"
            self._sizes[key] = (float(size), source) if size else (None, None)
        return self._sizes[key]

    def file_scale(self, f: Path) -> float:
        """Scale of file ``f`` relative to native ×100 (see :func:`predict_files`, ``scale``)."""
        if self.scale is not None:
            return float(self.scale)
        return input_scale_for(self.ckpt, self.file_pixel_size(f)) or scale_of(f)

    def write(self, name: str, image: np.ndarray, res: dict[str, Any], pixel_size_um: float | None = None) -> None:
        """``OUT/NAME.png`` (codes), ``OUT/overlays/NAME.jpg`` and ``OUT/confidence/NAME.png``, each atomically.

        The mask is a palette PNG: pixel values are the LumenStone codes, the palette the catalogue colours
        (:func:`lumenkit.data.imageio.save_palette_mask`). The overlay carries a legend of the minerals present
        and, when the file's pixel size (``pixel_size_um``, µm) is known, a scale bar in µm (see
        :func:`lumenkit.data.pictures.annotated_overlay`).

        Raises:
            OutputPathError: an output file cannot be written.
        """
        from lumenkit.data.imageio import save_image, save_palette_mask
        from lumenkit.data.pictures import annotated_overlay

        codes = res["codes"]
        save_palette_mask(codes, self.out / f"{name}.png")
        seen_px = pixel_size_um * codes.shape[1] / image.shape[1] if pixel_size_um else None  # at the overlay's size
        save_image(annotated_overlay(image, _nearest(codes, image.shape[:2]), seen_px, alpha=self.alpha),
                   self.out / "overlays" / f"{name}.jpg")
        conf8 = confidence_u8(res["confidence"])
        save_image(conf8, self.out / "confidence" / f"{name}.png")

    def row(self, name: str, f: Path, s: float, res: dict[str, Any]) -> dict[str, Any]:
        """The composition row of one predicted file: size, scale, area % per label, mean confidence."""
        codes, labels = res["codes"], self.labels
        counts = np.bincount(res["indices"].ravel(), minlength=len(labels))[: len(labels)]
        row: dict[str, Any] = {"image": name, "path": str(f), "width": codes.shape[1], "height": codes.shape[0],
                               "scale": s, "pixel_size_um": self.file_pixel_size(f),
                               "pixel_size_source": self.file_pixel_size_source(f)}
        if self.flatfield is not None:
            row["flat_field"] = self.flatfield.source or "(in memory)"
        row.update({lbl: 100.0 * c / codes.size for lbl, c in zip(labels, counts, strict=True)})
        row["mean_confidence"] = float(res["confidence"].mean())
        return row


def _predict_mosaics(
    job: _FileJob, files: list[Path], which: list[int], rank: int, progress: bool,
    on_error: Callable[[str, str], None] | None,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]:
    """Predict the mosaics among ``files`` streamed, every process sharing each (see ``inference.mosaic``).

    Returns:
        On the first process, ``(index, composition row)`` of each mosaic predicted and ``(index, path, message)``
        of each failure; on the others, nothing (so gathering does not repeat them).
    """
    from lumenkit.errors import ConfigError, LumenkitError
    from lumenkit.inference.mosaic import predict_mosaic

    names = _output_names(files)
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[tuple[int, str, str]] = []
    for k in which:
        f = files[k]
        try:
            if job.flatfield is not None:
                raise ConfigError(f"{f}: flat-field correction of mosaics is not supported yet; correct the mosaic "
                                  "in the microscope software, or predict it without --flat-field")
            px = job.file_pixel_size(f)
            res = predict_mosaic(job.ckpt, f, job.out, scale=job.file_scale(f), pixel_size_um=px, tiling=job.tiling,
                                 device=str(job.device) if job.device is not None else None, progress=progress,
                                 name=names[k], runtime=job.runtime, refine=job.refine)
        except (LumenkitError, ValueError, OSError) as e:
            if rank == 0:
                errors.append((k, str(f), str(e)))
                if on_error is not None:
                    on_error(str(f), str(e))
            continue
        if rank == 0:
            total = max(1, res.size[0] * res.size[1])
            codes = list(job.ckpt.class_map.codes)
            row: dict[str, Any] = {"image": names[k], "path": str(f), "width": res.size[0], "height": res.size[1],
                                   "scale": job.ckpt.scale * res.size[0] / res.model_scale_size[0],
                                   "pixel_size_um": px, "pixel_size_source": job.file_pixel_size_source(f)}
            if job.flatfield is not None:
                row["flat_field"] = None
            row.update({lbl: 100.0 * res.pixels.get(c, 0) / total for lbl, c in zip(job.labels, codes, strict=True)})
            row["mean_confidence"] = res.mean_confidence
            rows.append((k, row))
    return rows, errors


def _predict_share(
    job: _FileJob, files: list[Path], rank: int, world: int, progress: bool,
    on_error: Callable[[str, str], None] | None, skip: set[int] | None = None,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]:
    """Predict this process's share of ``files`` (every ``world``-th from ``rank``), but those in ``skip``.

    One retained-heap block over all of them, with this process's share of the cores as torch threads.

    Returns:
        ``(index, composition row)`` of each file predicted, ``(index, path, message)`` of each failure.
    """
    from lumenkit.errors import LumenkitError
    from lumenkit.runtime.devices import usable_cores

    names = _output_names(files)
    threads = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))) if world > 1 else None
    mine = [k for k in range(len(files)) if k not in (skip or set())][rank::world]
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(mine, desc="predict" if world == 1 else f"predict (1 of {world} processes)", unit="image")
    rows: list[tuple[int, dict[str, Any]]] = []
    errors: list[tuple[int, str, str]] = []
    with retained_heap(), _threads(threads):  # one block for all files: freed buffers serve the next
        for k in bar if bar is not None else mine:
            try:
                s, image, res = job.predict(files[k])
            except (LumenkitError, ValueError, OSError) as e:
                errors.append((k, str(files[k]), str(e)))
                if on_error is not None:
                    on_error(str(files[k]), str(e))
                continue
            job.write(names[k], image, res, job.file_pixel_size(files[k]))
            rows.append((k, job.row(names[k], files[k], s, res)))
    return rows, errors


def _write_composition(job: _FileJob, rows: list[tuple[int, dict[str, Any]]], rank: int, world: int) -> pd.DataFrame:
    """The composition table in file order.

    The first process writes ``OUT/composition.csv`` and the lookup table ``OUT/lumenstone.lut``
    (:func:`lumenkit.data.imageio.write_imagej_lut`), both atomically; the others wait for them.

    Raises:
        OutputPathError: a file cannot be written.
    """
    from lumenkit.data.imageio import LUT_FILE, write_imagej_lut, write_text

    columns = ["image", "path", "width", "height", "scale", "pixel_size_um", "pixel_size_source",
               *(["flat_field"] if job.flatfield is not None else []), *job.labels, "mean_confidence"]
    comp = pd.DataFrame([r for _, r in sorted(rows, key=lambda kr: kr[0])], columns=columns)
    if rank == 0:
        write_text(job.out / "composition.csv", comp.to_csv(index=False, float_format="%.4f"))
        write_imagej_lut(job.out / LUT_FILE)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every process returns once composition.csv and the lookup table are there
    return comp


def _gather(rows: list[Any], errors: list[Any], world: int) -> tuple[list[Any], list[Any]]:
    """Every process's rows and errors, in rank order (as they are when alone)."""
    if world == 1:
        return rows, errors
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, (rows, errors))
    return [r for p in parts for r in p[0]], [e for p in parts for e in p[1]]


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
