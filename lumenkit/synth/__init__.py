"""Synthetic polished sections: ore textures of Pb–Zn–Cu and Cu–Ni deposits rendered as reflected-light images.

The generator paints a map of LumenStone class codes (the mask) from competing smooth random fields (a few
large, coherent grains and aggregates with smooth, irregular boundaries, plus small satellite grains) and a list
of ore textures per deposit (euhedral crystals, exsolution blebs, flames, rims, interstitial fills, pinching
veinlets, cracks, pits), then renders it as a microscope would show it (per-grain tint, mottling, relief halos,
contact grooves, galena cleavage pits, polishing scratches, mixed pixels at contacts, defocus, vignetting and
uneven illumination, exposure and white-balance drift, camera noise). Colours are calibrated on the real
LumenStone sample (see :mod:`lumenkit.synth.calibration` and ``scripts/calibrate_synth.py``).

Lengths in deposit definitions are in pixels at scale 0.5 (the real sample's ×0.5 images); a section rendered
at another ``scale`` scales every length accordingly.
"""

from lumenkit.synth.calibration import ClassStats, collect_stats, compare, dataset_stats, delta_e, srgb_to_lab
from lumenkit.synth.deposits import BASE_SCALE, DEPOSITS, PHASES, SCHEDULE, Deposit, Phase, SynthExistsError, Texture
from lumenkit.synth.render import generate_section
from lumenkit.synth.writer import write_dataset

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
