"""The synthetic deposits: mineral phases with their optics, textures, and the association of each deposit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from lumenkit.errors import LumenkitError

BASE_SCALE: float = 0.5


"""Scale (relative to native ×100) at which deposit lengths are given and the default dataset is written."""

PIXEL_SIZE_UM: float = 1.0
"""Nominal side of one native (×100) pixel of a synthetic section in µm.

Synthetic sections come from no microscope: this length only gives them a physical scale, so that µm tables,
scale bars and resampling between magnifications can be exercised end to end. A synthetic image at scale ``s``
has pixels of ``PIXEL_SIZE_UM / s`` µm (2 µm at the default :data:`BASE_SCALE`).
"""


JPEG_QUALITY: int = 90


class SynthExistsError(LumenkitError, FileExistsError):
    """The output folder of :func:`write_dataset` already exists and ``overwrite`` was not set."""


# -- optics ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """How one class looks under the microscope (plane-polarised reflected light, air).

    Attributes:
        code: LumenStone class code.
        rgb: base sRGB colour (0–255) before illumination effects; calibrated so that rendered images match
            the real sample's per-class mean colour.
        grain_var: relative brightness spread between grains (bireflectance / anisotropy, orientation).
        mottle: relative amplitude of smooth internal brightness variation.
        hard: polishing hardness class: hard phases stand in relief and get dark halos at contacts.
    """

    code: int
    rgb: tuple[float, float, float]
    grain_var: float = 0.02
    mottle: float = 0.03
    hard: bool = False


PHASES: Mapping[int, Phase] = MappingProxyType({
    0: Phase(0, (44.0, 43.0, 40.0), grain_var=0.15, mottle=0.12),  # gangue / resin; holes rendered black
    1: Phase(1, (205.0, 181.0, 142.0), grain_var=0.03, mottle=0.06),  # chalcopyrite
    2: Phase(2, (162.0, 158.0, 156.0), grain_var=0.04, mottle=0.08),  # galena
    3: Phase(3, (124.0, 118.0, 115.0), grain_var=0.03, mottle=0.05, hard=True),  # magnetite
    4: Phase(4, (156.0, 130.0, 113.0), grain_var=0.05, mottle=0.09),  # bornite
    5: Phase(5, (199.0, 183.0, 160.0), grain_var=0.03, mottle=0.025),  # pyrrhotite
    6: Phase(6, (198.0, 182.0, 162.0), grain_var=0.03, mottle=0.06, hard=True),  # pyrite
    7: Phase(7, (215.0, 201.0, 176.0), grain_var=0.03, mottle=0.06, hard=True),  # pentlandite
    8: Phase(8, (118.0, 117.0, 114.0), grain_var=0.03, mottle=0.05),  # sphalerite
    11: Phase(11, (171.0, 171.0, 166.0), grain_var=0.03, mottle=0.04),  # tennantite–tetrahedrite
})


"""Rendering parameters per class code (the codes the generator can paint)."""


# -- deposits -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Texture:
    """One ore texture painted over the grain mosaic.

    Attributes:
        kind: ``"crystals"`` (euhedral polygons), ``"blebs"`` (rounded inclusions; ``at_boundary`` puts
            them on grain boundaries as granular chains), ``"flames"`` (thin oriented lenses), ``"lamellae"``
            (thin straight exsolution lines), ``"rims"`` (bands around ``around`` phases),
            ``"interstitial"`` (fills of gaps between ``around`` phases), ``"veinlets"`` (curved veins),
            ``"cracks"`` (thin fractures, painted as background) or ``"pits"`` (plucked holes, background).
        phase: class code painted.
        amount: share of the image area the texture should cover (before per-image variation).
        hosts: codes the texture may replace (``()`` = any other phase).
        around: codes the texture grows around (``rims``, ``interstitial``).
        size: typical size in px at ×0.5 (edge, diameter, length or width by kind).
        spread: log-normal sigma of sizes (heavy tail when large).
        elongation: length/width ratio (blebs, flames).
        cluster: probability that a new shape is placed next to the previous one (aggregates, trails).
        shape: crystal habit for ``crystals``: ``"cubic"``, ``"pyritohedral"`` or ``"octahedral"``.
        at_boundary: place ``blebs`` on host grain boundaries.
    """

    kind: str
    phase: int
    amount: float
    hosts: tuple[int, ...] = ()
    around: tuple[int, ...] = ()
    size: float = 10.0
    spread: float = 0.6
    elongation: float = 1.0
    cluster: float = 0.0
    shape: str = "cubic"
    at_boundary: bool = False


@dataclass(frozen=True)
class Deposit:
    """A synthetic deposit: association, requested modal composition, grain size and textures.

    Attributes:
        key: short name used in image names (``pbzn_a`` → ``pbzn_a_003.jpg``).
        name: descriptive name.
        association: ``"S1"`` (Pb–Zn–Cu) or ``"S2"`` (Cu–Ni).
        composition: requested modal composition, ``{code: area share}`` summing to 1 (over many images).
        grain_size: median diameter of crystals inside a host region (per-grain tint, grain boundaries for
            granular textures) and scale of the lobes on region boundaries, px at ×0.5.
        domain_size: scale of the host regions (twice the correlation length of the phase fields), px at
            ×0.5: larger values give fewer, larger grains and aggregates.
        coherence: 1 − weight of the grain-scale field in the phase competition: lower values give more
            lobate boundaries and more small satellite grains.
        variability: Dirichlet concentration of per-image compositions (small = images differ more).
        textures: textures painted over the mosaic, in order.
        gangue: base colour of the gangue in this deposit (sRGB).
        holes: share of the gangue that is black holes and plucked pits.
        description: one line for tables.
        colours: base sRGB colours overriding :data:`PHASES` for this deposit (e.g. the brighter, yellower
            chalcopyrite of the Cu–Ni sample).
    """

    key: str
    name: str
    association: str
    composition: Mapping[int, float]
    grain_size: float
    textures: tuple[Texture, ...] = ()
    domain_size: float = 300.0
    coherence: float = 0.8
    variability: float = 15.0
    gangue: tuple[float, float, float] = (44.0, 43.0, 40.0)
    holes: float = 0.08
    description: str = ""
    colours: Mapping[int, tuple[float, float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        total = sum(self.composition.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"deposit {self.key}: composition sums to {total}, not 1")
        unknown = sorted(set(self.composition) - set(PHASES))
        if unknown:
            raise ValueError(f"deposit {self.key}: no rendering parameters for codes {unknown}")

    @property
    def codes(self) -> tuple[int, ...]:
        """Class codes this deposit can paint (composition plus background)."""
        return tuple(sorted(set(self.composition) | {0}))


_S1_GANGUE = (46.0, 45.0, 43.0)
_S2_GANGUE = (67.0, 64.0, 60.0)
_S2_COLOURS = MappingProxyType({1: (223.0, 200.0, 160.0)})  # Cu–Ni chalcopyrite is brighter

DEPOSITS: Mapping[str, Deposit] = MappingProxyType({d.key: d for d in (
    Deposit(
        "pbzn_a", "Fine-grained sphalerite–galena ore (SEDEX type)", "S1",
        {0: 0.31, 8: 0.356, 2: 0.15, 6: 0.14, 1: 0.01, 11: 0.028, 4: 0.006},
        grain_size=30, domain_size=700, gangue=_S1_GANGUE,
        textures=(
            Texture("crystals", 6, 0.035, size=8, spread=0.8, cluster=0.7, shape="cubic"),
            Texture("blebs", 1, 0.005, hosts=(8,), size=2.5, spread=0.5, cluster=0.8),
            Texture("veinlets", 2, 0.008, hosts=(8, 0), size=4, spread=0.4),
            Texture("interstitial", 11, 0.015, hosts=(0, 8), around=(6,), size=5),
            Texture("pits", 0, 0.008, hosts=(6, 8, 2), size=4, spread=0.7),
        ),
        description="banded sphalerite and galena with small pyrite cubes, chalcopyrite disease",
    ),
    Deposit(
        "pyr_b", "Massive pyrite with interstitial base metals (VMS type)", "S1",
        {0: 0.274, 6: 0.50, 8: 0.134, 2: 0.04, 1: 0.008, 11: 0.034, 4: 0.01},
        grain_size=40, domain_size=720, gangue=_S1_GANGUE,
        textures=(
            Texture("crystals", 6, 0.14, size=36, spread=0.9, cluster=0.6, shape="pyritohedral"),
            Texture("interstitial", 11, 0.025, hosts=(0, 8, 2), around=(6,), size=10),
            Texture("interstitial", 1, 0.006, hosts=(0, 8), around=(6,), size=8),
            Texture("cracks", 0, 0.01, hosts=(6,), size=1.5, spread=0.4),
            Texture("pits", 0, 0.01, hosts=(6,), size=5, spread=0.8),
        ),
        description="cracked subhedral pyrite aggregates cemented by tennantite, sphalerite, chalcopyrite",
    ),
    Deposit(
        "cutnt_c", "Tennantite–bornite copper ore", "S1",
        {0: 0.30, 11: 0.11, 4: 0.20, 6: 0.17, 8: 0.12, 1: 0.018, 2: 0.082},
        grain_size=50, domain_size=760, gangue=_S1_GANGUE,
        textures=(
            Texture("crystals", 6, 0.06, size=22, spread=0.8, cluster=0.5, shape="cubic"),
            Texture("rims", 11, 0.04, hosts=(0, 8, 4, 2), around=(6, 8), size=6),
            Texture("lamellae", 1, 0.006, hosts=(4,), size=1.0, spread=0.2),
            Texture("blebs", 2, 0.01, hosts=(11, 4), size=6, spread=0.6, elongation=1.5),
            Texture("pits", 0, 0.006, size=4, spread=0.7),
        ),
        description="pyrite rimmed by tennantite; bornite with chalcopyrite lamellae",
    ),
    Deposit(
        "znpb_d", "Coarse sphalerite–galena–pyrite vein ore", "S1",
        {0: 0.31, 8: 0.296, 2: 0.11, 6: 0.24, 11: 0.025, 1: 0.012, 4: 0.007},
        grain_size=90, domain_size=900, gangue=_S1_GANGUE,
        textures=(
            Texture("crystals", 6, 0.07, size=30, spread=1.0, cluster=0.6, shape="cubic"),
            Texture("blebs", 1, 0.004, hosts=(8,), size=3, spread=0.6, cluster=0.85),
            Texture("veinlets", 1, 0.004, size=2.5, spread=0.4),
            Texture("veinlets", 2, 0.01, hosts=(8, 0, 11), size=5, spread=0.5),
            Texture("rims", 11, 0.015, hosts=(0, 2), around=(8,), size=4),
            Texture("cracks", 0, 0.006, hosts=(6,), size=1.5),
            Texture("pits", 0, 0.006, hosts=(2, 8, 6), size=5, spread=0.8),
        ),
        description="coarse sphalerite and galena, euhedral pyrite, tennantite rims, chalcopyrite veinlets",
    ),
    Deposit(
        "cuni_e", "Massive pyrrhotite–pentlandite ore (Norilsk type)", "S2",
        {0: 0.317, 5: 0.505, 7: 0.14, 1: 0.028, 3: 0.01},
        grain_size=70, domain_size=900, gangue=_S2_GANGUE, holes=0.05, colours=_S2_COLOURS,
        textures=(
            Texture("flames", 7, 0.025, hosts=(5,), size=14, spread=0.5, elongation=6, cluster=0.6),
            Texture("blebs", 7, 0.095, hosts=(5, 1), size=22, spread=0.6, at_boundary=True, cluster=0.7),
            Texture("veinlets", 1, 0.015, hosts=(5, 0), size=5, spread=0.5),
            Texture("crystals", 3, 0.01, hosts=(0, 5), size=12, spread=0.7, cluster=0.4, shape="octahedral"),
            Texture("cracks", 0, 0.01, hosts=(5, 7), size=1.8, spread=0.4),
        ),
        description="pyrrhotite with pentlandite flames and granular chains, chalcopyrite veinlets",
    ),
    Deposit(
        "cuni_f", "Disseminated chalcopyrite–pyrrhotite ore in silicates", "S2",
        {0: 0.655, 1: 0.04, 5: 0.22, 7: 0.07, 3: 0.015},
        grain_size=35, domain_size=700, gangue=_S2_GANGUE, holes=0.05, colours=_S2_COLOURS,
        textures=(
            Texture("blebs", 7, 0.05, hosts=(5, 1), size=10, spread=0.6, at_boundary=True),
            Texture("flames", 7, 0.015, hosts=(5,), size=10, spread=0.5, elongation=5),
            Texture("crystals", 3, 0.015, hosts=(0,), size=10, spread=0.7, cluster=0.5, shape="octahedral"),
            Texture("cracks", 0, 0.01, hosts=(5, 1), size=1.5),
        ),
        description="sulphide blebs (pyrrhotite, chalcopyrite, pentlandite) and magnetite in silicate gangue",
    ),
)})


"""The synthetic deposits by key; inspect ``DEPOSITS[key].composition`` for the requested modal shares."""


SCHEDULE: tuple[str, ...] = (
    "pbzn_a", "pyr_b", "cuni_e", "cutnt_c", "znpb_d", "pbzn_a", "pyr_b", "znpb_d", "cuni_f",
)


"""Deposit of image ``k`` of a split is ``SCHEDULE[k % len(SCHEDULE)]`` (7 Pb–Zn–Cu : 2 Cu–Ni)."""


def dataset_composition(schedule: Sequence[str] = SCHEDULE) -> dict[int, float]:
    """Expected dataset-wide modal composition ``{code: share}`` of a deposit schedule."""
    out: dict[int, float] = {}
    for key in schedule:
        for c, v in DEPOSITS[key].composition.items():
            out[c] = out.get(c, 0.0) + v / len(schedule)
    return dict(sorted(out.items()))
