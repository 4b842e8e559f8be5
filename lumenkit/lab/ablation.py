"""Ablations of the CPU training recipe: named variants, one command each, and one table from their run folders.

Every variant is a full training configuration (the base recipe plus a few changed fields) trained under the same
time budget and evaluated on the same validation split carved from ``train``.  ``lumenkit-lab ablation run NAME
--data DIR --runs RUNS`` trains ``RUNS/NAME`` (resuming an interrupted run, skipping a finished one) and writes
``RUNS/NAME/val.json``; ``lumenkit-lab ablation table --runs RUNS`` gathers the rows, marking variants not yet run.
``lumenkit-lab ablation score NAME --runs RUNS --data OTHER --label L`` scores a trained variant on another dataset's
validation split (e.g. a joint S1+S2 model on S1's and on S2's own split) as ``RUNS/NAME/val_L.json``, an extra
row ``NAME on L`` of the table.

Cross-validation: the folds of one validation seed partition the training images (``val_fold`` 0, 1, ...; fold 0 is
the usual split, see :func:`lumenkit.data.validation_split`), so ``lumenkit-lab ablation run NAME --val-fold F --runs
runs/s1_foldF`` for every fold, then ``lumenkit-lab ablation cv NAME --runs runs/s1_fold0 runs/s1_fold1 ...`` pools the
folds' confusion matrices (:func:`crossval`) into the dataset-wide IoU over every training image.

Example:
    >>> from lumenkit.lab.ablation import VARIANTS, variant_config
    >>> variant_config("uniform", data="S1_v1_x05", runs="runs/ablation").sampler
    'uniform'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lumenkit.data.datasets import ValidationSplit
from lumenkit.errors import ConfigError, LumenkitError
from lumenkit.training.config import TrainConfig

if TYPE_CHECKING:
    from lumenkit.inference.refine import Refine
    from lumenkit.models.checkpoint import Checkpoint

PRESET = "paper"
"""The training preset every variant starts from (:data:`lumenkit.training.config.PRESETS`)."""

BASE: dict[str, Any] = {"epochs": 10**6}
"""What the ablation changes in the :data:`PRESET` for every variant: the 45-minute budget alone decides.

Together: ResUNet f=16 at quarter of native scale, 256-px balanced patches, batch 8, ±5 % photometric jitter, the
paper's plateau schedule, 45 minutes, an eager training step (the rows measured before ``torch.compile`` was
offered; the ``compiled`` row turns it on, as ``lumenkit train`` does for such budgets)."""


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table.

    Attributes:
        name: short identifier (the run folder name).
        change: what differs from :data:`BASE`, in words.
        train: overrides of :data:`BASE` (fields of :class:`lumenkit.training.TrainConfig`).
        tta: evaluate with flip/rot90 test-time augmentation.
        uses: evaluate the model of another variant instead of training one (for evaluation-only rows).
        also: with ``uses``, the variants whose models join it as an ensemble (the mean of their probabilities,
            :mod:`lumenkit.inference.ensemble`); each must have trained on the same validation split.
        prior: evaluate the model after prior correction (:mod:`lumenkit.lab.prior`), its strength fitted on the
            training images (``RUNS/NAME/model_prior.pt``).
    """

    name: str
    change: str
    train: dict[str, Any] = field(default_factory=dict)
    tta: bool = False
    uses: str | None = None
    also: tuple[str, ...] = ()
    prior: bool = False


_COSINE = {"schedule": "cosine", "noise": 12.0, "blur": 1.0}
_BEST = {"schedule": "cosine", "photometric": 0.0}  # no_photometric; `exposure` adds the `lumenkit train` defaults
_EXPOSURE = {**_BEST, "compile": "on", "scale": 0.125, "exposure": 0.25}  # the `s1` preset, compiled
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("paper", "the paper's training: ×0.1 on a validation-loss plateau (base recipe)"),
        Variant("uniform", "uniform patches instead of the balancing sampler", {"sampler": "uniform"}),
        Variant("tta", "flip/rot90 test-time augmentation (8 passes) of the base model", tta=True, uses="paper"),
        Variant("cosine", "cosine learning rate over the budget", {"schedule": "cosine"}),
        Variant("robust", "cosine + noise (σ ≤ 12) and defocus (σ ≤ 1 px) augmentation", dict(_COSINE)),
        Variant("no_photometric", "cosine, no photometric jitter", dict(_BEST)),
        Variant("no_augmentation", "cosine, no flips/rot90 and no jitter",
                {"schedule": "cosine", "photometric": 0.0, "flips": False, "rot90": False}),
        Variant(
            "half_balanced",
            "no_photometric, balancing strength 0.5: half the patches balanced, half uniform",
            {**_BEST, "strength": 0.5},
        ),
        Variant("prior", "no_photometric's model, class prior corrected (logit adjustment fitted on training images)",
                uses="no_photometric", prior=True),
        Variant("half_balanced_prior", "half_balanced's model, class prior corrected (fitted on the training images)",
                uses="half_balanced", prior=True),
        Variant("compiled", "no_photometric, training step through torch.compile (as `lumenkit train`)",
                {**_BEST, "compile": "on"}),
        Variant("batch4", "compiled, batch 4 instead of 8: twice the optimizer steps for the same patches",
                {**_BEST, "compile": "on", "batch_size": 4}),
        Variant("eighth_scale", "compiled, model at 1/8 of native scale instead of 1/4 (4× the area per patch)",
                {**_BEST, "compile": "on", "scale": 0.125}),
        Variant("patch128", "compiled, 32 patches of 128 px per step instead of 8 of 256 (same pixels, less context)",
                {**_BEST, "compile": "on", "patch_size": 128, "batch_size": 32}),
        Variant("exposure", "eighth_scale + exposure jitter ±25 % (brightness alone): the `lumenkit train` default",
                dict(_EXPOSURE)),
        Variant("default", "the `s1` preset as `lumenkit train` runs it (exposure with compile 'auto'): the reference "
                "of the candidate comparisons", {**_EXPOSURE, "compile": "auto"}),
        Variant("ema", "exposure + a moving average of weights and BatchNorm statistics (decay 0.995) as the model",
                {**_EXPOSURE, "ema": 0.995}),
        Variant("dice", "exposure + a soft Dice term beside the cross-entropy (loss ce+dice, weight 1)",
                {**_EXPOSURE, "loss": "ce+dice"}),
        Variant("quarter_exposure", "compiled + exposure jitter ±25 % at 1/4 scale (exposure without eighth_scale)",
                {**_BEST, "compile": "on", "exposure": 0.25}),
        Variant("depth5", "compiled, depth 5 instead of 4: twice the receptive field at the same 1/4 scale",
                {**_BEST, "compile": "on", "depth": 5}),
        Variant("width32", "no_photometric, width f=32", {**_BEST, "width": 32}),
        Variant("width64", "no_photometric, width f=64 (the paper's)", {**_BEST, "width": 64}),
        Variant("half_budget", "no_photometric, 22.5 minutes", {**_BEST, "minutes": 22.5}),
        Variant("double_budget", "no_photometric, 90 minutes", {**_BEST, "minutes": 90.0}),
        Variant("exposure_half_budget", "exposure (the default), 15 epochs: half of what 45 minutes bought on the "
                "build machine when defined, cosine over the epochs", {**_EXPOSURE, "minutes": None, "epochs": 15}),
        Variant("exposure_double_budget", "exposure (the default), 60 epochs: twice what 45 minutes bought on the "
                "build machine when defined, cosine over the epochs", {**_EXPOSURE, "minutes": None, "epochs": 60}),
        Variant("long", "the `long` preset as `lumenkit train --preset long` runs it, as 184 epochs: what its 180 "
                "minutes buy on a 2-core machine alone (4× the 46 of the cross-validated candidates), cosine over the "
                "epochs, compiled (as a 180-minute `lumenkit train`)",
                {**_EXPOSURE, "compile": "auto", "minutes": None, "epochs": 184}),
        Variant("separable", "exposure with depthwise-separable 3×3 convolutions (1/4 of the weights, 1/5 of the "
                "FLOPs; on a CPU a step 2 % dearer to 21 % cheaper: benchmarks/bench_variants.py)",
                {**_EXPOSURE, "block": "separable"}),
        Variant("inverted", "exposure with MobileNetV2's inverted residuals (1×1 expansion ×4, depthwise 3×3, linear "
                "1×1 projection) in place of the 3×3 convolutions: benchmarks/bench_variants.py measures its step",
                {**_EXPOSURE, "block": "inverted"}),
        Variant("aspp", "exposure + an atrous spatial pyramid (dilations 2, 4 and the window's mean) at the "
                "bottleneck", {**_EXPOSURE, "context": "aspp"}),
        Variant("separable_aspp", "separable + aspp", {**_EXPOSURE, "block": "separable", "context": "aspp"}),
        Variant("s2", "the `s2` preset as `lumenkit train --preset s2` runs it (no_photometric with compile 'auto'): "
                "the reference of the S2 candidates", {**_BEST, "compile": "auto", "n_val": 5}),
        Variant("s2_pair", "s2 with pyrrhotite and pentlandite weighted ×2 in the loss (S2's classes BG, Ccp, Mag, "
                "Po, Pn only): the pair the network confuses most", {**_BEST, "compile": "auto", "n_val": 5,
                                                                    "class_weights": [1.0, 1.0, 1.0, 2.0, 2.0]}),
        Variant("s2_half", "s2 at 1/2 of native scale with depth 5: pentlandite's flames at twice the resolution "
                "(its ceiling 1.0 against 0.93 at 1/4), the same context in native pixels as 1/4 with depth 4",
                {**_BEST, "compile": "auto", "n_val": 5, "scale": 0.5, "depth": 5}),
        Variant("quarter_depth5", "exposure at 1/4 scale with depth 5: finer resolution, the same context as 1/8 "
                "with depth 4", {**{k: v for k, v in _EXPOSURE.items() if k != "scale"}, "depth": 5}),
        Variant("aspp_ema", "aspp + a moving average of weights and BatchNorm statistics (decay 0.995) as the model",
                {**_EXPOSURE, "context": "aspp", "ema": 0.995}),
        Variant("aspp_dice", "aspp + a soft Dice term beside the cross-entropy (loss ce+dice, weight 1)",
                {**_EXPOSURE, "context": "aspp", "loss": "ce+dice"}),
        Variant("ensemble_aspp_ema_separable", "the mean of aspp_ema's and separable's probabilities: an ensemble "
                "of two models trained apart (twice the training; 1.5× one model's prediction, bench_ensemble.py)",
                uses="aspp_ema", also=("separable",)),
    )
}
"""The ablation rows, in table order."""


def variant(name: str) -> Variant:
    """The variant called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in VARIANTS:
        raise ConfigError(f"unknown ablation variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def variant_config(name: str, data: str | Path, runs: str | Path, **overrides: Any) -> TrainConfig:
    """The training configuration of a variant: :data:`PRESET` with :data:`BASE`, its changes, then ``overrides``.

    Raises:
        ConfigError: unknown variant, an evaluation-only variant, or unknown override fields.
    """
    v = variant(name)
    if v.uses is not None:
        raise ConfigError(f"ablation variant {name!r} trains nothing: it evaluates the model of {v.uses!r}")
    d = {**BASE, **v.train, **overrides, "data": str(data), "out": str(Path(runs) / name)}
    return TrainConfig.from_preset(PRESET, **d)


def _finished(run: Path, cfg: TrainConfig | None = None) -> bool:
    """True when ``run`` holds a training run that used its whole budget (time or epochs).

    The budget is ``cfg``'s, or without it the one ``last.pt`` was trained with (its own saved configuration).
    """
    from lumenkit.models.checkpoint import load_checkpoint

    last = run / "last.pt"
    if not (run / "model.pt").exists() or not last.exists():
        return False
    ck = load_checkpoint(last)
    st = ck.train_state or {}
    if cfg is not None:
        minutes, epochs = cfg.minutes, cfg.epochs
    else:
        train = (ck.config or {}).get("train", {}) or {}
        minutes, epochs = train.get("minutes"), int(train.get("epochs") or 0)
    if minutes:
        return float(st.get("elapsed", 0.0)) >= float(minutes) * 60 - 1.0
    return epochs > 0 and int(st.get("epoch", 0)) >= epochs


class VariantInterrupted(Exception):
    """The training of an ablation variant was stopped by a signal; calling :func:`run_variant` again resumes it."""


def run_variant(name: str, data: str | Path, runs: str | Path, quiet: bool = True,
                **overrides: Any) -> dict[str, Any]:
    """Train (or resume, or skip when finished) and evaluate one variant on the validation split.

    Writes ``RUNS/NAME/val.json`` (the :func:`lumenkit.evaluation.evaluate.evaluate` document plus ``variant`` and
    ``change``; it records ``n_val``, ``val_seed`` and ``val_fold``) and returns it.  ``overrides`` such as
    ``val_fold=2`` carve another validation split (use one ``runs`` folder per split).

    Raises:
        ConfigError: unknown variant or bad overrides; a model in ``RUNS`` trained on another validation split
            (``n_val``, ``val_seed`` or ``val_fold``) than the one asked for; dataset and checkpoint errors as in
            training/evaluation.
        VariantInterrupted: a signal (Ctrl-C, SIGTERM) stopped the training before its budget: ``last.pt`` holds
            the resumable state and no ``val.json`` is written (a half-trained model would enter the table).
    """
    from lumenkit.evaluation.evaluate import evaluate, write_evaluation
    from lumenkit.inference.tiling import Tiling
    from lumenkit.models.checkpoint import load_checkpoint
    from lumenkit.training.loop import train

    v = variant(name)
    runs = Path(runs)
    source = v.uses or name
    cfg = variant_config(source, data, runs, **overrides)
    run = Path(cfg.out)
    if v.uses is None and not _finished(run, cfg):
        if train(cfg, resume=(run / "last.pt").exists(), quiet=quiet).interrupted:
            raise VariantInterrupted(f"{run}: training of {name!r} was interrupted before its budget; nothing was "
                                     "evaluated. Run the same command again to resume it from last.pt")
    if not (run / "model.pt").exists():
        raise ConfigError(f"{run}: no model.pt; run `lumenkit-lab ablation run {source}` first")
    out = runs / name / "val.json"
    model = run / "model.pt"
    extra: dict[str, Any] = {}
    if v.prior:
        from lumenkit.lab.prior import correct_model

        model, _, info = correct_model(model, runs / name / "model_prior.pt", data=data, progress=not quiet)
        extra["prior_correction"] = {k: info[k] for k in ("tau", "shift", "labels", "fitted_on", "images")}
    ckpt = load_checkpoint(model)
    trained, wanted = ValidationSplit.of_model(ckpt), cfg.validation
    if trained != wanted:
        raise ConfigError(f"{model}: trained with {trained}, not the split asked for "
                          f"({wanted}); pass the same --n-val/--val-seed/--val-fold, or use another "
                          "--runs folder per split")
    ckpt = _with_members(ckpt, v, runs)
    ev = evaluate(data, ckpt, split="val", validation=wanted, tiling=Tiling(tta=v.tta), progress=not quiet)
    ev.info.update({"variant": name, "change": v.change, **extra})
    write_evaluation(ev, out)
    return json.loads(out.read_text())


def _with_members(ckpt: Any, v: Variant, runs: Path) -> Any:
    """``ckpt`` alone, or, for a variant with :attr:`Variant.also`, the ensemble of it and those variants' models.

    Every member must have trained through its whole budget (``last.pt`` says so by the configuration it was
    trained with): ``model.pt`` is rewritten while a run trains, and a half-trained member would enter the table.

    Raises:
        ConfigError: a member that is not a trained variant, not trained yet in ``runs``, or still training.
    """
    if not v.also:
        return ckpt
    from lumenkit.inference.ensemble import Ensemble
    from lumenkit.models.checkpoint import load_checkpoint

    members = [ckpt]
    for other in (v.uses, *v.also):
        o = variant(other)
        if o.uses or o.prior or o.tta or o.also:
            raise ConfigError(f"ablation variant {v.name!r}: member {other!r} is not a trained model of its own; "
                              "an ensemble row names trained variants")
        path = runs / other / "model.pt"
        if not path.exists():
            raise ConfigError(f"{path}: no trained model for the ensemble {v.name!r}; run `lumenkit-lab ablation run "
                              f"{other}` with the same --runs and split first")
        if not _finished(runs / other):
            raise ConfigError(f"{runs / other / 'last.pt'}: {other!r} has not finished training; let `lumenkit-lab "
                              f"ablation run {other}` finish before scoring the ensemble {v.name!r}")
        if other != v.uses:
            members.append(load_checkpoint(path))
    return Ensemble(members)


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def barred(checkpoint: Checkpoint, labels: Sequence[str]) -> Checkpoint:
    """A copy of the model with the classes ``labels`` never predicted: -10⁴ added to their output biases.

    What a mineralogist who knows a section's association would tell a model of several associations (a joint
    S1+S2 model on a Pb–Zn section: no magnetite, pyrrhotite or pentlandite). A bias of -10⁴ sends the class's
    softmax probability to 0 within float precision, so each pixel goes to its best remaining class; the other
    classes' probabilities are renormalised by the softmax itself. The shift is the prior correction's
    (:func:`lumenkit.training.prior.apply_prior_correction`), recorded in the copy's ``prior_correction``.

    Args:
        checkpoint: a loaded lumenkit model whose network ends in a ``head`` convolution with a bias.
        labels: class labels of the model (e.g. ``("Mag", "Po", "Pn")``); at least one class must remain.

    Returns:
        The barred copy (``checkpoint`` is untouched).

    Raises:
        ConfigError: a label the model does not predict (or one string instead of a sequence of labels), every
            class barred, or a network without a biased ``head``.
    """
    from lumenkit.training.prior import apply_prior_correction

    if isinstance(labels, str):
        raise ConfigError(f"bar: give a sequence of labels, e.g. ({labels!r},), not the string {labels!r}")
    known = list(checkpoint.class_map.labels) if checkpoint.class_map is not None else []
    unknown = [lab for lab in labels if lab not in known]
    if unknown:
        raise ConfigError(f"bar: {', '.join(unknown)} not among the model's classes ({', '.join(known) or 'none'})")
    if len(set(labels)) >= len(known):
        raise ConfigError("bar: every class of the model barred; leave at least one")
    try:
        return apply_prior_correction(checkpoint, [-1e4 if lab in labels else 0.0 for lab in known],
                                      {"barred": list(labels)})
    except ValueError as e:
        raise ConfigError(f"bar: {type(checkpoint.model).__name__}: {e}") from None


def score_variant(name: str, data: str | Path, runs: str | Path, label: str,
                  validation: ValidationSplit | None = None, quiet: bool = True,
                  refine: Refine | None = None, bar: Sequence[str] = ()) -> dict[str, Any]:
    """Evaluate the trained model of a variant on another dataset's validation split.

    Used for a joint model: trained on ``lumenkit combine S1 S2`` (whose validation list is each source's own
    seeded split), it is scored on ``S1 --n-val 10`` and on ``S2 --n-val 5``, the very images the single-dataset
    models are validated on.  Classes of the model absent from ``data`` do not enter the mean IoU (it averages the
    classes present in the ground truth), but every pixel predicted as one of them counts as an error.

    Args:
        name: the variant whose ``RUNS/NAME/model.pt`` is scored (an evaluation-only variant scores the model it
            uses, with its test-time augmentation).
        data: dataset folder in LumenStone layout.
        runs: the ablation runs folder.
        label: short name of the dataset (letters, digits, ``_.-``): the file is ``RUNS/NAME/val_LABEL.json``.
        validation: the validation images carved from ``data``'s train images (default ``ValidationSplit()``: 10
            images, seed 0, fold 0, the usual split); on the dataset the variant trained on, its own split is
            taken and any other refused.
        quiet: no progress bar.
        refine: upsample the probabilities guided by the image (``lumenkit evaluate --refine``): scored on the
            variant's own dataset and folds (e.g. label ``refine``), the refinement's effect alone, cross-validated
            with ``lumenkit-lab ablation cv NAME --label refine``.
        bar: class labels the model may not predict (:func:`barred`), e.g. a joint S1+S2 model scored on S1
            without S2's own minerals; recorded as ``barred`` in the evaluation.

    Returns:
        The evaluation document written (with ``variant``, ``change``, ``scored_on``, ``val_fold`` and ``barred``,
        the labels barred, ``[]`` for none).

    Raises:
        ConfigError: unknown variant, a bad label, no trained model yet, ``validation`` out of range or, on the
            variant's own dataset, not its split; ``bar`` on an ensemble, or as :func:`barred` refuses it;
            dataset errors as in evaluation.
    """
    from lumenkit.evaluation.evaluate import evaluate, write_evaluation
    from lumenkit.inference.tiling import Tiling

    v = variant(name)
    if not _LABEL.match(label):
        raise ConfigError(f"ablation score: label {label!r} must be letters, digits, '_', '.', '-' (e.g. S1)")
    model = Path(runs) / (v.uses or name) / "model.pt"
    if not model.exists():
        raise ConfigError(f"{model}: no trained model; run `lumenkit-lab ablation run {v.uses or name}` first")
    if v.prior:
        model = Path(runs) / name / "model_prior.pt"
        if not model.exists():
            raise ConfigError(f"{model}: not corrected yet; run `lumenkit-lab ablation run {name}` first")
    validation = _scored_split(Path(runs) / (v.uses or name) / "val.json", data, validation)
    if bar and v.also:
        raise ConfigError(f"ablation score: {name!r} is an ensemble; bar classes of a single model")
    if v.also or bar:
        from lumenkit.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(model)
        model = barred(loaded, bar) if bar else _with_members(loaded, v, Path(runs))
    ev = evaluate(data, model, split="val", validation=validation,
                  tiling=Tiling(tta=v.tta), progress=not quiet,
                  predict_kwargs={"refine": refine} if refine is not None else None)
    ev.info.update({"variant": name, "change": v.change, "scored_on": label, "barred": list(bar)})
    out = Path(runs) / name / f"val_{label}.json"
    write_evaluation(ev, out)
    return json.loads(out.read_text())


def _scored_split(own: Path, data: str | Path, validation: ValidationSplit | None) -> ValidationSplit:
    """The split to score a variant's model on.

    On the dataset the run trained on, its own validation split and no other (any other holds images it trained
    on); on another dataset ``validation`` (default ``ValidationSplit()``).
    """
    if own.exists():
        d = json.loads(own.read_text())
        if d.get("data") and Path(d["data"]).resolve() == Path(data).resolve():
            trained = ValidationSplit(int(d.get("n_val", 10)), int(d.get("val_seed", 0)), int(d.get("val_fold", 0)))
            if validation is not None and validation != trained:
                raise ConfigError(f"{own.parent}: trained on {data} with validation {trained}; scoring it on "
                                  f"{validation} would score images it trained on: leave out --n-val/--val-seed/"
                                  "--val-fold (its own split is taken)")
            return trained
    return validation if validation is not None else ValidationSplit()


def _row(d: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {k: _f(x) for k, x in d["per_class_iou"].items()}
    if "confusion" in d and "class_order" in d:  # classes absent from this split's ground truth: NaN, not 0
        for label, truth in zip(d["class_order"], d["confusion"], strict=True):
            if sum(truth) == 0:
                row[label] = math.nan
    lo, hi = d.get("mean_iou_ci95", [math.nan, math.nan])
    row.update(mean_iou=float(d["mean_iou"]), ci_low=_f(lo), ci_high=_f(hi),
               pixel_accuracy=float(d["pixel_accuracy"]), images=int(d.get("images", 0)))
    return row


def _progress(run: Path, history: pd.DataFrame) -> str:
    """``"unfinished: 3 of 184 epochs"`` (or minutes) for a run that has trained but not been evaluated yet.

    The budget is the one in ``RUN/config.yaml``; the same ``ablation run`` resumes the run from ``last.pt``.
    """
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    if cfg.get("minutes"):
        return f"unfinished: {history['seconds'].sum() / 60:.0f} of {float(cfg['minutes']):g} minutes"
    budget = f" of {int(cfg['epochs'])}" if cfg.get("epochs") else ""
    return f"unfinished: {len(history)}{budget} epochs"


def ablation_table(runs: str | Path, names: list[str] | None = None) -> pd.DataFrame:
    """One row per variant (in :data:`VARIANTS` order) from ``RUNS/NAME/val.json``; NaN where not yet run.

    Columns: ``variant``, ``change``, ``epochs`` (of the trained run), ``best_epoch`` (the kept checkpoint, best
    by validation mean IoU), one per class IoU, ``mean_iou``, ``ci_low``, ``ci_high`` (95 % bootstrap over images),
    ``pixel_accuracy``, ``last_miou`` (validation mean IoU of the final epoch: choosing the best epoch on the
    validation split flatters it a little; the final epoch is the unbiased figure), ``images`` (validation
    images) and ``status`` (empty once evaluated; ``"not run"``, or ``"unfinished: E of N epochs"`` for a run
    still training or stopped, which the same ``ablation run`` resumes).  Each ``RUNS/NAME/val_LABEL.json``
    written by :func:`score_variant` adds a row ``NAME on LABEL`` right after the variant's own (``last_miou``
    empty: the training curve was measured on another split); a
    class absent from a row's validation ground truth is NaN (it does not enter the mean either, though pixels
    wrongly predicted as it count against the true classes).
    """
    runs = Path(runs)
    rows: list[dict[str, Any]] = []
    for name in names or list(VARIANTS):
        v = variant(name)
        row: dict[str, Any] = {"variant": name, "change": v.change}
        path = runs / name / "val.json"
        if path.exists():
            row.update(_row(json.loads(path.read_text())))
        hist = runs / (v.uses or name) / "history.csv"
        h = pd.read_csv(hist) if hist.exists() else None
        row["epochs"] = len(h) if h is not None else math.nan
        row["best_epoch"] = int(h["val_miou"].idxmax()) + 1 if h is not None and len(h) else math.nan
        own_curve = h is not None and len(h) and v.uses is None  # evaluation-only rows have no curve of their own
        row["last_miou"] = float(h["val_miou"].iloc[-1]) if own_curve else math.nan
        row["status"] = "" if path.exists() else _progress(runs / name, h) if own_curve else "not run"
        rows.append(row)
        for extra in sorted((runs / name).glob("val_*.json")):
            d = json.loads(extra.read_text())
            if "scored_on" not in d:  # another evaluation saved beside the run, not a score_variant row
                continue
            label = d["scored_on"]
            rows.append({**_row(d), "variant": f"{name} on {label}", "change": f"{v.change}; scored on {label}",
                         "epochs": row["epochs"], "best_epoch": row["best_epoch"], "last_miou": math.nan})
    df = pd.DataFrame(rows)
    lead = ["variant", "change", "epochs", "best_epoch"]
    tail = [c for c in ("mean_iou", "ci_low", "ci_high", "pixel_accuracy", "last_miou", "images", "status")
            if c in df.columns]
    classes = [c for c in df.columns if c not in lead + tail]
    return df[lead + classes + tail]


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


def to_markdown(df: pd.DataFrame, only_run: bool = False) -> str:
    """The ablation table as GitHub markdown (2 decimals for IoU, 3 for the mean).

    Variants not evaluated yet show their ``status`` ("not run", or how far an unfinished run has trained), or are
    left out with ``only_run``.
    """
    lead = {"variant", "change", "epochs", "best_epoch", "mean_iou", "ci_low", "ci_high", "pixel_accuracy",
            "last_miou", "images", "status"}
    classes = [c for c in df.columns if c not in lead]
    head = ["variant", "change", "epochs (best)", *classes, "mean IoU (95 % interval)", "pixel acc.",
            "final epoch mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(x: Any, fmt: str) -> str:
        return "" if x is None or x != x else format(x, fmt)

    for r in df.to_dict("records"):
        if "mean_iou" not in r or not r["mean_iou"] == r["mean_iou"]:
            if only_run:
                continue
            status = r.get("status") if isinstance(r.get("status"), str) and r.get("status") else "not run"
            cells = [f"`{r['variant']}`", r["change"], "", *[""] * len(classes), status, "", ""]
        else:
            ep = num(r["epochs"], ".0f") + (f" ({num(r['best_epoch'], '.0f')})" if r["best_epoch"] == r["best_epoch"]
                                             else "")
            ci = f" ({r['ci_low']:.2f}–{r['ci_high']:.2f})" if r.get("ci_low") == r.get("ci_low") else ""
            cells = [f"`{r['variant']}`", r["change"], ep, *[num(r[c], ".2f") for c in classes],
                     f"{r['mean_iou']:.3f}{ci}", f"{r['pixel_accuracy']:.3f}", num(r.get("last_miou"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_Doc = tuple[Path, int, dict[str, Any]]  # an evaluation file, its fold, its content


def _fold_documents(runs: Sequence[str | Path], name: str, label: str | None) -> list[_Doc]:
    """The validation evaluations of variant ``name`` in ``runs``, in fold order (:func:`crossval`'s checks)."""
    if not runs:
        raise ConfigError("crossval needs the run folders of the folds, e.g. runs/s1_fold0 runs/s1_fold1 ...")
    if label is not None and not _LABEL.match(label):
        raise ConfigError(f"crossval: label {label!r} must be letters, digits, '_', '.', '-' (e.g. S1)")
    file = f"val_{label}.json" if label else "val.json"
    docs: list[_Doc] = []
    for run in runs:
        path = Path(run) / name / file
        if not path.exists():
            how = (f"lumenkit-lab ablation score {name} --label {label} --val-fold F --runs {run}" if label
                   else f"lumenkit-lab ablation run {name} --val-fold F --runs {run}")
            raise ConfigError(f"{path}: no evaluation of {name!r} here; run `{how}` first")
        d = json.loads(path.read_text())
        if "confusion" not in d or "class_order" not in d or d.get("split", "val") != "val":
            raise ConfigError(f"{path}: not a validation-split evaluation with a confusion matrix; run the variant "
                              "again to rewrite it")
        docs.append((path, int(d.get("val_fold", 0)), d))  # written before folds existed: fold 0
    by_fold: dict[int, Path] = {}
    for path, fold, _ in docs:
        if fold in by_fold:
            raise ConfigError(f"fold {fold} given twice ({by_fold[fold]} and {path}); give each fold's run once")
        by_fold[fold] = path
    return sorted(docs, key=lambda t: t[1])


def _under_protocol(d: dict[str, Any], protocol: str, path: Path) -> dict[str, Any]:
    """Evaluation ``d`` with its headline scores replaced by those of scoring ``protocol`` (no per-image ones).

    Raises:
        ConfigError: an unknown ``protocol``, or ``d`` has no scores under it with a confusion matrix (an
            evaluation written before the protocol existed: evaluate again).
    """
    from lumenkit.evaluation.evaluate import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown scoring protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    scored = (d.get("protocols") or {}).get(protocol)
    if not scored or "confusion" not in scored:
        have = ", ".join(d.get("protocols") or {}) or "none"
        raise ConfigError(f"{path}: no scores under protocol {protocol!r} with a confusion matrix (it has: {have}); "
                          "evaluate the run again with this lumenkit to add them")
    out = {k: v for k, v in d.items() if k not in ("per_image_confusion", "mean_iou_ci95")}
    out.update({k: scored[k] for k in ("per_class_iou", "mean_iou", "pixel_accuracy", "confusion")},
               void_border=scored.get("void_border", 0), protocol=protocol)
    return out


def _same_setup(docs: list[_Doc], name: str) -> dict[str, Any]:
    """The setup every document shares (data, ``n_val``, seed, classes, variant, TTA, refinement, void border).

    Raises ConfigError where one differs or where an image is validated twice.
    """

    def setup(d: dict[str, Any]) -> dict[str, Any]:
        return {"data": d.get("data"), "n_val": d.get("n_val"), "val_seed": d.get("val_seed", 0),
                "class_order": list(d["class_order"]), "variant": d.get("variant", name),
                "tta": d.get("tta", False), "refine": d.get("refine"), "void_border": d.get("void_border", 0)}

    first_path, _, first = docs[0]
    ref = setup(first)
    if ref["variant"] != name:
        raise ConfigError(f"{first_path}: holds variant {ref['variant']!r}, not {name!r}")
    for path, _, d in docs[1:]:
        now = setup(d)
        diff = [f"{k} {ref[k]!r} there, {now[k]!r} here" for k in ref if now[k] != ref[k]]
        if diff:
            raise ConfigError(f"{path}: not the same cross-validation as {first_path} ({'; '.join(diff)}); pool "
                              "one variant's runs on one dataset with one n_val and val_seed, one run per fold")
    seen: dict[str, Path] = {}
    for path, _, d in docs:
        for image in (r["image"] for r in d.get("per_image", [])):
            if image in seen:
                raise ConfigError(f"image {image} is validated in both {seen[image]} and {path}: these runs are not "
                                  "disjoint folds of one split")
            seen[image] = path
    return ref


def _coverage(docs: list[_Doc], name: str, data: str | None, n_val: int,
              seed: int) -> tuple[int | None, int | None, list[str]]:
    """``(n_folds, total training images, images in no fold)`` of the data's training split.

    ``(None, None, [])`` with a warning when it cannot be checked; ConfigError where a document's fold or images
    are not the data's.
    """
    import warnings

    from lumenkit.data.datasets import LumenStoneDataset, validation_folds, validation_split

    folds = [fold for _, fold, _ in docs]
    try:
        train = LumenStoneDataset(data, "train") if data else None
    except LumenkitError:
        train = None
    if train is None or train.info.validation is not None:
        why = "its data folder cannot be read" if train is None else "its data folder has a fixed validation list"
        warnings.warn(f"crossval {name}: cannot check that folds {folds} cover every image ({why}: {data})",
                      stacklevel=3)
        return None, None, []
    everything = train.names
    n_folds = validation_folds(len(everything), n_val)
    for path, fold, d in docs:
        if fold >= n_folds:
            raise ConfigError(f"{path}: fold {fold}, but {data} has folds 0 to {n_folds - 1} only "
                              f"({len(everything)} training images, n_val={n_val})")
        got = sorted(r["image"] for r in d.get("per_image", []))
        if got and got != validation_split(everything, n_val, seed, fold)[1]:
            raise ConfigError(f"{path}: its validation images are not fold {fold} of {data} (n_val={n_val}, "
                              f"val_seed={seed}); did the data change since? Run the variant again")
    total = len(everything)
    covered = {r["image"] for _, _, d in docs for r in d.get("per_image", [])}
    missing = sorted(set(everything) - covered) if covered else []
    if not covered:  # documents without per-image rows: judge by the folds
        for f in set(range(n_folds)) - set(folds):
            missing += validation_split(everything, n_val, seed, f)[1]
        missing.sort()
    if missing:
        left = sorted(set(range(n_folds)) - set(folds))
        warnings.warn(f"crossval {name}: folds {folds} validate {total - len(missing)} of {total} training "
                      f"images; folds {left} are missing, so the pooled figure is not over every image",
                      stacklevel=3)
    return n_folds, total, missing


def crossval(runs: Sequence[str | Path], name: str, label: str | None = None, n_boot: int = 1000,
             protocol: str | None = None) -> pd.DataFrame:
    """Cross-validate variant ``name``: pool its validation confusion matrices over run folders, one per fold.

    Each ``RUN/NAME/val.json`` (``val_LABEL.json`` with ``label``: a :func:`score_variant` score) holds the
    dataset-wide confusion matrix (``confusion``, pixels at the stored mask resolution, rows = truth) of one fold's
    validation images, e.g. from ``lumenkit-lab ablation run NAME --val-fold F --runs runs/s1_foldF``.  Their sum is
    the confusion matrix of every validated image, whose per-class IoU is the paper's dataset-wide metric over all
    of them; the per-fold figures are returned beside it (their mean weighs a small fold as much as a large one).

    Args:
        runs: ablation run folders, one per fold (any order).
        name: the variant pooled.
        label: pool ``val_LABEL.json`` instead of ``val.json``.
        n_boot: bootstrap resamples of the pooled row's 95 % interval over images (0: no interval).
        protocol: pool the folds' scores under this scoring protocol of their evaluations (``protocols`` in the
            JSON, :data:`lumenkit.evaluation.evaluate.PROTOCOLS`, e.g. ``petroscope``) instead of the headline
            one; the evaluations keep no per-image matrices per protocol, so its rows have no interval.

    Returns:
        One row per fold in fold order, then the pooled row.  Columns: ``row`` (``fold F``; ``pooled``, or
        ``pooled (incomplete: …)`` / ``pooled (coverage unknown)`` when the folds do not cover every training
        image or that cannot be checked), ``fold``, ``run`` (the run folder; empty for the pooled row), ``images``,
        one IoU per class (NaN for a class absent from that row's ground truth), ``mean_iou``, ``ci_low``,
        ``ci_high`` (95 % bootstrap interval over that row's images), ``pixel_accuracy``.  ``df.attrs`` holds
        ``variant``, ``label``, ``protocol``, ``data``, ``n_val``, ``val_seed``, ``folds`` (the folds pooled),
        ``n_folds`` (folds the data's training images give), ``total_images``, ``missing`` (training images in no
        pooled fold),
        ``complete`` (every training image validated exactly once), ``fold_miou_mean`` and ``fold_miou_std`` (mean
        and sample standard deviation of the per-fold mean IoUs); ``n_folds``, ``total_images`` and ``complete`` are
        ``None`` when the data folder cannot be read or has a fixed ``validation`` list.

    Warns:
        UserWarning: the folds do not cover every training image, or coverage cannot be checked.

    Raises:
        ConfigError: no run folders; a run without the evaluation file or its confusion matrix, or without
            ``protocol``'s scores; documents that differ in data, ``n_val``, ``val_seed``, class order, variant,
            void border or test-time augmentation; a fold given
            twice; an image validated in two runs; a fold the data does not have, or validation images that are not
            that fold's (the data changed since the runs).
    """
    from lumenkit.evaluation.metrics import Scores, bootstrap_mean_iou

    docs = _fold_documents(runs, name, label)
    if protocol is not None:
        docs = [(path, fold, _under_protocol(d, protocol, path)) for path, fold, d in docs]
    ref = _same_setup(docs, name)
    data, n_val, seed = ref["data"], int(ref["n_val"] or 0), int(ref["val_seed"])
    folds = [fold for _, fold, _ in docs]
    n_folds, total, missing = _coverage(docs, name, data, n_val, seed)
    labels = list(ref["class_order"])
    rows: list[dict[str, Any]] = []
    for path, fold, d in docs:
        rows.append({"row": f"fold {fold}", "fold": fold, "run": str(path.parent.parent), **_row(d)})
    pooled = np.sum([np.asarray(d["confusion"], dtype=np.int64) for _, _, d in docs], axis=0)
    sc = Scores(pooled, labels)
    iou = {lbl: (float(v) if present else math.nan)
           for lbl, v, present in zip(labels, sc.iou, sc.present, strict=True)}
    per_image = [np.asarray(m, dtype=np.int64) for _, _, d in docs
                 for m in (d.get("per_image_confusion") or {}).values()]
    has_all = all("per_image_confusion" in d for _, _, d in docs)
    lo, hi = bootstrap_mean_iou(per_image, n_boot=n_boot) if (has_all and n_boot > 0) else (math.nan, math.nan)
    complete = None if total is None else not missing
    mark = ("pooled" if complete else "pooled (coverage unknown)" if complete is None
            else f"pooled (incomplete: {total - len(missing)} of {total} images)")
    rows.append({"row": mark, "fold": None, "run": "", **iou, "mean_iou": sc.mean_iou, "ci_low": lo, "ci_high": hi,
                 "pixel_accuracy": sc.pixel_accuracy, "images": int(sum(int(d.get("images", 0)) for _, _, d in docs))})
    df = pd.DataFrame(rows)
    df["fold"] = df["fold"].astype("Int64")
    df = df[["row", "fold", "run", "images", *labels, "mean_iou", "ci_low", "ci_high", "pixel_accuracy"]]
    fold_miou = df["mean_iou"].iloc[:-1].astype(float)
    df.attrs.update({
        "variant": name, "label": label, "protocol": protocol, "data": data, "n_val": n_val, "val_seed": seed,
        "folds": folds,
        "n_folds": n_folds, "total_images": total, "missing": missing, "complete": complete,
        "fold_miou_mean": float(fold_miou.mean()),
        "fold_miou_std": float(fold_miou.std(ddof=1)) if len(fold_miou) > 1 else math.nan,
    })
    return df


def crossval_markdown(df: pd.DataFrame) -> str:
    """:func:`crossval`'s table as GitHub markdown (2 decimals for IoU, 3 for the means).

    A closing line gives the per-fold spread of mean IoU and the folds' coverage of the training images.
    """
    meta = {"row", "fold", "run", "images", "mean_iou", "ci_low", "ci_high", "pixel_accuracy"}
    classes = [c for c in df.columns if c not in meta]
    head = ["", "images", *classes, "mean IoU (95 % interval)", "pixel acc."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.to_dict("records"):
        ci = f" ({r['ci_low']:.2f}–{r['ci_high']:.2f})" if r["ci_low"] == r["ci_low"] else ""
        cells = [r["row"], str(r["images"]), *["" if r[c] != r[c] else f"{r[c]:.2f}" for c in classes],
                 f"{r['mean_iou']:.3f}{ci}", f"{r['pixel_accuracy']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    a = df.attrs
    if a:
        spread = f"per-fold mean IoU {a['fold_miou_mean']:.3f}"
        if a["fold_miou_std"] == a["fold_miou_std"]:
            spread += f" ± {a['fold_miou_std']:.3f} (sample SD over {len(a['folds'])} folds)"
        cover = ("coverage unknown" if a["complete"] is None else
                 f"every one of the {a['total_images']} training images validated once" if a["complete"] else
                 f"{len(a['missing'])} of {a['total_images']} training images in no fold given")
        under = f", scored under protocol {a['protocol']}" if a.get("protocol") else ""
        lines += ["", f"{a['variant']}: folds {a['folds']} of {a['n_folds'] or '?'} (n_val {a['n_val']}, val_seed "
                      f"{a['val_seed']}{under}); {spread}; {cover}"]
    return "\n".join(lines) + "\n"


def describe() -> pd.DataFrame:
    """The variants and their full training changes (for ``lumenkit-lab ablation list``)."""
    rows = []
    for v in VARIANTS.values():
        changes = ", ".join(f"{k}={val}" for k, val in v.train.items())
        rows.append({"variant": v.name, "change": v.change, "tta": v.tta, "prior": v.prior,
                     "train": changes or (f"models of {', '.join((v.uses, *v.also))}" if v.also
                                          else f"model of {v.uses}" if v.uses else "base")})
    return pd.DataFrame(rows)


__all__ = ["BASE", "VARIANTS", "Variant", "VariantInterrupted", "ablation_table", "crossval", "crossval_markdown",
           "describe", "run_variant", "score_variant", "to_markdown", "variant", "variant_config"]
