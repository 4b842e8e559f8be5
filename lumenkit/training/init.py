"""Start training from a trained model (``TrainConfig.init``): copy its weights, adapt its head to a new class set.

Fine-tuning adapts a model to another microscope, camera or lamp, or to minerals outside its class set, from few
labels (strokes; ``labels: sparse`` in ``dataset.yaml``). Every weight of the body (encoder, decoder) is copied
unchanged; the 1×1 head keeps the output channel of every class the two class sets share (in the new order), gets
freshly initialised channels (seeded by ``TrainConfig.seed``) for classes the new data adds, and loses those it
drops. The input normalisation (``mean``/``std``) of the source model is kept: its features were learnt on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError
from lumenkit.models.resunet import SegmentationModel, create_model

ARCHITECTURE_KEYS: tuple[str, ...] = ("arch", "in_channels", "width", "depth", "block", "context")
"""What must agree between the source model and the run for weights to be copied."""


@dataclass
class InitRecord:
    """What a run started from, recorded in its checkpoints (``config["init"]``).

    Attributes:
        source: path of the checkpoint started from.
        sha256: its content digest.
        kept: codes whose head channel was copied; ``added``: codes whose head channel is new; ``dropped``: codes of
            the source the run does not predict.
        frozen: parameter groups held fixed (``[]`` or ``["encoder"]``; batch-norm statistics adapt regardless).
        source_scale: the source model's training scale.
    """

    source: str
    sha256: str
    kept: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    source_scale: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML-ready record."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the training log."""
        return (f"started from {self.source}: kept {len(self.kept)} classes {self.kept}, added {self.added or 'none'}, "
                f"dropped {self.dropped or 'none'}; frozen: {', '.join(self.frozen) or 'nothing'}")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def init_from_checkpoint(
    path: str | Path, class_map: ClassMap, arch: str, width: int, depth: int, block: str, seed: int,
    freeze: str = "none", context: str = "none",
) -> tuple[SegmentationModel, InitRecord]:
    """A model for ``class_map`` built from the weights of the checkpoint at ``path`` (see the module).

    Args:
        path: a lumenkit checkpoint (``model.pt`` or ``last.pt``).
        class_map: the classes the run predicts, in its model order.
        arch: the run's architecture name (must be the checkpoint's, as every argument below).
        width: channels of its first level.
        depth: its encoder levels.
        block: its convolution block.
        seed: seeds the new head channels.
        freeze: ``"none"`` or ``"encoder"`` (encoder parameters get ``requires_grad=False``).
        context: the run's context module.

    Raises:
        CheckpointError: not a checkpoint, or another architecture (the message names both and the fix).
    """
    from lumenkit.models.checkpoint import load_checkpoint

    path = Path(path)
    src = load_checkpoint(path)
    have = {k: src.model.config.get(k, "none" if k == "context" else None) for k in ARCHITECTURE_KEYS}
    want = {"arch": arch, "in_channels": 3, "width": width, "depth": depth, "block": block, "context": context}
    if have != want:
        diff = ", ".join(f"{k} {have[k]!r} (this run: {want[k]!r})" for k in ARCHITECTURE_KEYS if have[k] != want[k])
        fix = " ".join(f"--{k} {have[k]}" for k in ("width", "depth", "block", "context") if have[k] != want[k])
        raise CheckpointError(f"{path}: another architecture, {diff}; train with {fix or 'its architecture'} to "
                              "start from it, or without --init")
    net, kept, added, dropped = adapt_model(src.model, src.class_map, class_map, seed)
    frozen = freeze_encoder(net) if freeze == "encoder" else []
    return net, InitRecord(str(path), _digest(path), kept, added, dropped, frozen, float(src.scale))


def adapt_model(
    source: SegmentationModel, source_map: ClassMap, class_map: ClassMap, seed: int
) -> tuple[SegmentationModel, list[int], list[int], list[int]]:
    """A copy of ``source`` predicting ``class_map``: body copied, head channels kept, added or dropped by code.

    Returns:
        ``(model, kept, added, dropped)``: the new model and the codes of each kind.
    """
    cfg = source.config
    torch.manual_seed(seed)
    net = create_model(cfg["arch"], in_channels=cfg["in_channels"], classes=len(class_map), width=cfg["width"],
                       depth=cfg["depth"], block=cfg["block"], context=cfg.get("context", "none"), mean=source.mean,
                       std=source.std)
    old_state = source.state_dict()
    state = net.state_dict()
    for k, v in old_state.items():
        if not k.startswith("head."):
            state[k] = v.clone()
    old_codes = list(source_map.codes)
    kept, added = [], []
    for i, code in enumerate(class_map.codes):
        if code in old_codes:
            j = old_codes.index(code)
            state["head.weight"][i] = old_state["head.weight"][j]
            state["head.bias"][i] = old_state["head.bias"][j]
            kept.append(int(code))
        else:
            added.append(int(code))
    net.load_state_dict(state)
    return net, kept, added, [int(c) for c in old_codes if c not in set(class_map.codes)]


def freeze_encoder(net: SegmentationModel) -> list[str]:
    """Hold the encoder's weights fixed (``requires_grad=False``); returns the frozen groups (``["encoder"]``)."""
    for p in net.encoder.parameters():
        p.requires_grad_(False)
    return ["encoder"]
