"""Streamed prediction of whole-section mosaics: bounded memory, tiled pyramidal BigTIFF out, resumable.

A mosaic (:class:`lumenkit.data.mosaic.Mosaic`) is predicted one row of network windows at a time: its rows are
resampled to the model's scale band by band, each row of windows is run through the network exactly as
:func:`~lumenkit.inference.tiling.predict_probs` runs the whole image (same window layout, same reflect padding),
the class probabilities are upsampled to the mosaic's resolution a few rows at a time exactly as
:func:`~lumenkit.inference.tiling.resize_probs` does, and every finished row of 256-px tiles is saved at once.
So the mask equals :func:`~lumenkit.inference.predict.predict_image` of the whole image, pixel for pixel, while
memory holds one row of windows, a band of the resampled image and a row of tiles — never the image. With
``refine`` the full-resolution row of tiles is decoded too (3 bytes a pixel), to guide the upsampling.

Rows of tiles go to ``OUT/.NAME.parts/`` (each written atomically); a killed run resumes at the first missing row,
and the final files are assembled from the rows only when all exist, so they are the same bytes as an
uninterrupted run's and a half-written mask is never presented as complete:

    OUT/NAME.tif              LumenStone codes (palette: catalogue colours), tiled BigTIFF with a pyramid of
                              2×, 4×, ... reduced levels (nearest sample) in sub-IFDs
    OUT/confidence/NAME.tif   max class probability × 255, tiled BigTIFF with the mask's pyramid levels, each
                              pixel the mean of the block it reduces
    OUT/overviews/NAME.png    the mask reduced to at most 2048 px a side (palette PNG)

Under ``torchrun`` the rows of tiles are shared out in contiguous blocks between the processes, which all write
their rows; the first process assembles the files once all rows exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumenkit.data.imageio import atomic_write, check_writable, save_palette_mask, write_text
from lumenkit.data.mosaic import Mosaic
from lumenkit.errors import ConfigError, OutputPathError
from lumenkit.inference.refine import Refine, brightness, guided_coefficients
from lumenkit.inference.runners import as_runner
from lumenkit.inference.tiling import (
    Tiling,
    _linear_weights,
    _window_probs,
    confidence_u8,
    tta_transforms,
    upsample_labels,
    upsample_rows,
)
from lumenkit.runtime.heap import release_free_memory

TILE: int = 256
"""Side of the output TIFF tiles in px; a row of tiles is the unit of work that is saved and resumed."""

OVERVIEW: int = 2048
"""Longest side of the overview PNG in px."""

_STRIP = 64
"""Output rows upsampled at a time (bounds the full-resolution probabilities: classes × 64 × width floats, twice
that with ``refine``: the two upsampled coefficient maps)."""

_ZLIB = {"level": 1}
"""Deflate level of the output tiles: masks compress well even at the fastest level (level 6 took 3× longer)."""


@dataclass
class MosaicPrediction:
    """Outcome of :func:`predict_mosaic`.

    Attributes:
        mask, confidence, overview: the files written.
        size: ``(width, height)`` of the mosaic in px.
        model_scale_size: ``(width, height)`` the network saw.
        pixels: pixels per LumenStone code.
        mean_confidence: mean max class probability (from the 8-bit confidence map).
        resumed_rows: rows of tiles found finished from an earlier run.
        seconds: wall time of this call.
    """

    mask: Path
    confidence: Path
    overview: Path
    size: tuple[int, int]
    model_scale_size: tuple[int, int]
    pixels: dict[int, int] = field(default_factory=dict)
    mean_confidence: float = float("nan")
    resumed_rows: int = 0
    seconds: float = 0.0


class _WindowRows:
    """Class probabilities at model scale, one row of network windows at a time (computed on demand, evicted)."""

    def __init__(self, runner: Any, mosaic: Mosaic, factor: float, tiling: Tiling, guide: bool = False) -> None:
        self.runner, self.mosaic, self.factor, self.keep_guide = runner, mosaic, factor, guide
        self.width, self.height = mosaic.scaled_size(factor)
        self.level = mosaic.level_for(factor)
        lay = tiling.layout(self.height, self.width, runner.output_stride)
        self.margin, self.ys, self.xs = lay.margin, lay.ys, lay.xs
        self.core, self.window, self.padded = lay.core, lay.window, lay.padded
        self.batch = tiling.batch
        self.transforms = tta_transforms(tiling.tta)
        mode = "reflect" if min(self.height, self.width) > 1 else "edge"
        m, (ph, pw) = self.margin, self.padded
        # padded row/column → resampled row/column, exactly as np.pad pads the whole image in predict_probs
        self.row_of = np.pad(np.arange(self.height), (m, ph - self.height - m), mode=mode)
        self.col_pad = ((m, pw - self.width - m), mode)
        self.cache: dict[int, torch.Tensor] = {}
        self.guides: dict[int, torch.Tensor] = {}

    def _row(self, i: int) -> torch.Tensor:
        """Probabilities ``(K, core rows, width)`` of window row ``i``."""
        if i in self.cache:
            return self.cache[i]
        y = self.ys[i]
        wh, ww = self.window
        idx = self.row_of[y : y + wh]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        band = self.mosaic.scaled_rows(self.factor, lo, hi, level=self.level)[idx - lo]
        ch = min(self.core[0], self.height - y)
        m = self.margin
        if self.keep_guide:  # brightness of the resampled rows [y, y + ch), which the refinement fits to
            self.guides[i] = brightness(band[m : m + ch])
        (left, right), mode = self.col_pad
        band = np.pad(band, ((0, 0), (left, right), (0, 0)), mode=mode)
        out = torch.empty((self.runner.classes, ch, self.width), dtype=torch.float32)
        with torch.inference_mode():
            for s in range(0, len(self.xs), self.batch):
                xs = self.xs[s : s + self.batch]
                prob = _window_probs(self.runner, np.stack([band[:, x : x + ww] for x in xs]), self.transforms)
                for j, x in enumerate(xs):
                    cw = min(self.core[1], self.width - x)
                    out[:, :, x : x + cw] = prob[j, :, m : m + ch, m : m + cw]
        self.cache[i] = out
        return out

    def rows(self, a: int, b: int, guide: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Probabilities ``(K, b - a, width)`` of resampled rows ``[a, b)``; window rows above ``a`` are dropped.

        With ``guide``, also the ``(b - a, width)`` brightness of those rows of the resampled mosaic (the image the
        network saw), as ``(probs, guide)``.
        """
        first = max(i for i, y in enumerate(self.ys) if y <= a)
        last = max(i for i, y in enumerate(self.ys) if y < b)
        for i in [k for k in self.cache if k < first]:
            del self.cache[i]
            self.guides.pop(i, None)
        parts, lights = [], []
        for i in range(first, last + 1):
            y = self.ys[i]
            r = self._row(i)
            cut = slice(max(a, y) - y, min(b, y + r.shape[1]) - y)
            parts.append(r[:, cut])
            if guide:
                lights.append(self.guides[i][cut])
        probs = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if not guide:
            return probs
        return probs, lights[0] if len(lights) == 1 else torch.cat(lights, dim=0)


def _stamp(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _model_key(model: Any) -> str:
    """A digest of the model's weights and class map (what decides the prediction); an ensemble's of its members."""
    h = hashlib.sha256()
    members = getattr(model, "members", None)
    net = getattr(model, "model", None)
    if members is not None:  # an ensemble: every member's digest and the weights
        for m, w in zip(members, model.member_weights, strict=True):
            h.update(f"{_model_key(m)}:{w!r}".encode())
    elif isinstance(net, torch.nn.Module):
        for k, v in sorted(net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    else:  # an exported model: its file's bytes
        source = getattr(model, "path", None)
        h.update(Path(source).read_bytes() if source and Path(source).is_file() else repr(model).encode())
    h.update(repr(list(model.class_map.codes)).encode())
    return h.hexdigest()


def _row_file(parts: Path, r: int) -> Path:
    return parts / "rows" / f"{r:06d}.npy"


def _save_row(path: Path, codes: np.ndarray, conf: np.ndarray) -> None:
    """One row of tiles, codes and confidence stacked, uncompressed (compressing twice cost half the run)."""
    buf = io.BytesIO()
    np.save(buf, np.stack([codes, conf]))
    with atomic_write(path) as f:
        f.write(buf.getbuffer())  # through Python's file object: a full disk raises ENOSPC (numpy's tofile does not)


def _row_ok(path: Path, height: int, width: int) -> bool:
    """Whether a saved row of tiles is whole (right shape and type); a damaged one is removed, to be redone."""
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
        ok = arr.shape == (2, height, width) and arr.dtype == np.uint8
    except (OSError, ValueError, EOFError):
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


def _tiles(rows: Iterator[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """The tiles of a stream of rows of tiles, row-major, edge tiles padded with zeros to ``tile × tile``."""
    for band in rows:
        for x in range(0, width, tile):
            t = band[:, x : x + tile]
            if t.shape != (tile, tile):
                full = np.zeros((tile, tile), dtype=band.dtype)
                full[: t.shape[0], : t.shape[1]] = t
                t = full
            yield t


def _pyramid_sides(height: int, width: int) -> list[int]:
    """Downsampling factors 2, 4, ... of the pyramid levels, down to about one tile."""
    out, d = [], 2
    while max(height, width) // d >= TILE:
        out.append(d)
        d *= 2
    return out


def predict_mosaic(
    model: Any,
    path: str | Path,
    out: str | Path,
    scale: float | None = None,
    pixel_size_um: float | None = None,
    tiling: Tiling | None = None,
    device: str | None = None,
    progress: bool = True,
    name: str | None = None,
    runtime: str | None = None,
    refine: Refine | None = None,
) -> MosaicPrediction:
    """Predict a whole-section mosaic streamed, in bounded memory; resumes an interrupted run (see the module).

    Args:
        model: a :class:`~lumenkit.models.Checkpoint` or :class:`~lumenkit.inference.OnnxModel`, or its path; an
            :class:`~lumenkit.inference.Ensemble`, or a list of paths.
        path: the mosaic (tiled or striped (Big/OME-)TIFF, 8-bit RGB).
        out: output folder.
        scale: the mosaic's scale relative to LumenStone's native images; given, it wins. Otherwise from the pixel
            sizes of the model and of the mosaic (its metadata, else ``pixel_size_um``), else 1.0.
        pixel_size_um: µm per pixel when the file's metadata has none.
        tiling: windows, margins, batch and TTA at model scale (default ``Tiling()``; same as ``predict``).
        device: where a torch model runs (default: the CPU).
        progress: a progress bar over rows of tiles.
        name: output stem (default: the file's stem).
        runtime: ``None`` (the model's own), ``"torch"`` or ``"onnx"`` (as ``predict``).
        refine: upsample the probabilities guided by the mosaic's edges (:mod:`lumenkit.inference.refine`), row by
            row with the same values as ``predict_image(..., refine=refine)`` on the whole mosaic; the full-resolution
            rows are decoded once more to guide it.

    Returns:
        A :class:`MosaicPrediction`.

    Raises:
        BadImageError: the mosaic cannot be read (truncated, not 8-bit RGB, inconsistent pyramid, a codec missing).
        ConfigError: the mosaic is coarser than the model's scale (it would have to be enlarged).
        OutputPathError: ``out`` cannot be written.
        CheckpointError: the model cannot be loaded.
        Under ``torchrun`` an error met by one process is raised by every process (the same one line).
    """
    from lumenkit import __version__
    from lumenkit.inference.loading import input_scale_for, load_model, sharing
    from lumenkit.runtime.devices import resolve_device

    t0 = time.perf_counter()
    ckpt = load_model(model) if isinstance(model, (str, Path, list, tuple)) else model
    out = check_writable(out, folder=True)
    tiling = tiling if tiling is not None else Tiling()
    path = Path(path)
    stem = name or path.name.split(".")[0]
    dev = resolve_device(device) if device is not None else None
    threads = torch.get_num_threads()
    with sharing(dev) as (rank, world), Mosaic(path) as mosaic:
        try:
            height, width = mosaic.shape
            px = mosaic.pixel_size_um or pixel_size_um
            s = scale if scale is not None else (input_scale_for(ckpt, px) or 1.0)
            factor = float(ckpt.scale) / float(s)
            low_w, low_h = mosaic.scaled_size(factor)
            if low_w > width or low_h > height:
                raise ConfigError(f"{path}: the mosaic is at scale {s:.6g}, coarser than the model's "
                                  f"{ckpt.scale:.6g}; predict it with a model trained at its scale, or pass --scale "
                                  "if it is wrong")
            factor = min(factor, 1.0)  # equal up to rounding of the pixel sizes: no resampling
            parts = out / f".{stem}.parts"
            meta = {"mosaic": _stamp(path), "model": _model_key(ckpt), "tiling": asdict(tiling), "factor": factor,
                    "size": [width, height], "tile": TILE, "lumenkit": __version__, "runtime": runtime,
                    "device": dev.type if dev is not None else "cpu",
                    "refine": asdict(refine) if refine is not None else None}
            _together(world, lambda: _prepare_parts(parts, meta) if rank == 0 else None)
            runner = as_runner(ckpt.model if hasattr(ckpt, "model") else ckpt, device=dev, runtime=runtime)
            if world > 1:  # each process on its share of the cores (as predict_files does)
                from lumenkit.runtime.devices import usable_cores

                torch.set_num_threads(max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
            stream = _WindowRows(runner, mosaic, factor, tiling, guide=refine is not None)
            n_rows = -(-height // TILE)
            mine = range(rank * n_rows // world, (rank + 1) * n_rows // world)
            done = [r for r in mine if _row_ok(_row_file(parts, r), min(TILE, height - r * TILE), width)]
            _together(world, lambda: _predict_rows(ckpt, stream, parts, [r for r in mine if r not in set(done)],
                                                   height, width, progress and rank == 0, stem, refine))
            stream.cache.clear()  # the last rows of windows' probabilities (classes × core rows × model-scale width
            stream.guides.clear()  # floats each) are not needed to assemble the files
            result = MosaicPrediction(out / f"{stem}.tif", out / "confidence" / f"{stem}.tif",
                                      out / "overviews" / f"{stem}.png", (width, height),
                                      (stream.width, stream.height), resumed_rows=len(done))
            if rank == 0:
                result.pixels = _together(world, lambda: _assemble(parts, n_rows, width, height, result))
                shutil.rmtree(parts, ignore_errors=True)
            else:
                _together(world, lambda: None)
            if world > 1:
                result = _broadcast(result)
        finally:
            torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - t0
    return result


def _predict_rows(ckpt: Any, stream: _WindowRows, parts: Path, todo: list[int], height: int, width: int,
                  progress: bool, stem: str, refine: Refine | None = None) -> None:
    """Predict and save the rows of tiles ``todo`` (each saved as soon as it is finished)."""
    weights = _linear_weights(stream.height, height)
    r0, r1, _ = weights
    same = (stream.height, stream.width) == (height, width)
    if not (stream.height < height and stream.width < width):
        refine = None  # refined only where both sides are upsampled, as predict_image decides
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{stem} (rows of tiles)", unit="row")
    for r in todo:
        y0, y1 = r * TILE, min(height, (r + 1) * TILE)
        codes = np.empty((y1 - y0, width), dtype=np.uint8)
        conf8 = np.empty((y1 - y0, width), dtype=np.uint8)
        full = stream.mosaic.read(y0, y1) if refine is not None else None  # decoded once per row of tiles
        for s0 in range(y0, y1, _STRIP):
            s1 = min(y1, s0 + _STRIP)
            if same:
                conf, idx = stream.rows(s0, s1).max(dim=0)
            elif refine is not None:
                a, b = int(r0[s0]), int(r1[s1 - 1]) + 1
                conf, idx = _refined(stream, refine, a, b, weights, s0, s1, width,
                                     brightness(full[s0 - y0 : s1 - y0]))
            else:
                a, b = int(r0[s0]), int(r1[s1 - 1]) + 1
                conf, idx = upsample_labels(stream.rows(a, b), a, weights, s0, s1, width)
            codes[s0 - y0 : s1 - y0] = ckpt.class_map.to_code(idx.to(torch.uint8).numpy())
            conf8[s0 - y0 : s1 - y0] = confidence_u8(conf.numpy())
        _save_row(_row_file(parts, r), codes, conf8)
        del codes, conf8
        release_free_memory()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()


def _refined(stream: _WindowRows, refine: Refine, a: int, b: int, weights: tuple[torch.Tensor, ...], s0: int,
             s1: int, width: int, guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence and indices of output rows ``[s0, s1)`` upsampled guided by their brightness ``guide``.

    The guided filter's coefficients at a source row depend on the rows within two window radii (a box of the
    fit, then a box of the coefficients), so they are fitted on rows ``[a - 2r, b + 2r)`` and kept on ``[a, b)``:
    the same values as fitting the whole mosaic at once (:func:`lumenkit.inference.tiling.resize_probs`).
    """
    pad = 2 * int(refine.radius)
    lo, hi = max(0, a - pad), min(stream.height, b + pad)
    probs, low = stream.rows(lo, hi, guide=True)
    ga, gb = guided_coefficients(probs, low, refine)
    ga, gb = ga[:, a - lo : b - lo], gb[:, a - lo : b - lo]
    part = upsample_rows(gb, a, weights, s0, s1, width)
    part.addcmul_(upsample_rows(ga, a, weights, s0, s1, width), guide[None])  # in place: two strips live, not three
    conf, idx = part.max(dim=0)
    return conf.clamp_(0.0, 1.0), idx


def _together(world: int, step: Any) -> Any:
    """Run ``step`` on this process; under torchrun, if any process failed, raise the first failure everywhere.

    Every process reaches the same collective whether its step failed or not, so none waits on one that has left.
    """
    from lumenkit.errors import LumenkitError

    err: BaseException | None = None
    value = None
    try:
        value = step()
    except (LumenkitError, ValueError, OSError) as e:
        err = e
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, None if err is None else (type(err).__name__, str(err)))
        first = next((g for g in gathered if g is not None), None)
        if first is not None and err is None:
            raise _rebuilt(*first)
    if err is not None:
        raise err
    return value


def _rebuilt(kind: str, message: str) -> Exception:
    """Another process's error, as the same lumenkit error type where it is one (else a LumenkitError)."""
    import lumenkit.errors as errors

    cls = getattr(errors, kind, None)
    return cls(message) if isinstance(cls, type) and issubclass(cls, Exception) else errors.LumenkitError(message)


def _broadcast(result: MosaicPrediction) -> MosaicPrediction:
    """The first process's result on every process."""
    import torch.distributed as dist

    box: list[Any] = [result]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _prepare_parts(parts: Path, meta: dict[str, Any]) -> None:
    """Keep the finished rows of an earlier run of the same mosaic, model and tiling; else start afresh."""
    record = parts / "meta.json"
    text = json.dumps(meta, sort_keys=True)
    if record.is_file() and record.read_text() == text:
        return
    shutil.rmtree(parts, ignore_errors=True)
    (parts / "rows").mkdir(parents=True)
    write_text(record, text)


def _bands(parts: Path, n_rows: int, which: int) -> Iterator[np.ndarray]:
    """The saved rows of tiles in order: codes (``which`` 0) or confidence (1)."""
    for r in range(n_rows):  # memory-mapped: a strided reader touches only the rows it samples
        yield np.load(_row_file(parts, r), mmap_mode="r")[which]


def _strided(bands: Iterator[np.ndarray], step: int) -> Iterator[np.ndarray]:
    """Rows of :data:`TILE` rows of an image given as bands, sampled every ``step``-th pixel along both axes.

    Nearest sampling keeps codes codes (no averaging of class codes).
    """
    seen = 0
    acc: list[np.ndarray] = []
    n = 0
    for band in bands:
        sub = np.ascontiguousarray(band[(-seen) % step :: step, ::step])  # a copy: a view would keep the band
        seen += band.shape[0]
        acc.append(sub)
        n += sub.shape[0]
        while n >= TILE:
            joined = np.concatenate(acc)
            yield joined[:TILE]
            acc, n = [joined[TILE:]], joined.shape[0] - TILE
    if n:
        yield np.concatenate(acc)


def _block_sums(a: np.ndarray, step: int) -> np.ndarray:
    """Sums of ``a``'s ``step × step`` blocks (edge blocks: what they hold), as int64 ``(⌈h/step⌉, ⌈w/step⌉)``.

    ``a`` is uint8. Done in column chunks of about 8192 px, so the uint32 row sums stay a few MB whatever the width.
    """
    h, w = a.shape
    nb = -(-h // step)
    out = np.empty((nb, -(-w // step)), dtype=np.int64)
    chunk = max(step, 8192 // step * step)
    for x in range(0, w, chunk):
        part = a[:, x : x + chunk]
        if part.shape[0] % step or part.shape[1] % step:  # an edge block: zeros add nothing to its sum
            part = np.pad(part, ((0, -part.shape[0] % step), (0, -part.shape[1] % step)))
        rows = part.reshape(nb, step, part.shape[1]).sum(axis=1, dtype=np.uint32)
        into = out[:, x // step : x // step + rows.shape[1] // step]
        if step <= 64:  # a few strided adds: numpy sums a short last axis slowly (10× at step 2)
            into[:] = rows[:, ::step]
            for k in range(1, step):
                into += rows[:, k::step]
        else:
            into[:] = rows.reshape(nb, -1, step).sum(axis=2, dtype=np.int64)
    return out


def _averaged(bands: Iterator[np.ndarray], step: int, width: int) -> Iterator[np.ndarray]:
    """Rows of :data:`TILE` rows of an 8-bit image given as bands, each ``step × step`` block averaged.

    The same grid as :func:`_strided` (``⌈h/step⌉ × ⌈w/step⌉``); an edge block averages the pixels it holds; the
    mean is rounded half up in integers (exact, so a resumed run writes the same bytes).
    """
    out_w = -(-width // step)
    cols = np.full(out_w, step, dtype=np.int64)
    cols[-1] = width - step * (out_w - 1)
    carry, carry_rows = np.zeros((1, out_w), dtype=np.int64), 0  # a block row begun in earlier bands
    acc: list[np.ndarray] = []
    n = 0

    def mean(sums: np.ndarray, rows: int) -> np.ndarray:  # (sums consumed: rounded in place)
        count = rows * cols
        sums += count // 2
        sums //= count
        return sums.astype(np.uint8)

    def joined() -> Iterator[np.ndarray]:
        nonlocal acc, n
        while n >= TILE:
            whole = np.concatenate(acc)
            yield whole[:TILE]
            acc, n = [whole[TILE:]], whole.shape[0] - TILE

    for band in bands:
        h, k = band.shape[0], 0
        if carry_rows:  # finish the block row begun above (a block taller than a band)
            k = min(h, step - carry_rows)
            carry += _block_sums(band[:k], step)
            carry_rows += k
            if carry_rows == step:
                acc.append(mean(carry, step))
                n, carry, carry_rows = n + 1, np.zeros_like(carry), 0
        full = (h - k) // step * step
        if full:
            sums = _block_sums(band[k : k + full], step)
            acc.append(mean(sums, step))
            n += sums.shape[0]
        if k + full < h:  # a block row continued in the next band, or the bottom edge
            carry = _block_sums(band[k + full :], step)
            carry_rows = h - k - full
        yield from joined()
    if carry_rows:
        acc.append(mean(carry, carry_rows))
        n += 1
    yield from joined()
    if n:
        yield np.concatenate(acc)


def _assemble(parts: Path, n_rows: int, width: int, height: int, result: MosaicPrediction) -> dict[int, int]:
    """Write the mask, confidence and overview from the saved rows (each file atomically); returns pixels per code."""
    import tifffile

    from lumenkit.data.colours import PALETTE

    counts = np.zeros(256, dtype=np.int64)
    confidence = np.zeros(1, dtype=np.int64)

    def counted(bands: Iterator[np.ndarray], into: np.ndarray) -> Iterator[np.ndarray]:
        for band in bands:
            if len(into) == 256:
                into[:] += np.bincount(band.ravel(), minlength=256)
            else:
                into[0] += int(band.sum(dtype=np.int64))
            yield band

    colormap = PALETTE.astype(np.uint16).T * 257  # (3, 256), 16 bits per sample as TIFF wants
    levels = _pyramid_sides(height, width)
    palette = {"photometric": "palette", "colormap": colormap}
    staged = {parts / "mask.tif": result.mask, parts / "confidence.tif": result.confidence,
              parts / "overview.png": result.overview}  # written inside parts/, moved out together at the end
    mask, confidence_file, overview = staged
    with atomic_write(mask) as f, tifffile.TiffWriter(f, bigtiff=True) as tw:
        tw.write(_tiles(counted(_bands(parts, n_rows, 0), counts), width, TILE), shape=(height, width), dtype=np.uint8,
                 tile=(TILE, TILE), compression="zlib", compressionargs=_ZLIB, maxworkers=1, subifds=len(levels),
                 **palette)
        for d in levels:
            tw.write(_tiles(_strided(_bands(parts, n_rows, 0), d), -(-width // d), TILE),
                     shape=(-(-height // d), -(-width // d)), dtype=np.uint8, tile=(TILE, TILE), compression="zlib",
                     compressionargs=_ZLIB, maxworkers=1, subfiletype=1, **palette)
    # the confidence map's levels are those of the mask, but each pixel the mean of its d × d block, not one sample
    # of it: a probability is a continuous quantity (codes are not), so a reduced level shows the mean confidence of
    # the area it covers, as the image's levels are area-resampled; one sample in d² would alias (thin uncertain
    # boundaries vanish or flicker from level to level), and the block means keep the mean of the whole map
    with atomic_write(confidence_file) as f, tifffile.TiffWriter(f, bigtiff=True) as tw:
        grey = {"dtype": np.uint8, "tile": (TILE, TILE), "compression": "zlib", "compressionargs": _ZLIB,
                "maxworkers": 1, "photometric": "minisblack"}
        tw.write(_tiles(counted(_bands(parts, n_rows, 1), confidence), width, TILE), shape=(height, width),
                 subifds=len(levels), **grey)
        for d in levels:
            tw.write(_tiles(_averaged(_bands(parts, n_rows, 1), d, width), -(-width // d), TILE),
                     shape=(-(-height // d), -(-width // d)), subfiletype=1, **grey)
    step = max(1, -(-max(height, width) // OVERVIEW))
    save_palette_mask(np.concatenate(list(_strided(_bands(parts, n_rows, 0), step))), overview)
    for src, dst in staged.items():
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        except OSError as e:
            raise OutputPathError(f"{dst}: cannot be written ({e.strerror or e}); choose another --out",
                                  reason=e.strerror or str(e)) from None
    result.mean_confidence = float(confidence[0]) / 255 / max(1, width * height)
    return {int(c): int(n) for c, n in enumerate(counts) if n}
