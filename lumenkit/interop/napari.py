"""napari labels layers saved as images (PNG/TIFF) → LumenStone masks.

napari saves a labels layer as an integer image (``layer.save("labels.tif")``; 0 = no label). Either the
label values already are LumenStone codes (paint with the code as label value), or give a mapping from
label id to class (code, label or mineral name).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.errors import BadMaskError, UnknownClassError
from lumenkit.interop.geojson import class_code_for


def _read_int_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise BadMaskError(f"{path}: labels image does not exist")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as e:  # PIL/tifffile raise many types for unreadable files
        raise BadMaskError(f"{path}: not a readable labels image ({e}); save the layer as PNG or TIFF") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise BadMaskError(
            f"{path}: labels image must be a single 2-D integer plane, got shape {arr.shape} dtype {arr.dtype}; "
            "save one napari labels layer (not a screenshot or a 3-D stack)"
        )
    return arr


def mask_from_labels_image(path: str | Path, mapping: Mapping[int, int | str] | None = None) -> np.ndarray:
    """Read a napari labels layer saved as PNG/TIFF into ``(H, W)`` uint8 LumenStone codes.

    Args:
        path: the saved labels image.
        mapping: label id → class (LumenStone code, label such as ``"Ccp"`` or name such as ``"galena"``).
            Without it, values are taken as LumenStone codes (0–14, 255 = ignore). With it, label 0
            (napari's "no label") becomes 255 unless the mapping names it.

    Raises:
        BadMaskError: missing, unreadable, not a 2-D integer image.
        UnknownClassError: values that are not codes (no mapping) or label ids the mapping lacks.
    """
    path = Path(path)
    arr = _read_int_image(path)
    present = np.unique(arr)
    if mapping is None:
        bad = [int(v) for v in present if int(v) not in CATALOGUE and int(v) != IGNORE]
        if bad:
            raise UnknownClassError(
                f"{path}: values {bad[:10]} are not LumenStone codes (0–14, 255); "
                "pass mapping={label_id: class} to say which class each label is"
            )
        return arr.astype(np.uint8)
    codes: dict[int, int] = {0: IGNORE}
    for k, v in mapping.items():
        if isinstance(v, (int, np.integer)):
            if int(v) not in CATALOGUE and int(v) != IGNORE:
                raise UnknownClassError(f"{path}: mapping gives label {k} the unknown code {v}; valid codes are 0–14")
            codes[int(k)] = int(v)
        else:
            codes[int(k)] = class_code_for(str(v), f"{path}: mapping of label {k}")
    missing = [int(v) for v in present if int(v) not in codes]
    if missing:
        raise UnknownClassError(f"{path}: label ids {missing[:10]} are not in the mapping; add them to mapping")
    keys = np.array(sorted(codes), dtype=np.int64)
    vals = np.array([codes[k] for k in keys.tolist()], dtype=np.uint8)
    return vals[np.searchsorted(keys, arr.astype(np.int64))]
