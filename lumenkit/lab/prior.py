"""Prior correction of a model trained on balanced patches (logit adjustment).

The balancing sampler serves every mineral about equally often, so the network learns class probabilities under
the *served* class prior π_s, not the prior of real sections π_n (background is most of a section, chalcopyrite
a few per cent).  Bayes' rule moves a prediction from one prior to the other by adding ``log(π_n / π_s)`` to the
logits (Menon et al. 2021, "Long-tail learning via logit adjustment").  The full shift maximises pixel accuracy;
mean IoU weighs every class equally, so it is best somewhere between no shift and the full one.  This module:

* measures both priors: ``π_s`` from the pixels the sampler actually served (``RUN/last.pt``), ``π_n`` from the
  masks of the images the model was trained on (the ``fit`` split, stored resolution);
* fits the strength ``τ`` of the shift ``τ · log(π_n / π_s)`` on the training images (``fit``, never the
  validation split unless asked), as the ``τ`` of best dataset-wide mean IoU over a grid;
* writes a corrected checkpoint: the shift is added to the bias of the 1×1 head, so every path that runs the model
  (tiled prediction, TTA, evaluation, ONNX export) uses it with no extra code, and the checkpoint's ``config``
  records ``prior_correction`` (τ, shift, both priors, the split it was fitted on).

A model trained on uniform patches has ``π_s ≈ π_n`` and a shift near zero. The shift, the EM estimate and the
bias folding are the product's (:mod:`lumenkit.training.prior`, which ``lumenkit train`` applies to models trained
on strokes); this module adds what needs whole masks (counting π_n, fitting τ) and the command-line study.

Example:
    >>> import numpy as np
    >>> from lumenkit.lab.prior import prior_shift  # the product's (lumenkit.training.prior), re-exported
    >>> np.round(prior_shift([1, 1], [3, 1]), 3)        # served equally, nature 3:1
    array([ 0.405, -0.693])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit
from lumenkit.data.imageio import write_text
from lumenkit.errors import CheckpointError, ConfigError
from lumenkit.evaluation.metrics import Scores, confusion_matrix, sum_confusions
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.training.prior import apply_prior_correction, em_prior, estimate_natural_counts, prior_shift

DEFAULT_TAUS: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
"""Strengths of the shift tried by :func:`fit_prior_correction` (0 = no correction, 1 = the Bayes shift)."""


def served_counts(model_path: str | Path) -> np.ndarray:
    """Pixels served per class during training, from ``last.pt`` beside ``model.pt`` (or the file itself).

    Raises:
        CheckpointError: no ``last.pt`` with the sampler's served counts next to the model.
    """
    model_path = Path(model_path)
    beside = model_path.with_name("last.pt")
    for cand in dict.fromkeys((beside, model_path)):  # last.pt first: model.pt holds no training state
        if cand.is_file():
            st = load_checkpoint(cand).train_state or {}
            if "sampler_served" in st:
                return np.asarray(st["sampler_served"], dtype=np.int64)
    raise CheckpointError(
        f"{model_path}: no served pixel counts (they are in the run's last.pt, written by `lumenkit train`); "
        "keep last.pt beside model.pt, or pass served counts explicitly"
    )


def _dataset(ckpt: Checkpoint, data: str | Path | None, split: str,
             validation: ValidationSplit | None) -> LumenStoneDataset:
    train = ckpt.config.get("train") or {}
    root = data if data is not None else train.get("data")
    if not root:
        raise ConfigError("the checkpoint does not record its training data folder; pass data=/--data")
    validation = validation if validation is not None else ValidationSplit.of_model(ckpt)
    return LumenStoneDataset(root, split, class_set=ckpt.class_map.codes, validation=validation)


def natural_counts(ckpt: Checkpoint, data: str | Path | None = None,
                   validation: ValidationSplit | None = None) -> np.ndarray:
    """``(K,)`` pixel counts per class in the masks of the images the model was trained on (``fit``, stored size).

    ``validation`` defaults to the split the model was trained with (:meth:`ValidationSplit.of_model`).

    Raises:
        ConfigError: no data folder known, or the split out of range; dataset errors as in
            :class:`lumenkit.data.LumenStoneDataset`.
    """
    counts = _dataset(ckpt, data, "fit", validation).class_counts()
    return counts[list(ckpt.class_map.labels)].to_numpy().sum(0).astype(np.int64)


def em_counts(ckpt: Checkpoint, served: Sequence[float], data: str | Path | None = None, split: str = "fit",
              validation: ValidationSplit | None = None, progress: bool = True) -> np.ndarray:
    """``(K,)`` class shares of a split's images estimated by EM from the model's own posteriors (×1e6, integers).

    :func:`lumenkit.training.prior.estimate_natural_counts` on the split; masks are not read, so it may be sparse.

    Raises:
        ConfigError: no data folder known; dataset errors as in evaluation.
    """
    return estimate_natural_counts(ckpt, _dataset(ckpt, data, split, validation), served, progress)


@dataclass
class PriorFit:
    """Result of :func:`fit_prior_correction`.

    Attributes:
        tau: the chosen strength (best mean IoU on ``split``; the smaller one on ties).
        shift: ``(K,)`` full shift ``log(π_n / π_s)`` in logit units (natural log).
        served, natural: ``(K,)`` pixel counts the shift comes from.
        curve: one row per tried ``tau``: ``mean_iou``, ``pixel_accuracy`` and per-class IoU on ``split``.
        split: the split ``tau`` was fitted on; images: how many.
        labels: class labels in model order.
    """

    tau: float
    shift: np.ndarray
    served: np.ndarray
    natural: np.ndarray
    curve: pd.DataFrame
    split: str
    images: int
    labels: list[str]

    @property
    def bias(self) -> np.ndarray:
        """The logit bias added to the model's head, ``tau · shift``."""
        return self.tau * self.shift

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (recorded in the corrected checkpoint's config)."""
        return {
            "tau": float(self.tau), "shift": [round(float(v), 6) for v in self.shift],
            "served": [int(v) for v in self.served], "natural": [int(v) for v in self.natural],
            "labels": list(self.labels), "fitted_on": self.split, "images": int(self.images),
            "curve": json.loads(self.curve.to_json(orient="records")),
        }


def fit_prior_correction(
    model: Checkpoint | str | Path,
    data: str | Path | None = None,
    split: str = "fit",
    taus: Sequence[float] = DEFAULT_TAUS,
    served: Sequence[float] | None = None,
    validation: ValidationSplit | None = None,
    progress: bool = True,
    natural: Sequence[float] | None = None,
) -> PriorFit:
    """Fit the strength of the prior shift on a split (default: the images the model was trained on).

    Each image is predicted once at the model's scale (probabilities brought back to the stored mask size);
    for every ``tau`` the corrected prediction ``argmax(log p + tau · shift)`` is counted into one confusion
    matrix per ``tau``, and the ``tau`` of best dataset-wide mean IoU is chosen.

    Args:
        model: checkpoint or path of ``model.pt`` (``last.pt`` beside it supplies the served counts).
        data: dataset folder (default: the one recorded in the checkpoint).
        split: ``fit`` (training images, the default: the validation split stays untouched), ``val`` or ``train``.
        taus: strengths to try (0 = none, 1 = the full Bayes shift).
        served: served pixel counts per class (default: from ``last.pt``).
        validation: the validation split carved from train (default: the one the model was trained with, so
            ``fit`` is exactly its training images).
        progress: tqdm bar over images.
        natural: the class prior to shift to, as counts per class (default: the masks of the ``fit`` images;
            for a model trained on strokes, :func:`em_counts`).

    Raises:
        CheckpointError: no served counts; ConfigError: no data folder known or an empty ``taus``; dataset errors
        as in evaluation.
    """
    from tqdm.auto import tqdm

    from lumenkit.inference.predict import predict_image

    path = None if isinstance(model, Checkpoint) else Path(model)
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    taus = sorted({float(t) for t in taus})
    if not taus:
        raise ConfigError("taus is empty; try e.g. 0, 0.25, 0.5, 0.75, 1")
    if served is None:
        if path is None and ckpt.path is None:
            raise CheckpointError("served counts unknown: pass served= or a model path with last.pt beside it")
        served = served_counts(path or ckpt.path)  # type: ignore[arg-type]
    cmap = ckpt.class_map
    k = len(cmap)
    natural = natural_counts(ckpt, data, validation) if natural is None else np.asarray(natural, dtype=np.int64)
    shift = prior_shift(served, natural)
    ds = _dataset(ckpt, data, split, validation)
    mats: dict[float, list[np.ndarray]] = {t: [] for t in taus}
    sh = torch.from_numpy(shift.astype(np.float32)).view(-1, 1, 1)
    for i in tqdm(range(len(ds)), desc=f"prior correction on {split}", disable=not progress):
        mask = ds.read_mask(i)
        true = cmap.to_index(mask, source=str(ds.mask_paths[i]))
        image = ds.read_image(i, scale=ckpt.scale)
        out = predict_image(ckpt, image, input_scale=ckpt.scale, output_size=(mask.shape[1], mask.shape[0]),
                            return_probs=True)
        logp = torch.from_numpy(out["probs"]).clamp_min_(1e-12).log_()
        for t in taus:
            pred = (logp + t * sh).argmax(0).numpy().astype(np.uint8)
            mats[t].append(confusion_matrix(pred, true, k))
    rows = []
    for t in taus:
        sc = Scores(sum_confusions(mats[t]), cmap.labels)
        rows.append({"tau": t, "mean_iou": sc.mean_iou, "pixel_accuracy": sc.pixel_accuracy,
                     **{lbl: float(v) for lbl, v in zip(cmap.labels, sc.iou, strict=True)}})
    curve = pd.DataFrame(rows)
    best = float(curve.loc[curve["mean_iou"].idxmax(), "tau"])  # idxmax: first (smallest tau) on ties
    return PriorFit(best, shift, np.asarray(served, dtype=np.int64), natural, curve, split,
                    len(ds), list(cmap.labels))


def correct_model(
    model: str | Path,
    out: str | Path,
    data: str | Path | None = None,
    split: str = "fit",
    tau: float | None = None,
    taus: Sequence[float] = DEFAULT_TAUS,
    progress: bool = True,
    em: bool = False,
) -> tuple[Path, PriorFit | None, dict[str, Any]]:
    """Fit (or take) the prior-correction strength and write the corrected checkpoint to ``out``.

    With ``tau`` given nothing is fitted: the shift comes from the served and natural counts alone.  With ``em``
    the natural prior is estimated from the model's posteriors on the training images (:func:`em_counts`) instead
    of counted in their masks — for models trained on strokes.  Writes ``out`` and ``out`` with suffix
    ``.prior.csv`` (the fitted curve, when fitted).

    Returns:
        ``(out, fit or None, info)`` where ``info`` is what the checkpoint records.

    Raises:
        ConfigError: ``out`` is the input model (never overwrite the trained weights); others as in
        :func:`fit_prior_correction`.
    """
    model, out = Path(model), Path(out)
    if out.resolve() == model.resolve():
        raise ConfigError(f"{out}: would overwrite the trained model; write the corrected one elsewhere")
    ckpt = load_checkpoint(model)
    fit: PriorFit | None = None
    served = served_counts(model)
    natural = em_counts(ckpt, served, data, progress=progress) if em else None
    if tau is None:
        fit = fit_prior_correction(ckpt, data, split=split, taus=taus, served=served, progress=progress,
                                   natural=natural)
        info = {k: v for k, v in fit.to_dict().items() if k != "curve"}
        bias = fit.bias
        write_text(out.with_suffix(".prior.csv"), fit.curve.to_csv(index=False, float_format="%.6g"))
    else:
        if natural is None:
            natural = natural_counts(ckpt, data)
        shift = prior_shift(served, natural)
        info = {"tau": float(tau), "shift": [round(float(v), 6) for v in shift], "served": [int(v) for v in served],
                "natural": [int(v) for v in natural], "labels": list(ckpt.class_map.labels), "fitted_on": None}
        bias = float(tau) * shift
    info["natural_from"] = "em" if em else "masks"
    apply_prior_correction(ckpt, bias, info).save(out)
    return out, fit, info


__all__ = ["DEFAULT_TAUS", "PriorFit", "apply_prior_correction", "correct_model", "em_counts", "em_prior",
           "fit_prior_correction", "natural_counts", "prior_shift", "served_counts"]
