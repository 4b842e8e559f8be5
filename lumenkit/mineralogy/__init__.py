"""Mineralogy of masks: modal composition (area %, weight %), calculated assay, grains, contacts, deposit tables."""

from lumenkit.mineralogy.analysis import (
    MineralogyTables,
    contact_matrix,
    deposit_modal,
    grains,
    mineralogy,
    modal_composition,
    size_classes,
)
from lumenkit.mineralogy.assay import (
    assay_table,
    calculated_assay,
    element_deportment,
    weight_percent,
    weight_table,
)

__all__ = [
    "MineralogyTables",
    "assay_table",
    "calculated_assay",
    "contact_matrix",
    "deposit_modal",
    "element_deportment",
    "grains",
    "mineralogy",
    "modal_composition",
    "size_classes",
    "weight_percent",
    "weight_table",
]
