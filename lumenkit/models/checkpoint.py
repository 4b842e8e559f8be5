"""Checkpoints: a model with its class map, scale, history and training state, saved atomically."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.imageio import atomic_write
from lumenkit.errors import CheckpointError, UnknownClassError
from lumenkit.models.resunet import SegmentationModel, create_model

CHECKPOINT_FORMAT = "lumenkit-checkpoint"


CHECKPOINT_VERSION = 1


# -- checkpoints ----------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A model plus everything needed to use it (and, in ``last.pt``, to resume training).

    Attributes:
        model: the network (its ``config`` holds architecture and input normalisation).
        class_map: LumenStone codes in model-index order.
        scale: training scale relative to native ×100 (1.0 = 3396×2547); inference resamples inputs to it.
        history: one dict per finished epoch (as in ``history.csv``).
        train_state: optimizer / scheduler / sampler / RNG state for resuming (``None`` in ``model.pt``).
        config: the training configuration.
        version: lumenkit version that wrote the file.
        path: the file it was loaded from, if any.
    """

    model: SegmentationModel
    class_map: ClassMap
    scale: float
    history: list[dict[str, Any]] = field(default_factory=list)
    train_state: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    path: Path | None = None

    @property
    def pixel_size_um(self) -> float | None:
        """µm per pixel of the images the model was trained on, at its :attr:`scale` (``None``: not declared).

        Recorded when the training dataset's ``dataset.yaml`` gives ``pixel_size_um``; prediction then resamples a
        section of known pixel size by the ratio of the two, whatever the objective it was imaged with.
        """
        v = (self.config or {}).get("pixel_size_um")
        return float(v) if v is not None else None

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (readers never see half a file); returns the path.

        Raises:
            CheckpointError: the class map and the model's outputs differ in number.
            OutputPathError: ``path`` cannot be written.
        """
        from lumenkit._version import __version__

        path = Path(path)
        if len(self.class_map) != self.model.config["classes"]:
            raise CheckpointError(
                f"{path}: model has {self.model.config['classes']} outputs but the class map "
                f"{self.class_map} has {len(self.class_map)} classes; "
                f"build the model with classes={len(self.class_map)}"
            )
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        payload = {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "lumenkit_version": __version__,
            "model_config": dict(self.model.config),
            "state_dict": state,
            "class_codes": list(self.class_map.codes),
            "class_set": self.class_map.name,
            "scale": float(self.scale),
            "history": list(self.history),
            "train_state": self.train_state,
            "config": dict(self.config),
        }
        with atomic_write(path) as f:
            torch.save(payload, f)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a checkpoint written by :meth:`save`.

        Raises:
            CheckpointError: missing file, not a lumenkit checkpoint, a missing entry or unknown class code (damaged
                or edited), unknown architecture, or weights that do not match the stored architecture (never
                loaded partially).
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found; train one with `lumenkit train`")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # foreign pickles: we report our own error
                payload = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path}: not a readable lumenkit checkpoint ({first[:200]}); give a model.pt or last.pt "
                "written by `lumenkit train`"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path}: not a lumenkit checkpoint (a plain state_dict or another tool's file?); give a "
                "model.pt or last.pt written by `lumenkit train`"
            )
        if payload.get("format_version", 0) > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{path}: written by a newer lumenkit ({payload.get('lumenkit_version')}); upgrade lumenkit"
            )
        missing = [k for k in ("model_config", "state_dict", "class_codes", "scale") if k not in payload]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; the file is damaged or was edited: "
                                  "retrain, or use the matching model.pt")
        cfg = dict(payload["model_config"])
        try:
            model = create_model(cfg.pop("arch"), **cfg)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot rebuild the model from its stored config ({e})") from None
        try:
            model.load_state_dict(payload["state_dict"], strict=True)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            detail = "; ".join(lines[1:4]) or lines[0]
            raise CheckpointError(
                f"{path}: weights do not match the stored architecture {payload['model_config']} ({detail[:400]}); "
                "the file is damaged or was edited: retrain, or use the matching model.pt"
            ) from None
        try:
            class_map = ClassMap(payload.get("class_set") or payload["class_codes"])
            if list(class_map.codes) != list(payload["class_codes"]):
                class_map = ClassMap(payload["class_codes"])
        except UnknownClassError as e:
            raise CheckpointError(f"{path}: its class map is not readable ({e}); the file is damaged or was edited: "
                                  "retrain, or use the matching model.pt") from None
        if len(class_map) != model.config["classes"]:
            raise CheckpointError(
                f"{path}: class map has {len(class_map)} classes but the model has {model.config['classes']} outputs"
            )
        model.eval()
        return cls(
            model=model,
            class_map=class_map,
            scale=float(payload["scale"]),
            history=list(payload.get("history") or []),
            train_state=payload.get("train_state"),
            config=dict(payload.get("config") or {}),
            version=str(payload.get("lumenkit_version", "")),
            path=path,
        )


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (see :meth:`Checkpoint.save`)."""
    return checkpoint.save(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint (see :meth:`Checkpoint.load`).

    Raises:
        CheckpointError: missing, foreign or mismatching file.
    """
    return Checkpoint.load(path, map_location=map_location)
