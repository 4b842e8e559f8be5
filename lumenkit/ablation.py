"""Ablations of the CPU training recipe: named variants, one command each, and one table from their run folders.

Every variant is a full training configuration (the base recipe plus a few changed fields) trained under the same
time budget and evaluated on the same validation split carved from ``train``.  ``lumenkit ablation run NAME
--data DIR --runs RUNS`` trains ``RUNS/NAME`` (resuming an interrupted run, skipping a finished one) and writes
``RUNS/NAME/val.json``; ``lumenkit ablation table --runs RUNS`` gathers the rows, marking variants not yet run.
``lumenkit ablation score NAME --runs RUNS --data OTHER --label L`` scores a trained variant on another dataset's
validation split (e.g. a joint S1+S2 model on S1's and on S2's own split) as ``RUNS/NAME/val_L.json``, an extra
row ``NAME on L`` of the table.

Example:
    >>> from lumenkit.ablation import VARIANTS, variant_config
    >>> variant_config("uniform", data="S1_v1_x05", runs="runs/ablation").sampler
    'uniform'
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError
from .train import TrainConfig

BASE: dict[str, Any] = {
    "scale": 0.25, "width": 16, "depth": 4, "patch_size": 256, "batch_size": 8, "patches_per_epoch": 512,
    "epochs": 10**6, "minutes": 45.0, "photometric": 0.05, "n_val": 10, "val_seed": 0, "seed": 0, "compile": "off",
}
"""The recipe every variant starts from: ResUNet f=16 at quarter of native scale, 256-px balanced patches, batch 8,
±5 % photometric jitter, the paper's plateau schedule, 45 minutes, an eager training step (the rows measured before
``torch.compile`` was offered; the ``compiled`` row turns it on, as ``lumenkit train`` does for such budgets)."""


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table.

    Attributes:
        name: short identifier (the run folder name).
        change: what differs from :data:`BASE`, in words.
        train: overrides of :data:`BASE` (fields of :class:`lumenkit.train.TrainConfig`).
        tta: evaluate with flip/rot90 test-time augmentation.
        uses: evaluate the model of another variant instead of training one (for evaluation-only rows).
        prior: evaluate the model after prior correction (:mod:`lumenkit.prior`), its strength fitted on the
            training images (``RUNS/NAME/model_prior.pt``).
    """

    name: str
    change: str
    train: dict[str, Any] = field(default_factory=dict)
    tta: bool = False
    uses: str | None = None
    prior: bool = False


_COSINE = {"schedule": "cosine", "noise": 12.0, "blur": 1.0}
_BEST = {"schedule": "cosine", "photometric": 0.0}  # no_photometric, the `lumenkit train` default
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
        Variant("compiled", "no_photometric, training step through torch.compile (the `lumenkit train` default)",
                {**_BEST, "compile": "on"}),
        Variant("width32", "no_photometric, width f=32", {**_BEST, "width": 32}),
        Variant("width64", "no_photometric, width f=64 (the paper's)", {**_BEST, "width": 64}),
        Variant("half_budget", "no_photometric, 22.5 minutes", {**_BEST, "minutes": 22.5}),
        Variant("double_budget", "no_photometric, 90 minutes", {**_BEST, "minutes": 90.0}),
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
    """The training configuration of a variant: :data:`BASE`, its changes, then ``overrides`` (e.g. ``n_val``).

    Raises:
        ConfigError: unknown variant, an evaluation-only variant, or unknown override fields.
    """
    v = variant(name)
    if v.uses is not None:
        raise ConfigError(f"ablation variant {name!r} trains nothing: it evaluates the model of {v.uses!r}")
    d = {**BASE, **v.train, **overrides, "data": str(data), "out": str(Path(runs) / name)}
    return TrainConfig.from_dict(d, source=f"ablation variant {name}")


def _finished(run: Path, cfg: TrainConfig) -> bool:
    """True when ``run`` holds a training run that used its whole budget (time or epochs)."""
    from .model import load_checkpoint

    last = run / "last.pt"
    if not (run / "model.pt").exists() or not last.exists():
        return False
    st = load_checkpoint(last).train_state or {}
    if cfg.minutes:
        return float(st.get("elapsed", 0.0)) >= cfg.minutes * 60 - 1.0
    return int(st.get("epoch", 0)) >= cfg.epochs


def run_variant(name: str, data: str | Path, runs: str | Path, quiet: bool = True,
                **overrides: Any) -> dict[str, Any]:
    """Train (or resume, or skip when finished) and evaluate one variant on the validation split.

    Writes ``RUNS/NAME/val.json`` (the :func:`lumenkit.evaluate.evaluate` document plus ``variant`` and
    ``change``) and returns it.

    Raises:
        ConfigError: unknown variant or bad overrides; dataset and checkpoint errors as in training/evaluation.
    """
    from .evaluate import evaluate, write_evaluation
    from .train import train

    v = variant(name)
    runs = Path(runs)
    source = v.uses or name
    cfg = variant_config(source, data, runs, **overrides)
    run = Path(cfg.out)
    if v.uses is None and not _finished(run, cfg):
        train(cfg, resume=(run / "last.pt").exists(), quiet=quiet)
    if not (run / "model.pt").exists():
        raise ConfigError(f"{run}: no model.pt; run `lumenkit ablation run {source}` first")
    out = runs / name / "val.json"
    model = run / "model.pt"
    extra: dict[str, Any] = {}
    if v.prior:
        from .prior import correct_model

        model, _, info = correct_model(model, runs / name / "model_prior.pt", data=data, progress=not quiet)
        extra["prior_correction"] = {k: info[k] for k in ("tau", "shift", "labels", "fitted_on", "images")}
    ev = evaluate(data, model, split="val", tta=v.tta, n_val=cfg.n_val, seed=cfg.val_seed, progress=not quiet)
    ev.info.update({"variant": name, "change": v.change, **extra})
    write_evaluation(ev, out)
    return json.loads(out.read_text())


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def score_variant(name: str, data: str | Path, runs: str | Path, label: str, n_val: int = 10, seed: int = 0,
                  quiet: bool = True) -> dict[str, Any]:
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
        n_val: validation images carved from ``data``'s train images.
        seed: seed of that split.
        quiet: no progress bar.

    Returns:
        The evaluation document written (with ``variant``, ``change`` and ``scored_on``).

    Raises:
        ConfigError: unknown variant, a bad label, or no trained model yet; dataset errors as in evaluation.
    """
    from .evaluate import evaluate, write_evaluation

    v = variant(name)
    if not _LABEL.match(label):
        raise ConfigError(f"ablation score: label {label!r} must be letters, digits, '_', '.', '-' (e.g. S1)")
    model = Path(runs) / (v.uses or name) / "model.pt"
    if not model.exists():
        raise ConfigError(f"{model}: no trained model; run `lumenkit ablation run {v.uses or name}` first")
    if v.prior:
        model = Path(runs) / name / "model_prior.pt"
        if not model.exists():
            raise ConfigError(f"{model}: not corrected yet; run `lumenkit ablation run {name}` first")
    ev = evaluate(data, model, split="val", tta=v.tta, n_val=int(n_val), seed=int(seed), progress=not quiet)
    ev.info.update({"variant": name, "change": v.change, "scored_on": label})
    out = Path(runs) / name / f"val_{label}.json"
    write_evaluation(ev, out)
    return json.loads(out.read_text())


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


def ablation_table(runs: str | Path, names: list[str] | None = None) -> pd.DataFrame:
    """One row per variant (in :data:`VARIANTS` order) from ``RUNS/NAME/val.json``; NaN where not yet run.

    Columns: ``variant``, ``change``, ``epochs`` (of the trained run), ``best_epoch`` (the kept checkpoint, best
    by validation mean IoU), one per class IoU, ``mean_iou``, ``ci_low``, ``ci_high`` (95 % bootstrap over images),
    ``pixel_accuracy``, ``last_miou`` (validation mean IoU of the final epoch: choosing the best epoch on the
    validation split flatters it a little; the final epoch is the unbiased figure) and ``images`` (validation
    images).  Each ``RUNS/NAME/val_LABEL.json`` written by :func:`score_variant` adds a row ``NAME on LABEL``
    right after the variant's own (``last_miou`` empty: the training curve was measured on another split); a
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
    tail = [c for c in ("mean_iou", "ci_low", "ci_high", "pixel_accuracy", "last_miou", "images")
            if c in df.columns]
    classes = [c for c in df.columns if c not in lead + tail]
    return df[lead + classes + tail]


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


def to_markdown(df: pd.DataFrame, only_run: bool = False) -> str:
    """The ablation table as GitHub markdown (2 decimals for IoU, 3 for the mean).

    Variants not run yet show "not run", or are left out with ``only_run``.
    """
    lead = {"variant", "change", "epochs", "best_epoch", "mean_iou", "ci_low", "ci_high", "pixel_accuracy",
            "last_miou", "images"}
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
            cells = [f"`{r['variant']}`", r["change"], "", *[""] * len(classes), "not run", "", ""]
        else:
            ep = num(r["epochs"], ".0f") + (f" ({num(r['best_epoch'], '.0f')})" if r["best_epoch"] == r["best_epoch"]
                                             else "")
            ci = f" ({r['ci_low']:.2f}–{r['ci_high']:.2f})" if r.get("ci_low") == r.get("ci_low") else ""
            cells = [f"`{r['variant']}`", r["change"], ep, *[num(r[c], ".2f") for c in classes],
                     f"{r['mean_iou']:.3f}{ci}", f"{r['pixel_accuracy']:.3f}", num(r.get("last_miou"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def describe() -> pd.DataFrame:
    """The variants and their full training changes (for ``lumenkit ablation list``)."""
    rows = []
    for v in VARIANTS.values():
        changes = ", ".join(f"{k}={val}" for k, val in v.train.items())
        rows.append({"variant": v.name, "change": v.change, "tta": v.tta, "prior": v.prior,
                     "train": changes or (f"model of {v.uses}" if v.uses else "base")})
    return pd.DataFrame(rows)


__all__ = ["BASE", "VARIANTS", "Variant", "ablation_table", "describe", "run_variant", "score_variant", "to_markdown",
           "variant", "variant_config"]
