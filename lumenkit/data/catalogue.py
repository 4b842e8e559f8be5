"""Mineral catalogue: LumenStone class codes, class sets and the code ↔ model-index mapping.

Each mineral also carries what automated mineralogy needs to turn areas into weights and grades: its density in
g/cm³ and its ideal formula (with explicit element counts), each with its source — see :data:`PHYSICAL_SOURCES`,
:data:`ATOMIC_WEIGHTS` and :func:`mass_fractions`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lumenkit.errors import ConfigError, UnknownClassError

IGNORE: int = 255
"""Mask value for void / unlabelled pixels (LumenStone's own); ignored by losses and metrics."""


@dataclass(frozen=True)
class Mineral:
    """One LumenStone class.

    Attributes:
        code: LumenStone class code stored in the mask PNGs (0–14).
        label: short label used in tables (the paper's, e.g. ``"Py/Mrc"``).
        name: mineral name in plain English.
        colour: display colour as an ``(r, g, b)`` tuple of 0–255 integers.
        reflectance: approximate reflectance in air at ≈546 nm, in percent.
        impression: colour impression under plane-polarised reflected light.
        density: density in g/cm³ (``None`` when unknown).
        formula: ideal formula as mineralogists write it (e.g. ``"(Fe,Ni)9S8"``); display only.
        elements: atoms per formula unit used for element grades, as ``(("Fe", 4.5), ("Ni", 4.5), ("S", 8))``;
            empty for background (no metal counted).
        density_source: where the density comes from.
        formula_source: where the formula comes from and which composition was chosen for a series or mixture.
    """

    code: int
    label: str
    name: str
    colour: tuple[int, int, int]
    reflectance: float
    impression: str
    density: float | None = None
    formula: str = ""
    elements: tuple[tuple[str, float], ...] = ()
    density_source: str = ""
    formula_source: str = ""

    @property
    def hex(self) -> str:
        """Display colour as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.colour)

    @property
    def mass_fractions(self) -> dict[str, float]:
        """Element mass fractions (0–1) of the ideal formula; empty for background."""
        return mass_fractions(dict(self.elements)) if self.elements else {}


_MINERALS: tuple[Mineral, ...] = (
    Mineral(0, "BG", "background (gangue, resin, holes)", (40, 40, 48), 5.0, "dark grey; holes black"),
    Mineral(1, "Ccp", "chalcopyrite", (238, 200, 30), 44.0, "brass yellow, soft"),
    Mineral(2, "Gl", "galena", (150, 200, 255), 43.0, "pure white, triangular cleavage pits"),
    Mineral(3, "Mag", "magnetite", (110, 85, 140), 20.0, "grey with brownish tint"),
    Mineral(4, "Brt", "bornite", (230, 110, 60), 21.0, "pinkish-brown to orange, tarnishes purple-blue"),
    Mineral(5, "Po", "pyrrhotite", (200, 140, 170), 38.0, "cream with pinkish-brown tint"),
    Mineral(6, "Py/Mrc", "pyrite (with marcasite in S1)", (250, 245, 170), 54.0, "pale cream-yellow, high relief"),
    Mineral(7, "Pn", "pentlandite", (255, 160, 0), 50.0, "light cream, flames in pyrrhotite"),
    Mineral(8, "Sph", "sphalerite", (120, 130, 120), 17.0, "grey, internal reflections, low relief"),
    Mineral(9, "Apy", "arsenopyrite", (235, 235, 235), 51.0, "white with faint cream, rhombic sections"),
    Mineral(10, "Hem", "hematite", (90, 120, 200), 27.0, "grey-white with bluish tint"),
    Mineral(11, "Tnt/Ttr", "tennantite–tetrahedrite", (60, 170, 110), 30.0, "grey with olive or brownish tint"),
    Mineral(12, "Cv", "covellite", (30, 60, 220), 15.0, "deep blue to bluish white, bireflectant"),
    Mineral(13, "Mrc", "marcasite", (200, 230, 120), 49.0, "creamy white, anisotropic, laths"),
    Mineral(14, "Au", "native gold", (255, 215, 0), 47.0, "bright golden yellow"),
)

# --- Atomic weights, densities and formulas (for weight % and the calculated assay) --------------------------------

ATOMIC_WEIGHTS: dict[str, float] = {
    "O": 15.999,
    "S": 32.06,
    "Fe": 55.845,
    "Ni": 58.693,
    "Cu": 63.546,
    "Zn": 65.38,
    "As": 74.922,
    "Ag": 107.87,
    "Sb": 121.76,
    "Au": 196.97,
    "Pb": 207.2,
}
"""Standard atomic weights (g/mol) of the elements in the catalogue's formulas.

IUPAC abridged standard atomic weights, 2021 (Prohaska et al., Pure Appl. Chem. 94, 573–600, 2022, table 2,
five significant figures; the conventional values for the interval elements O [15.999] and S [32.06]; Pb 207.2,
the abridged value of its interval [206.14, 207.94]). Add an element here before using it in a formula.
"""

ELEMENT_ORDER: tuple[str, ...] = ("Cu", "Pb", "Zn", "Ni", "Fe", "As", "Sb", "Au", "Ag", "S", "O")
"""Order in which element grades are reported: payable metals first, then S and O."""

HOM = "Handbook of Mineralogy (Anthony, Bideaux, Bladh & Nichols, Mineralogical Society of America)"

PHYSICAL_SOURCES: dict[str, str] = {
    "density": (
        f"{HOM}, data sheet of each mineral: D(calc.) for the ideal end member where the sheet gives it, else the "
        "middle of the D(meas.) range (stated per mineral); g/cm³"
    ),
    "formula": f"{HOM} and the IMA list of minerals; ideal (end-member) formulas, choices for series stated",
    "atomic_weights": "IUPAC 2021 abridged standard atomic weights (see ATOMIC_WEIGHTS)",
}
"""Where the densities, formulas and atomic weights of the catalogue come from."""

GANGUE_DENSITY: float = 2.7
"""Default density of background / gangue in g/cm³: between quartz (2.65) and calcite (2.71), the common gangue
minerals. Background in LumenStone also holds resin (≈1.1–1.2) and holes (0); pass another value where the
gangue is known (e.g. barite 4.5, siderite 3.9), or 0 to report weights of the ore minerals alone."""

TNT_TTR_SB_FRACTION: float = 0.5
"""Default Sb/(As+Sb) of the tennantite–tetrahedrite class: the midpoint of the series.

See :func:`tennantite_tetrahedrite`."""

TENNANTITE_DENSITY, TETRAHEDRITE_DENSITY = 4.62, 4.97
"""End-member densities (g/cm³), HoM D(meas.) of tennantite Cu12As4S13 and tetrahedrite Cu12Sb4S13."""

# code: (density g/cm³, density source, formula as written, element counts used, formula note)
_PHYSICAL: dict[int, tuple[float, str, str, dict[str, float], str]] = {
    0: (
        GANGUE_DENSITY,
        "quartz 2.65 – calcite 2.71 (HoM); a parameter of the assay",
        "",
        {},
        "gangue, resin and holes: no element counted",
    ),
    1: (4.18, "HoM D(calc.) 4.180 (meas. 4.1–4.3)", "CuFeS2", {"Cu": 1, "Fe": 1, "S": 2}, "ideal"),
    2: (7.60, "HoM D(calc.) 7.60 (meas. 7.58)", "PbS", {"Pb": 1, "S": 1}, "ideal"),
    3: (5.20, "HoM D(calc.) 5.20 (meas. 5.175)", "Fe3O4", {"Fe": 3, "O": 4}, "ideal"),
    4: (5.09, "HoM D(calc.) 5.09 (meas. 5.06–5.08)", "Cu5FeS4", {"Cu": 5, "Fe": 1, "S": 4}, "ideal"),
    5: (
        4.61,
        "HoM D(meas.) 4.58–4.65, middle",
        "Fe1-xS",
        {"Fe": 7, "S": 8},
        "Fe(1-x)S with x = 0–0.17; Fe7S8 (monoclinic 4C pyrrhotite) taken",
    ),
    6: (
        5.01,
        "HoM D(calc.) 5.013 for pyrite (marcasite 4.875 differs by 3 %)",
        "FeS2",
        {"Fe": 1, "S": 2},
        "pyrite and marcasite are both FeS2: same composition; density of pyrite, the dominant phase",
    ),
    7: (
        4.96,
        "HoM D(calc.) 4.956 (meas. 4.6–5.0)",
        "(Fe,Ni)9S8",
        {"Fe": 4.5, "Ni": 4.5, "S": 8},
        "Fe:Ni = 1:1 taken, Fe4.5Ni4.5S8 (natural Ni/Fe ≈ 0.9–1.2)",
    ),
    8: (
        4.10,
        "HoM D(calc.) 4.096 for ZnS (Fe-rich sphalerite ≈ 3.9–4.0)",
        "ZnS",
        {"Zn": 1, "S": 1},
        "ideal ZnS (Fe, Cd, Mn substitution ignored)",
    ),
    9: (6.07, "HoM D(meas.) 6.07", "FeAsS", {"Fe": 1, "As": 1, "S": 1}, "ideal"),
    10: (5.26, "HoM D(calc.) 5.255 (meas. 5.26)", "Fe2O3", {"Fe": 2, "O": 3}, "ideal"),
    11: (
        round((1 - TNT_TTR_SB_FRACTION) * TENNANTITE_DENSITY + TNT_TTR_SB_FRACTION * TETRAHEDRITE_DENSITY, 3),
        "linear between HoM D(meas.) tennantite 4.62 and tetrahedrite 4.97 at Sb/(As+Sb) = 0.5",
        "Cu12(As,Sb)4S13",
        {"Cu": 12, "As": 4 * (1 - TNT_TTR_SB_FRACTION), "Sb": 4 * TNT_TTR_SB_FRACTION, "S": 13},
        "midpoint of the tennantite Cu12As4S13 – tetrahedrite Cu12Sb4S13 series, Cu12As2Sb2S13 "
        "(Zn, Fe, Ag substitution for Cu ignored); override with tennantite_tetrahedrite()",
    ),
    12: (4.68, "HoM D(calc.) 4.68 (meas. 4.68)", "CuS", {"Cu": 1, "S": 1}, "ideal"),
    13: (4.875, "HoM D(calc.) 4.875 (meas. 4.887)", "FeS2", {"Fe": 1, "S": 2}, "ideal"),
    14: (
        19.3,
        "HoM D(meas.) 19.3 (pure Au 19.32; Ag-rich gold is lighter)",
        "Au",
        {"Au": 1},
        "pure gold (Ag in natural gold ignored)",
    ),
}

_MINERALS = tuple(
    replace(
        m,
        density=_PHYSICAL[m.code][0],
        density_source=_PHYSICAL[m.code][1],
        formula=_PHYSICAL[m.code][2],
        elements=tuple(_PHYSICAL[m.code][3].items()),
        formula_source=_PHYSICAL[m.code][4],
    )
    for m in _MINERALS
)

CATALOGUE: dict[int, Mineral] = {m.code: m for m in _MINERALS}
"""All 15 LumenStone classes by code."""

CLASS_SETS: dict[str, tuple[int, ...]] = {
    "S1": (0, 1, 2, 4, 6, 8, 11),
    "S2": (0, 1, 3, 5, 7),
    "S3": tuple(c for c in range(15) if c != 7),
    "ALL": tuple(range(15)),
}
"""LumenStone class sets (codes): S1 Pb–Zn–Cu, S2 Cu–Ni, S3 all but pentlandite; ALL every code."""

MERGED_LABELS: dict[str, tuple[str, ...]] = {
    "Py/Mrc": ("pyrite", "marcasite"),
    "Tnt/Ttr": ("tennantite", "tetrahedrite"),
}
"""The paper's merged labels and the minerals each stands for."""


def mineral(code_or_label: int | str) -> Mineral:
    """Look up a mineral by LumenStone code or by label (case-insensitive).

    Raises:
        UnknownClassError: if no class has that code or label.
    """
    if isinstance(code_or_label, (int, np.integer)):
        try:
            return CATALOGUE[int(code_or_label)]
        except KeyError:
            raise UnknownClassError(
                f"unknown LumenStone class code {code_or_label}; valid codes are 0–14 (255 = ignore)"
            ) from None
    key = str(code_or_label).lower()
    for m in _MINERALS:
        if m.label.lower() == key or m.name.lower() == key:
            return m
    raise UnknownClassError(
        f"unknown class label {code_or_label!r}; valid labels: {', '.join(m.label for m in _MINERALS)}"
    )


def resolve_class_set(class_set: str | Iterable[int]) -> tuple[int, ...]:
    """Return the sorted LumenStone codes of a class set given by name (``"S1"``) or as codes.

    Raises:
        UnknownClassError: for an unknown set name or a code outside 0–14.
    """
    if isinstance(class_set, str):
        try:
            return CLASS_SETS[class_set.upper()]
        except KeyError:
            raise UnknownClassError(
                f"unknown class set {class_set!r}; valid names: {', '.join(CLASS_SETS)} or a list of codes"
            ) from None
    codes = tuple(sorted({int(c) for c in class_set}))
    for c in codes:
        mineral(c)
    if not codes:
        raise UnknownClassError("empty class set; give a name such as 'S1' or a list of codes")
    return codes


class ClassMap:
    """Mapping between LumenStone codes (on disk) and contiguous model indices ``0..K-1``.

    Pixels whose code is :data:`IGNORE` (255) map to index 255 and back.

    Args:
        class_set: a class-set name (``"S1"``) or an iterable of LumenStone codes.

    Raises:
        UnknownClassError: an unknown class-set name, a code outside 0–14, or no codes.

    Example:
        >>> cm = ClassMap("S1")
        >>> cm.codes
        (0, 1, 2, 4, 6, 8, 11)
        >>> cm.to_index(np.array([0, 11, 255], dtype=np.uint8)).tolist()
        [0, 6, 255]
    """

    def __init__(self, class_set: str | Iterable[int]) -> None:
        self.name = class_set.upper() if isinstance(class_set, str) else None
        self.codes: tuple[int, ...] = resolve_class_set(class_set)
        lut = np.full(256, -1, dtype=np.int16)
        for i, c in enumerate(self.codes):
            lut[c] = i
        lut[IGNORE] = IGNORE
        self._to_index = lut
        inv = np.full(256, IGNORE, dtype=np.uint8)
        inv[: len(self.codes)] = self.codes
        self._to_code = inv

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"ClassMap({self.name or list(self.codes)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassMap) and self.codes == other.codes

    def __hash__(self) -> int:
        return hash(self.codes)

    @property
    def labels(self) -> list[str]:
        """Labels of the classes in model-index order."""
        return [CATALOGUE[c].label for c in self.codes]

    @property
    def colours(self) -> np.ndarray:
        """Display colours in model-index order, ``(K, 3)`` uint8."""
        return np.array([CATALOGUE[c].colour for c in self.codes], dtype=np.uint8)

    def unknown_codes(self, mask: np.ndarray) -> list[int]:
        """Codes present in ``mask`` that are neither in this class set nor :data:`IGNORE`."""
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        return [int(c) for c in present if self._to_index[c] < 0]

    def to_index(self, mask: np.ndarray, source: str = "mask") -> np.ndarray:
        """Map a mask of LumenStone codes to model indices (uint8; 255 stays 255).

        Args:
            mask: integer array of LumenStone codes.
            source: what to name in the error message (e.g. the file path).

        Raises:
            UnknownClassError: if the mask holds codes outside the class set.
        """
        if mask.dtype != np.uint8:
            if mask.size and (mask.min() < 0 or mask.max() > 255):
                raise UnknownClassError(f"{source}: class codes outside 0–255 cannot be LumenStone codes")
            mask = mask.astype(np.uint8)
        bad = self.unknown_codes(mask)
        if bad:
            raise UnknownClassError(
                f"{source}: class codes {bad} are not in class set {self.name or list(self.codes)} "
                f"(codes {list(self.codes)}); choose a class set that contains them, or set those "
                f"pixels to {IGNORE} (ignore)"
            )
        return self._to_index[mask].astype(np.uint8)

    def to_code(self, index: np.ndarray) -> np.ndarray:
        """Map model indices (0..K-1, or 255) back to LumenStone codes (uint8)."""
        return self._to_code[np.asarray(index, dtype=np.uint8)]


def labels_for(codes: Sequence[int]) -> list[str]:
    """Labels for a sequence of LumenStone codes.

    Raises:
        UnknownClassError: a code outside 0–14 (the LumenStone catalogue).
    """
    return [mineral(c).label for c in codes]


_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?|\.\d+)?")


def parse_formula(formula: str) -> dict[str, float]:
    """Element counts of a simple formula without brackets: ``"Fe4.5Ni4.5S8"`` → ``{"Fe": 4.5, "Ni": 4.5, "S": 8}``.

    Raises:
        ConfigError: for brackets, stray characters or an element not in :data:`ATOMIC_WEIGHTS`.
    """
    text = formula.replace(" ", "")
    counts: dict[str, float] = {}
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() != pos:
            break
        counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2) or 1)
        pos = m.end()
    if pos != len(text) or not counts:
        raise ConfigError(
            f"cannot read formula {formula!r}: write explicit element counts without brackets, "
            "e.g. 'Fe4.5Ni4.5S8' for (Fe,Ni)9S8, or give a mapping {'Fe': 4.5, 'Ni': 4.5, 'S': 8}"
        )
    _check_elements(counts, formula)
    return counts


def _check_elements(counts: Mapping[str, float], what: object) -> None:
    unknown = [e for e in counts if e not in ATOMIC_WEIGHTS]
    if unknown:
        raise ConfigError(
            f"formula {what!r}: no atomic weight for {unknown}; known elements: {', '.join(ATOMIC_WEIGHTS)} "
            "(add the element to lumenkit.data.catalogue.ATOMIC_WEIGHTS)"
        )
    bad = [e for e, n in counts.items() if not n >= 0]
    if bad or not sum(counts.values()) > 0:
        raise ConfigError(f"formula {what!r}: element counts must be positive numbers")


def mass_fractions(formula: str | Mapping[str, float]) -> dict[str, float]:
    """Element mass fractions (0–1) of a formula given as text (see :func:`parse_formula`) or element counts.

    Raises:
        ConfigError: a formula that cannot be read (brackets, stray characters), an element not in
            :data:`ATOMIC_WEIGHTS`, or element counts that are negative or sum to zero.

    Example:
        >>> round(100 * mass_fractions("CuFeS2")["Cu"], 2)
        34.63
    """
    counts = parse_formula(formula) if isinstance(formula, str) else {str(k): float(v) for k, v in formula.items()}
    _check_elements(counts, formula)
    mass = {e: n * ATOMIC_WEIGHTS[e] for e, n in counts.items()}
    total = sum(mass.values())
    return {e: m / total for e, m in mass.items()}


def tennantite_tetrahedrite(sb_fraction: float = TNT_TTR_SB_FRACTION) -> Mineral:
    """The Tnt/Ttr class at another point of the series: Cu12(As1-xSbx)4S13 with x = ``sb_fraction``.

    Density is interpolated linearly between the end members (:data:`TENNANTITE_DENSITY`,
    :data:`TETRAHEDRITE_DENSITY`). Use its ``density`` and ``elements`` as overrides of the assay, e.g.
    ``densities={11: m.density}``, ``compositions={11: dict(m.elements)}``.

    Raises:
        ConfigError: if ``sb_fraction`` is outside 0–1.
    """
    x = float(sb_fraction)
    if not 0.0 <= x <= 1.0:
        raise ConfigError(f"Sb/(As+Sb) = {sb_fraction} is outside 0–1; 0 = tennantite, 1 = tetrahedrite")
    return replace(
        CATALOGUE[11],
        density=round((1 - x) * TENNANTITE_DENSITY + x * TETRAHEDRITE_DENSITY, 3),
        elements=(("Cu", 12.0), ("As", 4 * (1 - x)), ("Sb", 4 * x), ("S", 13.0)),
        density_source=f"linear between HoM D(meas.) tennantite 4.62 and tetrahedrite 4.97 at Sb/(As+Sb) = {x:g}",
        formula_source=f"Cu12As{4 * (1 - x):g}Sb{4 * x:g}S13 in the tennantite–tetrahedrite series",
    )
