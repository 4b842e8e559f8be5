"""Inference back ends: a small :class:`Runner` adapter per runtime (PyTorch fused, ONNX Runtime), cached per model."""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from lumenkit.inference.ensemble import Ensemble, EnsembleRunner
from lumenkit.models.checkpoint import Checkpoint
from lumenkit.models.folding import fuse_for_inference
from lumenkit.models.resunet import SegmentationModel

RUNTIMES: tuple[str, ...] = ("torch", "onnx")
"""Inference back ends: PyTorch (fused, channels-last) and ONNX Runtime (``pip install onnxruntime``)."""


def unwrap_model(model: torch.nn.Module) -> SegmentationModel:
    """The lumenkit model inside ``model`` (itself, or the ``module`` of a DDP/DataParallel wrapper).

    Raises:
        TypeError: ``model`` is no lumenkit segmentation model.
    """
    inner = getattr(model, "module", model)  # DistributedDataParallel / DataParallel
    if not isinstance(inner, SegmentationModel):
        raise TypeError(f"expected a lumenkit SegmentationModel or Checkpoint, got {type(model).__name__}")
    return inner


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

    See :func:`lumenkit.models.fuse_for_inference` (the folding) and :func:`derived_model` (the caching).
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

    Raises:
        TypeError: ``model`` is no lumenkit segmentation model (nor a wrapper of one); see :func:`unwrap_model`.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None, fuse: bool = True) -> None:
        self.model = unwrap_model(model)
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
        model: a lumenkit model (or its checkpoint, or a DDP/DataParallel wrapper), an
            :class:`~lumenkit.inference.ensemble.Ensemble` (its members run with these arguments), or anything with
            ``.probs``, ``.output_stride`` and ``.classes`` (e.g. :class:`lumenkit.inference.OnnxModel`).
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
    if isinstance(model, Ensemble):
        return EnsembleRunner([as_runner(m, device=device, fuse=fuse, runtime=runtime) for m in model.members],
                              model.member_weights)
    if isinstance(model, Checkpoint):
        model = model.model
    if isinstance(model, Runner) and not isinstance(model, torch.nn.Module):
        if runtime == "torch" and not isinstance(model, TorchRunner):
            raise ValueError("runtime='torch' needs a PyTorch checkpoint (model.pt), not an ONNX model")
        return model
    if runtime == "onnx":
        from lumenkit.inference.onnx import OnnxModel

        return derived_model(unwrap_model(model), "onnx", OnnxModel.from_model)
    return TorchRunner(model, device=device, fuse=fuse)
