"""Ensembles: several models of the same classes and scale, predicting as one by averaging their probabilities.

Two networks trained apart (another seed, block or context module) err partly on different pixels, and the mean of
their softmax probabilities can be a better prediction than either (what it buys on LumenStone is measured in the
docs' results); the networks' times add up, decoding and writing are done once. An
:class:`Ensemble` goes wherever prediction takes a checkpoint (:func:`lumenkit.inference.predict_image`,
:func:`lumenkit.inference.predict_files`, :func:`lumenkit.evaluation.evaluate`, mosaics); on the command line,
``--model`` given more than once (``lumenkit predict``, ``analyse``, ``evaluate``);
:func:`lumenkit.inference.loading.load_ensemble` reads one from files.

Written here rather than taken from a library: the averaging is one line, and what matters is what the libraries
cannot know, that the members must share LumenStone codes, training scale and pixel size to be averaged at all,
and that a validation score of an ensemble is honest only when no member trained on a scored image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lumenkit.data.catalogue import ClassMap
from lumenkit.errors import CheckpointError, ConfigError
from lumenkit.models.checkpoint import Checkpoint

if TYPE_CHECKING:
    from lumenkit.data.datasets import ValidationSplit
    from lumenkit.inference.onnx import OnnxModel


def _name(m: Checkpoint | OnnxModel, k: int) -> str:
    return str(m.path) if getattr(m, "path", None) is not None else f"member {k}"


def _um(v: float | None) -> str:
    return "not declared" if v is None else f"{v:g} µm"


def _stride(m: Checkpoint | OnnxModel) -> int:
    return int(m.model.output_stride if isinstance(m, Checkpoint) else m.output_stride)


def _classes(m: Checkpoint | OnnxModel) -> int:
    return int(m.model.config["classes"] if isinstance(m, Checkpoint) else m.classes)


@dataclass
class Ensemble:
    """Models predicting as one: the weighted mean of their softmax probabilities.

    Attributes:
        members: the models (:class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel`), at
            least one; all with the same LumenStone codes in the same order, training scale and pixel size.
        weights: one non-negative weight per member, not all zero (default: equal); normalised to sum 1.

    Raises:
        CheckpointError: members that cannot be averaged (other codes, scale or pixel size; no class map), or bad
            weights. The message names the member and what differs.
    """

    members: Sequence[Checkpoint | OnnxModel]
    weights: Sequence[float] | None = None
    _weights: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.members = tuple(self.members)
        if not self.members:
            raise CheckpointError("ensemble: give at least one model")
        first = self.members[0]
        for k, m in enumerate(self.members):
            if m.class_map is None:
                raise CheckpointError(f"{_name(m, k)}: no class codes; an ensemble averages models of known classes")
            if list(m.class_map.codes) != list(first.class_map.codes):
                raise CheckpointError(
                    f"{_name(m, k)}: classes {', '.join(m.class_map.labels)} differ from {_name(first, 0)}'s "
                    f"({', '.join(first.class_map.labels)}); an ensemble averages models of the same classes")
            if not math.isclose(float(m.scale), float(first.scale), rel_tol=1e-6):
                raise CheckpointError(f"{_name(m, k)}: trained at scale {m.scale:.6g}, {_name(first, 0)} at "
                                      f"{first.scale:.6g}; an ensemble averages models of one scale")
            a, b = m.pixel_size_um, first.pixel_size_um
            if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=1e-6)):
                raise CheckpointError(f"{_name(m, k)}: pixel size {_um(a)}, {_name(first, 0)}'s {_um(b)}; an "
                                      "ensemble averages models that see sections at one magnification")
        try:
            w = [1.0] * len(self.members) if self.weights is None else [float(x) for x in self.weights]
        except (TypeError, ValueError):
            raise CheckpointError(f"ensemble: weights {list(self.weights or [])} must be numbers") from None
        if len(w) != len(self.members):
            raise CheckpointError(f"ensemble: {len(w)} weights for {len(self.members)} models")
        if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
            raise CheckpointError(f"ensemble: weights {w} must be non-negative numbers, not all zero")
        self._weights = tuple(x / sum(w) for x in w)

    @property
    def class_map(self) -> ClassMap:
        """LumenStone codes in model-index order (the members')."""
        cm = self.members[0].class_map
        assert cm is not None
        return cm

    @property
    def scale(self) -> float:
        """The members' training scale, relative to native ×100."""
        return float(self.members[0].scale)

    @property
    def pixel_size_um(self) -> float | None:
        """µm per pixel of the members' training images at :attr:`scale` (``None``: not declared)."""
        return self.members[0].pixel_size_um

    @property
    def output_stride(self) -> int:
        """Input sides must be multiples of this: the least common multiple of the members' strides."""
        return math.lcm(*(_stride(m) for m in self.members))

    @property
    def classes(self) -> int:
        """Number of output classes ``K``."""
        return _classes(self.members[0])

    @property
    def config(self) -> dict[str, Any]:
        """The first member's training configuration (its validation split is the ensemble's default one)."""
        return dict(getattr(self.members[0], "config", None) or {})

    @property
    def path(self) -> Path | None:
        """The first member's file (what reports name the model by)."""
        return getattr(self.members[0], "path", None)

    @property
    def paths(self) -> list[str]:
        """Every member's file, in order (``""`` for one held in memory only)."""
        return [str(m.path) if getattr(m, "path", None) is not None else "" for m in self.members]

    @property
    def member_weights(self) -> tuple[float, ...]:
        """The members' weights, normalised to sum 1."""
        return self._weights

    def check_split(self, validation: ValidationSplit, data: str | Path | None = None) -> None:
        """Refuse a validation split on which a member's score would not be held out.

        A member trained on the dataset ``data`` must have been trained with exactly ``validation`` (with another
        split, some scored image is one it trained on); a member trained on a dataset of another folder name is
        not checked (its training images are not these). Without ``data`` every member is checked.

        Raises:
            ConfigError: a member trained with another split of ``data``, or one that does not record its split
                (an ONNX export), so that nothing says which images it trained on.
        """
        from lumenkit.data.datasets import ValidationSplit

        here = Path(data).resolve().name if data is not None else None  # names: runs may record relative paths
        for k, m in enumerate(self.members):
            train = (getattr(m, "config", None) or {}).get("train")
            if not train:
                raise ConfigError(f"{_name(m, k)}: records no validation split (an export?); score an ensemble on a "
                                  "validation split with the members' model.pt files")
            if here is not None and train.get("data") and Path(str(train["data"])).name != here:
                continue  # trained on another dataset: none of these images
            own = ValidationSplit.of_model(m)
            if own != validation:
                raise ConfigError(
                    f"{_name(m, k)}: trained with {own}, not the scored split ({validation}): it "
                    "trained on some of those images. Ensemble models trained on the same split, or leave out "
                    "--n-val/--val-seed/--val-fold")


class EnsembleRunner:
    """A :class:`~lumenkit.inference.runners.Runner` whose probabilities are the weighted mean of its runners'.

    :func:`lumenkit.inference.runners.as_runner` makes one of an :class:`Ensemble`, each member run as it runs a
    single model.

    Args:
        runners: one :class:`~lumenkit.inference.runners.Runner` per member, all with the same number of classes.
        weights: one per runner, summing to 1.

    Raises:
        CheckpointError: runners of different class counts, or a weight count that does not match.
    """

    def __init__(self, runners: Sequence[Any], weights: Sequence[float]) -> None:
        self.runners = list(runners)
        self.weights = [float(w) for w in weights]
        if len(self.weights) != len(self.runners) or not self.runners:
            raise CheckpointError(f"ensemble: {len(self.weights)} weights for {len(self.runners)} models")
        if len({int(r.classes) for r in self.runners}) != 1:
            raise CheckpointError("ensemble: the models have different numbers of classes")
        self.classes = int(self.runners[0].classes)
        self.output_stride = math.lcm(*(int(r.output_stride) for r in self.runners))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Weighted mean softmax probabilities ``(N, K, H, W)`` float32 (CPU) of a uint8 batch ``(N, 3, H, W)``."""
        out: torch.Tensor | None = None
        for r, w in zip(self.runners, self.weights, strict=True):
            p = r.probs(x).float().cpu() * w  # not in place: a member's output may be an inference tensor
            out = p if out is None else out + p
        assert out is not None
        return out
