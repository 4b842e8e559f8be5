"""Vectorised per-grain measurements of a whole mask: one labelling, horizontal runs and 2×2 bit-quads.

:func:`lumenkit.mineralogy.analysis.grains` is the public entry point; this module holds its kernel.

Why not ``skimage.measure.regionprops``: it loops in Python over regions and recomputes each property on the
region's crop. On a native 3396×2547 synthetic section (1 643 grains, 2 shared cores) we measured
``regionprops_table`` at 0.6 s for ``perimeter``, 0.6 s for ``euler_number``, 1.6 s for ``orientation``, 1.8 s for
``solidity`` and 6.4 s for ``feret_diameter_max``, and ``skimage.measure.label`` of the multi-valued mask at 1.2 s —
each alone over the 1 s budget of a whole analysis. The same quantities come out of a few whole-image array
operations instead:

* grains are 8-connected components of each code (``scipy.ndimage.label``, one call per code, ~30 ms each);
* area, centroid and second moments from the horizontal runs of equal code (closed-form sums over each run);
* perimeter and Euler number (hence holes) from Gray's 2×2 bit-quad counts per grain, computed only on the
  windows where the mask changes; the perimeter is the marching-squares outline length scaled by
  :data:`ISOTROPIC` to be unbiased for randomly oriented grains (``skimage``'s ``perimeter`` runs through the
  boundary pixel centres and reads π(d − 1) for a disc of diameter d);
* the convex hull of a grain is the hull of the outer corners of its leftmost and rightmost pixel in every row;
  scikit-image has no minimum Feret (caliper) diameter, so Feret max/min come from that hull (rotating calipers
  over its edges, exact); grains that fill their bounding box (single pixels, straight laths, specks of
  predicted masks) skip the hull.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)
_HALF_SQRT2 = np.sqrt(2.0) / 2
ISOTROPIC = np.pi / (8 * (np.sqrt(2.0) - 1))
"""Scale (≈ 0.948) making the marching-squares outline length unbiased over edge directions: a digital straight edge
at angle θ ∈ [0°, 45°] reads cos θ + (√2 − 1) sin θ per unit length (exact at 0° and 45°, +8 % at 26.6°), whose
mean over directions is 8(√2 − 1)/π. After scaling, discs come out within 1 % of π·d from d ≈ 80 px (+1.6 % at
40 px) and a straight edge within −5.2 % (axis-aligned) … +2.6 % (22.5°)."""


def label_grains(mask: np.ndarray, codes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Label the grains of ``codes`` in one padded int32 image.

    Returns:
        ``(padded, grain_code)``: ``(H+2, W+2)`` labels (0 outside grains and on the one-pixel frame; grains of
        ``codes[0]`` first, each code's grains in raster order of their first pixel) and the code of each grain
        (``grain_code[i]`` for label ``i + 1``).
    """
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.int32)
    inner = padded[1:-1, 1:-1]
    offsets = np.zeros(256, dtype=np.int32)
    grain_code = []
    off = 0
    for code in codes:
        lab, n = ndi.label(mask == code, structure=_EIGHT, output=np.int32)
        if n == 0:
            continue
        inner += lab
        offsets[code] = off
        grain_code.append(np.full(n, code, dtype=np.int64))
        off += n
    if off:
        inner += offsets[mask] * (inner > 0)
    return padded, (np.concatenate(grain_code) if grain_code else np.zeros(0, np.int64))


def measure(
    mask: np.ndarray,
    codes: Sequence[int],
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
    origin: tuple[int, int] = (0, 0),
) -> dict[str, np.ndarray]:
    """Per-grain measurements in px of every 8-connected grain of ``codes`` in a ``(H, W)`` uint8 mask.

    Args:
        mask: ``(H, W)`` LumenStone codes.
        codes: the classes whose grains are measured.
        labelled: the output of :func:`label_grains` for ``mask`` and ``codes``, when the caller has it already.
        origin: ``(row, column)`` of the mask's first pixel in a larger image (a band or region of a mosaic):
            added to every coordinate, so a grain measured on any region containing it (and its neighbours) reads
            bit for bit as on the whole image.

    Returns:
        Arrays indexed by grain (label − 1): ``code``, ``area``, ``cy``, ``cx`` (centroid, pixel-centre
        coordinates), ``vyy``, ``vxx``, ``vxy`` (second central moments of the pixel squares), ``perimeter``,
        ``holes``, ``hull_area``, ``feret_max``, ``feret_min``, ``touches_edge``, ``boundary`` and
        ``free_boundary`` (pixel edges against other labelled classes / against code 0; 255 and the image
        border excluded), ``ymin``, ``ymax``, ``xmin``, ``xmax`` (bounding box, pixel corners: rows
        ``ymin:ymax``) and ``first_y``, ``first_x`` (the grain's first pixel in raster order).
    """
    return finish(measure_raw(mask, codes, labelled, origin))


SUMS = ("area", "sy", "sx", "syy", "sxx", "sxy")
"""Pixel sums of :func:`measure_raw`, relative to each grain's first pixel: count, Σy, Σx, Σy², Σx², Σxy."""
COUNTS = ("q1", "q2", "q3", "qd", "boundary", "free_boundary")
"""Additive counts of :func:`measure_raw`: Gray's bit-quads (one, two adjacent, three, two diagonal pixels of the
grain in a 2×2 window) and boundary pixel edges."""


def measure_raw(
    mask: np.ndarray,
    codes: Sequence[int],
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
    origin: tuple[int, int] = (0, 0),
    image_edges: tuple[bool, bool] = (True, True),
) -> dict[str, np.ndarray]:
    """The additive primitives of every grain's measurements (:func:`finish` turns them into :func:`measure`'s).

    Pieces of one grain measured on different regions (the bands of a mosaic) combine by adding :data:`SUMS`
    (shifted to a common first pixel) and :data:`COUNTS` (with the 2×2 windows and pixel edges across the regions'
    border added once), taking the extremes of the box, and the hull of the pieces' hull points: the grain then
    reads bit for bit as measured whole (every sum is of small integers, exact in float64).

    Args:
        mask: ``(H, W)`` LumenStone codes.
        codes: the classes whose grains are measured.
        labelled: as :func:`measure`.
        origin: as :func:`measure`.
        image_edges: whether the mask's first and last rows are edges of the image (``False`` for a band's
            border inside a mosaic: a grain on it does not touch the image edge there).

    Returns:
        Arrays indexed by grain: ``code``, :data:`SUMS`, :data:`COUNTS`, ``touches_edge``, ``first_y``,
        ``first_x``, ``ymin``, ``ymax``, ``xmin``, ``xmax`` (absolute, pixel corners), and the outer corners
        ``(x, y)`` of each row's leftmost and rightmost pixel (absolute) in ``corners``, grain ``j``'s from row
        ``corner_start[j]`` to ``corner_start[j + 1]``.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    h, w = mask.shape
    padded, grain_code = labelled if labelled is not None else label_grains(mask, codes)
    n = len(grain_code)
    out: dict[str, np.ndarray] = {"code": grain_code}
    labels = padded[1:-1, 1:-1]
    if n == 0:
        for k in (*SUMS, *COUNTS, "ymin", "ymax", "xmin", "xmax", "first_y", "first_x"):
            out[k] = np.zeros(0)
        out["touches_edge"] = np.zeros(0, bool)
        out["corners"], out["corner_start"] = np.zeros((0, 2)), np.zeros(1, np.int64)
        return out
    flat_lab = labels.ravel()  # a copy (labels is a strided view); fine for gathers

    # --- horizontal runs of equal code: each lies in one grain -------------------------------------------------
    hdiff = mask[:, 1:] != mask[:, :-1]
    starts_map = np.empty((h, w), dtype=bool)
    starts_map[:, 0] = True
    starts_map[:, 1:] = hdiff
    starts = np.flatnonzero(starts_map)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = h * w - 1
    g = flat_lab[starts]
    keep = g > 0
    starts, ends, g = starts[keep], ends[keep], g[keep]
    order = np.argsort(g, kind="stable")  # grains contiguous, rows then x ascending within a grain
    g, starts, ends = g[order], starts[order], ends[order]
    gi = g - 1
    # coordinates relative to each grain's first pixel: the sums stay small exact integers, so the moments carry
    # no cancellation error (a disc reads isotropic wherever it lies) and every figure is independent of where the
    # grain sits in the image (``origin`` moves the mask in the image: a region reads as the whole)
    head = np.searchsorted(gi, np.arange(n))  # first run of each grain: its first pixel in raster order
    ref_y = (starts[head] // w).astype(np.float64)
    ref_x = (starts[head] % w).astype(np.float64)
    row = (starts // w).astype(np.float64) - ref_y[gi]
    x0 = (starts % w).astype(np.float64) - ref_x[gi]
    x1 = (ends % w).astype(np.float64) - ref_x[gi]
    ln = x1 - x0 + 1
    sx = ln * (x0 + x1) / 2
    sxx = (x1 * (x1 + 1) * (2 * x1 + 1) - (x0 - 1) * x0 * (2 * x0 - 1)) / 6
    out["area"] = np.bincount(gi, ln, n)
    out["sy"], out["sx"] = np.bincount(gi, ln * row, n), np.bincount(gi, sx, n)
    out["syy"], out["sxx"] = np.bincount(gi, ln * row * row, n), np.bincount(gi, sxx, n)
    out["sxy"] = np.bincount(gi, row * sx, n)
    ref_y, ref_x = ref_y + float(origin[0]), ref_x + float(origin[1])  # exact: integers
    out["first_y"], out["first_x"] = ref_y, ref_x

    # --- per grain and row: leftmost and rightmost pixel -> bounding box and hull points -------------------------
    new_row = np.empty(len(g), dtype=bool)
    new_row[0] = True
    new_row[1:] = (g[1:] != g[:-1]) | (row[1:] != row[:-1])
    first = np.flatnonzero(new_row)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = len(g) - 1
    rg = gi[first]
    ry, left, right = row[first] + ref_y[rg], x0[first] + ref_x[rg], x1[last] + 1 + ref_x[rg]  # right: corner
    gstart = np.searchsorted(rg, np.arange(n + 1))
    out["ymin"], out["ymax"] = ry[gstart[:-1]], ry[gstart[1:] - 1] + 1
    out["xmin"], out["xmax"] = np.minimum.reduceat(left, gstart[:-1]), np.maximum.reduceat(right, gstart[:-1])
    out["corners"] = np.stack(
        [np.stack([left, ry], 1), np.stack([left, ry + 1], 1), np.stack([right, ry], 1), np.stack([right, ry + 1], 1)],
        axis=1,
    ).reshape(-1, 2)
    out["corner_start"] = 4 * gstart

    out["q1"], out["q2"], out["q3"], out["qd"] = _bit_quads(mask, labels, padded, n)
    out["touches_edge"], out["boundary"], out["free_boundary"] = _edges(mask, labels, flat_lab, hdiff, n, image_edges)
    return out


def finish(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`measure`'s measurements from :func:`measure_raw`'s primitives (of whole grains)."""
    area = raw["area"]
    out: dict[str, np.ndarray] = {"code": raw["code"], "area": area}
    with np.errstate(invalid="ignore", divide="ignore"):  # no grains: empty arrays
        cy, cx = raw["sy"] / area, raw["sx"] / area
        # central moments; + 1/12 for the spread of a unit pixel square
        out["vyy"] = raw["syy"] / area - cy**2 + 1 / 12
        out["vxx"] = raw["sxx"] / area - cx**2 + 1 / 12
        out["vxy"] = raw["sxy"] / area - cx * cy
    ref_y, ref_x = raw["first_y"], raw["first_x"]
    out["cy"], out["cx"] = cy + ref_y, cx + ref_x
    bw, bh = raw["xmax"] - raw["xmin"], raw["ymax"] - raw["ymin"]
    hull_area = bw * bh
    feret_max = np.hypot(bw, bh)
    feret_min = np.minimum(bw, bh)
    corners, cs = raw["corners"], raw["corner_start"]
    for j in np.flatnonzero(area < hull_area):  # grains that fill their box (specks, laths) skip the hull
        pts = corners[cs[j]: cs[j + 1]] - np.array([ref_x[j], ref_y[j]])  # exact: integers, small
        hull_area[j], feret_max[j], feret_min[j] = _hull_feret(pts)
    out["hull_area"], out["feret_max"], out["feret_min"] = hull_area, feret_max, feret_min
    q1, q2, q3, qd = raw["q1"], raw["q2"], raw["q3"], raw["qd"]
    out["perimeter"] = ISOTROPIC * (q2 + _HALF_SQRT2 * (q1 + q3 + 2 * qd))
    out["holes"] = np.rint(1 - (q1 - q3 - 2 * qd) / 4).astype(np.int64)  # Euler number, 8-connected foreground
    out["touches_edge"] = raw["touches_edge"]
    out["boundary"], out["free_boundary"] = raw["boundary"], raw["free_boundary"]
    for k in ("ymin", "ymax", "xmin", "xmax", "first_y", "first_x"):
        out[k] = raw[k]
    return out


def _edges(
    mask: np.ndarray, labels: np.ndarray, flat_lab: np.ndarray, hdiff: np.ndarray, n: int,
    image_edges: tuple[bool, bool] = (True, True),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grain: touches the image border; pixel edges against other labelled classes, and against code 0.

    ``image_edges``: whether the first and the last row are the image's top and bottom edge.
    """
    w = mask.shape[1]
    flat_mask = mask.ravel()
    edge = np.zeros(n + 1, dtype=bool)
    edge[labels[:, 0]] = edge[labels[:, -1]] = True
    if image_edges[0]:
        edge[labels[0]] = True
    if image_edges[1]:
        edge[labels[-1]] = True
    edge[0] = False
    bnd = np.zeros(n + 1)
    free = np.zeros(n + 1)
    vdiff = mask[1:, :] != mask[:-1, :]
    for idx, step in ((np.flatnonzero(hdiff), 1), (np.flatnonzero(vdiff), w)):
        p = idx if step == w else (idx // (w - 1)) * w + idx % (w - 1)
        q = p + step
        for own, other in ((p, q), (q, p)):
            lo, co = flat_lab[own], flat_mask[other]
            ok = (lo > 0) & (co != 255)
            bnd += np.bincount(lo[ok], minlength=n + 1)
            free += np.bincount(lo[ok & (co == 0)], minlength=n + 1)
    return edge[1:], bnd[1:], free[1:]


def _hull_feret(points: np.ndarray) -> tuple[float, float, float]:
    """Area, maximum and minimum caliper diameter of the convex hull of ``(x, y)`` points.

    Feret max is the largest distance between two hull vertices; Feret min the smallest width over the hull's edge
    directions (a minimal-width strip always has one side flush with a hull edge — rotating calipers).
    """
    from scipy.spatial import ConvexHull

    v = points[ConvexHull(points).vertices]  # counter-clockwise
    diff = v[:, None, :] - v[None, :, :]
    fmax = float(np.sqrt((diff**2).sum(-1).max()))
    e = np.roll(v, -1, axis=0) - v
    rel = v[None, :, :] - v[:, None, :]  # rel[i, j] = v_j - v_i
    dist = np.abs(e[:, None, 0] * rel[:, :, 1] - e[:, None, 1] * rel[:, :, 0]) / np.hypot(e[:, 0], e[:, 1])[:, None]
    fmin = float(dist.max(1).min())
    # shoelace over integer corners: exact, whatever vertex the hull starts at (a grain's pieces give the same)
    area = 0.5 * abs(float(np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])))
    return area, fmax, fmin


def _bit_quads(
    mask: np.ndarray, labels: np.ndarray, padded: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gray's (1971) 2×2 bit-quad counts of every grain: the perimeter and the Euler number (hence holes) follow.

    Only the windows where the mask changes are visited. Returns ``(q1, q2, q3, qd)`` per grain: windows holding
    one, two side by side, three, and two diagonal pixels of the grain (:func:`finish` turns them into figures).
    """
    h, w = mask.shape
    pm = np.zeros((h + 2, w + 2), dtype=np.uint8)
    pm[1:-1, 1:-1] = mask
    pm[1:-1, 1:-1][labels == 0] = 0  # non-grain pixels look like the frame
    hc = pm[:, 1:] != pm[:, :-1]
    vc = pm[1:, :] != pm[:-1, :]
    win = np.flatnonzero(hc[:-1] | hc[1:] | vc[:, :-1] | vc[:, 1:])
    stride = w + 2
    ia = (win // (w + 1)) * stride + win % (w + 1)
    pf = padded.ravel()
    a, b, c, d = pf[ia], pf[ia + 1], pf[ia + stride], pf[ia + stride + 1]
    q1 = np.zeros(n + 1)
    q3 = np.zeros(n + 1)
    q2 = np.zeros(n + 1)
    qd = np.zeros(n + 1)
    eq_ab, eq_ac, eq_ad, eq_bc, eq_bd, eq_cd = a == b, a == c, a == d, b == c, b == d, c == d
    for lab, cnt, diag, first_here in (
        (a, 1 + eq_ab + eq_ac + eq_ad, eq_ad & ~eq_ab & ~eq_ac, None),
        (b, 1 + eq_bc + eq_bd, eq_bc & ~eq_bd, ~eq_ab),
        (c, 1 + eq_cd, None, ~eq_ac & ~eq_bc),
        (d, np.ones(len(d), np.int64), None, ~eq_ad & ~eq_bd & ~eq_cd),
    ):
        sel = lab > 0 if first_here is None else (lab > 0) & first_here
        lab_s, cnt_s = lab[sel], cnt[sel]
        q1 += np.bincount(lab_s[cnt_s == 1], minlength=n + 1)
        q3 += np.bincount(lab_s[cnt_s == 3], minlength=n + 1)
        two = cnt_s == 2
        if diag is not None:
            dg = diag[sel]
            qd += np.bincount(lab_s[two & dg], minlength=n + 1)
            two &= ~dg
        q2 += np.bincount(lab_s[two], minlength=n + 1)
    return q1[1:], q2[1:], q3[1:], qd[1:]

