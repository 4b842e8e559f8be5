"""Data: the mineral catalogue, image and mask I/O, LumenStone datasets, patch samplers, augmentation.

Torch-free on import; the patch samplers (which need torch) live in :mod:`lumenkit.data.samplers`.
"""

from lumenkit.data.catalogue import CATALOGUE, CLASS_SETS, IGNORE, ClassMap, Mineral, mineral, resolve_class_set
from lumenkit.data.colours import PALETTE, colour_mask, colour_of, overlay
from lumenkit.data.datasets import (
    NATIVE_SIZE,
    DatasetInfo,
    LumenStoneDataset,
    ValidationSplit,
    combine_datasets,
    list_splits,
    open_splits,
    pixel_shares,
    read_deposits,
    validation_folds,
    validation_split,
)
from lumenkit.data.flatfield import FlatField
from lumenkit.data.imageio import (
    MAX_PIXELS,
    atomic_write,
    image_size,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
    save_image,
    write_json,
    write_text,
)

__all__ = [
    "CATALOGUE",
    "CLASS_SETS",
    "ClassMap",
    "DatasetInfo",
    "FlatField",
    "IGNORE",
    "LumenStoneDataset",
    "MAX_PIXELS",
    "Mineral",
    "NATIVE_SIZE",
    "PALETTE",
    "atomic_write",
    "colour_mask",
    "colour_of",
    "combine_datasets",
    "image_size",
    "list_splits",
    "mineral",
    "open_splits",
    "overlay",
    "pixel_shares",
    "read_deposits",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
    "resolve_class_set",
    "save_image",
    "ValidationSplit",
    "validation_folds",
    "validation_split",
    "write_json",
    "write_text",
]
