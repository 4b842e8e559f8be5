"""Dataset-wide evaluation of a model and of two baselines, at the ground truth's own resolution."""

from __future__ import annotations

import itertools
import json
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
    sum_confusions,
    void_border,
)
from lumenkit.runtime.heap import retained_heap

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)


"""Bin edges of the confidence-vs-error table."""


def training_split_for(root: str | Path, split: str) -> str:
    """The split baselines are fitted on: ``fit`` when evaluating ``val``, else ``train`` (never the evaluated one)."""
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

        Raises:
            ValueError: the dataset has no labelled pixels.
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

    def to_dict(self, n_boot: int = 1000) -> dict[str, Any]:
        """The ``lumenkit evaluate`` JSON.

        Per-class IoU by label, mean IoU with a bootstrap interval, pixel accuracy, confusion matrix and class
        order, per-image rows, per-image confusion matrices (``per_image_confusion``, by image name), baselines,
        confidence table and scales.
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
        d.update(self.info)
        return d


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def model_validation_split(ckpt: Any, n_val: int | None = None, seed: int | None = None) -> tuple[int, int]:
    """``(n_val, seed)`` of the validation split: the given values, else the checkpoint's training ones, else 10, 0.

    Evaluating ``val`` with the split the model was trained with keeps its training images out of the scores.
    """
    train = (getattr(ckpt, "config", None) or {}).get("train", {}) or {}
    n = n_val if n_val is not None else int(train.get("n_val", 10))
    s = seed if seed is not None else int(train.get("val_seed", 0))
    return int(n), int(s)


def model_validation_fold(ckpt: Any, fold: int | None = None) -> int:
    """The validation fold to evaluate a model on: ``fold`` if given, else its training ``val_fold``, else 0.

    The companion of :func:`model_validation_split` (checkpoints written before folds existed record none: 0, the
    split they were trained with).  A model trained on fold ``f`` is scored on fold ``f``, never on images it
    trained on.
    """
    train = (getattr(ckpt, "config", None) or {}).get("train", {}) or {}
    return int(fold if fold is not None else train.get("val_fold", 0))


def evaluated_fold(run_dir: str | Path | None, split: str, fold: int | None = None) -> int:
    """The validation fold a previous evaluation in ``RUN_DIR/metrics.json`` used for ``split``.

    ``fold`` wins when given; otherwise the ``val_fold`` recorded for the same split, else 0 (the companion of
    :func:`evaluated_split`; notebook 05 uses both to read the images notebook 04 predicted).
    """
    if fold is not None:
        return int(fold)
    done = _read_metrics(run_dir)
    return int(done.get("val_fold", 0)) if done.get("split") == split else 0


def _read_metrics(run_dir: str | Path | None) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json" if run_dir else None
    if path is None or not path.exists():
        return {}
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return done if isinstance(done, dict) else {}


def evaluated_split(run_dir: str | Path | None, split: str, n_val: int = 0) -> tuple[int, int]:
    """``(n_val, seed)`` for opening ``split`` as a previous evaluation in ``RUN_DIR/metrics.json`` did.

    ``n_val`` > 0 wins; otherwise the values recorded for the same split, else ``(10, 0)`` (notebook 05 uses this to
    read the same validation images notebook 04 predicted; :func:`evaluated_fold` gives the fold).
    """
    done = _read_metrics(run_dir)
    same = done.get("split") == split
    n = n_val or (int(done.get("n_val", 10)) if same else 10)
    return n, int(done.get("val_seed", 0)) if same else 0


def evaluate(
    data: str | Path,
    model: Any,
    split: str = "test",
    scale: float | None = None,
    void_border_px: int = 0,
    tta: bool | str = False,
    baselines: bool = True,
    n_val: int | None = None,
    seed: int | None = None,
    save_masks: str | Path | None = None,
    predict_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    magnification: float = 1.0,
    fold: int | None = None,
) -> Evaluation:
    """Evaluate a checkpoint on a split: metrics on dataset totals at the stored masks' resolution.

    The model runs at its training scale (or ``scale``): images are read at that scale and predictions are
    brought back to the stored mask size before counting.

    Args:
        data: dataset folder in LumenStone layout.
        model: a :class:`lumenkit.models.Checkpoint`, or a path to one.
        split: ``test``, ``train``, ``val`` or ``fit``.
        scale: scale to run the model at (default: the checkpoint's training scale).
        void_border_px: ignore ground-truth pixels within this many px (stored resolution) of a class boundary.
        tta: test-time augmentation passed to :func:`lumenkit.inference.predict.predict_image`.
        baselines: also score the majority and colour-centroid baselines fitted on the training split.
        n_val: validation images carved from train (for ``val``/``fit``); ``None``: as the model was trained
            (its recorded ``n_val``), so ``val`` never holds images the model trained on; else 10.
        seed: seed of the validation split; ``None``: the model's recorded ``val_seed``, else 0.
        fold: validation fold (which block of ``n_val`` images of that seed, see
            :func:`lumenkit.data.validation_split`); ``None``: the model's recorded ``val_fold``, else 0.
        save_masks: write predicted masks ``NAME.png`` (LumenStone codes) here, for the deposit report.
        predict_kwargs: extra arguments for ``predict_image`` (tile, margin, batch, threads, retain_heap: kept
            for the whole loop over images).
        progress: tqdm bar over images.
        transform: applied to each image (at model scale) before prediction, e.g. a perturbation or a
            calibration (see :mod:`lumenkit.evaluation.robustness`).
        magnification: read images at ``magnification`` × the model scale but present them as the model scale,
            simulating another objective or camera pixel size (1.0 = none).

    Raises:
        ConfigError: ``n_val`` or ``fold`` out of range for the training images (split ``val``/``fit``).
        lumenkit errors for bad input files; CheckpointError for a bad model file.
    """
    from tqdm.auto import tqdm

    from lumenkit.inference.predict import predict_image
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    cmap = ckpt.class_map
    model_scale = float(scale if scale is not None else ckpt.scale)
    n_val, seed = model_validation_split(ckpt, n_val, seed)
    fold = model_validation_fold(ckpt, fold)
    ds = LumenStoneDataset(data, split, class_set=cmap.codes, validation=ValidationSplit(n_val, seed, fold))
    labels = cmap.labels
    k = len(cmap)
    base: ColourCentroids | None = None
    if baselines:
        train_ds = LumenStoneDataset(data, training_split_for(data, split), class_set=cmap.codes,
                                     validation=ValidationSplit(n_val, seed, fold))
        base = ColourCentroids.fit(train_ds, cmap)
    mats, base_mats = [], {"majority": [], "colour_centroid": []}
    conf_err = np.zeros((len(CONFIDENCE_BINS) - 1, 2), dtype=np.int64)
    t0 = time.perf_counter()
    with retained_heap((predict_kwargs or {}).get("retain_heap", True)):  # freed buffers serve the next image
        for i in tqdm(range(len(ds)), desc=f"evaluate {split}", disable=not progress):
            mask = ds.read_mask(i)
            true = cmap.to_index(mask, source=str(ds.mask_paths[i]))
            valid = void_border(true, void_border_px) if void_border_px else None
            image = ds.read_image(i, scale=model_scale * magnification)
            if transform is not None:
                image = transform(image)
            out = predict_image(ckpt, image, input_scale=model_scale, model_scale=model_scale,
                                output_size=(mask.shape[1], mask.shape[0]), tta=tta, **(predict_kwargs or {}))
            pred = out["indices"]
            mats.append(confusion_matrix(pred, true, k, valid=valid))
            keep = true != 255 if valid is None else (true != 255) & valid
            b = np.clip(np.digitize(out["confidence"][keep], CONFIDENCE_BINS) - 1, 0, len(CONFIDENCE_BINS) - 2)
            wrong = pred[keep] != true[keep]
            conf_err[:, 0] += np.bincount(b, minlength=len(CONFIDENCE_BINS) - 1)
            conf_err[:, 1] += np.bincount(b[wrong], minlength=len(CONFIDENCE_BINS) - 1)
            if save_masks is not None:
                save_image(out["codes"], Path(save_masks) / f"{ds.names[i]}.png")
            if base is not None:
                img_stored = ds.read_image(i, scale=ds.stored_scale)
                cc = base.predict(img_stored)
                if cc.shape != true.shape:
                    cc = resize_mask(cc, (true.shape[1], true.shape[0]))
                base_mats["colour_centroid"].append(confusion_matrix(cc, true, k, valid=valid))
                base_mats["majority"].append(confusion_matrix(np.full_like(true, base.majority), true, k, valid=valid))
    seconds = time.perf_counter() - t0
    total = sum_confusions(mats)
    conf = pd.DataFrame(
        {"pixels": conf_err[:, 0], "errors": conf_err[:, 1]},
        index=pd.Index([f"{a:.1f}–{b:.1f}" for a, b in itertools.pairwise(CONFIDENCE_BINS)],
                       name="confidence"),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        conf["error_rate"] = conf["errors"] / conf["pixels"]
    info = {
        "split": split,
        "data": str(Path(data).resolve()),
        "images": len(ds),
        **({"n_val": n_val, "val_seed": seed, "val_fold": fold} if split in ("val", "fit") else {}),
        "scales": {"stored": ds.stored_scale, "model": model_scale, "trained": float(ckpt.scale)},
        "void_border": void_border_px,
        "tta": tta if isinstance(tta, str) else bool(tta),
        "seconds": round(seconds, 2),
    }
    return Evaluation(
        scores=Scores(total, labels),
        per_image=per_image_table(ds.names, mats, labels),
        baselines={n: Scores(sum_confusions(m), labels) for n, m in base_mats.items() if m},
        confidence=conf,
        info=info,
        matrices=mats,
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
    """Write the evaluation JSON atomically; returns the path."""
    write_json(path, ev.to_dict(n_boot=n_boot))
    return Path(path)
