"""lumenkit: automatic identification of ore minerals in reflected-light images of polished sections."""

from .classes import CATALOGUE, CLASS_SETS, IGNORE, ClassMap, Mineral, mineral
from .data import DatasetInfo, LumenStoneDataset, open_splits, validation_folds, validation_split
from .errors import (
    BadImageError,
    BadMaskError,
    CheckpointError,
    ConfigError,
    DatasetNotFoundError,
    EmptySplitError,
    LumenkitError,
    MaskSizeError,
    MissingMaskError,
    UnknownClassError,
)

__version__ = "0.1.0"

__all__ = [
    "BadImageError",
    "BadMaskError",
    "CATALOGUE",
    "CLASS_SETS",
    "CheckpointError",
    "ClassMap",
    "ConfigError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "EmptySplitError",
    "IGNORE",
    "LumenStoneDataset",
    "LumenkitError",
    "MaskSizeError",
    "Mineral",
    "MissingMaskError",
    "UnknownClassError",
    "__version__",
    "mineral",
    "open_splits",
    "validation_folds",
    "validation_split",
]
