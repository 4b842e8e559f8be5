"""Mineralogy of masks: modal composition (area %, weight %), calculated assay, grains, contacts, deposit tables."""

from lumenkit.mineralogy.analysis import (
    MineralogyTables,
    SectionAnalysis,
    analyse_mask,
    contact_matrix,
    deposit_modal,
    free_boundary_by_size,
    grains,
    mineralogy,
    modal_composition,
    size_classes,
    size_distribution,
)
from lumenkit.mineralogy.assay import (
    assay_table,
    calculated_assay,
    element_deportment,
    weight_percent,
    weight_table,
)
from lumenkit.mineralogy.stream import StreamedMineralogy, stream_mineralogy

__all__ = [
    "MineralogyTables",
    "SectionAnalysis",
    "StreamedMineralogy",
    "analyse_mask",
    "assay_table",
    "calculated_assay",
    "contact_matrix",
    "deposit_modal",
    "element_deportment",
    "free_boundary_by_size",
    "grains",
    "mineralogy",
    "modal_composition",
    "size_classes",
    "size_distribution",
    "stream_mineralogy",
    "weight_percent",
    "weight_table",
]
