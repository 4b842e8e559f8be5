"""Published reference figures (per-class IoU on LumenStone S1) to put our numbers in context."""

from __future__ import annotations

import pandas as pd

REFERENCES: dict[str, dict[str, float | None]] = {
    "paper (ResUNet, 50 epochs, GPU; S1 v1 test)": {
        "BG": 0.86, "Ccp": 0.71, "Gl": 0.48, "Brt": 0.67, "Py/Mrc": 0.89, "Sph": 0.82, "Tnt/Ttr": 0.34,
        "mean_iou": 0.681, "pixel_accuracy": 0.946,
    },
    "petroscope README (ResUNet; S1 v1)": {
        "BG": 0.833, "Ccp": 0.919, "Gl": 0.746, "Brt": 0.887, "Py/Mrc": 0.963, "Sph": 0.753, "Tnt/Ttr": 0.760,
        "mean_iou": 0.837, "pixel_accuracy": None,
    },
}
"""Khvostikov et al. (ISPRS Archives XLIV-2/W1-2021) and the petroscope README; S1 classes only."""


def reference_table() -> pd.DataFrame:
    """References as a DataFrame: rows = source, columns = class labels, ``mean_iou``, ``pixel_accuracy``."""
    return pd.DataFrame.from_dict(REFERENCES, orient="index").astype(float)


def compare_with_references(per_class_iou: dict[str, float | None], mean_iou: float, pixel_accuracy: float,
                            name: str = "this model") -> pd.DataFrame:
    """Our per-class IoU as a row beside the published ones (classes not in S1 are dropped from references)."""
    ours = {**{k: (float("nan") if v is None else v) for k, v in per_class_iou.items()},
            "mean_iou": mean_iou, "pixel_accuracy": pixel_accuracy}
    ref = reference_table()
    table = pd.concat([pd.DataFrame([ours], index=[name]), ref])
    cols = [c for c in ref.columns if c in ours] + [c for c in ours if c not in ref.columns]
    return table[cols]
