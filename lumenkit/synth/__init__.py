"""Synthetic polished sections with exact masks in LumenStone's layout, and their calibration against real images."""

from lumenkit.synth.calibration import ClassStats, collect_stats, compare, dataset_stats, delta_e, srgb_to_lab
from lumenkit.synth.generator import (
    BASE_SCALE,
    DEPOSITS,
    PHASES,
    SCHEDULE,
    Deposit,
    Phase,
    SynthExistsError,
    Texture,
    generate_section,
    write_dataset,
)

__all__ = [
    "BASE_SCALE",
    "ClassStats",
    "DEPOSITS",
    "Deposit",
    "PHASES",
    "Phase",
    "SCHEDULE",
    "SynthExistsError",
    "Texture",
    "collect_stats",
    "compare",
    "dataset_stats",
    "delta_e",
    "generate_section",
    "srgb_to_lab",
    "write_dataset",
]
