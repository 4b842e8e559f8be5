"""Area (box) downsampling that gives the same pixels whether an image is resampled whole or band by band.

A whole-section mosaic is too large to resample in one piece, yet its streamed prediction must equal the prediction
of the same image held in memory. Pillow's box filter derives each band's weights from the band's own (floating)
origin, so a band can differ from the whole image by whole grey levels where a footprint edge falls between pixels
(seen for a 1000 × 803 image at ⅛: 316 values differ, by up to 10). Here every output pixel ``j`` averages the exact
footprint ``[j·n_in/n_out, (j+1)·n_in/n_out)`` with weights from integer arithmetic, summed in a fixed order
(a CSR matrix product), so a pixel's value depends only on its own footprint — the reason for writing it by hand;
scikit-image's ``downscale_local_mean`` covers integer factors only.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp

_COLUMNS = 1024
"""Source columns resampled at a time: the float32 copy of a band is one reused buffer of this width."""


@functools.lru_cache(maxsize=64)
def area_weights(n_in: int, n_out: int) -> sp.csr_matrix:
    """The ``(n_out, n_in)`` float32 CSR matrix averaging ``n_in`` samples into ``n_out ≤ n_in`` footprints.

    Raises:
        ValueError: ``n_out`` is not in ``[1, n_in]``.
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"area downsampling needs 1 ≤ n_out ≤ n_in, got {n_out} from {n_in}")
    j = np.arange(n_out, dtype=np.int64)
    lo, hi = j * n_in, (j + 1) * n_in  # footprint in units of 1/n_out of a source sample
    first, last = lo // n_out, -(-hi // n_out)
    k = int((last - first).max())
    i = first[:, None] + np.arange(k)[None, :]
    overlap = np.minimum((i + 1) * n_out, hi[:, None]) - np.maximum(i * n_out, lo[:, None])
    keep = (i < last[:, None]) & (overlap > 0)
    rows = np.broadcast_to(j[:, None], i.shape)[keep]
    weights = (overlap[keep] / n_in).astype(np.float32)
    return sp.csr_matrix((weights, (rows, i[keep])), shape=(n_out, n_in))


def source_rows(n_in: int, n_out: int, a: int, b: int) -> tuple[int, int]:
    """The source rows ``[start, stop)`` that output rows ``[a, b)`` of an area downsampling read."""
    w = area_weights(n_in, n_out)
    cols = w.indices[w.indptr[a] : w.indptr[b]]
    return int(cols.min()), int(cols.max()) + 1


def area_rows(
    rows: np.ndarray, start: int, n_in: int, size: tuple[int, int], a: int, b: int
) -> np.ndarray:
    """Output rows ``[a, b)`` of the area downsampling of an image of ``n_in`` rows to ``size = (width, height)``.

    Args:
        rows: ``(R, W, C)`` or ``(R, W)`` source rows ``start, start + R`` of the image (at least
            :func:`source_rows` of ``[a, b)``), any real dtype.
        start: index of ``rows[0]`` in the image.
        n_in: the image's height.
        size: output ``(width, height)``, each at most the source's.
        a: first output row wanted.
        b: end (exclusive) of the output rows wanted.

    Returns:
        ``(b - a, width, C)`` (or ``(b - a, width)``) float32, unrounded: identical values for any banding.

    Raises:
        ValueError: ``rows`` does not hold the source rows needed.
    """
    out_w, out_h = size
    lo, hi = source_rows(n_in, out_h, a, b)
    if lo < start or hi > start + rows.shape[0]:
        raise ValueError(f"output rows {a}..{b} need source rows {lo}..{hi}, given {start}..{start + rows.shape[0]}")
    wy = area_weights(n_in, out_h)[a:b, lo:hi]
    wx = area_weights(rows.shape[1], out_w)
    band = rows[lo - start : hi - start]
    tail = band.shape[2:]
    flat = band.reshape(band.shape[0], -1)
    vert = np.empty((b - a, flat.shape[1]), dtype=np.float32)
    step = _COLUMNS * (int(np.prod(tail)) if tail else 1)
    buffer = np.empty((flat.shape[0], min(step, flat.shape[1])), dtype=np.float32)
    for c in range(0, flat.shape[1], step):
        n = min(step, flat.shape[1] - c)
        np.copyto(buffer[:, :n], flat[:, c : c + n], casting="unsafe")  # reused: no page faults per chunk
        vert[:, c : c + n] = wy @ buffer[:, :n]
    vert = vert.reshape(b - a, band.shape[1], -1)  # (rows, W, C)
    out = np.empty((b - a, out_w, vert.shape[2]), dtype=np.float32)
    for r in range(b - a):
        out[r] = wx @ vert[r]
    return out.reshape((b - a, out_w, *tail))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round float samples half up into uint8 (clipped to 0–255)."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average a uint8 image (``(H, W)`` or ``(H, W, C)``) down to ``size = (width, height)``.

    The same pixels as :func:`area_rows` over any banding of the output rows, rounded half up.

    Raises:
        ValueError: ``size`` is larger than the image along an axis.
    """
    h = image.shape[0]
    return to_uint8(area_rows(image, 0, h, size, 0, int(size[1])))
