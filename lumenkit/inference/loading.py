"""What batch and streamed prediction share: loading a model, the scale of an image for it, sharing out work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lumenkit.inference.ensemble import Ensemble
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

if TYPE_CHECKING:
    from lumenkit.inference.onnx import OnnxModel


def load_model(path: str | Path | Sequence[Any]) -> Checkpoint | OnnxModel | Ensemble:
    """Read a model for prediction: a lumenkit checkpoint (``model.pt``) or an exported ``.onnx`` file.

    Several paths (a list or tuple of more than one) are read as one :class:`~lumenkit.inference.ensemble.Ensemble`;
    in a list, models already loaded are taken as they are.

    Raises:
        CheckpointError: a missing, corrupt or foreign file, an ``.onnx`` file without onnxruntime installed, or
            several models that cannot be averaged (other classes, scale or pixel size).
    """
    if not isinstance(path, (str, Path)):
        paths = list(path)
        if len(paths) != 1:
            return load_ensemble(paths)
        if not isinstance(paths[0], (str, Path)):
            return paths[0]  # a model already loaded
        path = paths[0]
    if Path(path).suffix.lower() == ".onnx":
        from lumenkit.inference.onnx import load_onnx

        return load_onnx(path)
    return load_checkpoint(path)


def load_ensemble(paths: Sequence[Any], weights: Sequence[float] | None = None) -> Ensemble:
    """Read the models at ``paths`` (each a ``model.pt`` or ``.onnx``) as one averaging :class:`Ensemble`.

    Models already loaded (a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel`) are
    taken as they are.

    Args:
        paths: the members, each a path or a model already loaded.
        weights: one non-negative weight per member, in the order of ``paths``, not all zero; normalised to sum 1
            (so only their ratios matter). Default: equal weights.

    Raises:
        CheckpointError: a model that cannot be read, or members that cannot be averaged (other classes, scale or
            pixel size), or bad weights (not one per member, negative or non-finite, or all zero).
    """
    return Ensemble([load_model(p) if isinstance(p, (str, Path)) else p for p in paths], weights)


def input_scale_for(model: Any, pixel_size_um: float | None) -> float | None:
    """The scale an image of ``pixel_size_um`` µm per pixel has for ``model``, from physical sizes (else ``None``).

    A model trained at scale ``s`` on pixels of ``p`` µm sees a section at ``p`` µm per pixel; an image of ``q`` µm
    per pixel is therefore at scale ``s · p / q`` in the model's terms (a section imaged with an objective of twice
    the magnification has half the pixel size and twice the scale, and is downsampled 2× before prediction).
    ``None`` when the model records no pixel size (trained on data without ``pixel_size_um``) or ``q`` is unknown.

    Args:
        model: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel` (an export keeps
            the checkpoint's pixel size as ``lumenkit.pixel_size_um``), or anything with ``scale`` and
            ``pixel_size_um``.
        pixel_size_um: µm per pixel of the image, or ``None`` when unknown.
    """
    model_px = getattr(model, "pixel_size_um", None)
    if not model_px or not pixel_size_um:
        return None
    return float(model.scale) * float(model_px) / float(pixel_size_um)


@contextlib.contextmanager
def sharing(device: torch.device | None) -> Iterator[tuple[int, int]]:
    """``(rank, number of processes)`` sharing the files (``(0, 1)`` alone); a process group started here ends here."""
    from lumenkit.runtime.devices import dist_init

    rank, world, started_here = dist_init(device if device is not None else torch.device("cpu"))
    try:
        yield rank, world
    finally:
        if started_here:
            import torch.distributed as dist

            dist.destroy_process_group()
