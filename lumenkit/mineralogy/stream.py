"""Mineralogy of a mask too large for memory (a whole-section mosaic), measured band by band.

:func:`stream_mineralogy` reads a mask in bands of rows (a :class:`lumenkit.data.mosaic.MosaicMask` decodes only
the tiles of each band) and returns the same figures as the whole-mask functions of
:mod:`lumenkit.mineralogy.analysis`: pixels per class (modal composition), the contact matrix, and one row per
grain with its full area and shape — a grain that crosses band borders is counted once.

How grains are merged across borders: in each band the grains are labelled and measured by the whole-mask kernel
(:func:`lumenkit.mineralogy.grains.measure_raw`). A grain that touches neither the band's first row (below the top
of the image) nor its last row (above the bottom) lies wholly in the band and is kept as measured. The others are
pieces, of which only the additive primitives are kept: pixel sums relative to the piece's first pixel, Gray's
bit-quad counts, boundary edges, box, and the vertices of the piece's hull. The pieces on the two sides of a border
that are 8-connected and of one code are joined (union–find); the 2×2 windows across the border, which each band
saw half empty, and the pixel edges across it are added to the pieces once; a set of pieces that no longer reaches
the last row read is a whole grain, whose primitives are added (sums shifted to the grain's first pixel) and
finished by the kernel's own :func:`lumenkit.mineralogy.grains.finish`. Every sum is of small integers and the hull
of the pieces' hull vertices is the grain's hull, so the table equals the whole mask's bit for bit.

Memory: one band (``band_rows`` × width codes and their int32 labels, with the kernel's temporaries about 20 bytes
per pixel of a band), the previous band's last row, and a few numbers and hull vertices per open piece — however
large the grains (a percolating network is never read again).

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
from lumenkit.mineralogy.grains import COUNTS, SUMS, finish, label_grains, measure, measure_raw

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
    """

    shape: tuple[int, int]
    codes: list[int]
    pixels: np.ndarray
    grains: pd.DataFrame
    contacts: pd.DataFrame
    bands: int = 0
    joined: int = 0

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
    """Grains ``sel`` (a boolean mask) of :func:`lumenkit.mineralogy.grains.measure_raw`'s output."""
    out = {k: np.asarray(v)[sel] for k, v in m.items() if k not in ("corners", "corner_start")}
    cs = m["corner_start"]
    idx = np.flatnonzero(sel)
    sizes = cs[idx + 1] - cs[idx]
    out["corner_start"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows = np.repeat(cs[idx], sizes) + (np.arange(int(sizes.sum())) - np.repeat(out["corner_start"][:-1], sizes))
    out["corners"] = m["corners"][rows]
    return out


@dataclass
class _Piece:
    """The primitives of one piece of a grain (a grain cut by band borders), the corrections across borders added."""

    code: int
    sums: np.ndarray  # grains.SUMS relative to (first_y, first_x)
    counts: np.ndarray  # grains.COUNTS
    first: tuple[int, int]
    box: tuple[float, float, float, float]  # ymin, ymax, xmin, xmax
    edge: bool
    hull: np.ndarray  # (k, 2) absolute (x, y) corners on the piece's hull


def _quad_index(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The bit-quad class of windows ``[[a, b], [c, d]]`` of grain pixels: 0 q1, 1 q2, 2 q3, 3 qd, -1 none."""
    n = a.astype(np.int8) + b + c + d
    out = np.full(len(n), -1, dtype=np.int8)
    out[n == 1] = 0
    out[n == 3] = 2
    two = n == 2
    diag = (a & d) | (b & c)
    out[two & diag] = 3
    out[two & ~diag] = 1
    return out


class _Stream:
    """One pass over the bands; pieces of grains crossing borders joined by union–find (see the module)."""

    def __init__(self, src: MaskRows, codes: list[int], band_rows: int) -> None:
        self.src, self.codes, self.band_rows = src, codes, band_rows
        self.height, self.width = src.shape
        self.gcodes = grain_codes(codes)
        self.parent: list[int] = []
        self.pieces: list[_Piece | None] = []  # freed once their grain is measured
        self.done: list[dict[str, np.ndarray]] = []
        self.joined = 0

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
        prev_row: np.ndarray | None = None  # the previous band's last row of codes, and its pieces
        prev_gid = np.zeros(0, np.int64)
        pending: list[int] = []
        for y0 in starts:
            y1 = min(h, y0 + rows)
            band = _band(self.src, y0, y1, w)
            counts += np.bincount(band.ravel(), minlength=256)
            pairs += pair_counts(band[:, :-1], band[:, 1:], lut) + pair_counts(band[:-1], band[1:], lut)
            if prev_row is not None:
                pairs += pair_counts(prev_row, band[0], lut)
            labelled = label_grains(band, self.gcodes)
            padded = labelled[0]
            m = measure_raw(band, self.gcodes, labelled, origin=(y0, 0), image_edges=(y0 == 0, y1 == h))
            n = len(m["code"])
            is_open = np.zeros(n + 1, dtype=bool)
            if y0 > 0:
                is_open[padded[1, 1:-1]] = True
            if y1 < h:
                is_open[padded[-2, 1:-1]] = True
            is_open[0] = False
            self.done.append(finish(_take(m, ~is_open[1:])))
            gid = np.full(n + 1, -1, dtype=np.int64)
            new = np.flatnonzero(is_open)
            gid[new] = len(self.parent) + np.arange(len(new))
            self._add_pieces(m, new - 1)
            top_gid = gid[padded[1, 1:-1]]
            if prev_row is not None:
                self._join(prev_gid, prev_row, top_gid, band[0])
                self._across(prev_gid, prev_row, top_gid, band[0])
            bottom = gid[padded[-2, 1:-1]] if y1 < h else np.zeros(0, np.int64)
            still_open = {self.find(int(p)) for p in np.unique(bottom[bottom >= 0])}
            groups: dict[int, list[int]] = {}
            candidates, pending = pending + [int(g) for g in gid[new]], []
            for p in candidates:
                r = self.find(p)
                if r in still_open:
                    pending.append(p)
                else:
                    groups.setdefault(r, []).append(p)
            for pieces in groups.values():
                self.joined += len(pieces) > 1
                self.done.append(self._combine(pieces))
            prev_row, prev_gid = band[-1].copy(), gid[padded[-2, 1:-1]]
        merged = {k: np.concatenate([d[k] for d in self.done]) for k in self.done[0]} if self.done else None
        if merged is None or not len(merged["code"]):
            merged = measure(np.zeros((1, 1), np.uint8), [])
        rank = np.zeros(256, dtype=np.int64)
        rank[self.gcodes] = np.arange(len(self.gcodes))
        order = np.lexsort((merged["first_x"], merged["first_y"], rank[merged["code"].astype(np.int64)]))
        merged = {k: v[order] for k, v in merged.items()}
        return StreamedMineralogy(
            shape=(h, w), codes=self.codes, pixels=counts, grains=grain_frame(merged, pixel_size_um),
            contacts=contact_frame(pairs, self.codes), bands=-(-h // rows), joined=self.joined,
        )

    def _add_pieces(self, m: Mapping[str, np.ndarray], idx: np.ndarray) -> None:
        """Keep the primitives of grains ``idx`` of a band (pieces), their hull points reduced to the hull."""
        from scipy.spatial import ConvexHull

        cs = m["corner_start"]
        for j in idx:
            pts = m["corners"][cs[j]: cs[j + 1]]
            if len(pts) > 8:  # more than two rows: keep the hull's vertices (a piece is never degenerate)
                pts = pts[ConvexHull(pts).vertices]
            self.parent.append(len(self.parent))
            self.pieces.append(_Piece(
                code=int(m["code"][j]), sums=np.array([m[k][j] for k in SUMS], dtype=np.float64),
                counts=np.array([m[k][j] for k in COUNTS], dtype=np.float64),
                first=(int(m["first_y"][j]), int(m["first_x"][j])),
                box=(float(m["ymin"][j]), float(m["ymax"][j]), float(m["xmin"][j]), float(m["xmax"][j])),
                edge=bool(m["touches_edge"][j]), hull=np.array(pts, dtype=np.float64),
            ))

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

    def _across(self, a: np.ndarray, code_a: np.ndarray, b: np.ndarray, code_b: np.ndarray) -> None:
        """Add to the pieces what the border between rows ``a`` (above) and ``b`` (below) holds.

        Each band's kernel saw the rows beyond its border as empty: a 2×2 window across the border was counted as
        its upper half in the band above and as its lower half in the band below. The grain's pattern in the whole
        window replaces the two halves (within a 2×2 window, pixels of one code are 8-connected: one grain). Pixel
        edges across the border were seen by neither band and are added once.
        """
        w = len(a)
        fix: dict[int, np.ndarray] = {}

        def add(gids: np.ndarray, column: int, values: np.ndarray) -> None:
            for g, v in zip(gids.tolist(), values.tolist(), strict=True):
                if g not in fix:
                    fix[g] = np.zeros(len(COUNTS))
                fix[g][column] += v

        # windows [[a[x-1], a[x]], [b[x-1], b[x]]] for x = 0..w, beyond the sides empty
        ca = np.concatenate([[-1], np.where(a >= 0, code_a.astype(np.int16), -1), [-1]])
        cb = np.concatenate([[-1], np.where(b >= 0, code_b.astype(np.int16), -1), [-1]])
        ga = np.concatenate([[-1], a, [-1]])
        gb = np.concatenate([[-1], b, [-1]])
        win = [(ca[:-1], ga[:-1]), (ca[1:], ga[1:]), (cb[:-1], gb[:-1]), (cb[1:], gb[1:])]
        none = np.zeros(w + 1, dtype=bool)
        for k, (code, g) in enumerate(win):  # each grain in a window once, by its first pixel there
            first_here = code >= 0
            for earlier, _ in win[:k]:
                first_here &= earlier != code
            bits = [c == code for c, _ in win]
            whole = _quad_index(*bits)
            upper = _quad_index(bits[0], bits[1], none, none)
            lower = _quad_index(none, none, bits[2], bits[3])
            sel = first_here & (bits[0] | bits[1]) & (bits[2] | bits[3])  # in both rows: the halves were counted
            for quad, sign in ((whole, 1.0), (upper, -1.0), (lower, -1.0)):
                s = sel & (quad >= 0)
                for col in range(4):
                    t = s & (quad == col)
                    if t.any():
                        add(g[t], col, np.full(int(t.sum()), sign))
        # pixel edges across the border (the kernel counts edges against any code but 255)
        differ = code_a != code_b
        for own, other in ((a, code_b), (b, code_a)):
            sel = differ & (own >= 0) & (other != IGNORE)
            if sel.any():
                add(own[sel], 4, np.ones(int(sel.sum())))
                free = sel & (other == 0)
                if free.any():
                    add(own[free], 5, np.ones(int(free.sum())))
        for g, v in fix.items():
            piece = self.pieces[g]
            assert piece is not None
            piece.counts += v

    def _combine(self, ids: list[int]) -> dict[str, np.ndarray]:
        """:func:`finish`'s row of the grain made of pieces ``ids`` (their primitives added; see the module)."""
        pieces = [self.pieces[i] for i in ids]
        for i in ids:
            self.pieces[i] = None
        fy, fx = min(p.first for p in pieces)
        total = np.zeros(len(SUMS))
        for p in pieces:
            n, sy, sx, syy, sxx, sxy = p.sums
            dy, dx = p.first[0] - fy, p.first[1] - fx  # shift to the grain's first pixel: exact integers
            total += (n, sy + n * dy, sx + n * dx, syy + 2 * dy * sy + n * dy * dy, sxx + 2 * dx * sx + n * dx * dx,
                      sxy + dx * sy + dy * sx + n * dy * dx)
        raw: dict[str, np.ndarray] = {k: np.array([v]) for k, v in zip(SUMS, total, strict=True)}
        for k, v in zip(COUNTS, np.sum([p.counts for p in pieces], axis=0), strict=True):
            raw[k] = np.array([v])
        boxes = np.array([p.box for p in pieces])
        raw.update(code=np.array([pieces[0].code], dtype=np.int64), first_y=np.array([float(fy)]),
                   first_x=np.array([float(fx)]), ymin=boxes[:, :1].min(0), ymax=boxes[:, 1:2].max(0),
                   xmin=boxes[:, 2:3].min(0), xmax=boxes[:, 3:].max(0),
                   touches_edge=np.array([any(p.edge for p in pieces)]))
        raw["corners"] = np.concatenate([p.hull for p in pieces])
        raw["corner_start"] = np.array([0, len(raw["corners"])], dtype=np.int64)
        return finish(raw)
