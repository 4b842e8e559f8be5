"""Patch samplers: the class-balancing sampler of Kochkarev et al. (2020), a uniform baseline, and a patch dataset.

How the balanced sampler works (DESIGN.md §5):

* For every image and class, a probability map over patch top-left positions: the fraction of the class inside
  the ``patch_size`` window at each position (a box filter of the class indicator, computed from ``grid × grid``
  block counts), raised to the power ``alpha``, zero wherever the window would leave the image.  Each map is
  stored as its non-zero positions and their cumulative sums, so a draw is one ``searchsorted``.
* An accumulator counts the pixels of each class already served (``bincount`` of each served mask patch).
* Each draw: with probability ``1 − strength`` a uniform random patch; otherwise a class with probability
  ∝ 1 / served² (never-served classes first), an image with weight ∝ (its pixels of that class)^``kappa``,
  a position from that image's map, jittered uniformly inside its ``grid`` cell.

Multi-process loading (:class:`PatchDataset` under a ``DataLoader`` with workers): each worker draws its own
stream seeded from ``(seed, epoch, worker id)``, and the length is split across workers.  The accumulator is a
table in shared memory (``torch`` tensor, ``share_memory_()``) with one row per stream; a stream writes only its
own row, so counting needs no lock and :attr:`BasePatchSampler.served` (the sum of the rows) stays exact across
workers.  A stream balances on the totals at the start of the epoch (taken in the main process by
:meth:`PatchDataset.set_epoch`) plus what it served itself, so streams are reproducible and their union is
balanced.  Call ``set_epoch(e)`` before every epoch (with ``persistent_workers=False``, the default), or every
epoch repeats the same patches.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumenkit.data.catalogue import IGNORE, ClassMap

MAX_STREAMS: int = 64
"""Rows of the shared accumulator: row 0 is the main process, row ``w + 1`` DataLoader worker ``w``."""

# Defaults tuned on the real S1 sample (x0.5, 59 images, 256-px patches, 2000 patches, seeds 0-2): quality
# alpha 2 / kappa 0.5: 0.86; alpha 4 / kappa 1: 0.92; alpha 4 / kappa 2: 0.95; uniform: 0.71.  Larger values
# concentrate patches on fewer grains (less variety), so the defaults stop at alpha 4, kappa 1.
DEFAULT_ALPHA: float = 4.0
"""Default sharpening power of the position maps."""
DEFAULT_KAPPA: float = 1.0
"""Default exponent of the per-image class pixel count in the image choice."""
DEFAULT_GRID: int = 16
"""Default stride (px) of the position grid; must divide ``patch_size`` (else the largest divisor below is used)."""

_MAP_CACHE: dict[tuple[Any, ...], _ImageMaps] = {}
_MAP_CACHE_MAX = 4096

Position = tuple[int, int, int]


# ------------------------------------------------------------------------------------------------
# loading and cutting
# ------------------------------------------------------------------------------------------------
def _class_map_of(dataset: Any, class_map: ClassMap | None) -> ClassMap:
    class_map = class_map if class_map is not None else getattr(dataset, "class_map", None)
    if class_map is None:
        raise ValueError(
            f"{getattr(dataset, 'root', dataset)}: no class set known; pass class_map=ClassMap('S1') "
            "(or the dataset's class set) or add class_set to dataset.yaml"
        )
    return class_map


def load_arrays(dataset: Any, class_map: ClassMap | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Load every image and mask of a dataset at its working scale, masks as model indices.

    Args:
        dataset: a :class:`lumenkit.data.LumenStoneDataset` (already at the scale to train at).
        class_map: code → index mapping; default the dataset's own class map.

    Returns:
        ``(images, masks)``: lists of ``(H, W, 3)`` uint8 images and ``(H, W)`` uint8 masks of model indices
        ``0..K-1`` (255 = ignore).

    Raises:
        ValueError: if neither ``class_map`` nor the dataset's ``dataset.yaml`` gives a class set.
        UnknownClassError: if a mask holds codes outside the class set.
    """
    class_map = _class_map_of(dataset, class_map)
    images, masks = [], []
    for k in range(len(dataset)):
        s = dataset.load(k)
        images.append(s["image"])
        masks.append(class_map.to_index(s["mask"], source=str(dataset.mask_paths[k])))
    return images, masks


def load_masks(dataset: Any, class_map: ClassMap | None = None) -> list[np.ndarray]:
    """Load every mask of a dataset at its working scale as model indices (no image decoding).

    Args:
        dataset: a :class:`lumenkit.data.LumenStoneDataset`.
        class_map: code → index mapping; default the dataset's own class map.

    Returns:
        ``(H, W)`` uint8 masks of model indices (255 = ignore), the sizes :func:`load_arrays` would give.

    Raises:
        ValueError: if no class set is known.
        UnknownClassError: if a mask holds codes outside the class set.
    """
    class_map = _class_map_of(dataset, class_map)
    return [class_map.to_index(dataset.load_mask(k), source=str(dataset.mask_paths[k])) for k in range(len(dataset))]

def cut(array: np.ndarray, y: int, x: int, size: int, fill: int) -> np.ndarray:
    """A ``size × size`` window with top-left ``(y, x)``; parts outside the array are filled with ``fill``.

    Returns a view when the window lies inside the array, else a padded copy.
    """
    h, w = array.shape[:2]
    if y >= 0 and x >= 0 and y + size <= h and x + size <= w:
        return array[y : y + size, x : x + size]
    out = np.full((size, size, *array.shape[2:]), fill, dtype=array.dtype)
    sub = array[max(y, 0) : y + size, max(x, 0) : x + size]
    out[: sub.shape[0], : sub.shape[1]] = sub
    return out


def void_borders(mask: np.ndarray, width: int) -> np.ndarray:
    """Copy of ``mask`` with every pixel within ``width`` px (Chebyshev) of a label change set to 255.

    Args:
        mask: ``(H, W)`` uint8 labels (255 = ignore; a change to or from 255 counts as a boundary too).
        width: border half-width in pixels; 0 returns the mask unchanged.
    """
    if width <= 0:
        return mask
    from scipy import ndimage

    size = 2 * width + 1
    lo = ndimage.minimum_filter(mask, size=size, mode="nearest")
    hi = ndimage.maximum_filter(mask, size=size, mode="nearest")
    out = mask.copy()
    out[lo != hi] = IGNORE
    return out


def mask_key(mask: np.ndarray) -> str:
    """Content hash of a mask (shape, dtype and bytes) for cache keys."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{mask.shape}{mask.dtype}".encode())
    h.update(np.ascontiguousarray(mask).data)
    return h.hexdigest()


def clear_map_cache() -> None:
    """Forget the in-memory probability maps."""
    _MAP_CACHE.clear()


def _effective_grid(grid: int, patch_size: int) -> int:
    g = max(1, min(int(grid), patch_size))
    while patch_size % g:
        g -= 1
    return g


# ------------------------------------------------------------------------------------------------
# probability maps
# ------------------------------------------------------------------------------------------------
class _ImageMaps:
    """Per-class position maps of one (padded, served) mask, as non-zero positions and cumulative sums."""

    __slots__ = ("cdf", "counts", "grid", "nx", "ny", "pos", "xmax", "ymax")

    def __init__(
        self,
        pos: list[np.ndarray],
        cdf: list[np.ndarray],
        counts: np.ndarray,
        grid: int,
        ny: int,
        nx: int,
        ymax: int,
        xmax: int,
    ) -> None:
        self.pos, self.cdf, self.counts = pos, cdf, counts
        self.grid, self.ny, self.nx, self.ymax, self.xmax = grid, ny, nx, ymax, xmax

    def dense(self, k: int) -> np.ndarray:
        """Normalised ``(ny, nx)`` map of class ``k`` on the grid (for plots and the naive reference)."""
        out = np.zeros(self.ny * self.nx)
        c = self.cdf[k]
        if len(c):
            out[self.pos[k]] = np.diff(c, prepend=0.0) / c[-1]
        return out.reshape(self.ny, self.nx)

    def to_npz(self) -> dict[str, np.ndarray]:
        d: dict[str, np.ndarray] = {
            "meta": np.array([self.grid, self.ny, self.nx, self.ymax, self.xmax], dtype=np.int64),
            "counts": self.counts,
        }
        for k, (p, c) in enumerate(zip(self.pos, self.cdf, strict=True)):
            d[f"pos{k}"], d[f"cdf{k}"] = p, c
        return d

    @classmethod
    def from_npz(cls, d: Any, num_classes: int) -> _ImageMaps:
        grid, ny, nx, ymax, xmax = (int(v) for v in d["meta"])
        pos = [d[f"pos{k}"] for k in range(num_classes)]
        cdf = [d[f"cdf{k}"] for k in range(num_classes)]
        return cls(pos, cdf, d["counts"], grid, ny, nx, ymax, xmax)


def compute_maps(mask: np.ndarray, patch_size: int, num_classes: int, alpha: float, grid: int) -> _ImageMaps:
    """Probability maps of patch positions for one mask (at least ``patch_size`` on each side).

    The value at grid position ``(i, j)`` (top-left ``(i·grid, j·grid)``) is the fraction of class ``k`` inside
    the window, to the power ``alpha``; positions whose window would leave the mask are absent (zero).

    Args:
        mask: ``(H, W)`` uint8 model indices, ``H, W ≥ patch_size``; 255 (and any value ≥ K) is ignored.
        patch_size: window side in px; a multiple of ``grid``.
        num_classes: K.
        alpha: sharpening power (> 0).
        grid: position stride in px.
    """
    h, w = mask.shape
    g, n, k_ = grid, patch_size // grid, num_classes
    hb, wb = -(-h // g), -(-w // g)
    m = mask.astype(np.intp, copy=False)
    block = (np.arange(h, dtype=np.intp) // g)[:, None] * wb + (np.arange(w, dtype=np.intp) // g)[None, :]
    code = block * (k_ + 1) + np.minimum(m, k_)  # index K collects ignore pixels
    bc = np.bincount(code.ravel(), minlength=hb * wb * (k_ + 1)).reshape(hb, wb, k_ + 1)[..., :k_]
    counts = bc.sum(axis=(0, 1)).astype(np.int64)
    ii = np.zeros((hb + 1, wb + 1, k_), dtype=np.int64)
    ii[1:, 1:] = bc.cumsum(0).cumsum(1)
    ny, nx = (h - patch_size) // g + 1, (w - patch_size) // g + 1
    win = ii[n : n + ny, n : n + nx] - ii[:ny, n : n + nx] - ii[n : n + ny, :nx] + ii[:ny, :nx]
    frac = win.reshape(ny * nx, k_).T / float(patch_size * patch_size)
    pos, cdf = [], []
    for k in range(k_):
        nz = np.flatnonzero(frac[k] > 0)
        p = frac[k, nz] ** alpha if alpha != 1 else frac[k, nz]
        pos.append(nz.astype(np.int32))
        cdf.append(np.cumsum(p))
    return _ImageMaps(pos, cdf, counts, g, ny, nx, h - patch_size, w - patch_size)


def _maps_cached(
    mask: np.ndarray, patch_size: int, num_classes: int, alpha: float, grid: int, disk: bool
) -> _ImageMaps:
    key = (mask_key(mask), patch_size, num_classes, float(alpha), grid)
    hit = _MAP_CACHE.get(key)
    if hit is not None:
        return hit
    path: Path | None = None
    if disk:
        from lumenkit.data.datasets import cache_dir

        name = hashlib.sha1(repr(key).encode()).hexdigest()
        path = cache_dir() / "sampler_maps" / f"{name}.npz"
        if path.exists():
            try:
                with np.load(path) as d:
                    maps = _ImageMaps.from_npz(d, num_classes)
                _remember(key, maps)
                return maps
            except (OSError, ValueError, KeyError):
                pass
    maps = compute_maps(mask, patch_size, num_classes, alpha, grid)
    if path is not None:
        from lumenkit.data.imageio import atomic_write

        try:
            with atomic_write(path) as f:
                np.savez(f, **maps.to_npz())
        except OSError:
            pass  # a read-only cache is not an error
    _remember(key, maps)
    return maps


def _remember(key: tuple[Any, ...], maps: _ImageMaps) -> None:
    if len(_MAP_CACHE) >= _MAP_CACHE_MAX:
        _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
    _MAP_CACHE[key] = maps


# ------------------------------------------------------------------------------------------------
# samplers
# ------------------------------------------------------------------------------------------------
def _seed_sequence(seed: int | np.random.SeedSequence | None) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(seed)


class BasePatchSampler(abc.ABC):
    """Abstract patch sampler: draws ``(image_index, y, x)`` top-left positions and counts served class pixels.

    Args:
        masks: ``(H, W)`` uint8 masks of model indices (255 = ignore), one per image.
        patch_size: patch side in px.  Images smaller than a patch are padded (mask 255) at the bottom/right.
        num_classes: K; mask values ≥ K other than 255 are not allowed.
        length: draws per iteration of ``iter(sampler)``; default one patch per ``patch_size²`` of mask area.
        void_border: pixels within this many px of a class boundary are served as 255 (ignore).
        seed: seed (or ``SeedSequence``) of the random stream.

    Raises:
        ValueError: for an empty mask list, non-2D masks, bad sizes, or labels outside ``0..K-1`` and 255.
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        patch_size: int = 256,
        num_classes: int | None = None,
        length: int | None = None,
        void_border: int = 0,
        seed: int | np.random.SeedSequence | None = 0,
    ) -> None:
        if len(masks) == 0:
            raise ValueError("no masks given; load a dataset with load_arrays(dataset, class_map) first")
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer (px), got {patch_size!r}")
        if void_border < 0:
            raise ValueError(f"void_border must be ≥ 0 px, got {void_border}")
        self.patch_size = int(patch_size)
        self.void_border = int(void_border)
        found = 0
        for i, m in enumerate(masks):
            if not isinstance(m, np.ndarray) or m.ndim != 2:
                raise ValueError(f"mask {i}: expected a 2-D (H, W) array of model indices, got {type(m).__name__}")
            vals = np.flatnonzero(np.bincount(np.asarray(m, dtype=np.uint8).ravel(), minlength=256))
            vals = vals[vals != IGNORE]
            if len(vals):
                found = max(found, int(vals[-1]) + 1)
        self.num_classes = int(num_classes) if num_classes is not None else found
        if self.num_classes < 1:
            raise ValueError("masks hold no labelled pixels (all 255); nothing to sample")
        if found > self.num_classes:
            raise ValueError(
                f"masks hold index {found - 1} but num_classes={self.num_classes}; masks must be model indices "
                "0..K-1 (map LumenStone codes with ClassMap.to_index or load_arrays)"
            )
        self.shapes = [tuple(int(v) for v in m.shape) for m in masks]
        self.masks: list[np.ndarray] = [self._prepare(np.asarray(m, dtype=np.uint8)) for m in masks]
        area = sum(h * w for h, w in self.shapes)
        self.length: int | None = length if length is not None else max(1, area // self.patch_size**2)
        # uniform positions: image chosen ∝ its number of top-left positions
        n_pos = np.array([(m.shape[0] - self.patch_size + 1) * (m.shape[1] - self.patch_size + 1)
                          for m in self.masks], dtype=np.float64)
        self._uniform_cdf = np.cumsum(n_pos)
        # shared accumulator: one row per stream, summed for the truth
        self._table = torch.zeros((MAX_STREAMS + 1, self.num_classes), dtype=torch.int64).share_memory_()
        self._table_np = self._table.numpy()
        self.history: list[Position] = []
        self.record_history = True
        self.bind(row=0, n_streams=1, seed=seed)

    def _prepare(self, mask: np.ndarray) -> np.ndarray:
        mask = void_borders(mask, self.void_border)
        h, w = mask.shape
        p = self.patch_size
        if h < p or w < p:
            mask = np.pad(mask, ((0, max(p - h, 0)), (0, max(p - w, 0))), constant_values=IGNORE)
        return mask

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_table_np")  # a numpy view would be pickled as a copy; rebuilt from the shared tensor
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._table_np = self._table.numpy()

    # -- streams ----------------------------------------------------------------------------------
    def bind(
        self,
        row: int = 0,
        n_streams: int = 1,
        seed: int | np.random.SeedSequence | None = None,
        base: np.ndarray | None = None,
    ) -> None:
        """Attach this copy to a stream: its accumulator row, its seed and the totals it starts from.

        Args:
            row: accumulator row this copy writes (0 = main process, ``w + 1`` = worker ``w``).
            n_streams: streams drawing concurrently (their counts are divided among them for balancing).
            seed: seed or ``SeedSequence`` of the stream; ``None`` keeps the current generator.
            base: served totals the stream starts from (default: zeros).

        Raises:
            ValueError: for a row outside ``0..MAX_STREAMS``.
        """
        if not 0 <= row <= MAX_STREAMS:
            raise ValueError(f"stream row {row} outside 0..{MAX_STREAMS}; use at most {MAX_STREAMS} workers")
        self._row = row
        self._n_streams = max(1, n_streams)
        self._base = np.zeros(self.num_classes) if base is None else np.asarray(base, dtype=np.float64)
        self._local = np.zeros(self.num_classes, dtype=np.int64)
        if seed is not None or not hasattr(self, "rng"):
            self.seed_sequence = _seed_sequence(seed)
            self.rng = np.random.default_rng(self.seed_sequence)

    def reset(self) -> None:
        """Zero the accumulator (every row) and the history."""
        self._table.zero_()
        self._local[:] = 0
        self._base[:] = 0
        self.history.clear()

    def state_dict(self) -> dict[str, Any]:
        """Served totals for a checkpoint (``{"served": [K ints]}``); restore with :meth:`load_state_dict`."""
        return {"served": [int(v) for v in self.served]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore served totals from :meth:`state_dict` (into row 0; other rows zeroed); call before ``set_epoch``.

        Raises:
            ValueError: if the number of classes differs.
        """
        served = np.asarray(state["served"], dtype=np.int64)
        if served.shape != (self.num_classes,):
            raise ValueError(f"saved served counts have {served.shape} classes, sampler has {self.num_classes}")
        self._table.zero_()
        self._table_np[0] = served
        self._base = served.astype(np.float64)
        self._local[:] = 0

    @property
    def served(self) -> np.ndarray:
        """Pixels served per class over all streams, ``(K,)`` int64 (exact across DataLoader workers)."""
        return self._table_np.sum(axis=0)

    @property
    def present(self) -> np.ndarray:
        """Boolean ``(K,)``: classes with at least one pixel in the masks."""
        return self.class_pixels.sum(axis=0) > 0

    @property
    @abc.abstractmethod
    def class_pixels(self) -> np.ndarray:
        """``(N_images, K)`` pixel counts of the served masks."""

    def quality(self, served: np.ndarray | None = None) -> float:
        """Balancing quality ``1 − (max − min) / sum`` of served pixels over the classes present in the masks.

        1 is perfect balance; 0 when one class has everything.  NaN before anything is served.
        """
        s = (self.served if served is None else np.asarray(served))[self.present].astype(np.float64)
        return float(1.0 - (s.max() - s.min()) / s.sum()) if s.sum() > 0 else float("nan")

    def shares(self) -> np.ndarray:
        """Served fraction of each class (sums to 1; NaN before anything is served)."""
        s = self.served.astype(np.float64)
        return s / s.sum() if s.sum() else np.full(self.num_classes, np.nan)

    # -- drawing ----------------------------------------------------------------------------------
    def draw(self) -> Position:
        """Draw one patch position ``(image_index, y, x)`` (top-left, px) and count its pixels as served."""
        return self.draw_with_mask()[0]

    def draw_with_mask(self) -> tuple[Position, np.ndarray]:
        """Draw a position and return it with the served ``(P, P)`` mask patch (void borders, 255 padding)."""
        i, y, x = self._position()
        patch = self.masks[i][y : y + self.patch_size, x : x + self.patch_size]
        c = np.bincount(patch.ravel(), minlength=256)[: self.num_classes]
        self._local += c
        self._table_np[self._row] += c
        if self.record_history:
            self.history.append((i, y, x))
        return (i, y, x), patch

    def _uniform(self) -> Position:
        r = self.rng.random() * self._uniform_cdf[-1]
        i = int(np.searchsorted(self._uniform_cdf, r, side="right"))
        i = min(i, len(self.masks) - 1)
        h, w = self.masks[i].shape
        y = int(self.rng.integers(0, h - self.patch_size + 1))
        x = int(self.rng.integers(0, w - self.patch_size + 1))
        return i, y, x

    @abc.abstractmethod
    def _position(self) -> Position: ...

    def __iter__(self) -> Iterator[Position]:
        for _ in range(self.length or 0):
            yield self.draw()

    def __len__(self) -> int:
        return int(self.length or 0)

    def coverage_map(self, image_index: int, max_size: int | None = None) -> np.ndarray:
        """How many served patches covered each pixel of an image, ``(H, W)`` float32 (from :attr:`history`).

        Args:
            image_index: image position in the mask list.
            max_size: if given, the map is computed on a grid coarsened so its long side is at most this.
        """
        h, w = self.shapes[image_index]
        f = 1 if max_size is None else max(1, math.ceil(max(h, w) / max_size))
        hh, ww = -(-h // f), -(-w // f)
        acc = np.zeros((hh + 1, ww + 1), dtype=np.float32)
        p = self.patch_size
        for i, y, x in self.history:
            if i != image_index:
                continue
            y0, x0 = y // f, x // f
            y1, x1 = min(-(-(y + p) // f), hh), min(-(-(x + p) // f), ww)
            acc[y0, x0] += 1
            acc[y0, x1] -= 1
            acc[y1, x0] -= 1
            acc[y1, x1] += 1
        return acc.cumsum(0).cumsum(1)[:hh, :ww]


class UniformSampler(BasePatchSampler):
    """Uniform baseline: every valid top-left position of every image equally likely.

    Same arguments and interface as :class:`BasePatchSampler`.
    """

    def __init__(self, masks: Sequence[np.ndarray], patch_size: int = 256, num_classes: int | None = None,
                 length: int | None = None, void_border: int = 0,
                 seed: int | np.random.SeedSequence | None = 0) -> None:
        super().__init__(masks, patch_size, num_classes, length, void_border, seed)
        self._class_pixels = np.stack([
            np.bincount(m.ravel(), minlength=256)[: self.num_classes] for m in self.masks
        ]).astype(np.int64)

    @property
    def class_pixels(self) -> np.ndarray:
        """``(N_images, K)`` pixel counts of the served masks."""
        return self._class_pixels

    def _position(self) -> Position:
        return self._uniform()


class BalancedSampler(BasePatchSampler):
    """Class-balancing patch sampler after Kochkarev et al. (2020); see the module docstring.

    Args:
        masks: ``(H, W)`` uint8 masks of model indices (255 = ignore), one per image.
        patch_size: patch side in px.
        num_classes: K (default: highest index found + 1).
        strength: probability that a draw is balanced (else uniform); 0 = uniform, 1 = fully balanced.
        alpha: power that sharpens the position maps (> 0; larger = patches more centred on the class).
        kappa: exponent of an image's class pixel count in the image choice (0 = every image with the class
            equally, 1 = ∝ pixel count).
        grid: stride (px) of the position grid; must divide ``patch_size`` (else the largest divisor below it is
            used).  Positions are jittered uniformly inside their grid cell.
        void_border: pixels within this many px of a class boundary are served as 255.
        length: draws per ``iter(sampler)``; default one per ``patch_size²`` of mask area.
        seed: seed (or ``SeedSequence``) of the random stream.
        cache: ``"memory"`` (default), ``"disk"`` (also ``datasets.cache_dir()/sampler_maps``) or ``None``.
            Maps are keyed by the mask's content hash and the parameters.

    Raises:
        ValueError: for parameters out of range (the message names the valid range).
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        patch_size: int = 256,
        num_classes: int | None = None,
        strength: float = 1.0,
        alpha: float = DEFAULT_ALPHA,
        kappa: float = DEFAULT_KAPPA,
        grid: int = DEFAULT_GRID,
        void_border: int = 0,
        length: int | None = None,
        seed: int | np.random.SeedSequence | None = 0,
        cache: str | None = "memory",
    ) -> None:
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must be in [0, 1] (0 = uniform, 1 = fully balanced), got {strength}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (1 = plain class fraction), got {alpha}")
        if not kappa >= 0:
            raise ValueError(f"kappa must be ≥ 0, got {kappa}")
        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
            raise ValueError(f"grid must be a positive integer stride in px, got {grid!r}")
        if cache not in ("memory", "disk", None):
            raise ValueError(f"cache must be 'memory', 'disk' or None, got {cache!r}")
        super().__init__(masks, patch_size, num_classes, length, void_border, seed)
        self.strength, self.alpha, self.kappa = float(strength), float(alpha), float(kappa)
        self.grid = _effective_grid(int(grid), self.patch_size)
        k_ = self.num_classes
        self.maps: list[_ImageMaps] = [
            _maps_cached(m, self.patch_size, k_, self.alpha, self.grid, cache == "disk") if cache else
            compute_maps(m, self.patch_size, k_, self.alpha, self.grid)
            for m in self.masks
        ]
        self._class_pixels = np.stack([mp.counts for mp in self.maps])
        has_map = np.array([[len(mp.cdf[k]) > 0 for k in range(k_)] for mp in self.maps])
        weight = np.where(has_map, self._class_pixels.astype(np.float64) ** self.kappa, 0.0)
        weight[self._class_pixels == 0] = 0.0
        self._image_cdf = np.cumsum(weight, axis=0).T.copy()  # (K, N)
        self._drawable = self._image_cdf[:, -1] > 0

    @property
    def class_pixels(self) -> np.ndarray:
        """``(N_images, K)`` pixel counts of the served masks."""
        return self._class_pixels

    @property
    def present(self) -> np.ndarray:
        """Boolean ``(K,)``: classes that can be drawn (pixels inside some valid patch window)."""
        return self._drawable

    def class_weights(self) -> np.ndarray:
        """Current class-choice probabilities ``∝ 1 / served²`` (never-served classes first), ``(K,)``."""
        eff = self._base / self._n_streams + self._local
        w = np.zeros(self.num_classes)
        d = self._drawable
        unserved = d & (eff <= 0)
        if unserved.any():
            w[unserved] = 1.0
        else:
            w[d] = 1.0 / eff[d] ** 2
        return w / w.sum()

    def _position(self) -> Position:
        rng = self.rng
        if self.strength < 1 and rng.random() >= self.strength:
            return self._uniform()
        cw = np.cumsum(self.class_weights())
        k = min(int(np.searchsorted(cw, rng.random() * cw[-1], side="right")), self.num_classes - 1)
        icdf = self._image_cdf[k]
        i = min(int(np.searchsorted(icdf, rng.random() * icdf[-1], side="right")), len(icdf) - 1)
        mp = self.maps[i]
        cdf = mp.cdf[k]
        j = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        iy, ix = divmod(int(mp.pos[k][j]), mp.nx)
        g = mp.grid
        jy, jx = rng.integers(0, g, size=2) if g > 1 else (0, 0)
        return i, min(iy * g + int(jy), mp.ymax), min(ix * g + int(jx), mp.xmax)

    def probability_map(self, image_index: int, k: int) -> np.ndarray:
        """Normalised position map of class ``k`` on image ``image_index`` on the grid, ``(ny, nx)``."""
        return self.maps[image_index].dense(k)


# ------------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------------
AugmentFn = Callable[..., tuple[np.ndarray, np.ndarray]]


class PatchDataset(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Iterable dataset of patches drawn by a sampler, for a ``torch.utils.data.DataLoader``.

    Yields ``{"image": uint8 (3, P, P), "mask": int64 (P, P) model indices (255 ignore), "position":
    int64 (3,) = (image_index, y, x)}``.  Under a DataLoader with workers, each worker draws
    ``length / num_workers`` patches from its own stream seeded by ``(seed, epoch, worker id)``; counts go to the
    sampler's shared accumulator (see the module docstring).  Call :meth:`set_epoch` before each epoch.

    Args:
        images: ``(H, W, 3)`` uint8 images, matching the sampler's masks in number and size.
        masks: the masks the sampler was built on (served masks, with void borders, come from the sampler).
        sampler: a :class:`BalancedSampler` or :class:`UniformSampler`.
        length: patches per epoch (default: the sampler's length).
        augment: ``None`` or a callable ``(image, mask, rng=np.random.Generator) -> (image, mask)`` on numpy
            ``(P, P, 3)`` uint8 and ``(P, P)`` uint8 arrays, e.g. :class:`lumenkit.data.augment.Augment`.
        seed: base seed of the streams.

    Raises:
        ValueError: if images and masks do not match the sampler's masks in number or size.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        sampler: BasePatchSampler,
        length: int | None = None,
        augment: AugmentFn | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(images) != len(sampler.shapes) or len(masks) != len(sampler.shapes):
            raise ValueError(
                f"{len(images)} images and {len(masks)} masks but the sampler holds {len(sampler.shapes)} masks; "
                "build the sampler on the same masks"
            )
        for i, (im, m) in enumerate(zip(images, masks, strict=True)):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"image {i}: expected (H, W, 3) uint8, got {im.shape} {im.dtype}")
            if im.shape[:2] != m.shape or tuple(m.shape) != sampler.shapes[i]:
                raise ValueError(
                    f"image {i}: image {im.shape[:2]}, mask {m.shape} and sampler mask {sampler.shapes[i]} "
                    "sizes differ; images, masks and sampler must come from the same load_arrays call"
                )
        self.images = list(images)
        self.sampler = sampler
        self.length = int(length if length is not None else len(sampler))
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self._base = sampler.served.astype(np.float64)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (new streams) and snapshot the served totals the streams balance from."""
        self.epoch = int(epoch)
        self._base = self.sampler.served.astype(np.float64)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (-1, 1)
        n = self.length // nw + (1 if max(wid, 0) < self.length % nw else 0)
        ss = np.random.SeedSequence([self.seed, self.epoch, wid + 1])
        s_seq, a_seq = ss.spawn(2)
        self.sampler.bind(row=wid + 1, n_streams=nw, seed=s_seq, base=self._base)
        if info is not None:
            self.sampler.record_history = False  # a worker's copy is discarded; keep memory flat
        rng = np.random.default_rng(a_seq)
        p = self.sampler.patch_size
        for _ in range(n):
            (i, y, x), mask = self.sampler.draw_with_mask()
            image = cut(self.images[i], y, x, p, 0)
            if self.augment is not None:
                image, mask = self.augment(image, mask, rng=rng)
            yield {
                "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "mask": torch.from_numpy(mask.astype(np.int64)),
                "position": torch.tensor([i, y, x], dtype=torch.int64),
            }

