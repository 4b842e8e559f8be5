"""lumenkit: automatic identification of ore minerals in reflected-light images of polished sections."""

from lumenkit._version import __version__
from lumenkit.data.catalogue import CATALOGUE, CLASS_SETS, IGNORE, ClassMap, Mineral, mineral
from lumenkit.data.datasets import (
    DatasetInfo,
    LumenStoneDataset,
    ValidationSplit,
    open_splits,
    validation_folds,
    validation_split,
)
from lumenkit.errors import (
    BadImageError,
    BadMaskError,
    CheckpointError,
    ConfigError,
    DatasetNotFoundError,
    EmptySplitError,
    LumenkitError,
    MaskSizeError,
    MissingMaskError,
    OutputPathError,
    UnknownClassError,
)

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
    "OutputPathError",
    "UnknownClassError",
    "ValidationSplit",
    "__version__",
    "mineral",
    "open_splits",
    "validation_folds",
    "validation_split",
]
