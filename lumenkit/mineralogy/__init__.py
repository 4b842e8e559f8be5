"""Mineralogy of masks: modal composition, grains, size classes, contacts and per-deposit tables."""

from lumenkit.mineralogy.analysis import (
    MineralogyTables,
    contact_matrix,
    deposit_modal,
    grains,
    mineralogy,
    modal_composition,
    size_classes,
)

__all__ = [
    "MineralogyTables",
    "contact_matrix",
    "deposit_modal",
    "grains",
    "mineralogy",
    "modal_composition",
    "size_classes",
]
