"""ImageJ/Fiji lookup tables for LumenStone masks.

ImageJ's binary ``.lut`` format is 768 bytes: the 256 red values, then the 256 green values, then the
256 blue values (``ij.plugin.LutLoader`` reads a file of exactly 768 bytes this way). Open a mask in Fiji,
then *Image › Lookup Tables › Open LUT…* (or drop the ``.lut`` file into ``Fiji.app/luts``) to see each
mineral in its catalogue colour; pixel values (the LumenStone codes) are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumenkit.data.colours import PALETTE
from lumenkit.data.imageio import atomic_write

LUT_SIZE: int = 768
"""Size in bytes of an ImageJ binary lookup table (256 × R, then G, then B)."""


def lut_bytes() -> bytes:
    """The catalogue colours as an ImageJ binary LUT: 256 reds, 256 greens, 256 blues (255 = white)."""
    return np.ascontiguousarray(PALETTE.astype(np.uint8).T).tobytes()


def write_imagej_lut(path: str | Path) -> Path:
    """Write the catalogue colours as an ImageJ/Fiji binary ``.lut`` file (768 bytes), atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    with atomic_write(path) as f:
        f.write(lut_bytes())
    return path
