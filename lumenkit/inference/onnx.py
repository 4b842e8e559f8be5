"""Export a trained model to ONNX (normalisation and softmax inside) and run it with ONNX Runtime."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.folding import fuse_for_inference
from lumenkit.models.resunet import SegmentationModel

ONNX_FORMAT = "lumenkit-onnx"
"""Value of the ``lumenkit.format`` metadata entry that marks a lumenkit export."""
ONNX_FORMAT_VERSION = 1
ONNX_INPUT = "image"
"""Graph input: uint8 ``(N, 3, H, W)`` RGB in 0–255, ``H`` and ``W`` multiples of the output stride."""
ONNX_OUTPUT = "probs"
"""Graph output: float32 ``(N, K, H, W)`` softmax probabilities, classes in ``lumenkit.class_codes`` order."""

_INSTALL_ORT = "pip install onnxruntime (or pip install 'lumenkit[onnx]')"
_INSTALL_EXPORT = "pip install onnx onnxscript (or pip install 'lumenkit[onnx]')"


class InferenceGraph(nn.Module):
    """What the ONNX file computes: uint8 RGB → normalise → network → softmax over classes.

    Args:
        model: a lumenkit segmentation model; its fused copy (BatchNorm folded into the convolutions, see
            :func:`lumenkit.models.fuse_for_inference`) is what gets traced.

    Attributes:
        output_stride: input height and width must be multiples of this.
    """

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.net = fuse_for_inference(model)
        self.output_stride = model.output_stride
        self.register_buffer("mean", torch.tensor(model.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(model.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K, H, W)`` float32 of a uint8 batch ``(N, C, H, W)``."""
        x = (image.float() - self.mean) / self.std
        net = self.net
        return torch.softmax(net.head(net.decoder(net.encoder(x))), dim=1)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and warnings about optional packages it does not need."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_model_proto(
    model: SegmentationModel,
    class_map: ClassMap | None = None,
    scale: float | None = None,
    trained_with: str = "",
    pixel_size_um: float | None = None,
) -> Any:
    """Trace ``model`` (fused, normalisation and softmax inside) into an ONNX ``ModelProto`` with lumenkit metadata.

    Batch, height and width are dynamic (height and width as multiples of the output stride).

    Args:
        model: a lumenkit segmentation model.
        class_map: LumenStone codes in model-index order, stored as ``lumenkit.class_codes``.
        scale: the model's scale relative to native ×100, stored as ``lumenkit.scale``.
        trained_with: lumenkit version that wrote the checkpoint.
        pixel_size_um: µm per pixel of the images the model was trained on, at ``scale``
            (:attr:`lumenkit.models.Checkpoint.pixel_size_um`), stored as ``lumenkit.pixel_size_um``; ``None``
            (not declared) stores nothing.

    Returns:
        The ``onnx.ModelProto``.

    Raises:
        CheckpointError: onnx or onnxscript is not installed (the message says what to install).
        ValueError: ``pixel_size_um`` is given but not a positive finite number.
    """
    from lumenkit._version import __version__

    if pixel_size_um is not None and not (math.isfinite(float(pixel_size_um)) and float(pixel_size_um) > 0):
        raise ValueError(f"pixel_size_um must be a positive number of µm, got {pixel_size_um!r}")
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise CheckpointError(f"exporting to ONNX needs {e.name}; {_INSTALL_EXPORT}") from None
    from torch.export import Dim

    graph = InferenceGraph(model).eval()
    s = model.output_stride
    cin = int(model.config["in_channels"])
    example = torch.zeros((2, cin, 3 * s, 4 * s), dtype=torch.uint8)
    shapes = {"image": {0: Dim("batch"), 2: s * Dim("height_blocks"), 3: s * Dim("width_blocks")}}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(graph, (example,), dynamo=True, input_names=[ONNX_INPUT],
                                    output_names=[ONNX_OUTPUT], dynamic_shapes=shapes, verbose=False)
    assert program is not None
    proto = program.model_proto
    meta: dict[str, str] = {
        "lumenkit.format": ONNX_FORMAT,
        "lumenkit.format_version": str(ONNX_FORMAT_VERSION),
        "lumenkit.version": __version__,
        "lumenkit.trained_with": trained_with,
        "lumenkit.output_stride": str(s),
        "lumenkit.classes": str(int(model.config["classes"])),
        "lumenkit.model_config": json.dumps(model.config),
        "lumenkit.input": f"{ONNX_INPUT}: uint8 (N, {cin}, H, W) RGB 0-255; H, W multiples of {s}; "
                          f"normalised inside (mean {list(model.mean)}, std {list(model.std)})",
        "lumenkit.output": f"{ONNX_OUTPUT}: float32 (N, K, H, W) softmax probabilities, classes in class_codes order",
    }
    if class_map is not None:
        meta["lumenkit.class_codes"] = json.dumps(list(class_map.codes))
        meta["lumenkit.class_labels"] = json.dumps(class_map.labels)
        if class_map.name:
            meta["lumenkit.class_set"] = class_map.name
    if scale is not None:
        meta["lumenkit.scale"] = repr(float(scale))
    if pixel_size_um is not None:
        meta["lumenkit.pixel_size_um"] = repr(float(pixel_size_um))
    kept = {p.key: p.value for p in proto.metadata_props if p.key not in meta}
    onnx.helper.set_model_props(proto, {**kept, **meta})
    proto.producer_name, proto.producer_version = "lumenkit", __version__
    proto.doc_string = "lumenkit residual U-Net: ore-mineral identification in reflected-light images"
    return proto


def export_onnx(checkpoint: Checkpoint | str | Path, out: str | Path | None = None) -> Path:
    """Write a checkpoint as an ONNX graph with normalisation and softmax baked in and lumenkit metadata.

    The graph takes ``image``: uint8 ``(N, 3, H, W)`` RGB (``H``, ``W`` multiples of the output stride) and returns
    ``probs``: float32 ``(N, K, H, W)``. ``metadata_props`` hold ``lumenkit.class_codes`` (JSON list),
    ``lumenkit.class_set``, ``lumenkit.scale``, ``lumenkit.pixel_size_um`` (µm per pixel at that scale, when the
    checkpoint records one: prediction then resamples sections of known pixel size as with ``model.pt``),
    ``lumenkit.output_stride``, ``lumenkit.version`` (exporter), ``lumenkit.trained_with`` (the checkpoint's
    version) and ``lumenkit.model_config`` (JSON).

    Args:
        checkpoint: a :class:`~lumenkit.models.Checkpoint` or the path of ``model.pt``.
        out: the ``.onnx`` file (default: beside the checkpoint, same name with ``.onnx``).

    Returns:
        The written path (written atomically).

    Raises:
        CheckpointError: the checkpoint cannot be read, ``out`` is missing for an in-memory checkpoint, or onnx /
            onnxscript are not installed.
    """
    from lumenkit.data.imageio import atomic_write

    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if out is None:
        if ckpt.path is None:
            raise CheckpointError("export_onnx: give out=... for a checkpoint that was not loaded from a file")
        out = ckpt.path.with_suffix(".onnx")
    out = Path(out)
    proto = onnx_model_proto(ckpt.model, ckpt.class_map, ckpt.scale, trained_with=ckpt.version,
                             pixel_size_um=ckpt.pixel_size_um)
    with atomic_write(out) as f:
        f.write(proto.SerializeToString())
    return out


def _session(source: str | bytes, threads: int | None, name: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise CheckpointError(f"{name}: running an ONNX model needs onnxruntime; {_INSTALL_ORT}") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = max(1, int(threads))
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, InvalidGraph, ...)
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = lines[0] if lines else type(e).__name__
        raise CheckpointError(
            f"{name}: not a readable ONNX model ({first[:200]}); export one with `lumenkit export --onnx RUN/model.pt`"
        ) from None


@dataclass
class OnnxModel:
    """An exported lumenkit model run by ONNX Runtime; usable wherever prediction takes a checkpoint.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        class_map: LumenStone codes in model-index order (``None`` for an in-memory export without one).
        scale: the scale the model was trained at, relative to native ×100.
        pixel_size_um: µm per pixel of the images the model was trained on, at :attr:`scale` (``None``: not
            declared), as :attr:`lumenkit.models.Checkpoint.pixel_size_um`; prediction resamples a section of known
            pixel size by the ratio of the two (:func:`lumenkit.inference.loading.input_scale_for`).
        output_stride: input height and width must be multiples of this.
        classes: number of output classes ``K``.
        metadata: every ``metadata_props`` entry of the file.
        version: lumenkit version that exported it.
        path: the file it was loaded from, if any.
    """

    session: Any
    class_map: ClassMap | None
    scale: float
    output_stride: int
    classes: int
    metadata: dict[str, str] = field(default_factory=dict)
    version: str = ""
    path: Path | None = None
    pixel_size_um: float | None = None

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, K, H, W)`` float32 (CPU) of a uint8 batch ``(N, 3, H, W)``."""
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.uint8)
        (out,) = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: arr})
        return torch.from_numpy(out)

    @classmethod
    def from_model(
        cls, model: SegmentationModel, class_map: ClassMap | None = None, scale: float = math.nan,
        threads: int | None = None,
    ) -> OnnxModel:
        """Export ``model`` in memory and open it with ONNX Runtime (for ``runtime="onnx"`` on a torch model).

        Args:
            model: the lumenkit segmentation model to export.
            class_map: LumenStone codes in model-index order (``None``: the export records none, and its
                :attr:`class_map` is ``None``).
            scale: the model's scale relative to LumenStone's native ×100 images (1.0 = 3396×2547 px); NaN (the
                default) = unknown, recorded as none and read back as NaN.
            threads: ONNX Runtime intra-op threads of the session (default: ONNX Runtime's, one per physical core);
                values below 1 count as 1.

        Raises:
            CheckpointError: onnx, onnxscript or onnxruntime is not installed.
        """
        proto = onnx_model_proto(model, class_map, None if math.isnan(scale) else scale)
        return cls._from_session(_session(proto.SerializeToString(), threads, "in-memory export"), None)

    @classmethod
    def _from_session(cls, session: Any, path: Path | None) -> OnnxModel:
        name = str(path) if path is not None else "in-memory export"
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if meta.get("lumenkit.format") != ONNX_FORMAT:
            raise CheckpointError(
                f"{name}: an ONNX model, but not one exported by lumenkit (no lumenkit metadata); "
                "export one with `lumenkit export --onnx RUN/model.pt`"
            )
        if int(meta.get("lumenkit.format_version", "0")) > ONNX_FORMAT_VERSION:
            raise CheckpointError(f"{name}: exported by a newer lumenkit ({meta.get('lumenkit.version')}); upgrade")
        ins, outs = session.get_inputs(), session.get_outputs()
        if [i.name for i in ins] != [ONNX_INPUT] or ONNX_OUTPUT not in [o.name for o in outs]:
            raise CheckpointError(f"{name}: graph inputs/outputs are not lumenkit's ({ONNX_INPUT} → {ONNX_OUTPUT}); "
                                  "re-export it with `lumenkit export --onnx RUN/model.pt`")
        try:
            stride = int(meta["lumenkit.output_stride"])
            # "lumenkit.data.catalogue": the same count as written between the restructure's rename and its fix
            classes = int(meta["lumenkit.classes"] if "lumenkit.classes" in meta else meta["lumenkit.data.catalogue"])
            scale = float(meta.get("lumenkit.scale", "nan"))
            pixel_size_um = float(meta["lumenkit.pixel_size_um"]) if "lumenkit.pixel_size_um" in meta else None
            if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
                raise ValueError(f"lumenkit.pixel_size_um {meta['lumenkit.pixel_size_um']!r} is not a positive size")
            class_map = None
            if "lumenkit.class_codes" in meta:
                codes = [int(c) for c in json.loads(meta["lumenkit.class_codes"])]
                class_map = ClassMap(meta.get("lumenkit.class_set") or codes)
                if list(class_map.codes) != codes:
                    class_map = ClassMap(codes)
        except (KeyError, ValueError, TypeError) as e:
            msg = f"{name}: damaged lumenkit metadata ({type(e).__name__}: {e}); re-export it from model.pt"
            raise CheckpointError(msg) from None
        if class_map is not None and len(class_map) != classes:
            raise CheckpointError(f"{name}: metadata lists {len(class_map)} class codes for {classes} outputs")
        return cls(session=session, class_map=class_map, scale=scale, output_stride=stride, classes=classes,
                   metadata=meta, version=meta.get("lumenkit.version", ""), path=path, pixel_size_um=pixel_size_um)


def load_onnx(path: str | Path, threads: int | None = None) -> OnnxModel:
    """Open a ``.onnx`` file written by :func:`export_onnx` with ONNX Runtime (CPU).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: ONNX Runtime's, one per physical core).

    Raises:
        CheckpointError: a missing, corrupt or foreign (not lumenkit-exported) file, or onnxruntime not installed
            (the message says ``pip install onnxruntime``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found; export one with `lumenkit export --onnx RUN/model.pt`")
    model = OnnxModel._from_session(_session(str(path), threads, str(path)), path)
    if model.class_map is None or math.isnan(model.scale):
        raise CheckpointError(f"{path}: lumenkit ONNX file without class codes or scale; re-export it from model.pt")
    return model
