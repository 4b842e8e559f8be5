"""Image and mask reading with clear errors, label-preserving resampling, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.resample import area_resize
from lumenkit.errors import BadImageError, BadMaskError, MaskSizeError, OutputPathError

MAX_PIXELS: int = 120_000_000
"""Largest image (pixels) lumenkit will decode; bigger declared sizes are refused as decompression bombs."""

ImageFile.LOAD_TRUNCATED_IMAGES = False

_UMASK = os.umask(0)
os.umask(_UMASK)


def target_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """Size ``(width, height)`` after scaling by ``factor``, rounded half up, at least 1 px."""
    w, h = size
    return max(1, int(np.floor(w * factor + 0.5))), max(1, int(np.floor(h * factor + 0.5)))


def _open(path: Path, kind: str, error: type[Exception]) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {kind} file does not exist")
    if path.stat().st_size == 0:
        raise error(f"{path}: {kind} file is empty (0 bytes); re-export it from the microscope software")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if isinstance(e, UnidentifiedImageError):
            raise error(f"{path}: not a readable image ({kind}); expected a JPEG/PNG/TIFF file") from None
        raise error(f"{path}: declared size is too large to decode safely ({e}); check the file") from None
    except OSError as e:
        raise error(f"{path}: {kind} file is corrupt or truncated ({e}); re-export or re-copy it") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise error(
            f"{path}: declared size {w}×{h} ({w * h / 1e6:.0f} MP) exceeds the {MAX_PIXELS / 1e6:.0f} MP limit "
            "(possible decompression bomb); split the image into tiles or raise lumenkit.data.imageio.MAX_PIXELS"
        )
    return im


def _load(im: Image.Image, path: Path, kind: str, error: type[Exception]) -> None:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise error(f"{path}: {kind} file is corrupt or truncated ({e}); re-export or re-copy it") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, without decoding pixels.

    Raises:
        BadImageError: if the file is missing, empty, not an image or too large.
    """
    with _open(Path(path), "image", BadImageError) as im:
        return im.size


def read_image(path: str | Path, factor: float = 1.0) -> np.ndarray:
    """Read an RGB image as ``(H, W, 3)`` uint8, resampled by ``factor`` relative to the file's size.

    Downscaling uses area (box) averaging; for JPEG files reduced DCT decoding is used first when the
    factor is 1/2 or smaller, which is much faster and equivalent to box averaging within JPEG noise.

    Args:
        path: image file (JPEG, PNG, TIFF, ...).
        factor: resampling factor relative to the stored size (0.5 halves each side).

    Raises:
        BadImageError: missing, empty, corrupt, truncated, not an image, too large, or not a colour image
            (grayscale, 16-bit, or with a non-opaque alpha channel).
    """
    path = Path(path)
    im = _open(path, "image", BadImageError)
    with im:
        size = im.size
        out_size = target_size(size, factor)
        if im.format == "JPEG" and factor <= 0.5:
            # DCT-domain downscaling by 1/2, 1/4 or 1/8: ask for the largest reduction that still covers out_size
            s = max(d for d in (1, 2, 4, 8) if size[0] // d >= out_size[0] and size[1] // d >= out_size[1])
            im.draft("RGB", (size[0] // s, size[1] // s))
        _load(im, path, "image", BadImageError)
        mode = im.mode
        if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            if np.asarray(rgba.getchannel("A")).min() < 255:
                raise BadImageError(
                    f"{path}: image has a transparent alpha channel; export it as an opaque RGB image"
                )
            im2 = rgba.convert("RGB")
        elif mode in ("RGB", "P", "CMYK", "YCbCr"):
            im2 = im.convert("RGB")
        elif mode in ("L", "1"):
            raise BadImageError(
                f"{path}: image is grayscale (mode {mode}); mineral identification needs colour (RGB) images"
            )
        else:
            raise BadImageError(
                f"{path}: image mode {mode} (e.g. 16-bit or float) is not supported; "
                "convert it to 8-bit RGB (JPEG or PNG) first"
            )
        if im2.size != out_size and im.format != "JPEG":
            return resize_image(np.asarray(im2, dtype=np.uint8), out_size)
        if im2.size != out_size:  # the rest of a reduced JPEG decode
            resample = Image.Resampling.BOX if out_size[0] < im2.size[0] else Image.Resampling.BILINEAR
            im2 = im2.resize(out_size, resample)
        return np.asarray(im2, dtype=np.uint8).copy()


def read_mask(path: str | Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a LumenStone mask as ``(H, W)`` uint8 class codes at its stored resolution.

    Args:
        path: single-channel 8-bit PNG of LumenStone codes (255 = ignore): greyscale, or a palette PNG (as
            ``lumenkit predict`` and :func:`save_palette_mask` write) whose pixel values (palette indices) are
            the codes; the palette's colours are ignored.
        expected_size: ``(width, height)`` of the matching image; checked if given.

    Raises:
        BadMaskError: missing, empty, corrupt, multi-channel (colour-coded) or not 8-bit.
        MaskSizeError: if the size differs from ``expected_size``.
    """
    path = Path(path)
    im = _open(path, "mask", BadMaskError)
    with im:
        _load(im, path, "mask", BadMaskError)
        if im.mode in ("RGB", "RGBA"):
            raise BadMaskError(
                f"{path}: mask is a colour image (mode {im.mode}); masks must be single-channel class codes. "
                "Convert a colour-coded mask with lumenkit.data.imageio.codes_from_colour_mask(rgb, palette)"
            )
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise BadMaskError(
                f"{path}: mask is {im.mode} (16/32-bit); save it as an 8-bit single-channel PNG "
                "(e.g. Image.fromarray(mask.astype('uint8')).save(...)) after checking codes are ≤ 255"
            )
        if im.mode not in ("L", "P"):
            raise BadMaskError(f"{path}: mask mode {im.mode} is not supported; save as 8-bit grayscale PNG")
        mask = np.asarray(im, dtype=np.uint8).copy()
    if expected_size is not None and (mask.shape[1], mask.shape[0]) != tuple(expected_size):
        raise MaskSizeError(
            f"{path}: mask is {mask.shape[1]}×{mask.shape[0]} but its image is "
            f"{expected_size[0]}×{expected_size[1]}; masks must match their image pixel for pixel"
        )
    return mask


def codes_from_colour_mask(
    rgb: np.ndarray, palette: dict[tuple[int, int, int], int] | None = None, source: str = "mask"
) -> np.ndarray:
    """Convert a colour-coded ``(H, W, 3)`` mask to LumenStone codes.

    Args:
        rgb: colour-coded mask.
        palette: colour → code; default is lumenkit's display colours (:data:`lumenkit.data.catalogue.CATALOGUE`).
        source: name used in error messages.

    Raises:
        BadMaskError: if some colour is not in the palette.
    """
    if palette is None:
        palette = {m.colour: m.code for m in CATALOGUE.values()}
    rgb = np.asarray(rgb, dtype=np.uint8)
    key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    out = np.full(key.shape, IGNORE, dtype=np.uint8)
    done = np.zeros(key.shape, dtype=bool)
    for (r, g, b), code in palette.items():
        hit = key == ((r << 16) | (g << 8) | b)
        out[hit] = code
        done |= hit
    if not done.all():
        unk = np.unique(key[~done])[:5]
        cols = [((k >> 16) & 255, (k >> 8) & 255, k & 255) for k in unk.tolist()]
        raise BadMaskError(f"{source}: colours {cols} are not in the palette; pass palette={{colour: code}}")
    return out


def resize_mask(mask: np.ndarray, size: tuple[int, int], sparse: bool = False) -> np.ndarray:
    """Resample a label mask to ``size = (width, height)`` without inventing codes.

    Integer downscaling factors use a majority vote per block (ties go to the lower code); any
    other factor uses nearest-neighbour sampling at pixel centres.

    With ``sparse`` (masks of strokes: most pixels 255, unlabelled) the vote is among the labelled pixels of each
    block, 255 only where a block has none, so thin strokes survive the reduction; a non-integer factor first
    votes over blocks of its whole part, then samples.
    """
    h, w = mask.shape
    tw, th = size
    if (tw, th) == (w, h):
        return mask
    kx, ky = w / tw, h / th
    k = round(kx)
    if k >= 2 and abs(kx - k) * tw < 1 and abs(ky - k) * th < 1:
        return _majority_downscale(mask, k, tw, th, labelled_first=sparse)
    whole = int(min(kx, ky))
    if sparse and whole >= 2:
        mask = _majority_downscale(mask, whole, -(-w // whole), -(-h // whole), labelled_first=True)
        h, w = mask.shape
    ys = np.minimum(((np.arange(th) + 0.5) * h / th).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(tw) + 0.5) * w / tw).astype(np.intp), w - 1)
    return mask[ys[:, None], xs[None, :]]


def _majority_downscale(mask: np.ndarray, k: int, tw: int, th: int, labelled_first: bool = False) -> np.ndarray:
    ph, pw = th * k, tw * k
    m = mask[:ph, :pw]
    if m.shape != (ph, pw):
        m = np.pad(m, ((0, ph - m.shape[0]), (0, pw - m.shape[1])), mode="edge")
    codes = np.flatnonzero(np.bincount(m.ravel(), minlength=256))
    if len(codes) == 1:
        return np.full((th, tw), codes[0], dtype=np.uint8)
    if labelled_first:
        codes = codes[codes != IGNORE]
    best = np.zeros((th, tw), dtype=np.uint8)
    best_n = np.full((th, tw), -1, dtype=np.int32)
    for c in codes:
        n = (m == c).reshape(th, k, tw, k).sum(axis=(1, 3), dtype=np.int32)
        win = n > best_n
        best[win] = c
        best_n[win] = n[win]
    if labelled_first:
        best[best_n <= 0] = IGNORE  # no labelled pixel in the block
    return best


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample an RGB uint8 image to ``size = (width, height)`` (area for down, bilinear for up).

    Downsampling averages exact footprints (:func:`lumenkit.data.resample.area_resize`), so a mosaic resampled
    band by band gives the same pixels as the whole image.
    """
    h, w = image.shape[:2]
    if (w, h) == tuple(size):
        return image
    if size[0] <= w and size[1] <= h:
        return area_resize(image, (int(size[0]), int(size[1])))
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.Resampling.BILINEAR))


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or the nearest of its parents that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable(path: Path, err: OSError, option: str = "output path") -> OutputPathError:
    """The error for an output ``path`` whose writing failed with ``err``: one line, what is in the way, the fix."""
    where = _nearest_existing(path.parent)
    if not where.is_dir():
        msg = f"{path}: cannot be written, {where} is a file, not a folder; choose another {option}"
    elif path.is_dir():
        msg = f"{path}: is a folder, not a file; choose another {option}"
    else:
        msg = f"{path}: cannot be written ({err.strerror or err}); choose another {option} in a folder you can write to"
    return OutputPathError(msg, reason=err.strerror or str(err))


def check_writable(path: str | Path, folder: bool = True, option: str = "--out", beside: bool = False) -> Path:
    """Check, before any work, that an output folder (or file) can be written; leave nothing behind.

    The nearest existing folder on the way is probed with a temporary file (or folder, when folders are still to be
    made), removed at once; missing folders are not created. This catches, also for root (whom permission bits do not
    stop): an existing file where a folder is expected (or a folder where a file is), a path under a file, a
    read-only folder or file system, pseudo-file systems such as ``/proc``.

    Args:
        path: the output.
        folder: ``path`` is a folder to write into (else a file).
        option: how the caller names the output in the fix (``--out``, ``--save-masks``, ``out``).
        beside: the folder is built beside ``path`` and renamed into place (probe ``path``'s parent).

    Returns:
        ``path`` with ``~`` expanded.

    Raises:
        OutputPathError: ``path`` cannot be written; the message names it (or what is in its way) and the fix.
    """
    path = Path(path).expanduser()
    fix = f"choose another {option}"
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{path}: exists and is not a folder; {fix}")
    if not folder and path.is_dir():
        raise OutputPathError(f"{path}: is a folder, not a file; {fix}")
    target = path if folder and not beside else path.parent
    where = _nearest_existing(target)
    if not where.is_dir():
        raise OutputPathError(f"{path}: cannot be created, {where} is a file, not a folder; {fix}")
    try:
        if where == target:
            fd, probe = tempfile.mkstemp(prefix=".lumenkit-probe-", dir=where)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".lumenkit-probe-", dir=where))
    except OSError as e:
        raise OutputPathError(f"{path}: cannot write in {where} ({e.strerror or e}); {fix} in a folder you can "
                              "write to", reason=e.strerror or str(e)) from None
    return path


_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}
"""Write errors that come from where the file goes, not from what is written."""


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error delete it.

    Readers never see a half-written file, and an interrupted write leaves the previous file intact.

    Raises:
        OutputPathError: ``path`` cannot be written (a file where a folder is on its way, a read-only folder, a full
            disk or quota, also while the caller's block writes, an existing folder at ``path``); the message names
            it. Other errors of the caller's block pass unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _unwritable(path, e) from None
    try:
        os.close(fd)
        with open(tmp, mode) as f:  # by name, so writers that want the file's name (tifffile) get one
            try:
                yield f
            except OSError as e:
                if e.errno in _STORAGE_ERRORS:  # the disk, not the caller: a full disk or quota, a failing device
                    raise _unwritable(path, e) from None
                raise
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _unwritable(path, e) from None
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
            os.replace(tmp, path)
        except OSError as e:
            raise _unwritable(path, e) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_image(array: np.ndarray, path: str | Path, quality: int = 92) -> None:
    """Write a uint8 image or mask atomically; format from the suffix (JPEG ``quality`` 1–95).

    Args:
        array: ``(H, W, 3)`` RGB image or ``(H, W)`` mask; converted to uint8.
        path: the file; its suffix (``.jpg``/``.jpeg``, ``.png``, ``.tif``/``.tiff``) chooses the format, and its
            folders are made as needed.
        quality: JPEG quality 1–95 (ignored for PNG and TIFF).

    Raises:
        ValueError: ``path`` has another suffix.
        OutputPathError: ``path`` cannot be written (see :func:`atomic_write`); the message names it.
    """
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        path.suffix.lower()
    )
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix; use .jpg, .png or .tif")
    im = Image.fromarray(np.asarray(array, dtype=np.uint8))
    kw: dict[str, Any] = {"quality": quality, "subsampling": 0} if fmt == "JPEG" else {}
    with atomic_write(path) as f:
        im.save(f, format=fmt, **kw)


def read_yaml_mapping(path: str | Path, keys_hint: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file gives ``{}``).

    Args:
        path: the file.
        keys_hint: the keys expected, named in the error message.

    Raises:
        ConfigError: not valid YAML, or not a mapping.
    """
    import yaml

    from lumenkit.errors import ConfigError

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of keys ({keys_hint})")
    return dict(raw)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (UTF-8).

    Raises:
        OutputPathError: ``path`` cannot be written (see :func:`atomic_write`); the message names it.
    """
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (indented, UTF-8, NaN allowed as in Python's json).

    NumPy scalars and arrays and paths are written as numbers, lists and strings.

    Raises:
        TypeError: ``obj`` holds a value JSON cannot represent (nothing is written).
        OutputPathError: ``path`` cannot be written (see :func:`atomic_write`); the message names it.
    """
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_palette_mask(mask: np.ndarray, path: str | Path) -> None:
    """Write a mask as an 8-bit palette ("P" mode) PNG, atomically.

    Pixel values are the LumenStone codes unchanged (so :func:`read_mask` reads back the same array),
    and the PNG palette holds the catalogue's display colours (:data:`lumenkit.data.colours.PALETTE`;
    255 = ignore is white), so any image viewer shows the minerals in colour.

    Raises:
        ValueError: if ``path`` does not end in ``.png`` or ``mask`` is not 2-D.
        OutputPathError: ``path`` cannot be written (see :func:`atomic_write`); the message names it.
    """
    from lumenkit.data.colours import PALETTE

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: a palette mask must be a .png file")
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{path}: mask must be 2-D (H, W) class codes, got shape {arr.shape}")
    im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
    im.putpalette(PALETTE.astype(np.uint8).ravel().tolist(), rawmode="RGB")
    with atomic_write(path) as f:
        im.save(f, format="PNG", optimize=False)


LUT_FILE: str = "lumenstone.lut"
"""Name of the ImageJ/Fiji lookup table written beside masks (``lumenkit predict``, ``lumenkit convert --lut``)."""


def write_imagej_lut(path: str | Path) -> Path:
    """Write the catalogue colours as an ImageJ/Fiji binary ``.lut`` file (768 bytes), atomically.

    See :func:`lumenkit.data.colours.imagej_lut_bytes` for the format; in Fiji, *Image › Lookup Tables ›
    Open LUT…* on a mask of LumenStone codes (or the file dropped into ``Fiji.app/luts``) colours each mineral.

    Returns:
        The path written.

    Raises:
        OutputPathError: ``path`` cannot be written (see :func:`atomic_write`); the message names it.
    """
    from lumenkit.data.colours import imagej_lut_bytes

    path = Path(path)
    with atomic_write(path) as f:
        f.write(imagej_lut_bytes())
    return path
