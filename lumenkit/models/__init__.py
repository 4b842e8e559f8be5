"""Networks and their checkpoints: the residual U-Net, BatchNorm folding, saving and loading."""

from lumenkit.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from lumenkit.models.folding import fuse_for_inference
from lumenkit.models.resunet import (
    ARCHITECTURES,
    BLOCKS,
    ResUNet,
    SegmentationModel,
    count_flops,
    count_parameters,
    create_model,
)

__all__ = [
    "ARCHITECTURES",
    "BLOCKS",
    "Checkpoint",
    "ResUNet",
    "SegmentationModel",
    "count_flops",
    "count_parameters",
    "create_model",
    "fuse_for_inference",
    "load_checkpoint",
    "save_checkpoint",
]
