"""Whole-section mosaics: tiled or striped (Big/OME-)TIFF images far larger than memory, read region by region.

Microscope software stitches the fields of view of a polished section into one mosaic of 10⁸–10⁹ pixels and more.
:class:`Mosaic` opens one lazily (tifffile's tile index exposed as a zarr array, so a region decodes only the
tiles it touches), checks it (8-bit RGB, pyramid levels that agree), reads its pixel size from its metadata, and
serves rows of the image resampled to a model's scale (:meth:`Mosaic.scaled_rows`) from the pyramid level nearest
that scale, band by band with the same pixels as resampling the whole image (:mod:`lumenkit.data.resample`; from a
coarser pyramid level the pixels are those of that level resampled, not of level 0's).
The decompression-bomb limit of :mod:`lumenkit.data.imageio` does not apply: nothing is decoded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from lumenkit.data.imageio import target_size
from lumenkit.data.resample import area_rows, source_rows
from lumenkit.errors import BadImageError

MOSAIC_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".btf", ".tf8")
"""File types that may hold a mosaic (case-insensitive)."""

MOSAIC_PIXELS: int = 64_000_000
"""Images of at least this many pixels in a TIFF are predicted as mosaics, streamed (smaller ones whole)."""

_ROWS = 512
"""Source rows decoded at a time while resampling (bounds the decoded band: 512 × width × 3 bytes)."""

_MAX_STRIP_BYTES = 64_000_000
"""Largest strip of a striped (untiled) mosaic: each strip a read touches is decoded whole."""


@dataclass(frozen=True)
class MosaicLevel:
    """One level of a mosaic's pyramid.

    Attributes:
        shape: ``(height, width)`` in px.
        downsample: level-0 pixels per pixel of this level along each axis (1 for level 0).
    """

    shape: tuple[int, int]
    downsample: float


def is_mosaic(path: str | Path, min_pixels: int | None = None) -> bool:
    """Whether ``path`` is a TIFF of at least ``min_pixels`` (default :data:`MOSAIC_PIXELS`) pixels, from its header."""
    min_pixels = MOSAIC_PIXELS if min_pixels is None else min_pixels
    path = Path(path)
    if path.suffix.lower() not in MOSAIC_SUFFIXES or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            sizes = dict(zip(series.axes, series.shape, strict=True))
    except Exception:  # not a readable TIFF: the ordinary reader reports it
        return False
    return sizes.get("Y", 0) * sizes.get("X", 0) >= min_pixels


class Mosaic:
    """A mosaic opened lazily: its pyramid, pixel size, and regions decoded on demand.

    Use as a context manager (``with Mosaic(path) as m: ...``) or call :meth:`close`.

    Attributes:
        path: the file.
        levels: the pyramid, level 0 (full resolution) first.
        pixel_size_um: µm per level-0 pixel from the file's metadata (OME-XML, TIFF tags), else ``None``.

    Raises:
        BadImageError: not a readable TIFF, not 8-bit RGB (``YXS`` with 3 samples), or pyramid levels whose
            sizes disagree with one downsampling factor per level (the message names the file and the fix).
    """

    def __init__(self, path: str | Path) -> None:
        import tifffile

        from lumenkit.data.sections import metadata_pixel_size_um

        self.path = Path(path)
        if not self.path.is_file():
            raise BadImageError(f"{self.path}: mosaic file does not exist")
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            levels = list(series.levels)
        except Exception as e:
            raise BadImageError(f"{self.path}: not a readable TIFF ({_short(e)}); re-export the mosaic as "
                                "(Big)TIFF or OME-TIFF") from None
        self._arrays: list[Any] = [None] * len(levels)
        try:
            self._check_storage(series)
            self.levels = [self._check_level(lv, i) for i, lv in enumerate(levels)]
            declared = self._tif.pages[0].subifds or ()
            if len(declared) + 1 != len(levels):  # reduced levels tifffile did not take as a pyramid: check them
                reduced = self._tif.pages[0].pages
                self.levels = [self.levels[0], *(self._check_level(p, i) for i, p in enumerate(reduced, 1))]
                self._check_pyramid()
                self.levels = self.levels[:1]  # consistent yet not a pyramid tifffile serves: read level 0 only
            self._check_pyramid()
        except BadImageError:
            self._tif.close()
            raise
        self.pixel_size_um, self.pixel_size_source = metadata_pixel_size_um(self.path)

    def _check_storage(self, series: Any) -> None:
        """Refuse what cannot be read region by region (a missing codec, huge strips, several large images)."""
        import tifffile

        page = self._tif.pages[0]
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError:
            raise BadImageError(f"{self.path}: compressed with {page.compression.name}, which needs the imagecodecs "
                                "package: pip install imagecodecs") from None
        if not page.is_tiled:
            strip = int(page.rowsperstrip or page.imagelength) * int(page.imagewidth) * int(page.samplesperpixel)
            if strip > _MAX_STRIP_BYTES:
                raise BadImageError(f"{self.path}: stored in strips of {strip / 1e6:.0f} MB, each decoded whole; "
                                    "re-export the mosaic tiled (e.g. 512×512 tiles, as BigTIFF or OME-TIFF)")
        big = [s for s in self._tif.series[1:] if s.kind != "reduced" and int(np.prod(s.shape)) >= int(np.prod(
            series.shape)) // 4]
        if big:
            raise BadImageError(f"{self.path}: holds {1 + len(big)} images of similar size; a mosaic file holds one "
                                "section: export each into its own file")

    def _check_level(self, level: Any, i: int) -> MosaicLevel:
        axes, shape, dtype = str(level.axes), tuple(level.shape), np.dtype(level.dtype)
        if axes[-3:] == "SYX" and dtype == np.uint8:
            raise BadImageError(f"{self.path}: colour planes stored separately (planar, axes {axes}); re-export the "
                                "mosaic with interleaved RGB samples (contiguous planar configuration)")
        if int(np.prod(shape[:-3], dtype=int)) != 1:
            raise BadImageError(f"{self.path}: holds {int(np.prod(shape[:-3], dtype=int))} images (axes {axes}); a "
                                "mosaic file holds one section: export each into its own file")
        if dtype != np.uint8 or axes[-3:] != "YXS" or shape[-1] != 3:
            raise BadImageError(f"{self.path}: level {i} is {dtype} with axes {axes} {shape}; a mosaic must be "
                                "8-bit RGB (YXS, 3 samples per pixel): export it as 8-bit RGB")
        h, w = shape[-3], shape[-2]
        return MosaicLevel((int(h), int(w)), 1.0)

    def _check_pyramid(self) -> None:
        h0, w0 = self.levels[0].shape
        out = [self.levels[0]]
        for i, lv in enumerate(self.levels[1:], 1):
            h, w = lv.shape
            dy, dx = h0 / h, w0 / w
            rounding = 2 * dy * (1 / h + 1 / w)  # a level's sides are level 0's / d, rounded either way
            if abs(dx - dy) > rounding or dy <= out[-1].downsample:
                raise BadImageError(f"{self.path}: pyramid level {i} is {w}×{h} px, which is not level 0 "
                                    f"({w0}×{h0} px) downsampled by one factor, coarser than level {i - 1}; "
                                    "rebuild the pyramid (e.g. export from the microscope software again)")
            out.append(MosaicLevel((h, w), float(dy)))
        self.levels = out

    def __enter__(self) -> Mosaic:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of level 0 in px."""
        return self.levels[0].shape

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of level 0 in px."""
        return self.levels[0].shape[::-1]

    def _array(self, level: int) -> Any:
        if self._arrays[level] is None:
            import zarr

            # the series' store at one level: a level's own store is the whole pyramid (a zarr group) for level 0
            self._arrays[level] = zarr.open(self._tif.series[0].aszarr(level=level), mode="r")
        return self._arrays[level]

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None, level: int = 0) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` of a level as ``(h, w, 3)`` uint8, decoding only the tiles needed.

        Raises:
            BadImageError: a tile cannot be decoded (a truncated or damaged file), naming the file and region.
        """
        x1 = self.levels[level].shape[1] if x1 is None else x1
        try:
            region = np.asarray(self._array(level)[y0:y1, x0:x1])
        except Exception as e:
            raise BadImageError(f"{self.path}: cannot decode rows {y0}–{y1} of level {level} ({_short(e)}); the "
                                "file is truncated or damaged: copy or export it again") from None
        region = region.reshape(region.shape[-3:])
        if region.dtype != np.uint8 or region.shape[-1] != 3:
            raise BadImageError(f"{self.path}: rows {y0}–{y1} decode as {region.dtype} {region.shape}, not 8-bit "
                                "RGB; export the mosaic as 8-bit RGB")
        return region

    def level_for(self, factor: float) -> int:
        """The coarsest level at least as fine as level 0 resampled by ``factor`` (≤ 1), so no detail is lost."""
        w, h = self.scaled_size(factor)
        best = 0
        for i, lv in enumerate(self.levels):
            if lv.downsample * factor <= 1 + 1e-6 and lv.shape[0] >= h and lv.shape[1] >= w:
                best = i
        return best

    def scaled_size(self, factor: float) -> tuple[int, int]:
        """``(width, height)`` of the mosaic resampled by ``factor`` (rounded as ``imageio.target_size``)."""
        return target_size(self.size, factor)

    def scaled_rows(self, factor: float, a: int, b: int, level: int | None = None) -> np.ndarray:
        """Rows ``[a, b)`` of the mosaic resampled by ``factor ≤ 1``, as ``(b - a, width, 3)`` uint8.

        Resampled by area from ``level`` (default :meth:`level_for`): from level 0, the same pixels as
        :func:`lumenkit.data.imageio.resize_image` of the whole image, for any ``a, b``.

        Raises:
            ValueError: ``factor`` above 1.
            BadImageError: a tile cannot be decoded.
        """
        from lumenkit.data.resample import to_uint8

        if factor > 1 + 1e-9:
            raise ValueError(f"a mosaic is only resampled down, got factor {factor}")
        level = self.level_for(factor) if level is None else level
        size = self.scaled_size(factor)
        h_in, w_in = self.levels[level].shape
        if size == (w_in, h_in):
            return self.read(a, b, level=level)
        out = np.empty((b - a, size[0], 3), dtype=np.uint8)
        group = max(1, int(_ROWS * size[1] / h_in))  # output rows per decoded band of about _ROWS source rows
        for r in range(a, b, group):
            s = min(b, r + group)
            lo, hi = source_rows(h_in, size[1], r, s)
            out[r - a : s - a] = to_uint8(area_rows(self.read(lo, hi, level=level), lo, h_in, size, r, s))
        return out


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


class MosaicMask:
    """A mask of a mosaic (one 8-bit code per pixel in a tiled (Big)TIFF, as ``predict`` writes it), opened lazily.

    Rows and regions decode only the tiles they touch, so a mask of any size is measured band by band
    (:func:`lumenkit.mineralogy.stream.stream_mineralogy`). Use as a context manager or call :meth:`close`.

    Attributes:
        path: the file.
        shape: ``(height, width)`` of the full-resolution level in px.

    Raises:
        BadMaskError: not a readable TIFF, or not one 8-bit channel (the message names the file and the fix).
    """

    def __init__(self, path: str | Path) -> None:
        import tifffile

        from lumenkit.errors import BadMaskError

        self.path = Path(path)
        if not self.path.is_file():
            raise BadMaskError(f"{self.path}: mask file does not exist; predict the mosaic first")
        try:
            self._tif = tifffile.TiffFile(self.path)
            level = self._tif.series[0].levels[0]
            shape, dtype = tuple(int(n) for n in level.shape), np.dtype(level.dtype)
        except Exception as e:
            raise BadMaskError(f"{self.path}: not a readable TIFF mask ({_short(e)}); predict the mosaic "
                               "again") from None
        if dtype != np.uint8 or len(shape) != 2:
            self._tif.close()
            raise BadMaskError(f"{self.path}: mask is {dtype} {shape}, not one 8-bit code per pixel; save it as a "
                               "single-channel 8-bit TIFF of LumenStone codes")
        self._array: Any = None
        self.shape: tuple[int, int] = (shape[0], shape[1])

    def __enter__(self) -> MosaicMask:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` as ``(h, w)`` uint8 codes.

        Raises:
            BadMaskError: a tile cannot be decoded (a truncated or damaged file).
        """
        from lumenkit.errors import BadMaskError

        x1 = self.shape[1] if x1 is None else x1
        try:
            if self._array is None:
                import zarr

                self._array = zarr.open(self._tif.series[0].aszarr(level=0), mode="r")
            region = np.asarray(self._array[y0:y1, x0:x1])
        except Exception as e:
            raise BadMaskError(f"{self.path}: cannot decode rows {y0}–{y1} ({_short(e)}); the mask is truncated or "
                               "damaged: predict the mosaic again") from None
        if region.dtype != np.uint8:
            raise BadMaskError(f"{self.path}: rows {y0}–{y1} decode as {region.dtype}, not 8-bit codes")
        return region
