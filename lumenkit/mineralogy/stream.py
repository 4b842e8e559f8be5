"""Mineralogy of a mask too large for memory (a whole-section mosaic), measured band by band.

:func:`stream_mineralogy` reads a mask in bands of rows (a :class:`lumenkit.data.mosaic.MosaicMask` decodes only
the tiles of each band) and returns the same figures as the whole-mask functions of
:mod:`lumenkit.mineralogy.analysis`: pixels per class (modal composition), the contact matrix, and one row per
grain with its full area and shape — a grain that crosses band borders is counted once.

How grains are merged across borders: in each band the grains are labelled and measured by the whole-mask kernel
(:func:`lumenkit.mineralogy.grains.measure`). A grain that touches neither the band's first row (below the top of
the image) nor its last row (above the bottom) lies wholly in the band and is kept as measured. The others are
pieces: the pieces on the two sides of a border that are 8-connected and of one code are joined (union–find), and a
set of pieces that no longer reaches the last row read is a whole grain. It is measured again by the same kernel on
the region of its bounding box grown by one pixel (so its boundary against its neighbours is seen): from the two
bands in memory when it fits there, else read again from the file at the end (grains taller than a band). Every
figure is therefore the whole-mask kernel's on the grain's own pixels, and the kernel works in coordinates
relative to each grain's first pixel: the table equals the whole mask's bit for bit.

Memory: two bands (``band_rows`` × width codes and their int32 labels, with the kernel's temporaries about
20 bytes per pixel of a band) plus the bounding box of the largest grain that spans more than two bands.

Why by hand: dask-image's ``ndmeasure.label`` joins labels across chunks, but no library measures perimeter,
holes, Feret diameters, hull or boundaries of components out of core, and a label image of a mosaic (4 bytes per
pixel) would not fit in memory either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import IGNORE
from lumenkit.mineralogy.analysis import (
    contact_frame,
    contact_lut,
    grain_codes,
    grain_frame,
    modal_from_pixels,
    pair_counts,
)
from lumenkit.mineralogy.grains import label_grains, measure

BAND_ROWS = 512
"""Rows of the mask read and measured at a time."""


class MaskRows(Protocol):
    """What :func:`stream_mineralogy` reads: a ``(height, width)`` shape and regions of uint8 codes."""

    shape: tuple[int, int]

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` (``None``: to the right edge) as ``(h, w)`` uint8 codes."""
        ...


class _InMemory:
    """An array served as :class:`MaskRows` (tests, and masks already in memory)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = np.asarray(mask, dtype=np.uint8)
        self.shape = (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        return self.mask[y0:y1, x0:x1]


@dataclass
class StreamedMineralogy:
    """What :func:`stream_mineralogy` measured.

    Attributes:
        shape: ``(height, width)`` of the mask in px.
        codes: the class set of the tables.
        pixels: ``(256,)`` pixels per code (255 = unlabelled included, excluded from the tables).
        grains: one row per grain, as :func:`lumenkit.mineralogy.analysis.grains` of the whole mask (same order:
            by code, then by the grain's first pixel in raster order).
        contacts: shared boundary between classes in pixel edges, as
            :func:`lumenkit.mineralogy.analysis.contact_matrix`.
        bands: bands read.
        joined: grains made of pieces from more than one band.
        reread: grains measured from their region read again (taller than the two bands in memory).
    """

    shape: tuple[int, int]
    codes: list[int]
    pixels: np.ndarray
    grains: pd.DataFrame
    contacts: pd.DataFrame
    bands: int = 0
    joined: int = 0
    reread: int = 0

    def modal(self) -> pd.DataFrame:
        """The modal composition (:func:`lumenkit.mineralogy.analysis.modal_composition` of the whole mask)."""
        return modal_from_pixels(self.pixels, self.codes)


def stream_mineralogy(
    mask: Any,
    codes: Sequence[int] | None = None,
    pixel_size_um: float | None = None,
    band_rows: int = BAND_ROWS,
    progress: bool = False,
) -> StreamedMineralogy:
    """Modal composition, grains and contacts of a mask read band by band (see the module).

    Args:
        mask: a :class:`lumenkit.data.mosaic.MosaicMask`, the path of a mask TIFF (opened and closed here), an
            ``(H, W)`` array, or anything with ``shape`` and ``read(y0, y1, x0, x1)`` (:class:`MaskRows`).
        codes: the class set (default: every code present but 255, which costs one more pass over the mask).
        pixel_size_um: µm per pixel: adds the ``*_um`` columns to the grain table.
        band_rows: rows read at a time (at least 2).
        progress: a progress bar over bands.

    Raises:
        ValueError: ``band_rows`` below 2.
        BadMaskError: the mask file cannot be read, or a band comes back with another shape.
    """
    from lumenkit.data.mosaic import MosaicMask

    if isinstance(mask, (str, Path)):
        with MosaicMask(mask) as m:
            return stream_mineralogy(m, codes, pixel_size_um, band_rows, progress)
    src: MaskRows = _InMemory(mask) if isinstance(mask, np.ndarray) else mask
    if band_rows < 2:
        raise ValueError(f"band_rows must be at least 2, got {band_rows}")
    if codes is None:
        codes = [int(c) for c in np.flatnonzero(pixel_counts(src, band_rows)) if c != IGNORE]
    return _Stream(src, list(codes), band_rows).run(pixel_size_um, progress)


def pixel_counts(mask: Any, band_rows: int = BAND_ROWS) -> np.ndarray:
    """``(256,)`` pixels per code of a mask (an array, a :class:`MaskRows` or a mask TIFF's path), band by band.

    Raises:
        BadMaskError: the mask file cannot be read.
    """
    from lumenkit.data.mosaic import MosaicMask

    if isinstance(mask, (str, Path)):
        with MosaicMask(mask) as m:
            return pixel_counts(m, band_rows)
    if isinstance(mask, np.ndarray):
        return np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256)
    height, width = mask.shape
    counts = np.zeros(256, dtype=np.int64)
    for y0 in range(0, height, band_rows):
        counts += np.bincount(_band(mask, y0, min(height, y0 + band_rows), width).ravel(), minlength=256)
    return counts


def _band(src: MaskRows, y0: int, y1: int, width: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
    from lumenkit.errors import BadMaskError

    x1 = width if x1 is None else x1
    band = np.ascontiguousarray(src.read(y0, y1, x0, x1), dtype=np.uint8)
    if band.shape != (y1 - y0, x1 - x0):
        raise BadMaskError(f"{getattr(src, 'path', 'mask')}: rows {y0}–{y1} read as {band.shape}, expected "
                           f"{(y1 - y0, x1 - x0)}; the mask file is damaged: predict it again")
    return band


def _take(m: Mapping[str, np.ndarray], sel: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[sel] for k, v in m.items()}


class _Stream:
    """One pass over the bands; pieces of grains crossing borders joined by union–find (see the module)."""

    def __init__(self, src: MaskRows, codes: list[int], band_rows: int) -> None:
        self.src, self.codes, self.band_rows = src, codes, band_rows
        self.height, self.width = src.shape
        self.gcodes = grain_codes(codes)
        self.parent: list[int] = []
        self.code: list[int] = []
        self.box: list[tuple[int, int, int, int]] = []  # ymin, ymax, xmin, xmax (exclusive corners)
        self.first: list[tuple[int, int]] = []
        self.done: list[dict[str, np.ndarray]] = []
        self.joined = self.reread = 0

    def find(self, p: int) -> int:
        root = p
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[p] != root:
            self.parent[p], p = root, self.parent[p]
        return root

    def run(self, pixel_size_um: float | None, progress: bool) -> StreamedMineralogy:
        h, w, rows = self.height, self.width, self.band_rows
        lut = contact_lut(self.codes)
        counts = np.zeros(256, dtype=np.int64)
        pairs = np.zeros((len(self.codes) + 1,) * 2, dtype=np.int64)
        starts = range(0, h, rows)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="mineralogy", unit="band")
        prev: np.ndarray | None = None
        prev_y0, prev_gid = 0, np.zeros(0, np.int64)
        pending: list[int] = []
        late: list[int] = []  # roots of grains to measure from the file at the end
        for y0 in starts:
            y1 = min(h, y0 + rows)
            band = _band(self.src, y0, y1, w)
            counts += np.bincount(band.ravel(), minlength=256)
            pairs += pair_counts(band[:, :-1], band[:, 1:], lut) + pair_counts(band[:-1], band[1:], lut)
            if prev is not None:
                pairs += pair_counts(prev[-1], band[0], lut)
            labelled = label_grains(band, self.gcodes)
            padded = labelled[0]
            m = measure(band, self.gcodes, labelled, origin=(y0, 0))
            n = len(m["code"])
            is_open = np.zeros(n + 1, dtype=bool)
            if y0 > 0:
                is_open[padded[1, 1:-1]] = True
            if y1 < h:
                is_open[padded[-2, 1:-1]] = True
            is_open[0] = False
            self.done.append(_take(m, ~is_open[1:]))
            gid = np.full(n + 1, -1, dtype=np.int64)
            new = np.flatnonzero(is_open)
            gid[new] = len(self.parent) + np.arange(len(new))
            for j in new - 1:
                self.parent.append(len(self.parent))
                self.code.append(int(m["code"][j]))
                self.box.append((int(m["ymin"][j]), int(m["ymax"][j]), int(m["xmin"][j]), int(m["xmax"][j])))
                self.first.append((int(m["first_y"][j]), int(m["first_x"][j])))
            if prev is not None:
                self._join(prev_gid, prev[-1], gid[padded[1, 1:-1]], band[0])
            bottom = gid[padded[-2, 1:-1]] if y1 < h else np.zeros(0, np.int64)
            still_open = {self.find(int(p)) for p in np.unique(bottom[bottom >= 0])}
            candidates = pending + [int(g) for g in gid[new]]
            groups: dict[int, list[int]] = {}
            pending = []
            for p in candidates:
                r = self.find(p)
                if r in still_open:
                    pending.append(p)
                else:
                    groups.setdefault(r, []).append(p)
            window = band if prev is None else np.concatenate([prev, band])
            win_y0 = y0 if prev is None else prev_y0
            for pieces in groups.values():
                self.joined += len(pieces) > 1
                ry0, ry1, rx0, rx1 = self._region(pieces)
                if ry0 >= win_y0 and ry1 <= y1:
                    self._measure(window[ry0 - win_y0: ry1 - win_y0, rx0:rx1], pieces, ry0, rx0)
                else:
                    late.append(pieces)
            prev, prev_y0, prev_gid = band, y0, gid[padded[-2, 1:-1]]
        for pieces in late:
            ry0, ry1, rx0, rx1 = self._region(pieces)
            self._measure(_band(self.src, ry0, ry1, w, rx0, rx1), pieces, ry0, rx0)
            self.reread += 1
        merged = {k: np.concatenate([d[k] for d in self.done]) for k in self.done[0]} if self.done else None
        if merged is None or not len(merged["code"]):
            merged = measure(np.zeros((1, 1), np.uint8), [])
        rank = np.zeros(256, dtype=np.int64)
        rank[self.gcodes] = np.arange(len(self.gcodes))
        order = np.lexsort((merged["first_x"], merged["first_y"], rank[merged["code"].astype(np.int64)]))
        merged = {k: v[order] for k, v in merged.items()}
        return StreamedMineralogy(
            shape=(h, w), codes=self.codes, pixels=counts, grains=grain_frame(merged, pixel_size_um),
            contacts=contact_frame(pairs, self.codes), bands=-(-h // rows), joined=self.joined, reread=self.reread,
        )

    def _join(self, a: np.ndarray, code_a: np.ndarray, b: np.ndarray, code_b: np.ndarray) -> None:
        """Join the pieces ``a`` (previous band's last row) and ``b`` (this band's first row) that 8-touch."""
        w = len(a)
        found = []
        for dx in (-1, 0, 1):  # a[x] against b[x + dx]
            sa, sb = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
            pa, pb = a[sa], b[sb]
            sel = (pa >= 0) & (pb >= 0) & (code_a[sa] == code_b[sb])
            found.append(np.stack([pa[sel], pb[sel]], 1))
        for p, q in np.unique(np.concatenate(found), axis=0):
            rp, rq = self.find(int(p)), self.find(int(q))
            if rp != rq:
                self.parent[max(rp, rq)] = min(rp, rq)

    def _region(self, pieces: list[int]) -> tuple[int, int, int, int]:
        """Rows and columns of the pieces' bounding box grown by one pixel (within the mask)."""
        boxes = np.array([self.box[p] for p in pieces])
        return (max(0, int(boxes[:, 0].min()) - 1), min(self.height, int(boxes[:, 1].max()) + 1),
                max(0, int(boxes[:, 2].min()) - 1), min(self.width, int(boxes[:, 3].max()) + 1))

    def _measure(self, region: np.ndarray, pieces: list[int], oy: int, ox: int) -> None:
        """Measure the grain made of ``pieces`` on ``region`` (its box grown by one pixel, origin ``(oy, ox)``)."""
        code = self.code[pieces[0]]
        fy, fx = min(self.first[p] for p in pieces)
        labelled = label_grains(region, [code])
        label = int(labelled[0][fy - oy + 1, fx - ox + 1])
        m = measure(region, [code], labelled, origin=(oy, ox))
        self.done.append(_take(m, np.arange(len(m["code"])) == label - 1))
