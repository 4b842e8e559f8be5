"""Evaluation: confusion matrices and IoU, whole-split evaluation, baselines, robustness, published figures."""

from lumenkit.evaluation.evaluate import ColourCentroids, Evaluation, evaluate, recorded_validation, write_evaluation
from lumenkit.evaluation.metrics import (
    Scores,
    bootstrap_mean_iou,
    confusion_matrix,
    iou_from_confusion,
    petroscope_void,
    sum_confusions,
    void_border,
)
from lumenkit.evaluation.reference import REFERENCES, reference_table
from lumenkit.evaluation.robustness import PERTURBATIONS, Perturbation, robustness_curves, robustness_study

__all__ = [
    "ColourCentroids",
    "Evaluation",
    "PERTURBATIONS",
    "Perturbation",
    "REFERENCES",
    "Scores",
    "bootstrap_mean_iou",
    "confusion_matrix",
    "evaluate",
    "iou_from_confusion",
    "petroscope_void",
    "recorded_validation",
    "reference_table",
    "robustness_curves",
    "robustness_study",
    "sum_confusions",
    "void_border",
    "write_evaluation",
]
