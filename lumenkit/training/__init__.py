"""Training: the configuration and its presets, the loop (resume, time budget, DDP), losses, weight averaging."""

from lumenkit.training.config import DEFAULT_PRESET, PRESETS, TrainConfig, train_command
from lumenkit.training.ema import WeightAverage
from lumenkit.training.loop import TrainResult, read_history, train
from lumenkit.training.losses import SegmentationLoss

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "SegmentationLoss",
    "TrainConfig",
    "TrainResult",
    "WeightAverage",
    "read_history",
    "train",
    "train_command",
]
