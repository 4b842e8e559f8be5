"""Modal mineralogy in weight % and the calculated assay (element grades), as automated mineralogy reports them.

Stereology: on a random plane section through a rock whose texture is not oriented, the area fraction of a mineral
is an unbiased estimate of its volume fraction (Delesse's principle, 1847: A_A = V_V). Weight % follows from
volume % by multiplying by each mineral's density and normalising:

    w_i = 100 · A_i ρ_i / Σ_j A_j ρ_j

The calculated assay (QEMSCAN/MLA "calculated assay") is the grade of each element in weight % of the section,
from the weight % of the minerals and the mass fraction of the element in each mineral's ideal formula:

    grade_e = Σ_i w_i · f_{i,e}

Densities, formulas, atomic weights and their sources live in :mod:`lumenkit.data.catalogue`. Background (code 0:
gangue, resin, holes) carries weight (``gangue_density``, default 2.7 g/cm³, quartz/calcite) but no element: its
O, Si, Ca … are not reported, so grades are those of the listed elements in the whole section. With
``gangue_density=0`` weights and grades are on the basis of the ore minerals alone (a sulphide concentrate).
Pixels with code 255 (ignore) are skipped.

Example:
    >>> w = weight_percent({1: 100})           # a pure chalcopyrite section
    >>> round(float(calculated_assay(w)["Cu"]), 2)
    34.63
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lumenkit.data.catalogue import (
    ELEMENT_ORDER,
    GANGUE_DENSITY,
    IGNORE,
    Mineral,
    mass_fractions,
    mineral,
)
from lumenkit.errors import ConfigError, UnknownClassError
from lumenkit.mineralogy.analysis import modal_composition

Areas = Mapping[Any, float] | pd.Series | pd.DataFrame
"""Areas per mineral: a mapping code (or label) → area in any unit, or a ``modal_composition`` table."""

_AREA_COLUMNS = ("pixels", "area", "area_px", "area_um2", "area_pct")
BACKGROUND = 0


def _code(key: object, what: str) -> int | None:
    """LumenStone code of a mapping key (code or label); ``None`` for the ignore code 255."""
    if isinstance(key, (float, np.floating)) and float(key).is_integer():
        key = int(key)
    if isinstance(key, (int, np.integer)) and int(key) == IGNORE:
        return None
    try:
        return mineral(key if isinstance(key, (int, np.integer, str)) else str(key)).code
    except UnknownClassError as err:
        raise UnknownClassError(f"{what}: {err}; give areas per LumenStone code 0–14 or label (e.g. 'Ccp')") from None


def _area_series(areas: Areas) -> pd.Series:
    """Areas as a float Series indexed by LumenStone code (duplicates summed, 255 dropped), validated."""
    if isinstance(areas, pd.DataFrame):
        if "image" in areas and areas["image"].nunique() > 1:
            raise ConfigError(
                "areas hold several images; use weight_table()/assay_table() for one row per image, "
                "or select one image first"
            )
        col = next((c for c in _AREA_COLUMNS if c in areas), None)
        if "code" not in areas or col is None:
            raise ConfigError(
                f"areas table needs a 'code' column and one of {list(_AREA_COLUMNS)} (as modal_composition "
                f"returns); it has {list(areas.columns)}"
            )
        items = list(zip(areas["code"], areas[col]))
    elif isinstance(areas, (Mapping, pd.Series)):
        items = list(areas.items())
    else:
        raise ConfigError(
            f"areas must be a mapping code → area or a modal_composition table, not {type(areas).__name__}"
        )
    out: dict[int, float] = {}
    for key, value in items:
        code = _code(key, "areas")
        try:
            a = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"area of class {key!r} is {value!r}, not a number") from None
        if not np.isfinite(a) or a < 0:
            raise ConfigError(f"area of class {key!r} is {value!r}; areas must be finite and ≥ 0")
        if code is not None:
            out[code] = out.get(code, 0.0) + a
    if not out:
        raise ConfigError("no areas given: pass at least one class code with its area")
    return pd.Series(out, dtype=np.float64).sort_index()


def _densities(codes: list[int], gangue_density: float, densities: Mapping[Any, float] | None) -> pd.Series:
    g = float(gangue_density)
    if not np.isfinite(g) or g < 0:
        raise ConfigError(f"gangue_density = {gangue_density!r}; give a density ≥ 0 in g/cm³ (quartz 2.65)")
    over: dict[int, float] = {}
    for key, value in (densities or {}).items():
        code = _code(key, "densities")
        if code is None:
            continue
        try:
            d = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"density of class {key!r} is {value!r}, not a number in g/cm³") from None
        if not np.isfinite(d) or d < 0 or (d == 0 and code != BACKGROUND):
            raise ConfigError(f"density of class {key!r} is {value!r}; give a positive density in g/cm³")
        over[code] = d
    out = {}
    for c in codes:
        if c in over:
            out[c] = over[c]
        elif c == BACKGROUND:
            out[c] = g
        else:
            d = mineral(c).density
            if d is None:  # pragma: no cover - every catalogue mineral has a density
                raise ConfigError(f"no density for {mineral(c).label}; pass densities={{{c}: ...}}")
            out[c] = float(d)
    return pd.Series(out, dtype=np.float64)


def weight_percent(
    areas: Areas, gangue_density: float = GANGUE_DENSITY, densities: Mapping[Any, float] | None = None
) -> pd.DataFrame:
    """Modal mineralogy in area % (≈ volume %, Delesse) and weight % (volume % × density, normalised).

    Args:
        areas: mapping LumenStone code (or label) → area in any unit (px, µm², counts), or the table
            :func:`lumenkit.mineralogy.analysis.modal_composition` returns (columns ``code``, ``pixels``).
            Code 255 (ignore) is skipped.
        gangue_density: density of background (code 0: gangue, resin, holes) in g/cm³; 0 gives weights of the
            ore minerals alone.
        densities: overrides of catalogue densities, code or label → g/cm³ (e.g. ``{"Sph": 3.95}`` for
            Fe-rich sphalerite). A density given here for code 0 wins over ``gangue_density``.

    Returns:
        DataFrame indexed by mineral label with ``code``, ``area`` (as given), ``area_pct``, ``density``
        (g/cm³) and ``weight_pct``; both percentages sum to 100.

    Raises:
        UnknownClassError: a code or label that is not a LumenStone class.
        ConfigError: a negative or non-numeric area or density, or nothing with weight.
    """
    a = _area_series(areas)
    codes = [int(c) for c in a.index]
    rho = _densities(codes, gangue_density, densities)
    total_area = a.sum()
    if total_area <= 0:
        raise ConfigError("all areas are 0: nothing to weigh (is the mask all ignore, 255?)")
    mass = a * rho
    if mass.sum() <= 0:
        raise ConfigError(
            "the section has no weight: only background with gangue_density = 0; give a positive gangue_density"
        )
    df = pd.DataFrame(
        {
            "code": codes,
            "area": a.to_numpy(),
            "area_pct": (100.0 * a / total_area).to_numpy(),
            "density": rho.to_numpy(),
            "weight_pct": (100.0 * mass / mass.sum()).to_numpy(),
        },
        index=pd.Index([mineral(c).label for c in codes], name="mineral"),
    )
    return df


def _weights(weight_pct: pd.DataFrame | Mapping[Any, float] | pd.Series) -> pd.Series:
    if isinstance(weight_pct, pd.DataFrame):
        if "code" not in weight_pct or "weight_pct" not in weight_pct:
            raise ConfigError(
                "need the table weight_percent() returns (columns 'code', 'weight_pct'); "
                f"got {list(weight_pct.columns)}"
            )
        items = list(zip(weight_pct["code"], weight_pct["weight_pct"]))
    elif isinstance(weight_pct, (Mapping, pd.Series)):
        items = list(weight_pct.items())
    else:
        raise ConfigError(f"weight_pct must be a weight_percent() table or a mapping, not {type(weight_pct).__name__}")
    out: dict[int, float] = {}
    for key, value in items:
        code = _code(key, "weight_pct")
        w = float(value)
        if not np.isfinite(w) or w < 0:
            raise ConfigError(f"weight % of class {key!r} is {value!r}; weights must be finite and ≥ 0")
        if code is not None:
            out[code] = out.get(code, 0.0) + w
    return pd.Series(out, dtype=np.float64)


def _compositions(codes: list[int], compositions: Mapping[Any, Any] | None) -> dict[int, dict[str, float]]:
    over: dict[int, dict[str, float]] = {}
    for key, formula in (compositions or {}).items():
        code = _code(key, "compositions")
        if code is None:
            continue
        if isinstance(formula, Mineral):
            formula = dict(formula.elements)
        over[code] = mass_fractions(formula) if formula else {}
    return {c: over[c] if c in over else mineral(c).mass_fractions for c in codes}


def _order(elements: set[str]) -> list[str]:
    return [e for e in ELEMENT_ORDER if e in elements] + sorted(elements - set(ELEMENT_ORDER))


def element_deportment(
    weight_pct: pd.DataFrame | Mapping[Any, float], compositions: Mapping[Any, Any] | None = None
) -> pd.DataFrame:
    """Grade contribution of each mineral to each element, in weight % of the section.

    Rows: minerals (labels); columns: elements. Column sums are the calculated assay; dividing a column by its
    sum gives the element's deportment (share of the element held by each mineral). Arguments as for
    :func:`calculated_assay`.

    Raises:
        UnknownClassError: a code or label that is not a LumenStone class.
        ConfigError: ``weight_pct`` is neither a :func:`weight_percent` table nor a mapping, a weight % is negative
            or not finite, or a formula cannot be read or holds an element without an atomic weight.
    """
    w = _weights(weight_pct)
    codes = [int(c) for c in w.index]
    fr = _compositions(codes, compositions)
    elements = _order({e for c in codes for e in fr[c]})
    m = np.array([[w[c] * fr[c].get(e, 0.0) for e in elements] for c in codes], dtype=np.float64)
    return pd.DataFrame(
        m.reshape(len(codes), len(elements)),
        index=pd.Index([mineral(c).label for c in codes], name="mineral"),
        columns=pd.Index(elements, name="element"),
    )


def calculated_assay(
    weight_pct: pd.DataFrame | Mapping[Any, float], compositions: Mapping[Any, Any] | None = None
) -> pd.Series:
    """Element grades in weight % of the section: Σ over minerals of weight % × element mass fraction.

    Args:
        weight_pct: the table :func:`weight_percent` returns, or a mapping code (or label) → weight %.
        compositions: overrides of the catalogue's ideal formulas, code or label → a formula string with
            explicit counts (``"Cu12Sb4S13"``), a mapping element → atoms per formula unit, or a
            :class:`~lumenkit.data.catalogue.Mineral` (e.g. from ``tennantite_tetrahedrite(1.0)``; pass its
            density to :func:`weight_percent` as well).

    Returns:
        Series ``grade_pct`` indexed by element (payable metals first, then S, O): every element of the minerals
        given, 0 where their weight is 0. Background contributes weight but no element.

    Raises:
        UnknownClassError: a code or label that is not a LumenStone class.
        ConfigError: a formula that cannot be read or holds an element without an atomic weight.
    """
    s = element_deportment(weight_pct, compositions).sum(axis=0)
    s.name = "grade_pct"
    return s


Section = Areas | np.ndarray


def _sections(sections: Mapping[str, Section] | pd.DataFrame) -> list[tuple[str, Areas]]:
    if isinstance(sections, pd.DataFrame):
        if "image" not in sections:
            raise ConfigError("a table of several sections needs an 'image' column (as image_summary returns)")
        return [(str(name), g) for name, g in sections.groupby("image", sort=False)]
    out = []
    for name, sec in sections.items():
        out.append((str(name), modal_composition(sec) if isinstance(sec, np.ndarray) else sec))
    return out


def weight_table(
    sections: Mapping[str, Section] | pd.DataFrame,
    gangue_density: float = GANGUE_DENSITY,
    densities: Mapping[Any, float] | None = None,
) -> pd.DataFrame:
    """Weight % of many sections, tidy: one row per image × mineral.

    Args:
        sections: mapping image name → mask (``(H, W)`` LumenStone codes) or areas (as for
            :func:`weight_percent`), or a long table with ``image``, ``code``, ``pixels`` (``image_summary``).
        gangue_density: density of background in g/cm³, as for :func:`weight_percent`.
        densities: overrides of catalogue densities, as for :func:`weight_percent`.

    Returns:
        DataFrame with ``image``, ``mineral``, ``code``, ``area``, ``area_pct``, ``density``, ``weight_pct``.

    Raises:
        UnknownClassError: a code or label (or a mask's code) that is not a LumenStone class.
        ConfigError: a long table without an ``image`` column; or, as for :func:`weight_percent`, a section's
            negative or non-numeric area or density, or a section with nothing with weight.
    """
    frames = []
    for name, areas in _sections(sections):
        df = weight_percent(areas, gangue_density, densities).reset_index()
        df.insert(0, "image", name)
        frames.append(df)
    cols = ["image", "mineral", "code", "area", "area_pct", "density", "weight_pct"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def assay_table(
    sections: Mapping[str, Section] | pd.DataFrame,
    gangue_density: float = GANGUE_DENSITY,
    densities: Mapping[Any, float] | None = None,
    compositions: Mapping[Any, Any] | None = None,
) -> pd.DataFrame:
    """Calculated assay of many sections, tidy: one row per image × element with ``grade_pct``.

    Arguments as for :func:`weight_table` and :func:`calculated_assay`.

    Raises:
        UnknownClassError: a code or label (or a mask's code) that is not a LumenStone class.
        ConfigError: a long table without an ``image`` column; as for :func:`weight_percent`, a section's negative
            or non-numeric area or density, or a section with nothing with weight; or a composition formula that
            cannot be read or holds an element without an atomic weight.
    """
    frames = []
    for name, areas in _sections(sections):
        s = calculated_assay(weight_percent(areas, gangue_density, densities), compositions)
        frames.append(pd.DataFrame({"image": name, "element": s.index, "grade_pct": s.to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image", "element", "grade_pct"])
