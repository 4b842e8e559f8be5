"""Grains as QuPath-readable GeoJSON, and QuPath annotations back to LumenStone masks.

Format followed: QuPath's GeoJSON as described in the QuPath documentation page *Exporting annotations*
(qupath.readthedocs.io, docs/advanced/exporting_annotations, v0.4–0.5: coordinates in pixel units with the
origin (0, 0) at the top-left corner of the full-resolution image; a ``FeatureCollection`` carries the
classification) and as read by QuPath's ``PathObjectTypeAdapters`` (v0.4+): each feature's ``properties``
holds ``objectType`` (``"annotation"`` or ``"detection"``), ``classification`` = ``{"name", "color": [r, g, b]}``
and ``measurements`` = ``{name: number}``.

**Export.** A grain is a connected component (8-connectivity, as in :mod:`lumenkit.mineralogy`) of one
non-background class (codes other than 0 and 255). Its outline is traced exactly along pixel edges: pixel
``(row, col)`` is the square ``[col, col+1] × [row, row+1]`` (x right, y down, pixel corners on integer
coordinates, which is how QuPath places pixels). Tracing is a vectorised edge-linking pass over the whole
label image (every pixel edge between different grains becomes a directed edge, each edge's successor is
found from the 2×2 neighbourhood at its end vertex, and rings are read off the resulting permutation), so
the cost is linear in the number of boundary edges and independent of the number of grains — exact (areas
equal pixel counts) and fast enough for thousands of grains, unlike unioning pixel squares with shapely
(exact but slow) or ``skimage.measure.find_contours`` (sub-pixel iso-lines through pixel centres, neither
exact nor closed at the image border). Rings are traced around the 4-connected pieces of each grain: a piece's
interior is connected, so its shell and holes form a valid ``Polygon`` (a ring that touches itself at a corner is
split there, so rings are simple; holes touching their shell or each other at a point stay holes), and the pieces of
a grain, which touch only at corners, form a valid ``MultiPolygon`` — valid for shapely/GEOS by construction, with
no hole-to-shell search and no ``make_valid``. Only collinear vertices are dropped.

**Import.** Each areal feature (Polygon/MultiPolygon) with a classification is burnt into the mask in file
order (a later feature overwrites an earlier one where they overlap). Rasterisation rule: a pixel belongs to a
polygon iff its centre ``(col + 0.5, row + 0.5)`` lies strictly inside it (``shapely.contains_xy``), so the
outlines written by :func:`mask_to_geojson` come back pixel for pixel. Unclassified features and points/lines are
skipped. Invalid (e.g. self-intersecting) polygons are refused with a one-line :class:`ConfigError` unless
``repair=True``, which repairs them with ``shapely.make_valid`` (keeping the polygonal part) — refusing is the
default because a bow-tie drawn by mistake has no single right interpretation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape

from lumenkit.data.catalogue import CATALOGUE, IGNORE
from lumenkit.data.imageio import write_text
from lumenkit.errors import ConfigError, UnknownClassError

__all__ = [
    "class_code_for",
    "geojson_to_mask",
    "mask_to_geojson",
    "read_geojson_mask",
    "trace_grains",
    "write_grains_geojson",
]

# direction codes: 0 = +x (right), 1 = +y (down), 2 = -x (left), 3 = -y (up); y grows downwards
_DI = np.array([0, 1, 0, -1])
_DJ = np.array([1, 0, -1, 0])


def _grain_pieces(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grains of a mask (8-connected components of each class except 0 and 255), from one labelling pass.

    Returns:
        ``(pieces, grain, codes)``: the 4-connected pieces of each class (int32 labels, 0 = no grain), the grain of
        each piece (``grain[0] = 0``; grains numbered 1… in raster order of their first pixel, as
        ``skimage.measure.label(..., connectivity=2)`` numbers them) and the class code of each grain.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.measure import label

    m = np.asarray(mask, dtype=np.uint8)
    fg = np.where((m == 0) | (m == IGNORE), 0, m)
    pieces = label(fg, background=0, connectivity=1).astype(np.int32)
    n = int(pieces.max(initial=0))
    code = np.zeros(n + 1, dtype=np.uint8)
    code[pieces.ravel()] = fg.ravel()
    # pieces of one class meeting at a corner are one grain (8-connectivity)
    pairs = []
    for x, y in ((pieces[:-1, :-1], pieces[1:, 1:]), (pieces[:-1, 1:], pieces[1:, :-1])):
        hit = (x != y) & (x > 0) & (y > 0)
        a, b = x[hit], y[hit]
        same = code[a] == code[b]
        pairs.append((a[same], b[same]))
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    _, comp = connected_components(coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n + 1, n + 1)),
                                   directed=False)
    _, first = np.unique(comp[1:], return_index=True)  # number grains by their first piece (raster order)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(1, first.size + 1)
    grain = np.concatenate([[0], rank[np.unique(comp[1:], return_inverse=True)[1]]])
    codes = np.zeros(first.size + 1, dtype=np.uint8)
    codes[grain] = code
    return pieces, grain, codes


def _split_ring(ring: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a closed ring that passes a vertex more than once into simple rings."""
    out: list[list[tuple[int, int]]] = []
    stack: list[tuple[int, int]] = []
    pos: dict[tuple[int, int], int] = {}
    for p in ring:
        k = pos.get(p)
        if k is None:
            pos[p] = len(stack)
            stack.append(p)
        else:
            sub = stack[k:]
            out.append(sub)
            for q in sub[1:]:
                del pos[q]
            del stack[k + 1 :]
    out.append(stack)
    return [r for r in out if len(r) >= 4]


def trace_grains(labels: np.ndarray) -> dict[int, Polygon | MultiPolygon]:
    """Exact pixel-edge outlines of every labelled region (label > 0) of an integer label image.

    Returns:
        ``{label: Polygon or MultiPolygon}`` in pixel coordinates (x = column, y = row, corners on
        integers); each geometry is valid and its area equals the region's pixel count.
    """
    from skimage.measure import label

    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        lab = lab.astype(np.int64)
    if lab.dtype.kind == "i" and lab.size and lab.min() < 0:
        lab = np.where(lab > 0, lab, 0)
    pieces = label(lab, background=0, connectivity=1).astype(np.int32)
    region = np.zeros(int(pieces.max(initial=0)) + 1, dtype=np.int64)
    region[pieces.ravel()] = lab.ravel()
    return _trace_pieces(pieces, region)


def _trace_pieces(pieces: np.ndarray, region: np.ndarray) -> dict[int, Polygon | MultiPolygon]:
    """Outlines of the regions made of 4-connected ``pieces`` (int32 labels 1…n): ``{region[piece]: geometry}``.

    Rings are traced around the pieces: a piece's interior is connected, so its shell and holes make a valid
    Polygon (rings that touch themselves at a corner are split there); a region's pieces touch only at corners, so
    together they make a valid MultiPolygon — no hole-to-shell search, no make_valid.
    """
    n = region.size - 1
    if n == 0:
        return {}
    h, w = pieces.shape
    ww, nv = w + 1, (h + 1) * (w + 1)
    p = np.pad(pieces, 1)
    a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]  # TL, TR, BL, BR of each vertex
    own = (d, c, a, b)  # owner (piece on the right of travel) of the out-edge in each direction
    other = (b, d, c, a)
    flat = [np.flatnonzero((own[k] > 0) & (own[k] != other[k])) for k in range(4)]
    ids = np.concatenate([f + k * nv for k, f in enumerate(flat)])  # sorted: by direction, then vertex
    dirs = np.repeat(np.arange(4), [f.size for f in flat])
    vi = np.concatenate(flat) // ww
    vj = np.concatenate(flat) % ww
    g = np.concatenate([own[k][f // ww, f % ww] for k, f in enumerate(flat)])
    i2 = vi + _DI[dirs]
    j2 = vj + _DJ[dirs]
    ne = ids.size
    nxt = np.full(ne, -1, dtype=np.int64)
    for turn in (-1, 0, 1):  # left turn first: diagonal pixels of one piece stay joined
        todo = np.flatnonzero(nxt < 0)
        cd = (dirs[todo] + turn) % 4
        key = cd * nv + i2[todo] * ww + j2[todo]
        pos = np.minimum(np.searchsorted(ids, key), ne - 1)
        ok = (ids[pos] == key) & (g[pos] == g[todo])
        nxt[todo[ok]] = pos[ok]
    # keep only corners (edges whose direction differs from the previous edge's); the rest are collinear
    prev = np.empty_like(nxt)
    prev[nxt] = np.arange(ne)
    corner = dirs != dirs[prev]
    nc = nxt.copy()  # next corner after each edge, by pointer doubling along the straight runs
    while True:
        pending = np.flatnonzero(~corner[nc])
        if pending.size == 0:
            break
        nc[pending] = nc[nc[pending]]
    cs = np.flatnonzero(corner)
    rank = np.empty(ne, dtype=np.int64)
    rank[cs] = np.arange(cs.size)
    succ = rank[nc[cs]].tolist()
    seen = bytearray(cs.size)
    order: list[int] = []
    starts: list[int] = []
    for s in range(cs.size):  # each ring starts at its first corner in raster order of (direction, vertex)
        if seen[s]:
            continue
        starts.append(len(order))
        e = s
        while not seen[e]:
            seen[e] = 1
            order.append(e)
            e = succ[e]
    o = cs[np.asarray(order, dtype=np.int64)]
    xs, ys = vj[o], vi[o]
    lengths = np.diff(np.asarray([*starts, o.size]))
    ring = np.repeat(np.arange(len(starts)), lengths)
    owner = g[o][starts]
    xy, ring, owner = _simple_rings(np.column_stack([xs, ys]).astype(np.float64), ring, owner, nv, ww)
    rings = shapely.linearrings(xy, indices=ring)
    hole = ~shapely.is_ccw(rings)
    srt = np.lexsort((np.arange(rings.size), hole, owner))  # per piece: its shell, then its holes in ring order
    polys = shapely.polygons(rings[srt], indices=owner[srt] - 1)
    by_region = np.argsort(region[1:], kind="stable")
    regs, first, count = np.unique(region[1:][by_region], return_index=True, return_counts=True)
    out: dict[int, Polygon | MultiPolygon] = {}
    multi = count > 1
    if multi.any():
        sel = np.repeat(multi, count)
        grp = np.repeat(np.arange(multi.sum()), count[multi])
        for r, geom in zip(regs[multi].tolist(), shapely.multipolygons(polys[by_region[sel]], indices=grp)):
            out[r] = geom
    for r, k in zip(regs[~multi].tolist(), by_region[first[~multi]].tolist()):
        out[r] = polys[k]
    return dict(sorted(out.items()))


def _simple_rings(
    xy: np.ndarray, ring: np.ndarray, owner: np.ndarray, nv: int, ww: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split the rings that pass a vertex twice (pixels of a piece touching at a corner) into simple rings.

    ``xy`` holds every ring's corners in order and ``ring`` the ring of each; returns the same for the simple
    rings (numbered in order, split parts in place of their ring) and the owner of each ring.
    """
    key = ring * nv + (xy[:, 1] * ww + xy[:, 0]).astype(np.int64)
    sk = np.sort(key)
    bad = np.unique(sk[1:][sk[1:] == sk[:-1]] // nv)
    if bad.size == 0:
        return xy, ring, owner
    keep = ~np.isin(ring, bad)
    parts_xy = [xy[keep]]
    parts_key = [ring[keep] * (ring.size + 1)]  # order: the ring's place, then the part's place within the ring
    for r in bad.tolist():
        pts = [(int(x), int(y)) for x, y in xy[ring == r].tolist()]
        for k, q in enumerate(_split_ring(pts)):
            parts_xy.append(np.asarray(q, dtype=np.float64))
            parts_key.append(np.full(len(q), r * (ring.size + 1) + k + 1))
    xy2 = np.concatenate(parts_xy)
    key2 = np.concatenate(parts_key)
    srt = np.argsort(key2, kind="stable")
    used, ring2 = np.unique(key2[srt], return_inverse=True)
    return xy2[srt], ring2, owner[used // (ring.size + 1)]


def _polygonal(geom: Any) -> Polygon | MultiPolygon:
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys: list[Polygon] = []
    for part in getattr(geom, "geoms", []):
        if isinstance(part, Polygon):
            polys.append(part)
        elif isinstance(part, MultiPolygon):
            polys.extend(part.geoms)
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def mask_to_geojson(
    mask: np.ndarray,
    *,
    object_type: str = "detection",
    pixel_size_um: float | None = None,
    name_style: str = "label",
    min_area_px: int = 1,
) -> dict[str, Any]:
    """Grains of a mask as a QuPath GeoJSON ``FeatureCollection`` (a dict ready for ``json.dump``).

    Args:
        mask: ``(H, W)`` LumenStone codes; 0 (background) and 255 (ignore) make no grains.
        object_type: QuPath object type, ``"detection"`` (many grains, light to display) or ``"annotation"``
            (editable; use it to correct predictions in QuPath and import them back).
        pixel_size_um: if given, measurements in µm are added beside the pixel ones.
        name_style: ``"label"`` (e.g. ``"Ccp"``) or ``"name"`` (``"chalcopyrite"``) as QuPath class name.
        min_area_px: grains smaller than this are left out.

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``; each feature has a Polygon/MultiPolygon in
        full-image pixel coordinates and ``properties`` = ``objectType``, ``classification``
        (``name``, ``color``) and ``measurements`` (``Class code``, ``Area px``, ``Perimeter px``, and
        ``Area µm^2``, ``Perimeter µm`` when the pixel size is known).

    Raises:
        ValueError: ``object_type`` is not ``"detection"`` or ``"annotation"``, or ``name_style`` not ``"label"`` or
            ``"name"``.
    """
    if object_type not in ("detection", "annotation"):
        raise ValueError(f"object_type must be 'detection' or 'annotation', got {object_type!r}")
    if name_style not in ("label", "name"):
        raise ValueError(f"name_style must be 'label' or 'name', got {name_style!r}")
    pieces, grain, codes = _grain_pieces(mask)
    counts = np.bincount(grain, weights=np.bincount(pieces.ravel(), minlength=grain.size), minlength=codes.size)
    counts = counts.astype(np.int64)
    geoms = _trace_pieces(pieces, grain)
    features = []
    for gid in sorted(geoms):
        if counts[gid] < min_area_px:
            continue
        geom = geoms[gid]
        code = int(codes[gid])
        m = CATALOGUE.get(code)
        name = (m.label if name_style == "label" else m.name) if m else f"code {code}"
        colour = list(m.colour) if m else [128, 128, 128]
        perim = float(geom.length)
        meas: dict[str, float] = {"Class code": code, "Area px": int(counts[gid]), "Perimeter px": perim}
        if pixel_size_um is not None:
            meas["Area µm^2"] = float(counts[gid]) * pixel_size_um**2
            meas["Perimeter µm"] = perim * pixel_size_um
        features.append(
            {
                "type": "Feature",
                "geometry": mapping(geom),
                "properties": {
                    "objectType": object_type,
                    "classification": {"name": name, "color": colour},
                    "measurements": meas,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_grains_geojson(mask: np.ndarray, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`mask_to_geojson` to ``path`` atomically (``.geojson``); keyword arguments are passed on.

    The JSON is compact (no indentation): a native-size section's grains are megabytes of coordinates, and Python's
    json module encodes indented output several times slower.

    Args:
        mask: ``(H, W)`` LumenStone codes, as for :func:`mask_to_geojson`.
        path: the ``.geojson`` file; its folders are made as needed.
        **kwargs: keyword arguments of :func:`mask_to_geojson` (``object_type``, ``pixel_size_um``, ``name_style``,
            ``min_area_px``).

    Returns:
        ``path``.

    Raises:
        ValueError: a bad ``object_type`` or ``name_style`` (see :func:`mask_to_geojson`); nothing is written.
        OutputPathError: ``path`` cannot be written; the message names it.
    """
    path = Path(path)
    fc = mask_to_geojson(mask, **kwargs)
    write_text(path, json.dumps(fc, separators=(",", ":")) + "\n")
    return path


def _norm(s: str) -> str:
    return " ".join(s.replace("–", "-").replace("—", "-").lower().split())


def _class_names() -> dict[str, int]:
    names: dict[str, int] = {}
    for code, m in CATALOGUE.items():
        names[_norm(m.label)] = code
        names[_norm(m.name)] = code
        names[_norm(m.name.split(" (")[0])] = code
    return names


def class_code_for(name: str, source: str = "GeoJSON") -> int:
    """LumenStone code of a QuPath class name: the catalogue's labels and names, case-insensitively.

    Raises:
        UnknownClassError: naming ``source``, the name and the valid names.
    """
    code = _class_names().get(_norm(str(name)))
    if code is None:
        valid = ", ".join(f"{m.label} / {m.name.split(' (')[0]}" for m in CATALOGUE.values())
        raise UnknownClassError(f"{source}: unknown class name {name!r}; rename the class in QuPath to one of: {valid}")
    return code


def _features(obj: Any, source: str) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        if obj.get("type") == "FeatureCollection" and isinstance(obj.get("features"), list):
            return obj["features"]
        if obj.get("type") == "Feature":
            return [obj]
    raise ConfigError(f"{source}: not a GeoJSON FeatureCollection, Feature or list of features")


def _class_name(props: Mapping[str, Any]) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, Mapping):
        n = cls.get("name")
        return None if n is None else str(n)
    if isinstance(cls, str):
        return cls
    return None


def geojson_to_mask(
    geojson: Mapping[str, Any] | list[Any],
    size: tuple[int, int],
    *,
    source: str = "GeoJSON",
    repair: bool = False,
) -> np.ndarray:
    """Burn classified QuPath objects into a LumenStone mask of ``size = (width, height)``.

    Unannotated pixels are 255 (ignore). See the module docstring for the rasterisation rule.

    Raises:
        UnknownClassError: a class name not in the catalogue (names the source, the name, the valid names).
        ConfigError: malformed GeoJSON, or an invalid (e.g. self-intersecting) polygon when ``repair`` is false.
    """
    w, h = int(size[0]), int(size[1])
    out = np.full((h, w), IGNORE, dtype=np.uint8)
    for k, feat in enumerate(_features(geojson, source)):
        if not isinstance(feat, Mapping):
            raise ConfigError(f"{source}: feature {k} is not a GeoJSON object")
        props = feat.get("properties") or {}
        ident = f"feature {k}" + (f" (id {feat['id']})" if feat.get("id") else "")
        if props.get("name"):
            ident += f" named {props['name']!r}"
        name = _class_name(props)
        if name is None:
            continue
        code = class_code_for(name, f"{source}: {ident}")
        gj = feat.get("geometry")
        if not isinstance(gj, Mapping) or gj.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        try:
            geom = shape(gj)
        except Exception as e:  # shapely raises several types for malformed coordinates
            raise ConfigError(f"{source}: {ident} has malformed coordinates ({e})".replace("\n", " ")) from None
        if geom.is_empty:
            continue
        if not shapely.is_valid(geom):
            if not repair:
                reason = shapely.is_valid_reason(geom)
                raise ConfigError(
                    f"{source}: {ident} (class {name!r}) is not a valid polygon ({reason}); "
                    "redraw it without self-intersections, or pass repair=True to fix it with shapely.make_valid"
                )
            geom = _polygonal(shapely.make_valid(geom))
            if geom.is_empty:
                continue
        _burn(out, geom, code)
    return out


def _burn(out: np.ndarray, geom: Any, code: int) -> None:
    h, w = out.shape
    x0, y0, x1, y1 = geom.bounds
    c0, c1 = max(0, int(np.floor(x0 - 0.5))), min(w, int(np.ceil(x1 - 0.5)) + 1)
    r0, r1 = max(0, int(np.floor(y0 - 0.5))), min(h, int(np.ceil(y1 - 0.5)) + 1)
    if c0 >= c1 or r0 >= r1:
        return
    shapely.prepare(geom)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    inside = shapely.contains_xy(geom, xx + 0.5, yy + 0.5)
    out[r0:r1, c0:c1][inside] = code


def read_geojson_mask(path: str | Path, size: tuple[int, int], *, repair: bool = False) -> np.ndarray:
    """Read a QuPath-exported GeoJSON file into a LumenStone mask of ``size = (width, height)``.

    Raises:
        ConfigError: missing file, not JSON, not GeoJSON, or an invalid polygon (see :func:`geojson_to_mask`).
        UnknownClassError: a class name not in the catalogue.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: GeoJSON file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); export it again from QuPath as GeoJSON") from None
    return geojson_to_mask(obj, size, source=str(path), repair=repair)
