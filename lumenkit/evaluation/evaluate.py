"""Dataset-wide evaluation of a model and of two baselines, at the ground truth's own resolution."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import ClassMap
from lumenkit.data.datasets import LumenStoneDataset, ValidationSplit, list_splits
from lumenkit.data.imageio import resize_mask, save_image, write_json
from lumenkit.errors import ConfigError
from lumenkit.evaluation.metrics import (
    Scores,
    bootstrap_mean_iou,
    confusion_matrix,
    per_image_table,
    petroscope_void,
    sum_confusions,
    void_border,
)
from lumenkit.inference.tiling import Tiling
from lumenkit.runtime.heap import retained_heap

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
"""Bin edges of the confidence-vs-error table."""

@dataclass(frozen=True)
class Protocol:
    """Which labelled pixels a scoring protocol counts, at the masks' stored resolution.

    Attributes:
        void_border: px left out around class boundaries (0: none).
        pad: px of frame left out at every image edge (petroscope's ``void_pad``).
        band: ``"symmetric"``, :func:`~lumenkit.evaluation.metrics.void_border`'s band of ``void_border`` px on
            both sides of a boundary, or ``"petroscope"``, :func:`~lumenkit.evaluation.metrics.petroscope_void`'s
            one-sided erosion by a ``void_border``-px square (the protocol of petroscope's published figure).
    """

    void_border: int = 0
    pad: int = 0
    band: str = "symmetric"

    def keep(self, true: np.ndarray) -> np.ndarray | None:
        """Boolean mask of the pixels of ``true`` this protocol counts; ``None`` for all of them."""
        if self.band == "petroscope":
            return petroscope_void(true, self.void_border, self.pad)
        return void_border(true, self.void_border) if self.void_border else None

    def to_dict(self) -> dict[str, Any]:
        """The protocol's fields, as the evaluation JSON records them beside its scores."""
        return {"void_border": self.void_border, "pad": self.pad, "band": self.band}


PROTOCOLS: dict[str, Protocol] = {
    "all_pixels": Protocol(),
    "void_border_2px": Protocol(void_border=2),
    "petroscope": Protocol(void_border=2, pad=4, band="petroscope"),
}
"""Scoring protocols every evaluation reports side by side, by name.

``all_pixels``: every labelled pixel of the masks at their stored resolution (the paper's protocol).
``void_border_2px``: pixels within 2 px of a class boundary left out, on both sides (lumenkit's ``--void-border 2``),
where a prediction made at a fraction of the stored resolution is least sure.
``petroscope``: petroscope's "void borders" as its ResUNet test configuration scores them (``void_border_width=2,
void_pad=4``, on S1 v1 stored at ×0.5): the one pixel on one side of each boundary and a 4-px frame; about a
quarter of the pixels ``void_border_2px`` leaves out across a straight boundary.
"""


def training_split_for(root: str | Path, split: str) -> str:
    """The split baselines are fitted on: ``fit`` when evaluating ``val``, ``fit`` or ``train``, else ``train``.

    ``fit`` is train minus the validation images. The fit is disjoint from the evaluated split for ``val`` and
    ``test``; on ``fit`` and ``train`` the baselines are scored on (some of) the images they were fitted on.
    """
    if split in ("val", "fit"):
        return "fit"
    if split == "train":
        return "fit"
    return "train" if "train" in list_splits(root) else split


@dataclass
class ColourCentroids:
    """Colour-only baseline: each pixel gets the class whose mean training colour (RGB) is nearest.

    Attributes:
        centroids: ``(K, 3)`` float mean RGB per class (NaN rows for classes absent from training).
        majority: model index of the most frequent training class (the majority baseline).
    """

    centroids: np.ndarray
    majority: int

    @classmethod
    def fit(cls, ds: LumenStoneDataset, class_map: ClassMap, scale: float | None = None,
            stride: int = 4) -> ColourCentroids:
        """Fit on every ``stride``-th pixel of the dataset's images at ``scale`` (default: stored scale).

        Args:
            ds: the images and masks to fit on.
            class_map: maps the masks' LumenStone codes to the model indices the centroids are ordered by.
            scale: scale to read the images and masks at, relative to LumenStone's native ×100 images (1.0 =
                3396×2547 px); default (``None`` or 0): the dataset's stored scale, no resampling.
            stride: use every ``stride``-th pixel along each side (px at ``scale``).

        Raises:
            ValueError: the dataset has no labelled pixels.
            BadImageError, BadMaskError, UnknownClassError: a bad image or mask, as for
                :meth:`lumenkit.data.LumenStoneDataset.load`.
        """
        k = len(class_map)
        sums = np.zeros((k, 3))
        counts = np.zeros(k)
        for i in range(len(ds)):
            s = ds.load(i, scale=scale or ds.stored_scale)
            m = class_map.to_index(s["mask"][::stride, ::stride], source=str(ds.mask_paths[i]))
            px = s["image"][::stride, ::stride].reshape(-1, 3).astype(np.float64)
            m = m.ravel()
            keep = m < k
            counts += np.bincount(m[keep], minlength=k)
            for c in range(3):
                sums[:, c] += np.bincount(m[keep], px[keep, c], minlength=k)
        if counts.sum() == 0:
            raise ValueError(f"{ds.root}: no labelled pixels to fit the colour baseline on")
        with np.errstate(invalid="ignore", divide="ignore"):
            cent = sums / counts[:, None]
        return cls(cent, int(np.argmax(counts)))

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` model indices of the nearest class centroid for each pixel."""
        ok = np.flatnonzero(~np.isnan(self.centroids[:, 0]))
        px = image.reshape(-1, 3).astype(np.float32)
        cent = self.centroids[ok].astype(np.float32)
        d = (px**2).sum(1, keepdims=True) - 2 * px @ cent.T + (cent**2).sum(1)
        return ok[np.argmin(d, axis=1)].astype(np.uint8).reshape(image.shape[:2])


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: the model's scores, per-image rows, baselines and a JSON-ready dict."""

    scores: Scores
    per_image: pd.DataFrame
    baselines: dict[str, Scores]
    confidence: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    matrices: list[np.ndarray] = field(default_factory=list)
    protocols: dict[str, Scores] = field(default_factory=dict)
    """The model's scores under each of :data:`PROTOCOLS`, counted in the same run (same predictions)."""

    def to_dict(self, n_boot: int = 1000) -> dict[str, Any]:
        """The ``lumenkit evaluate`` JSON.

        Per-class IoU by label, mean IoU with a bootstrap interval, pixel accuracy, confusion matrix and class
        order, per-image rows, per-image confusion matrices (``per_image_confusion``, by image name), baselines,
        confidence table, scales, and ``protocols``: for each of :data:`PROTOCOLS`, its fields and its per-class
        IoU, mean IoU, pixel accuracy and confusion matrix (so folds can be pooled under each).

        Args:
            n_boot: bootstrap resamples of the images for ``mean_iou_ci95`` (the 95 % interval of the mean IoU,
                :func:`lumenkit.evaluation.metrics.bootstrap_mean_iou`); 0 skips the bootstrap (the interval is
                written as ``[null, null]``).

        Raises:
            ValueError: a negative ``n_boot`` (when there are per-image matrices to resample).
        """
        d: dict[str, Any] = dict(self.scores.to_dict())
        lo, hi = bootstrap_mean_iou(self.matrices, n_boot=n_boot) if self.matrices else (float("nan"),) * 2
        d["mean_iou_ci95"] = [_num(lo), _num(hi)]
        d["per_image"] = [
            {"image": str(n), **{k: _num(v) for k, v in row.items()}} for n, row in self.per_image.iterrows()
        ]
        if self.matrices:
            d["per_image_confusion"] = {
                str(n): np.asarray(m).astype(int).tolist()
                for n, m in zip(self.per_image.index, self.matrices, strict=True)
            }
        d["baselines"] = {
            name: {k: v for k, v in s.to_dict().items() if k in ("per_class_iou", "mean_iou", "pixel_accuracy")}
            for name, s in self.baselines.items()
        }
        d["confidence"] = self.confidence.reset_index().to_dict(orient="records")
        d["protocols"] = {
            name: {**PROTOCOLS[name].to_dict(),
                   **{k: v for k, v in s.to_dict().items()
                      if k in ("per_class_iou", "mean_iou", "pixel_accuracy", "confusion")}}
            for name, s in self.protocols.items()
        }
        d.update(self.info)
        return d


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def recorded_validation(run_dir: str | Path | None, split: str, n_val: int | None = None, seed: int | None = None,
                        fold: int | None = None) -> ValidationSplit:
    """The validation split a previous evaluation of ``split`` wrote to ``RUN_DIR/metrics.json``, given values winning.

    Notebook 05 opens ``val`` with it to read the very images notebook 04 predicted. Values not given come from the
    recorded ``n_val``, ``val_seed`` and ``val_fold`` when the file evaluated the same split, else the defaults (10
    images, seed 0, fold 0); a missing or unreadable file records nothing. The model's own split is
    :meth:`lumenkit.data.ValidationSplit.of_model`.
    """
    done = _read_metrics(run_dir)
    return ValidationSplit.from_dict(done if done.get("split") == split else None, n_val, seed, fold)


def _read_metrics(run_dir: str | Path | None) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json" if run_dir else None
    if path is None or not path.exists():
        return {}
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return done if isinstance(done, dict) else {}


def evaluate(
    data: str | Path,
    model: Any,
    split: str = "test",
    *,
    scale: float | None = None,
    validation: ValidationSplit | None = None,
    tiling: Tiling | None = None,
    void_border_px: int = 0,
    baselines: bool = True,
    save_masks: str | Path | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    magnification: float = 1.0,
    predict_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Evaluation:
    """Evaluate a checkpoint on a split: metrics on dataset totals at the stored masks' resolution.

    The model runs at its training scale (or ``scale``): images are read at that scale and predictions are
    brought back to the stored mask size before counting. The loop over images is one
    :func:`lumenkit.runtime.retained_heap` block (the process-level setting).

    Args:
        data: dataset folder in LumenStone layout.
        model: a :class:`lumenkit.models.Checkpoint`, or a path to one; an
            :class:`~lumenkit.inference.ensemble.Ensemble`, or a list of paths (their probabilities averaged); an
            ONNX export (:class:`~lumenkit.inference.OnnxModel` or a ``.onnx`` path), not on split ``val``/``fit``.
        split: ``test``, ``train``, ``val`` or ``fit``.
        scale: scale to run the model at, relative to LumenStone's native ×100 images (1.0 = 3396×2547 px);
            default: the checkpoint's training scale.
        validation: the training images that are ``val`` (split ``val``/``fit``, and what the baselines are not fitted
            on); default: the split the model was trained with (:meth:`ValidationSplit.of_model`), so ``val`` never
            holds images the model trained on. ``ValidationSplit.of_model(ckpt, n_val=5)`` changes one value.
        tiling: windows, margins, batch and test-time augmentation (default ``Tiling()``; see
            :func:`lumenkit.inference.predict.predict_image`).
        void_border_px: ignore ground-truth pixels within this many px (stored resolution) of a class boundary.
        baselines: also score the majority and colour-centroid baselines fitted on the training split.
        save_masks: write predicted masks ``NAME.png`` (LumenStone codes) here, for the deposit report.
        transform: applied to each image (at model scale) before prediction, e.g. a perturbation or a
            calibration (see :mod:`lumenkit.evaluation.robustness`).
        magnification: read images at ``magnification`` × the model scale but present them as the model scale,
            simulating another objective or camera pixel size (1.0 = none).
        predict_kwargs: further arguments of ``predict_image`` (``device``, ``runtime``, ``threads``, ``fuse``).
        progress: tqdm bar over images.

    Raises:
        ConfigError: ``validation`` out of range for the training images (split ``val``/``fit``), an ensemble member
            trained on another validation split than the one scored (split ``val``/``fit``), an ONNX export on split
            ``val``/``fit`` (it records no split) or without class codes or scale, or a bad tiling; a malformed
            ``dataset.yaml`` or ``deposits.csv``.
        DatasetNotFoundError: ``data``, the split, or the training split the baselines are fitted on is missing.
        EmptySplitError: the split (or the baselines' training split) holds no images.
        MissingMaskError: an image has no mask.
        BadImageError: an image is missing, corrupt, truncated, not an RGB image, or too large.
        BadMaskError: a mask is corrupt, multi-channel or not 8-bit, or (``MaskSizeError``) not the size of its image.
        UnknownClassError: a mask holds codes outside the model's class set.
        CheckpointError: a model file that is not a lumenkit checkpoint or export (or ONNX without onnxruntime).
        OutputPathError: ``save_masks`` cannot be written.
        ValueError: a non-positive ``scale``, or no labelled pixels to fit the colour baseline on (``baselines``).
    """
    from tqdm.auto import tqdm

    from lumenkit.inference.ensemble import Ensemble
    from lumenkit.inference.loading import load_model
    from lumenkit.inference.onnx import OnnxModel
    from lumenkit.models.checkpoint import Checkpoint

    ckpt = model if isinstance(model, (Checkpoint, Ensemble, OnnxModel)) else load_model(model)
    if isinstance(ckpt, OnnxModel):
        where = ckpt.path or "the ONNX model"
        if split in ("val", "fit"):
            raise ConfigError(f"{where}: an export records no validation split, so its score on split {split!r} "
                              "could include images it trained on; evaluate split val with its model.pt, or the "
                              "export on split test")
        if ckpt.class_map is None or not (scale is not None or math.isfinite(ckpt.scale)):
            raise ConfigError(f"{where}: records no LumenStone class codes or training scale; export it with "
                              "`lumenkit export --onnx RUN/model.pt` to evaluate it")
    model_scale = float(scale if scale is not None else ckpt.scale)
    tiling = tiling if tiling is not None else Tiling()
    validation = validation if validation is not None else ValidationSplit.of_model(ckpt)
    if isinstance(ckpt, Ensemble) and split in ("val", "fit"):
        ckpt.check_split(validation, data)
    ds = LumenStoneDataset(data, split, class_set=ckpt.class_map.codes, validation=validation)
    base = _fit_baseline(data, split, ckpt.class_map, validation) if baselines else None
    scorer = _ImageScorer(ckpt, model_scale, tiling, void_border_px, transform, magnification,
                          Path(save_masks) if save_masks is not None else None, base, predict_kwargs or {})
    counts = _Counts(len(ckpt.class_map))
    t0 = time.perf_counter()
    with retained_heap():  # freed buffers serve the next image
        for i in tqdm(range(len(ds)), desc=f"evaluate {split}", disable=not progress):
            scorer.score(ds, i, counts)
    info = {
        "split": split,
        "data": str(Path(data).resolve()),
        "images": len(ds),
        **(validation.to_dict() if split in ("val", "fit") else {}),
        "scales": {"stored": ds.stored_scale, "model": model_scale, "trained": float(ckpt.scale)},
        "void_border": void_border_px,
        "tta": tiling.tta if isinstance(tiling.tta, str) else bool(tiling.tta),
        "refine": _asdict_or_none((predict_kwargs or {}).get("refine")),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if isinstance(ckpt, Ensemble):  # RUN/model.pt of each member, not the machine's whole path
        info["ensemble"] = [str(Path(*Path(p).parts[-2:])) if p else "(in memory)" for p in ckpt.paths]
        if len(set(ckpt.member_weights)) > 1:
            info["ensemble_weights"] = [round(w, 6) for w in ckpt.member_weights]
    return counts.evaluation(ds.names, ckpt.class_map.labels, info)


def _asdict_or_none(value: Any) -> dict[str, Any] | None:
    from dataclasses import asdict

    return asdict(value) if value is not None else None


def _fit_baseline(data: str | Path, split: str, cmap: ClassMap, validation: ValidationSplit) -> ColourCentroids:
    """The colour-centroid (and majority) baseline fitted on the split :func:`training_split_for` ``split``."""
    train_ds = LumenStoneDataset(data, training_split_for(data, split), class_set=cmap.codes, validation=validation)
    return ColourCentroids.fit(train_ds, cmap)


@dataclass
class _ImageScorer:
    """How :func:`evaluate` predicts one image of the split and counts it (the settings of the call)."""

    ckpt: Any
    model_scale: float
    tiling: Tiling
    void_border_px: int
    transform: Callable[[np.ndarray], np.ndarray] | None
    magnification: float
    save_masks: Path | None
    baseline: ColourCentroids | None
    predict_kwargs: dict[str, Any]

    def score(self, ds: LumenStoneDataset, i: int, counts: _Counts) -> None:
        """Predict image ``i`` of ``ds`` at the model scale and count it (and the baselines) at the mask's size."""
        from lumenkit.inference.predict import predict_image

        mask = ds.read_mask(i)
        true = self.ckpt.class_map.to_index(mask, source=str(ds.mask_paths[i]))
        valid = void_border(true, self.void_border_px) if self.void_border_px else None
        protocol_valid = {name: (valid if p == Protocol(void_border=self.void_border_px) else p.keep(true))
                          for name, p in PROTOCOLS.items()}
        image = ds.read_image(i, scale=self.model_scale * self.magnification)
        if self.transform is not None:
            image = self.transform(image)
        extra = {}
        if self.predict_kwargs.get("refine") is not None:  # the guide: the image at the mask's resolution
            guide = ds.read_image(i, scale=ds.stored_scale)
            extra["guide"] = self.transform(guide) if self.transform is not None else guide
        out = predict_image(self.ckpt, image, input_scale=self.model_scale, model_scale=self.model_scale,
                            output_size=(mask.shape[1], mask.shape[0]), tiling=self.tiling, **self.predict_kwargs,
                            **extra)
        counts.add_prediction(out["indices"], out["confidence"], true, valid)
        for name, keep in protocol_valid.items():
            counts.protocols.setdefault(name, []).append(confusion_matrix(out["indices"], true, counts.k, valid=keep))
        if self.save_masks is not None:
            save_image(out["codes"], self.save_masks / f"{ds.names[i]}.png")
        if self.baseline is not None:
            counts.add_baselines(self.baseline, ds.read_image(i, scale=ds.stored_scale), true, valid)


@dataclass
class _Counts:
    """What :func:`evaluate` adds up over images: confusion matrices of the model and baselines, confidence bins."""

    k: int
    model: list[np.ndarray] = field(default_factory=list)
    baselines: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"majority": [], "colour_centroid": []})
    conf_err: np.ndarray = field(default_factory=lambda: np.zeros((len(CONFIDENCE_BINS) - 1, 2), dtype=np.int64))
    protocols: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add_prediction(self, pred: np.ndarray, confidence: np.ndarray, true: np.ndarray,
                       valid: np.ndarray | None) -> None:
        """Count one image's prediction (model indices and confidence at the mask's size) against its truth."""
        self.model.append(confusion_matrix(pred, true, self.k, valid=valid))
        keep = true != 255 if valid is None else (true != 255) & valid
        b = np.clip(np.digitize(confidence[keep], CONFIDENCE_BINS) - 1, 0, len(CONFIDENCE_BINS) - 2)
        wrong = pred[keep] != true[keep]
        self.conf_err[:, 0] += np.bincount(b, minlength=len(CONFIDENCE_BINS) - 1)
        self.conf_err[:, 1] += np.bincount(b[wrong], minlength=len(CONFIDENCE_BINS) - 1)

    def add_baselines(self, base: ColourCentroids, image: np.ndarray, true: np.ndarray,
                      valid: np.ndarray | None) -> None:
        """Count both baselines on one image at its stored scale."""
        cc = base.predict(image)
        if cc.shape != true.shape:
            cc = resize_mask(cc, (true.shape[1], true.shape[0]))
        self.baselines["colour_centroid"].append(confusion_matrix(cc, true, self.k, valid=valid))
        self.baselines["majority"].append(confusion_matrix(np.full_like(true, base.majority), true, self.k,
                                                           valid=valid))

    def evaluation(self, names: list[str], labels: list[str], info: dict[str, Any]) -> Evaluation:
        """The :class:`Evaluation` of everything counted."""
        conf = pd.DataFrame(
            {"pixels": self.conf_err[:, 0], "errors": self.conf_err[:, 1]},
            index=pd.Index([f"{a:.1f}–{b:.1f}" for a, b in itertools.pairwise(CONFIDENCE_BINS)],
                           name="confidence"),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            conf["error_rate"] = conf["errors"] / conf["pixels"]
        return Evaluation(
            scores=Scores(sum_confusions(self.model), labels),
            per_image=per_image_table(names, self.model, labels),
            baselines={n: Scores(sum_confusions(m), labels) for n, m in self.baselines.items() if m},
            confidence=conf,
            info=info,
            matrices=self.model,
            protocols={n: Scores(sum_confusions(m), labels) for n, m in self.protocols.items() if m},
        )


def error_sources_of(evaluation: Evaluation | str | Path | dict[str, Any]) -> pd.DataFrame:
    """:func:`lumenkit.evaluation.metrics.error_sources` of an evaluation (in memory, its JSON document, or the file).

    Raises:
        ConfigError: a JSON written before per-image confusion matrices were recorded (evaluate again).
    """
    from lumenkit.evaluation.metrics import error_sources

    return error_sources(*_per_image_matrices(evaluation))


def _per_image_matrices(
    evaluation: Evaluation | str | Path | dict[str, Any],
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """``(image names, their confusion matrices, class labels)`` of an evaluation, its JSON document or the file."""
    if isinstance(evaluation, Evaluation):
        return list(evaluation.per_image.index), evaluation.matrices, evaluation.scores.labels
    d = evaluation if isinstance(evaluation, dict) else json.loads(Path(evaluation).read_text())
    if "per_image_confusion" not in d:
        raise ConfigError(f"{evaluation if not isinstance(evaluation, dict) else 'evaluation'}: no per-image "
                          "confusion matrices (written by an older lumenkit); run `lumenkit evaluate` again")
    pic = d["per_image_confusion"]
    return list(pic), [np.asarray(m) for m in pic.values()], list(d["class_order"])


def image_confusion(evaluation: Evaluation | str | Path | dict[str, Any], image: str) -> pd.DataFrame:
    """The confusion matrix of one evaluated image: pixels by true class (rows) and predicted class (columns).

    Counted at the masks' stored resolution, as every figure of :func:`evaluate`; e.g. the row ``Ccp`` of image
    ``a25`` says where its chalcopyrite pixels went.

    Raises:
        ConfigError: ``image`` was not evaluated (the message lists the images that were), or a JSON written
            before per-image confusion matrices were recorded.
    """
    names, mats, labels = _per_image_matrices(evaluation)
    if image not in names:
        raise ConfigError(f"image {image!r} is not in this evaluation; its images: {', '.join(names)}")
    idx = pd.Index(labels, name="truth")
    return pd.DataFrame(mats[names.index(image)], index=idx, columns=pd.Index(labels, name="predicted"))


def modal_errors(evaluation: Evaluation | str | Path | dict[str, Any]) -> pd.DataFrame:
    """Per image and class, the true and predicted area % and their difference: what a model does to modal mineralogy.

    Over each image's labelled pixels at the masks' stored resolution (ignored pixels left out of both), from the
    evaluation's per-image confusion matrices: true area % is a row's share, predicted area % a column's. IoU
    counts every misplaced pixel; a modal analysis only the balance, so errors that cancel (as many pixels of A
    called B as of B called A) do not move it.

    Returns:
        One row per (``image``, ``mineral``): ``true_area_pct``, ``pred_area_pct``, ``error_pp`` (predicted −
        true, percentage points).

    Raises:
        ConfigError: a JSON written before per-image confusion matrices were recorded.
    """
    names, mats, labels = _per_image_matrices(evaluation)
    rows = []
    for name, cm in zip(names, mats, strict=True):
        cm = np.asarray(cm, dtype=float)
        total = cm.sum()
        if total == 0:
            continue
        true, pred = cm.sum(1) / total * 100, cm.sum(0) / total * 100
        rows += [{"image": name, "mineral": lab, "true_area_pct": t, "pred_area_pct": q, "error_pp": q - t}
                 for lab, t, q in zip(labels, true, pred, strict=True)]
    return pd.DataFrame(rows, columns=["image", "mineral", "true_area_pct", "pred_area_pct", "error_pp"])


def summarise_modal_errors(errors: pd.DataFrame) -> dict[str, Any]:
    """The figures a modal-mineralogy comparison reports, from :func:`modal_errors` rows (one or many evaluations).

    Returns:
        ``mean_abs_pp``: mean absolute area-% error over all (image, mineral) rows, percentage points;
        ``per_mineral``: that mean per mineral (a Series, minerals in first-seen order); ``worst``: the row with the
        largest absolute error, or ``None`` when there are no rows.
    """
    if not len(errors):
        return {"mean_abs_pp": float("nan"), "per_mineral": pd.Series(dtype=float), "worst": None}
    err = errors["error_pp"].abs()
    return {"mean_abs_pp": float(err.mean()),
            "per_mineral": err.groupby(errors["mineral"], sort=False).mean(),
            "worst": errors.iloc[int(err.to_numpy().argmax())]}  # by position: concatenated rows repeat labels


def summarise_error_sources(sources: pd.DataFrame, min_share: float = 0.4) -> list[str]:
    """Plain-language lines for the classes whose errors sit mostly in one image (share ≥ ``min_share``).

    ``sources`` is :func:`error_sources_of`'s table.  Example line: ``Sph: 59 % of its error pixels are in a52
    (IoU 0.75; 0.84 without that image, mean IoU without it 0.812)``.
    """
    lines = []
    for lab, r in sources.iterrows():
        if r["worst_share"] == r["worst_share"] and r["worst_share"] >= min_share:
            lines.append(f"{lab}: {r['worst_share']:.0%} of its error pixels are in {r['worst_image']} (IoU "
                         f"{r['iou']:.2f}; {r['iou_without']:.2f} without that image, mean IoU without it "
                         f"{r['mean_iou_without']:.3f})")
    return lines


def write_evaluation(ev: Evaluation, path: str | Path, n_boot: int = 1000) -> Path:
    """Write the evaluation JSON (:meth:`Evaluation.to_dict`) atomically; returns the path.

    Args:
        ev: the evaluation to write.
        path: the JSON file (its folders are made as needed).
        n_boot: bootstrap resamples for the mean IoU's 95 % interval (see :meth:`Evaluation.to_dict`); 0 skips it.

    Raises:
        OutputPathError: ``path`` cannot be written (a file where a folder is on its way, a read-only folder, a full
            disk); the message names it.
        ValueError: a negative ``n_boot``.
    """
    write_json(path, ev.to_dict(n_boot=n_boot))
    return Path(path)
