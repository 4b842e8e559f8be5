"""Mineral catalogue: LumenStone class codes, class sets and the code ↔ model-index mapping."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from lumenkit.errors import UnknownClassError

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
    """

    code: int
    label: str
    name: str
    colour: tuple[int, int, int]
    reflectance: float
    impression: str

    @property
    def hex(self) -> str:
        """Display colour as ``#rrggbb``."""
        return "#{:02x}{:02x}{:02x}".format(*self.colour)


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
    """Labels for a sequence of LumenStone codes."""
    return [mineral(c).label for c in codes]
