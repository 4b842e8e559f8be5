"""ImageJ/Fiji lookup tables for LumenStone masks.

ImageJ's binary ``.lut`` format is 768 bytes: the 256 red values, then the 256 green values, then the
256 blue values (``ij.plugin.LutLoader`` reads a file of exactly 768 bytes this way). Open a mask in Fiji,
then *Image › Lookup Tables › Open LUT…* (or drop the ``.lut`` file into ``Fiji.app/luts``) to see each
mineral in its catalogue colour; pixel values (the LumenStone codes) are unchanged.

The table itself lives in :mod:`lumenkit.data` (:func:`lumenkit.data.colours.imagej_lut_bytes`,
:func:`lumenkit.data.imageio.write_imagej_lut`) so that prediction, a lower layer, writes it beside its masks;
this module keeps the names under :mod:`lumenkit.interop`.
"""

from __future__ import annotations

from lumenkit.data.colours import IMAGEJ_LUT_SIZE, imagej_lut_bytes
from lumenkit.data.imageio import LUT_FILE, write_imagej_lut

LUT_SIZE: int = IMAGEJ_LUT_SIZE
"""Size in bytes of an ImageJ binary lookup table (256 × R, then G, then B)."""


def lut_bytes() -> bytes:
    """The catalogue colours as an ImageJ binary LUT: 256 reds, 256 greens, 256 blues (255 = white)."""
    return imagej_lut_bytes()


__all__ = ["LUT_FILE", "LUT_SIZE", "lut_bytes", "write_imagej_lut"]
