"""The training configuration (:class:`TrainConfig`), its named presets, and what a resumed run may change.

The recipe is defined once, here: :data:`PRESETS` names complete recipes (``s1`` — the default, ``long``,
``s2``, ``synthetic``, ``paper``, ``finetune``) as overrides of the :class:`TrainConfig` defaults, and
``TrainConfig()`` *is* the ``s1`` preset. ``lumenkit train`` (whose options are generated from these fields),
notebook 03, ``params/*.yaml`` and the ablation variants of :mod:`lumenkit.lab` name a preset and override fields.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lumenkit.data.datasets import ValidationSplit
from lumenkit.errors import ConfigError
from lumenkit.inference.tiling import Tiling
from lumenkit.models.resunet import ARCHITECTURES, BLOCKS, CONTEXTS

RUN_CONTROL_FIELDS: tuple[str, ...] = (
    "data", "out", "epochs", "minutes", "quiet", "threads", "workers", "device", "resume", "overwrite",
    "val_tile", "val_margin", "compile",
)
"""Fields a resumed run takes from the new configuration; everything else comes from ``last.pt``."""

KEPT_ON_RESUME: tuple[str, ...] = ("epochs", "minutes", "val_tile", "val_margin")
"""Run-control fields a resumed run keeps from ``last.pt`` when the new value is the default and not stated
(:func:`resumed_config`): its budget and its validation windows."""

RETIRED_FIELDS: tuple[str, ...] = ("retain_heap",)
"""Fields of older configurations that are now settings of the process (:mod:`lumenkit.runtime`); ignored when read."""


DEFAULT_PRESET = "s1"
"""The preset :class:`TrainConfig` defaults are (``TrainConfig() == TrainConfig.from_preset("s1")``)."""

PRESETS: dict[str, dict[str, Any]] = {
    "s1": {},
    "long": {"minutes": 180.0},
    "s2": {"scale": 0.25, "exposure": 0.0, "n_val": 5},
    "synthetic": {"scale": 0.25, "patch_size": 128, "schedule": "plateau", "photometric": 0.15, "exposure": 0.0,
                  "minutes": 8.0, "n_val": 8},
    "paper": {"scale": 0.25, "schedule": "plateau", "photometric": 0.05, "exposure": 0.0, "compile": "off"},
    "finetune": {"minutes": 10.0, "lr": 3e-4, "compile": "off"},
}
"""Named recipes, as the fields in which each differs from the :class:`TrainConfig` defaults.

* ``s1`` — the default, measured on LumenStone S1 (Pb–Zn–Cu): ResUNet f=16 at 1/8 of native scale, 256-px
  balanced patches, batch 8, cosine learning rate over a 45-minute budget, ±25 % exposure jitter (the spread of
  one mineral's grey level between S1 images); the ``exposure`` row of the ablation table.
* ``long`` — the ``s1`` recipe for 180 minutes (four times the default's budget, the cosine schedule stretched
  over it): for users who can leave a machine training for an afternoon. On a CUDA GPU it trains, as every
  preset does, in mixed precision (``amp``); if its epoch cap comes first, the schedule ends there.
* ``s2`` — LumenStone S2 (Cu–Ni): the same at 1/4 scale without exposure jitter (S2's fine pentlandite flames
  want 1/4), 5 validation images of its 23.
* ``synthetic`` — the workbook's ``make report`` on the synthetic default: 1/4 scale, 128-px patches, ±15 %
  photometric jitter, the paper's plateau schedule, 8 minutes, 8 validation images.
* ``paper`` — the ablation table's base recipe after the paper: 1/4 scale, plateau schedule, ±5 % photometric
  jitter, eager training step, 45 minutes.
* ``finetune`` — adapting a trained model (``init``) to your microscope or minerals: the ``s1`` recipe for 10
  minutes at a third of its learning rate, eager (compiling would not repay itself in 10 minutes).
"""


CHOICES: dict[str, tuple[str, ...]] = {
    "arch": tuple(ARCHITECTURES),
    "block": BLOCKS,
    "context": CONTEXTS,
    "schedule": ("plateau", "cosine"),
    "loss": ("ce", "ce+dice"),
    "sampler": ("balanced", "uniform"),
    "compile": ("auto", "on", "off"),
    "freeze": ("none", "encoder"),
}
"""The values a text field of :class:`TrainConfig` takes (checked by :meth:`TrainConfig.check`, offered by the CLI)."""


def field_docs() -> dict[str, str]:
    """Each :class:`TrainConfig` field's documentation, from the class docstring's ``Attributes:`` section.

    One line of plain text per field (reST markup dropped); a line documenting ``a, b, c`` documents each. The
    command line's ``lumenkit train --help`` is generated from it, so the two cannot disagree.
    """
    doc = TrainConfig.__doc__ or ""
    body = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    entries: list[tuple[list[str], str]] = []
    for line in body.splitlines():
        m = re.match(r"^ {8}([a-z_][a-z0-9_, ]*):\s+(.*)$", line)
        if m:
            entries.append(([n.strip() for n in m.group(1).split(",")], m.group(2).strip()))
        elif entries and line.startswith(" " * 12):
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    out: dict[str, str] = {}
    for names, text in entries:
        text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
        for n in names:
            out[n] = text
    return out


def config_differences(saved: TrainConfig, new: TrainConfig, strict: bool = False) -> list[str]:
    """Settings of ``new`` that conflict with a saved run, as ``"field: saved X, now Y"``.

    Run-control fields (paths, budget, threads, ...) may change on resume. By default a field of ``new`` left at
    its :class:`TrainConfig` default means "as saved" (``train(data=D, out=R, resume=True)`` continues whatever
    ``R`` holds); with ``strict`` every recipe field must equal the saved one (a complete configuration asking
    to continue a run, as notebook 03's).
    """
    defaults = TrainConfig()
    out = []
    for f in dataclasses.fields(TrainConfig):
        k = f.name
        if k in RUN_CONTROL_FIELDS:
            continue
        now, was = getattr(new, k), getattr(saved, k)
        if now != was and (strict or now != getattr(defaults, k)):
            out.append(f"{k}: saved {was!r}, now {now!r}")
    return out


UNRECORDED_FIELDS: tuple[str, ...] = ("quiet", "threads", "workers", "device", "resume", "overwrite")
"""Fields :func:`train_command` leaves out: they change how a run is carried out, never what it learns."""


def train_command(config: TrainConfig) -> str:
    """The shortest ``lumenkit train`` command line that reproduces ``config``: a preset and the options that differ.

    The preset chosen is the one from which the fewest fields differ (``s1`` on ties); :data:`UNRECORDED_FIELDS`
    are left out. Parsing the line with ``lumenkit train``'s parser gives ``config`` back (the docs' result tables
    print it beside each row, generated from the run's ``config.yaml``).

    Raises:
        ConfigError: ``config`` has a field no command-line option can express (a class set or weights that are
            neither a name nor a list of numbers).
    """
    import shlex

    def text(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, (list, tuple)):
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ConfigError(f"cannot write {v!r} as a command-line option")
            return ",".join(str(x) for x in v)
        return str(v)

    def options(preset: str) -> list[str]:
        base = TrainConfig.from_preset(preset)
        differ = [f.name for f in dataclasses.fields(TrainConfig)
                  if f.name not in UNRECORDED_FIELDS and getattr(config, f.name) != getattr(base, f.name)]
        if config.minutes is None:  # `--epochs N` alone means no time budget
            differ = [k for k in differ if k != "minutes"] + ([] if "epochs" in differ else ["epochs"])
        elif "epochs" in differ and "minutes" not in differ:
            differ.append("minutes")  # ... so an epoch cap with the preset's budget states the budget too
        if "flips" in differ and not config.flips and "rot90" not in differ:
            differ.append("rot90")  # `--no-flips` alone also turns rot90 off
        args = ["--data", text(config.data)] if "data" not in differ else []
        for k in sorted(differ, key=[f.name for f in dataclasses.fields(TrainConfig)].index):
            flag = "--" + k.replace("_", "-")
            v = getattr(config, k)
            args += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else [flag, text(v)]
        return args

    best = min(PRESETS, key=lambda name: (len(options(name)), name != DEFAULT_PRESET))
    return shlex.join(["lumenkit", "train", "--preset", best, *options(best)])


def resumed_config(saved: TrainConfig, new: TrainConfig, stated: Iterable[str] = ()) -> TrainConfig:
    """The configuration a resumed run continues with: ``saved``, with the run-control fields of ``new``.

    A time budget, epoch count or validation window (``val_tile``, ``val_margin``) of ``new`` left at its default
    keeps the saved one, so a run started with ``minutes=90`` and resumed without restating it keeps its 90
    minutes (the elapsed time counts), and a run validated in 512-px windows is not compared to its earlier epochs
    in other windows after a resume (``model.pt`` is the best by one measure). A field named in ``stated`` (given
    explicitly: an override of :func:`~lumenkit.training.train`, an option typed on the command line) is taken even
    where it equals the default, so ``--minutes 45`` ends a 180-minute run at 45.
    """
    defaults = TrainConfig()
    keep = set(KEPT_ON_RESUME) - set(stated)
    control = {k: getattr(new, k) for k in RUN_CONTROL_FIELDS
               if not (k in keep and getattr(new, k) == getattr(defaults, k))}
    return dataclasses.replace(saved, **control)


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``RUN/config.yaml``).

    Attributes:
        data: dataset folder in LumenStone layout (training split ``train``; ``test`` is never read).
        out: run folder for ``model.pt``, ``last.pt``, ``history.csv``, ``config.yaml``.
        class_set: class-set name or codes (default: the dataset's, else every code in the masks).
        scale: training scale relative to native ×100 (0.125 = 1/8 of native; ``None`` = the stored scale of the
            dataset).
        arch: model architecture (see :func:`lumenkit.models.create_model`).
        width: channels of the first level f (the levels have f, 2f, 4f, 8f, 16f).
        depth: encoder levels (the model sees ``2**depth`` px per output stride).
        block: convolution block, ``"residual"`` (the paper's two-branch block), ``"plain"``, ``"separable"``
            (the paper's block with depthwise-separable 3×3 convolutions: lighter) or ``"inverted"`` (MobileNetV2's
            inverted residuals beside the paper's 1×1 shortcut).
        context: ``"none"`` (the paper's network) or ``"aspp"``: atrous spatial pyramid at the bottleneck
            (dilated convolutions and the window's mean feature; :class:`lumenkit.models.resunet.ContextModule`).
        init: checkpoint (``RUN/model.pt``) to start from instead of random weights (fine-tuning to another
            microscope or other minerals): every weight of the same architecture is copied, the head keeps the
            channels of classes both class sets have, gets new ones for classes the data adds and loses those it
            drops; its input normalisation is kept; what was kept, added, dropped and frozen is recorded in the
            checkpoint (``config["init"]``). Use with preset ``finetune`` for a short budget.
        freeze: ``"none"`` or ``"encoder"``: with ``init``, keep the encoder's weights fixed (its batch-norm
            statistics still adapt to the new images) and train the decoder and head only.
        strokes_prior: on a sparse dataset (strokes, ``labels: sparse``), the strength τ with which ``model.pt`` is
            corrected at the end of the run from the class prior the strokes served (every mineral about equally
            common) towards the images' own, estimated by EM from the model's posteriors on the training images,
            masks unread (:mod:`lumenkit.training.prior`): 0 = off, 1 = the full Bayes shift, 0.5 measured best
            on LumenStone S2 strokes. Ignored on whole masks.
        patch_size: patch side in px at the training scale (a multiple of ``2**depth``).
        batch_size: patches per optimizer step per process.
        patches_per_epoch: patches per epoch over all processes (an epoch is a fixed patch budget).
        epochs: maximum epochs (with ``minutes`` set, a cap the time budget normally reaches first).
        minutes: time budget for the whole run incl. validation (``None`` = no limit); the last epoch is cut
            short and still validated.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"plateau"`` (the paper's: ×``plateau_factor`` when the validation loss has not improved for
            ``plateau_patience`` epochs) or ``"cosine"`` (half a cosine from ``lr`` to ``min_lr`` over the run: over
            the time budget when ``minutes`` is set, else over ``epochs``; set every step).
        plateau_factor, plateau_patience, min_lr: ReduceLROnPlateau on the validation loss; ``min_lr`` is also
            the end of the cosine.
        loss: ``"ce"`` (cross-entropy, ignore 255) or ``"ce+dice"``.
        dice_weight: weight of the soft Dice term for ``"ce+dice"``.
        class_weights: ``None``, ``"inverse_sqrt"`` (from training pixel counts) or one weight per class.
        sampler: ``"balanced"`` or ``"uniform"``.
        strength, alpha, kappa, grid, void_border: balanced-sampler parameters (see :mod:`lumenkit.data.samplers`).
        flips, rot90: geometric augmentation of patches.
        photometric: brightness, gamma and white-balance jitter of patches (0.1 = ±10 %); 0 = off.
        exposure: brightness (exposure) jitter of patches alone, factor in ``[1 − e, 1 + e]`` (0.25 = ±25 %, the
            spread of one mineral's median grey level between LumenStone S1 images); the wider of this and
            ``photometric`` applies to brightness; 0 = off.  Must be < 1.
        noise: sensor-noise augmentation, maximum standard deviation in grey levels at the training scale; 0 = off.
        blur: defocus augmentation of half the patches, maximum Gaussian sigma in px at the training scale; 0 = off.
        ema: decay of an exponential moving average of the weights *and* the BatchNorm running statistics,
            updated after every optimizer step (0 = off; 0.995 averages over ≈ 200 steps).  With it on, validation,
            ``model.pt`` and the returned model are the average; ``last.pt`` keeps the raw weights and the average
            for resuming.  The decay ramps up as ``min(ema, (1 + step) / (10 + step))`` so early averages do not
            remember the random initialisation.  BatchNorm statistics of the raw model track only the last ≈ 10
            batches of balanced patches, which makes the validation score of consecutive epochs jump; the
            average smooths both.
        n_val: validation images carved from ``train`` (split ``val``; ``fit`` is the rest).
        val_seed: seed of the validation split.
        val_fold: which block of ``n_val`` images of that seed's permutation is the validation split (0 = the usual
            split, which lumenkit has always carved; the folds of one seed partition the training images, so one run
            per fold ``0 .. ceil(images / n_val) - 1`` cross-validates a recipe; see
            :func:`lumenkit.data.validation_split`). Like ``val_seed`` it changes the data: it is not among
            :data:`RUN_CONTROL_FIELDS`, so resuming with another fold is refused.
        val_tile, val_margin: tiling of whole-image validation prediction, px at model scale; by default the
            prediction's (:class:`~lumenkit.inference.tiling.Tiling`), so the epoch kept as ``model.pt`` is chosen
            by the score ``lumenkit evaluate`` gives it (a network with ``context="aspp"`` pools over each window,
            so its output depends on the window size).
        seed: seed of initialisation and patch streams.
        workers: DataLoader worker processes per rank (0 = draw in the training process).
        threads: torch threads per process (default: usable cores / processes on this node).
        device: ``"auto"`` (CUDA with AMP when present, else CPU), ``"cpu"`` or ``"cuda"``.
        amp: mixed precision on CUDA.
        compile: ``"auto"``, ``"on"`` or ``"off"``: run the training forward/backward through ``torch.compile``
            (inductor fuses batch norm, ReLU and the residual adds; 1.18–1.34× the steps per second of eager on
            the build machine's 2 cores, after a one-off compilation of ≈ 80 s, seconds from the inductor cache;
            see ``benchmarks/bench_compile.py``). ``"auto"`` compiles runs planned to last long enough to repay it
            (``minutes`` ≥ :data:`COMPILE_AUTO_MINUTES`, or without a budget ≥ :data:`COMPILE_AUTO_PATCHES`
            patches) when a compiler toolchain is found; a compilation that fails falls back to eager training
            with a message. Validation and the saved checkpoints are the plain model either way.
        resume: continue from ``RUN/last.pt`` when present.
        overwrite: allow starting afresh in a folder that already holds a run.
        quiet: no progress bars or epoch lines.
    """

    data: str = ""
    out: str = "runs/run"
    class_set: str | list[int] | None = None
    scale: float | None = 0.125
    arch: str = "resunet"
    width: int = 16
    depth: int = 4
    block: str = "residual"
    context: str = "none"
    init: str | None = None
    freeze: str = "none"
    strokes_prior: float = 0.5
    patch_size: int = 256
    batch_size: int = 8
    patches_per_epoch: int = 512
    epochs: int = 1000
    minutes: float | None = 45.0
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    plateau_factor: float = 0.1
    plateau_patience: int = 3
    min_lr: float = 1e-6
    loss: str = "ce"
    dice_weight: float = 1.0
    class_weights: str | list[float] | None = None
    sampler: str = "balanced"
    strength: float = 1.0
    alpha: float = 4.0
    kappa: float = 1.0
    grid: int = 16
    void_border: int = 0
    flips: bool = True
    rot90: bool = True
    photometric: float = 0.0
    exposure: float = 0.25
    noise: float = 0.0
    blur: float = 0.0
    ema: float = 0.0
    n_val: int = 10
    val_seed: int = 0
    val_fold: int = 0
    val_tile: int = Tiling.tile
    val_margin: int = Tiling.margin
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    compile: str = "auto"
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False

    @property
    def validation(self) -> ValidationSplit:
        """The validation split of this run (``n_val``, ``val_seed``, ``val_fold``) as one object."""
        return ValidationSplit(self.n_val, self.val_seed, self.val_fold)

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides: Any) -> TrainConfig:
        """The configuration of preset ``name`` (see :data:`PRESETS`) with ``overrides`` replacing fields.

        Raises:
            ConfigError: unknown preset (the message lists them) or unknown fields.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown training preset {name!r}; known: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides}, source=f"preset {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config", saved: bool = False) -> TrainConfig:
        """Build from a mapping, rejecting unknown keys.

        Args:
            d: field values.
            source: what ``d`` came from, for messages.
            saved: ``d`` was written by an earlier run (``config.yaml``, a checkpoint): fields since retired
                (:data:`RETIRED_FIELDS`) are ignored rather than refused.

        Raises:
            ConfigError: unknown keys (the message lists valid ones), or a retired field set by the caller (the
                message names what replaced it).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        retired = sorted(set(d) & set(RETIRED_FIELDS))
        if retired and not saved:
            raise ConfigError(f"{source}: {retired[0]} is no longer a training option but a setting of the process: "
                              "lumenkit --no-retain-heap, LUMENKIT_RETAIN_HEAP=0 or "
                              "lumenkit.runtime.set_heap_retention(False)")
        d = {k: v for k, v in d.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown training option(s) {unknown}; valid: {', '.join(sorted(names))}")
        return cls(**d)

    def check(self) -> None:
        """Validate values.

        Raises:
            ConfigError: a value out of range; the message names the field and the fix.
        """
        stride = 2**self.depth
        if self.patch_size < stride or self.patch_size % stride:
            raise ConfigError(
                f"patch_size={self.patch_size} must be a positive multiple of 2**depth={stride}; "
                f"use {max(stride, round(self.patch_size / stride) * stride)}"
            )
        for name in ("batch_size", "patches_per_epoch", "epochs", "width", "depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.scale is not None and not 0 < self.scale <= 4:
            raise ConfigError(f"scale must be in (0, 4] relative to native ×100, got {self.scale}")
        if self.n_val < 1:
            raise ConfigError(f"n_val must be ≥ 1 (validation images carved from train), got {self.n_val}")
        if isinstance(self.val_fold, bool) or not isinstance(self.val_fold, int) or self.val_fold < 0:
            raise ConfigError(f"val_fold must be an integer ≥ 0 (which block of n_val images is the validation "
                              f"split; 0 = the usual split), got {self.val_fold!r}")
        if self.freeze != "none" and not self.init:
            raise ConfigError(f"freeze={self.freeze!r} needs init (a checkpoint to start from): --init RUN/model.pt")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes must be positive (or None for no limit), got {self.minutes}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                quoted = [repr(a) for a in allowed]
                one_of = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
                raise ConfigError(f"{name} must be {one_of}, got {getattr(self, name)!r}")
        for name in ("photometric", "noise", "blur"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be ≥ 0 (0 = off), got {getattr(self, name)}")
        if not 0 <= self.exposure < 1:
            raise ConfigError(f"exposure must be in [0, 1) (0.25 = brightness ×0.75 to ×1.25; 0 = off), "
                              f"got {self.exposure}")
        if not 0 <= self.strokes_prior <= 1:
            raise ConfigError(f"strokes_prior must be in [0, 1] (0 = off, 1 = the full Bayes shift), got "
                              f"{self.strokes_prior}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1) (decay of the weight average, e.g. 0.995; 0 = off), "
                              f"got {self.ema}")
        if isinstance(self.class_weights, str) and self.class_weights != "inverse_sqrt":
            raise ConfigError(f"class_weights must be None, 'inverse_sqrt' or a list, got {self.class_weights!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not self.data:
            raise ConfigError("data: give the dataset folder (LumenStone layout)")


COMPILE_AUTO_MINUTES = 10.0
"""``compile="auto"`` compiles runs with a time budget of at least this many minutes."""


COMPILE_AUTO_PATCHES = 25_000
"""``compile="auto"`` compiles runs without a time budget that draw at least this many patches (epochs × patches)."""

