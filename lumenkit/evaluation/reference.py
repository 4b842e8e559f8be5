"""Published reference figures (per-class IoU on LumenStone S1) with the protocol each was scored under.

A figure is only compared with its like: :data:`PUBLISHED_PROTOCOLS` names each reference's protocol as ``lumenkit
evaluate`` names its own (:data:`lumenkit.evaluation.evaluate.PROTOCOLS`, which says how each counts pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    "petroscope README (ResUNet; S1 v1), void borders": {
        "BG": 0.851, "Ccp": 0.936, "Gl": 0.763, "Brt": 0.896, "Py/Mrc": 0.973, "Sph": 0.765, "Tnt/Ttr": 0.771,
        "mean_iou": 0.851, "pixel_accuracy": None,
    },
    "Korshunov, Khvostikov et al. 2025 (PSPNet/ResNet-18, colour correction, GPU)": {
        "mean_iou": 0.88, "pixel_accuracy": 0.96,
    },
}
"""Khvostikov et al. (ISPRS Archives XLIV-2/W1-2021), the petroscope README, and Korshunov, Khvostikov et al.,
Mining Science and Technology (Russia) 10(3):232–244, 2025 (best configuration, nine minerals: "IoU up to 0.88,
pixel accuracy up to 0.96"); S1 classes only."""

PUBLISHED_PROTOCOLS: dict[str, str] = {
    "paper (ResUNet, 50 epochs, GPU; S1 v1 test)": "all_pixels",
    "petroscope README (ResUNet; S1 v1)": "all_pixels",
    "petroscope README (ResUNet; S1 v1), void borders": "petroscope",
    "Korshunov, Khvostikov et al. 2025 (PSPNet/ResNet-18, colour correction, GPU)": "not stated (best configuration)",
}
"""The protocol of each reference, named as ``lumenkit evaluate`` names its own (``protocols`` in its JSON):
``all_pixels`` scores every labelled pixel at the mask's stored resolution; ``petroscope`` leaves out what
petroscope's test script does (``void_border_width=2, void_pad=4``: one pixel on one side of each class boundary and
a 4-px frame; :func:`lumenkit.evaluation.metrics.petroscope_void`; its ResUNet configuration tests on S1 v1 stored at
×0.5).
lumenkit's ``void_border_2px`` (2 px on both sides) is no published protocol."""


def reference_table(protocols: bool = False) -> pd.DataFrame:
    """References as a DataFrame: rows = source, columns = class labels, ``mean_iou``, ``pixel_accuracy``.

    Args:
        protocols: add a ``protocol`` column (:data:`PUBLISHED_PROTOCOLS`).
    """
    table = pd.DataFrame.from_dict(REFERENCES, orient="index").astype(float)
    if protocols:
        table["protocol"] = [PUBLISHED_PROTOCOLS[name] for name in table.index]
    return table


def compare_with_references(per_class_iou: dict[str, float | None], mean_iou: float, pixel_accuracy: float,
                            name: str = "this model", protocol: str = "all_pixels",
                            protocols: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Our per-class IoU as a row beside the published ones (classes not in S1 are dropped from references).

    Args:
        per_class_iou: our headline IoU by class label (``None``: class absent).
        mean_iou: our headline mean IoU.
        pixel_accuracy: our headline pixel accuracy.
        name: our row's label.
        protocol: how the headline scores were counted (``all_pixels``, or ``void_border_Npx`` for an evaluation
            with a void border).
        protocols: an evaluation's ``protocols`` (its JSON's, scores by protocol name): one row of ours per
            protocol, so each published row has its like beside it; the headline row stays first when its
            ``protocol`` is none of them (an evaluation with another void border).

    Returns:
        Our row(s), then the references; the ``protocol`` column says how each row was scored.
    """
    def row(iou: Mapping[str, float | None], miou: float, pix: float, how: str) -> dict[str, Any]:
        return {**{k: (float("nan") if v is None else v) for k, v in iou.items()},
                "mean_iou": miou, "pixel_accuracy": pix, "protocol": how}

    ours = {} if protocols and protocol in protocols else {name: row(per_class_iou, mean_iou, pixel_accuracy, protocol)}
    for how, sc in (protocols or {}).items():
        ours[f"{name}, {how}"] = row(sc["per_class_iou"], sc["mean_iou"], sc["pixel_accuracy"], how)
    ref = reference_table(protocols=True)
    table = pd.concat([pd.DataFrame(list(ours.values()), index=list(ours)), ref])
    first = next(iter(ours.values()))
    cols = [c for c in ref.columns if c in first] + [c for c in first if c not in ref.columns]
    return table[cols]
