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
            reduced = self._reduced_pages()
            if len(reduced) + 1 != len(levels):  # reduced levels tifffile did not take as a pyramid: check them
                self.levels = [self.levels[0], *(self._check_level(p, i) for i, p in enumerate(reduced, 1))]
                self._check_pyramid()
                self.levels = self.levels[:1]  # consistent yet not a pyramid tifffile serves: read level 0 only
            self._check_pyramid()
        except BadImageError:
            self._tif.close()
            raise
        self.pixel_size_um, self.pixel_size_source = metadata_pixel_size_um(self.path)

    def _reduced_pages(self) -> list[Any]:
        """The pages of level 0's reduced levels.

        Its sub-IFDs, else the pages after it marked reduced and sized as level 0 reduced by a whole factor (a
        preview or thumbnail page of another size is not a level).
        """
        page = self._tif.pages[0]
        if page.subifds:
            return list(page.pages)
        h0, w0 = (int(v) for v in page.shape[:2])
        out: list[Any] = []
        while True:
            try:
                nxt = self._tif.pages[len(out) + 1]
            except IndexError:
                return out
            h, w = (int(v) for v in nxt.shape[:2])
            f = round(w0 / w) if w else 0
            level_sized = f >= 2 and w in (w0 // f, -(-w0 // f)) and h in (h0 // f, -(-h0 // f))
            if not getattr(nxt, "is_reduced", False) or not level_sized:
                return out
            out.append(nxt)

    def _check_storage(self, series: Any) -> None:
        """Refuse what cannot be read region by region (a missing codec, huge strips, several large images).

        Also a pyramid level of another sample type than level 0's (tifffile then splits the pyramid in two images,
        which would otherwise be reported as such).
        """
        import tifffile

        page = self._tif.pages[0]
        for i, level in enumerate(self._reduced_pages(), 1):
            if np.dtype(level.dtype) != np.dtype(page.dtype):
                raise BadImageError(f"{self.path}: pyramid level {i} is {np.dtype(level.dtype)}, level 0 "
                                    f"{np.dtype(page.dtype)}; a mosaic and its pyramid are 8-bit RGB: export it "
                                    "again as 8-bit RGB (its pyramid rebuilt)")
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
        levels: ``(height, width)`` of every pyramid level, level 0 (full resolution) first.

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
            levels = self._tif.series[0].levels
            level = levels[0]
            shape, dtype = tuple(int(n) for n in level.shape), np.dtype(level.dtype)
            sides = [tuple(int(n) for n in lv.shape) for lv in levels]
        except Exception as e:
            raise BadMaskError(f"{self.path}: not a readable TIFF mask ({_short(e)}); predict the mosaic "
                               "again") from None
        if dtype != np.uint8 or len(shape) != 2:
            self._tif.close()
            raise BadMaskError(f"{self.path}: mask is {dtype} {shape}, not one 8-bit code per pixel; save it as a "
                               "single-channel 8-bit TIFF of LumenStone codes")
        self._arrays: dict[int, Any] = {}
        self.shape: tuple[int, int] = (shape[0], shape[1])
        self.levels: list[tuple[int, int]] = [(sh[0], sh[1]) for sh in sides if len(sh) == 2]

    def __enter__(self) -> MosaicMask:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._tif.close()

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None, level: int = 0) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of a pyramid level as ``(h, w)`` uint8 codes.

        Raises:
            BadMaskError: a tile cannot be decoded (a truncated or damaged file).
        """
        from lumenkit.errors import BadMaskError

        x1 = self.levels[level][1] if x1 is None else x1
        try:
            if level not in self._arrays:
                import zarr

                self._arrays[level] = zarr.open(self._tif.series[0].aszarr(level=level), mode="r")
            region = np.asarray(self._arrays[level][y0:y1, x0:x1])
        except Exception as e:
            raise BadMaskError(f"{self.path}: cannot decode rows {y0}–{y1} ({_short(e)}); the mask is truncated or "
                               "damaged: predict the mosaic again") from None
        if region.dtype != np.uint8:
            raise BadMaskError(f"{self.path}: rows {y0}–{y1} decode as {region.dtype}, not 8-bit codes")
        return region


def overview_step(shape: tuple[int, int], max_side: int) -> int:
    """The whole-number reduction that brings ``shape = (height, width)`` to at most ``max_side`` px a side."""
    return max(1, -(-max(shape) // max_side))


def mosaic_overview(image: str | Path, mask: str | Path | None = None, max_side: int = 2048) -> tuple[
        np.ndarray, np.ndarray | None, int]:
    """A mosaic (and its mask) reduced to at most ``max_side`` px a side, read from the pyramid where it has one.

    The image is area-resampled (:meth:`Mosaic.scaled_rows`); the mask is sampled at the pixel centres of the
    same grid from its nearest finer pyramid level (codes are never averaged).

    Returns:
        ``(image, mask, step)``: ``(h, w, 3)`` uint8, ``(h, w)`` codes or ``None``, and the reduction: each
        overview pixel is ``step`` × ``step`` mosaic pixels (for the scale bar: pixel size × step).

    Raises:
        BadImageError, BadMaskError: a file that cannot be read.
    """
    with Mosaic(image) as m:
        h0, w0 = m.shape
        step = overview_step((h0, w0), max_side)
        w, h = -(-w0 // step), -(-h0 // step)
        picture = m.scaled_rows(w / w0, 0, h) if step > 1 else m.read(0, h0)
        h, w = picture.shape[:2]
    codes = None
    if mask is not None:
        with MosaicMask(mask) as mm:
            if mm.shape != (h0, w0):
                from lumenkit.errors import BadMaskError

                raise BadMaskError(f"{mask}: mask is {mm.shape[1]}×{mm.shape[0]} px, its mosaic {w0}×{h0}; "
                                   "predict the mosaic again")
            level = max(i for i, (lh, lw) in enumerate(mm.levels) if lh >= h and lw >= w)
            lh, lw = mm.levels[level]
            ys = np.minimum(((np.arange(h) + 0.5) * lh / h).astype(np.intp), lh - 1)
            xs = np.minimum(((np.arange(w) + 0.5) * lw / w).astype(np.intp), lw - 1)
            codes = np.empty((h, w), np.uint8)
            rows = 256
            for a in range(0, h, rows):  # decode only the bands of the level the sampled rows fall in
                y = ys[a:a + rows]
                band = mm.read(int(y[0]), int(y[-1]) + 1, level=level)
                codes[a:a + rows] = band[(y - y[0])[:, None], xs[None, :]]
    return picture, codes, step


def _sampled(read: Any, shape: tuple[int, int], down: float, box: tuple[int, int, int, int], step: int) -> np.ndarray:
    """Pixels at the centres of a ``step``-px grid over ``box = (y0, y1, x0, x1)`` (level-0 px), nearest.

    Read from a level of ``shape`` that is level 0 reduced ``down`` times (only the rows and columns needed).
    """
    y0, y1, x0, x1 = box
    yc = y0 + (np.arange(-(-(y1 - y0) // step)) + 0.5) * step
    xc = x0 + (np.arange(-(-(x1 - x0) // step)) + 0.5) * step
    ys = np.minimum((np.minimum(yc, y1 - 0.5) / down).astype(np.intp), shape[0] - 1)
    xs = np.minimum((np.minimum(xc, x1 - 0.5) / down).astype(np.intp), shape[1] - 1)
    block = read(int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
    return np.ascontiguousarray(block[(ys - ys[0])[:, None], (xs - xs[0])[None, :]])


def mosaic_region(
    image: str | Path, mask: str | Path | None, box: tuple[int, int, int, int], max_side: int = 1024
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """A region of a mosaic (and of its mask) for display, at full resolution when it fits ``max_side``.

    Else it is reduced by a whole ``step``, each file read from its coarsest pyramid level that has that detail.

    Args:
        image: the mosaic.
        mask: its mask (as ``predict`` writes it), or ``None``.
        box: ``(y0, y1, x0, x1)`` in full-resolution px (clipped to the mosaic).
        max_side: longest side of the result in px.

    Returns:
        ``(image, mask, step)``: ``(h, w, 3)`` uint8, ``(h, w)`` codes or ``None``, and the reduction (1 = full
        resolution; each pixel shown is ``step`` × ``step`` mosaic pixels).

    Raises:
        BadImageError, BadMaskError: a file that cannot be read.
        ValueError: an empty box.
    """
    with Mosaic(image) as m:
        h0, w0 = m.shape
        y0, y1 = max(0, int(box[0])), min(h0, int(box[1]))
        x0, x1 = max(0, int(box[2])), min(w0, int(box[3]))
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"empty region {box} of a {w0}×{h0} px mosaic")
        step = overview_step((y1 - y0, x1 - x0), max_side)
        lv = max(i for i, level in enumerate(m.levels) if level.downsample <= step * (1 + 1e-9))
        picture = _sampled(lambda a, b, c, d: m.read(a, b, c, d, level=lv), m.levels[lv].shape,
                           m.levels[lv].downsample, (y0, y1, x0, x1), step)
    codes = None
    if mask is not None:
        with MosaicMask(mask) as mm:
            downs = [h0 / lh for lh, _ in mm.levels]
            lv = max(i for i, d in enumerate(downs) if d <= step * (1 + 1e-9))
            codes = _sampled(lambda a, b, c, d: mm.read(a, b, c, d, level=lv), mm.levels[lv], downs[lv],
                             (y0, y1, x0, x1), step)
    return picture, codes, step
