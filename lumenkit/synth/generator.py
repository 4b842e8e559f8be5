"""Synthetic polished sections: ore textures of Pb–Zn–Cu and Cu–Ni deposits rendered as reflected-light images.

The generator paints a map of LumenStone class codes (the mask) from competing smooth random fields (a few
large, coherent grains and aggregates with smooth, irregular boundaries, plus small satellite grains) and a list
of ore textures per deposit (euhedral crystals, exsolution blebs, flames, rims, interstitial fills, pinching
veinlets, cracks, pits), then renders it as a microscope would show it (per-grain tint, mottling, relief halos,
contact grooves, galena cleavage pits, polishing scratches, mixed pixels at contacts, defocus, vignetting and
uneven illumination, exposure and white-balance drift, camera noise). Colours are calibrated on the real
LumenStone sample (see :mod:`lumenkit.synth.calibration` and ``scripts/calibrate_synth.py``).

Lengths in deposit definitions are in pixels at scale 0.5 (the real sample's ×0.5 images); a section rendered
at another ``scale`` scales every length accordingly.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage, special
from scipy.spatial import cKDTree

from lumenkit.data.imageio import save_image, write_text
from lumenkit.errors import LumenkitError

__all__ = [
    "DEPOSITS",
    "PHASES",
    "SCHEDULE",
    "Deposit",
    "Phase",
    "SynthExistsError",
    "Texture",
    "dataset_composition",
    "image_name",
    "generate_section",
    "write_dataset",
]

BASE_SCALE: float = 0.5
"""Scale (relative to native ×100) at which deposit lengths are given and the default dataset is written."""

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


# -- random fields --------------------------------------------------------------------------------
def _noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian noise of unit std and correlation length ``sigma`` px, float32 ``shape``."""
    h, w = shape
    step = max(1, int(sigma / 1.25))
    ch, cw = h // step + 3, w // step + 3
    z = ndimage.gaussian_filter(rng.standard_normal((ch, cw)).astype(np.float32), sigma / step, mode="wrap")
    z /= z.std() + 1e-6
    if step > 1:
        z = np.asarray(Image.fromarray(z, mode="F").resize((cw * step, ch * step), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(z[:h, :w])


def _blur_u8(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a uint8 image (2-D or RGB) with PIL (fast), same shape."""
    if sigma < 0.3:
        return a
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(sigma)))


def _sizes(rng: np.random.Generator, median: float, spread: float, n: int) -> np.ndarray:
    return median * np.exp(spread * rng.standard_normal(n))


# -- host map -------------------------------------------------------------------------------------
def _host_map(
    shape: tuple[int, int], dep: Deposit, targets: Mapping[int, float], u: float, rng: np.random.Generator
) -> np.ndarray:
    """Host phases as competing smooth random fields: coherent grains and aggregates with smooth boundaries.

    Every host phase gets a smooth Gaussian field (a domain-scale component plus a weaker grain-scale one
    that makes boundaries lobate and adds small satellite grains); each pixel takes the phase whose field,
    plus a per-phase bias, is highest. The biases are tuned on a coarse grid so that the area shares
    approach ``targets``; the fields are then upsampled bilinearly, so boundaries are smooth at the pixel
    scale (iso-contours of smooth fields), never blocky or speckled.

    Returns:
        ``(H, W)`` uint8 class codes.
    """
    h, w = shape
    codes = [c for c, v in targets.items() if v > 0]
    if len(codes) == 1:
        return np.full(shape, codes[0], dtype=np.uint8)
    g = max(2, round(4 * u))
    ch, cw = -(-h // g) + 1, -(-w // g) + 1
    big = 0.5 * dep.domain_size * u / g
    small = 0.5 * dep.grain_size * u / g
    rough = 0.6 * (1.0 - dep.coherence)
    # the gangue is the matrix: a longer correlation length keeps it one connected network more often
    fields = np.stack([
        _noise((ch, cw), big * (1.4 if c == 0 else 1.0), rng) + rough * _noise((ch, cw), small, rng) for c in codes
    ])
    want = np.array([targets[c] for c in codes], dtype=np.float64)
    want /= want.sum()
    bias = _tune_bias(fields[:, ::2, ::2] if ch * cw > 40_000 else fields, want)
    out = np.zeros(shape, dtype=np.uint8)
    best = np.full(shape, -np.inf, dtype=np.float32)
    for c, f, b in zip(codes, fields, bias):
        full = np.asarray(Image.fromarray(f + b, mode="F").resize((cw * g, ch * g), Image.Resampling.BILINEAR))
        full = full[:h, :w]
        win = full > best
        out[win] = c
        best = np.maximum(best, full, out=best)
    return out


def _tune_bias(fields: np.ndarray, want: np.ndarray, iters: int = 300) -> np.ndarray:
    """Biases ``(K,)`` such that ``argmax(fields + bias)`` over axis 0 gives area shares close to ``want``.

    Gradient ascent on the dual of the assignment (semi-discrete optimal transport) with a decaying step;
    returns the best biases seen (shares within 0.002 of ``want`` on frames much larger than the fields'
    correlation length, looser on small frames where one or two domains fill the view).
    """
    k = len(want)
    bias = np.zeros(k, dtype=np.float32)
    best, best_bias = np.inf, bias.copy()
    scale = np.sqrt(np.maximum(want, 1e-3))
    for it in range(iters):
        lab = np.argmax(fields + bias[:, None, None], axis=0)
        have = np.bincount(lab.ravel(), minlength=k) / lab.size
        err = float(np.abs(have - want).max())
        if err < best:
            best, best_bias = err, bias.copy()
        if err < 0.002:
            break
        bias += (1.5 * 0.99**it * (want - have) / scale).astype(np.float32)
    return best_bias


def _grains(shape: tuple[int, int], dep: Deposit, u: float, rng: np.random.Generator) -> np.ndarray:
    """Grain ids (int32): a warped Voronoi mosaic of grain size ``dep.grain_size`` (log-normal density).

    Grains do not decide the phase (see :func:`_host_map`); they give each crystal of a phase its own
    tint (bireflectance, orientation) and the grain boundaries where granular textures sit.
    """
    h, w = shape
    step = max(2, round(4 * u))
    ch, cw = -(-h // step), -(-w // step)
    gs = dep.grain_size * u
    n = int(rng.poisson(3 * h * w / gs**2)) + 2
    seeds = rng.uniform((0, 0), (h, w), size=(n, 2))
    dens = _noise((ch, cw), 0.5 * dep.domain_size * u / step, rng)
    iy = np.minimum(seeds[:, 0] // step, ch - 1).astype(np.intp)
    ix = np.minimum(seeds[:, 1] // step, cw - 1).astype(np.intp)
    keep = rng.random(n) < np.exp(0.9 * (dens[iy, ix] - 2.5))
    keep[:2] = True
    gy, gx = np.mgrid[0:ch, 0:cw]
    pts = np.column_stack([gy.ravel() * step + step / 2, gx.ravel() * step + step / 2])
    coarse = cKDTree(seeds[keep]).query(pts)[1].reshape(ch, cw).astype(np.int32)
    wy = _noise((h, w), 24 * u, rng) * (5 * u) + _noise((h, w), 2.5 * u, rng) * (0.8 * step)
    wx = _noise((h, w), 24 * u, rng) * (5 * u) + _noise((h, w), 2.5 * u, rng) * (0.8 * step)
    yy = np.clip((np.arange(h, dtype=np.float32)[:, None] + wy) / step, 0, ch - 1).astype(np.intp)
    xx = np.clip((np.arange(w, dtype=np.float32)[None, :] + wx) / step, 0, cw - 1).astype(np.intp)
    return coarse[yy, xx]


def _host_targets(dep: Deposit, comp: dict[int, float], scale_t: dict[int, float]) -> dict[int, float]:
    """Host-mosaic shares: the composition minus what textures paint, plus what they will replace."""
    h = dict(comp)
    for t in dep.textures:
        amt = t.amount * scale_t.get(t.phase, 1.0)
        h[t.phase] = h.get(t.phase, 0.0) - amt
        hosts = [c for c in (t.hosts or tuple(comp)) if c != t.phase]
        tot = sum(comp.get(c, 0.0) for c in hosts)
        for c in hosts:
            if tot > 0:
                h[c] = h.get(c, 0.0) + amt * comp.get(c, 0.0) / tot
    h = {c: max(v, 0.0) for c, v in h.items()}
    s = sum(h.values())
    return {c: v / s for c, v in h.items() if v > 0}


# -- textures -------------------------------------------------------------------------------------
def _centres(
    allowed: np.ndarray, n: int, rng: np.random.Generator, cluster: float, reach: np.ndarray
) -> np.ndarray:
    """``n`` (y, x) centres inside ``allowed``; with probability ``cluster`` next to the previous one."""
    sub = 2 if allowed.size > 200_000 else 1
    idx = np.flatnonzero(allowed[::sub, ::sub])
    h, w = allowed.shape
    if len(idx) == 0:
        return np.zeros((0, 2))
    sw = -(-w // sub)
    pick = rng.choice(idx, size=n)
    c = np.column_stack([(pick // sw) * sub, (pick % sw) * sub]).astype(np.float64)
    if cluster > 0 and n > 1:
        # trails and aggregates: a shape follows the previous one at about its own size
        follow = rng.random(n) < cluster
        follow[0] = False
        ang = rng.uniform(0, 2 * np.pi, n)
        step = np.where(follow, reach * rng.uniform(0.8, 1.6, n), 0.0)
        off = np.column_stack([np.sin(ang), np.cos(ang)]) * step[:, None]
        start = np.flatnonzero(~follow)
        run = np.cumsum(~follow) - 1
        cs = np.cumsum(off, axis=0)
        c = c[start[run]] + cs - cs[start[run]]
        c[:, 0] = np.clip(c[:, 0], 0, h - 1)
        c[:, 1] = np.clip(c[:, 1], 0, w - 1)
    return c


def _polygon(cy: float, cx: float, r: float, shape: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices ``(k, 2)`` as (x, y) of a crystal section of circumradius ``r``."""
    a0 = rng.uniform(0, np.pi / 2)
    if shape == "cubic":
        kind = rng.random()
        if kind < 0.55:  # square / rectangle
            ax = rng.uniform(0.6, 1.0)
            ang = np.array([np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4])
            xy = np.column_stack([np.cos(ang), np.sin(ang) * ax])
        elif kind < 0.8:  # truncated cube: octagon
            t = rng.uniform(0.15, 0.35)
            s = np.array([[1, t - 1], [1, 1 - t], [1 - t, 1], [t - 1, 1], [-1, 1 - t], [-1, t - 1],
                          [t - 1, -1], [1 - t, -1]], dtype=float)
            xy = s / np.sqrt(2)
        else:  # irregular subhedral
            k = rng.integers(5, 8)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            xy = np.column_stack([np.cos(ang), np.sin(ang)]) * rng.uniform(0.7, 1.0, (k, 1))
    elif shape == "pyritohedral":
        k = int(rng.choice([4, 5, 6, 6, 7, 8]))
        ang = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(-0.25, 0.25, k)
        xy = np.column_stack([np.cos(ang), np.sin(ang)]) * rng.uniform(0.75, 1.0, (k, 1))
    else:  # octahedral sections: triangles, rhombs, squares, hexagons
        k = int(rng.choice([3, 4, 4, 6]))
        ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
        xy = np.column_stack([np.cos(ang), np.sin(ang)]) * rng.uniform(0.85, 1.0, (k, 1))
    rot = np.array([[np.cos(a0), -np.sin(a0)], [np.sin(a0), np.cos(a0)]])
    return (xy @ rot.T) * r + np.array([cx, cy])


def _area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _curve(h: int, w: int, rng: np.random.Generator, length: float, start: np.ndarray | None = None) -> np.ndarray:
    """A smooth random polyline ``(k, 2)`` as (x, y), about ``length`` px long."""
    k = max(4, int(length / 12))
    p0 = start if start is not None else rng.uniform((0, 0), (w, h))
    heading = rng.uniform(0, 2 * np.pi)
    turn = np.cumsum(rng.normal(0, 0.12, k))
    ang = heading + turn
    steps = np.column_stack([np.cos(ang), np.sin(ang)]) * (length / k)
    return p0 + np.vstack([[0, 0], np.cumsum(steps, axis=0)])


def _paint_texture(
    labels: np.ndarray, t: Texture, amount: float, u: float, cells: np.ndarray, rng: np.random.Generator
) -> None:
    """Paint one texture into ``labels`` (in place), aiming at ``amount`` of the image area."""
    h, w = labels.shape
    budget = amount * h * w
    if budget < 1:
        return
    allowed = np.isin(labels, t.hosts) if t.hosts else labels != t.phase
    if t.kind in ("rims", "interstitial"):
        _paint_band(labels, t, budget, u, allowed, rng)
        return
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    size = t.size * u
    if t.kind in ("crystals", "blebs", "pits", "flames"):
        where = allowed
        if t.at_boundary:
            b = np.zeros_like(allowed)
            b[:, 1:] |= cells[:, 1:] != cells[:, :-1]
            b[1:, :] |= cells[1:, :] != cells[:-1, :]
            b = ndimage.binary_dilation(b, iterations=max(1, int(2 * u))) & allowed
            where = b if b.any() else allowed
        nmax = int(min(40000, 4 * budget / max(size * size * 0.3, 0.5) + 4))
        sizes = _sizes(rng, size, t.spread, nmax)
        centres = _centres(where, nmax, rng, t.cluster, sizes)
        theta0 = rng.uniform(0, np.pi, 2)
        meter = _Meter(layer, allowed, budget)
        for (cy, cx), s in zip(centres, sizes):
            s = min(s, np.sqrt(2 * meter.remaining) + size)  # no single giant overshoots the budget
            if t.kind == "crystals":
                xy = _polygon(cy, cx, s / np.sqrt(2), t.shape, rng)
                meter.add(_area(xy))
                draw.polygon([tuple(p) for p in xy], fill=1)
            else:
                r = max(s / 2, 0.5)
                if t.kind == "flames":
                    el = t.elongation * rng.uniform(0.6, 1.4)
                    th = theta0[int(rng.random() < 0.3)] + rng.normal(0, 0.08)
                    ang = np.array([0, 0.5 * np.pi, np.pi, 1.5 * np.pi])
                    rr = np.array([r * el / 2, r / 2, r * el / 2, r / 2]) * rng.uniform(0.8, 1.2, 4)
                else:
                    el = t.elongation * rng.uniform(0.7, 1.3)
                    k = 8 if r > 3 else 5
                    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
                    rr = r * rng.uniform(0.7, 1.15, k) * np.where(np.abs(np.cos(ang)) > 0.7, np.sqrt(el), 1.0)
                    th = rng.uniform(0, np.pi)
                a2 = ang + th
                xy = np.column_stack([cx + rr * np.cos(a2), cy + rr * np.sin(a2)])
                if r < 1.2:
                    draw.point((cx, cy), fill=1)
                    meter.add(1.0)
                else:
                    draw.polygon([tuple(p) for p in xy], fill=1)
                    meter.add(_area(xy))
            if meter.full():
                break
    elif t.kind in ("veinlets", "cracks", "lamellae"):
        meter = _Meter(layer, allowed, budget)
        diag = float(np.hypot(h, w))
        theta = rng.uniform(0, np.pi, 3)
        hw2 = -(-w // 2)
        idx = np.flatnonzero(allowed[::2, ::2])
        if t.kind != "veinlets" and len(idx) == 0:
            return
        for _ in range(5000):
            wd = max(1.0, size * float(np.exp(t.spread * rng.standard_normal())))
            if t.kind == "lamellae":
                p = rng.choice(idx)
                c = np.array([(p % hw2) * 2, (p // hw2) * 2], dtype=float)
                th = theta[rng.integers(3)]
                ln = rng.uniform(10, 60) * u
                d = np.array([np.cos(th), np.sin(th)]) * ln / 2
                pts = np.array([c - d, c + d])
                length = ln
            elif t.kind == "cracks":
                p = rng.choice(idx)
                start = np.array([(p % hw2) * 2, (p // hw2) * 2], dtype=float)
                length = rng.uniform(20, 160) * u
                pts = _curve(h, w, rng, length, start)
            else:
                length = rng.uniform(0.4, 1.2) * diag
                pts = _curve(h, w, rng, length)
            draw.line([tuple(q) for q in pts], fill=1, width=round(wd), joint="curve")
            meter.add(length * wd)
            if meter.full():
                break
    else:
        raise ValueError(f"unknown texture kind {t.kind!r}")
    hit = np.asarray(layer, dtype=bool) & allowed
    if t.kind == "veinlets":  # veinlets pinch and swell out, so they rarely cut a grain in two
        hit &= _noise((h, w), 20 * u, rng) > -0.8
    labels[hit] = t.phase


class _Meter:
    """Tracks the painted area of a texture layer against its budget, measuring the raster now and then."""

    def __init__(self, layer: Image.Image, allowed: np.ndarray, budget: float) -> None:
        self.layer, self.allowed, self.budget = layer, allowed, budget
        self.raw = 0.0  # estimated area drawn since the last measurement
        self.actual = 0.0  # measured area at the last measurement
        self.ratio = 1.0  # measured / estimated area (clipping, overlaps, rasterisation, hosts)
        self.checks = 0

    @property
    def remaining(self) -> float:
        return max(self.budget - self.actual - self.raw * self.ratio, 0.0)

    def add(self, area: float) -> None:
        self.raw += area

    def full(self) -> bool:
        est = self.actual + self.raw * self.ratio
        if est < self.actual + 0.5 * (self.budget - self.actual) and est < self.budget:
            return False
        measured = float(np.count_nonzero(np.asarray(self.layer, dtype=bool) & self.allowed))
        if self.raw > 0:
            self.ratio = float(np.clip((measured - self.actual) / (self.raw * self.ratio) * self.ratio, 0.05, 5))
        self.actual, self.raw = measured, 0.0
        self.checks += 1
        return measured >= 0.95 * self.budget or self.checks >= 12


def _paint_band(
    labels: np.ndarray, t: Texture, budget: float, u: float, allowed: np.ndarray, rng: np.random.Generator
) -> None:
    """Rims (bands around ``around`` phases) and interstitial fills (gaps between them)."""
    core = np.isin(labels, t.around)
    if not core.any():
        return
    h, w = labels.shape
    sub = 2 if h * w > 300_000 else 1
    c2 = core[::sub, ::sub]
    dist = ndimage.distance_transform_edt(~c2) * sub
    patch = _noise(c2.shape, 20 * u / sub, rng)
    if t.kind == "rims":
        cand = (dist > 0) & (dist <= 3 * t.size * u) & (patch > -0.3)
        score = dist - 0.6 * t.size * u * patch
    else:
        r = t.size * u
        closed = ndimage.distance_transform_edt(dist <= r) * sub > r
        cand = closed & ~c2
        score = -patch
    if sub > 1:
        cand = np.repeat(np.repeat(cand, sub, 0), sub, 1)[:h, :w]
        score = np.repeat(np.repeat(score, sub, 0), sub, 1)[:h, :w]
    cand &= allowed
    n = int(cand.sum())
    if n == 0:
        return
    k = int(min(budget, n))
    vals = score[cand]
    thr = np.partition(vals, k - 1)[k - 1]
    sel = cand & (score <= thr)
    labels[sel] = t.phase


# -- rendering ------------------------------------------------------------------------------------
def _render(
    labels: np.ndarray, cells: np.ndarray, dep: Deposit, u: float, rng: np.random.Generator,
    holes: np.ndarray,
) -> np.ndarray:
    """Reflected-light rendering of a label map, ``(H, W, 3)`` float32 in 0–255 (before noise and JPEG)."""
    h, w = labels.shape
    lut = np.zeros((256, 3), dtype=np.float32)
    for c, ph in PHASES.items():
        lut[c] = ph.rgb
    for c, rgb in dep.colours.items():
        lut[c] = rgb
    lut[0] = dep.gangue
    # per-image shifts of each phase (composition of solid solutions, polish, tarnish)
    lut[:, :] *= np.exp(rng.normal(0, 0.025, (256, 1))).astype(np.float32)
    lut[0] *= np.float32(np.exp(rng.normal(0, 0.06)))
    img = lut[labels]
    # per-grain brightness and slight tint (bireflectance, orientation)
    ncell = int(cells.max()) + 1
    gv = np.zeros(256, dtype=np.float32)
    mo = np.zeros(256, dtype=np.float32)
    for c, ph in PHASES.items():
        gv[c], mo[c] = ph.grain_var, ph.mottle
    grain = rng.standard_normal(ncell).astype(np.float32)
    bright = 1 + gv[labels] * grain[cells]
    # internal mottling at three scales (uneven polish, tarnish, fine polishing texture)
    m = 0.6 * _noise((h, w), 40 * u, rng) + 0.45 * _noise((h, w), 5 * u, rng) + 0.3 * _noise((h, w), 1.2 * u, rng)
    bright *= 1 + mo[labels] * m
    img *= bright[..., None]
    # gangue: dark grey silicates with darker patches and black holes
    bg = labels == 0
    if bg.any():
        g = 0.8 * _noise((h, w), 3 * u, rng) + 0.6 * _noise((h, w), 30 * u, rng)
        img[bg] *= np.clip(1 + 0.22 * g[bg], 0.3, 2.2)[:, None]
        img[holes] = (11, 11, 12)
    # sphalerite internal reflections: sparse soft warm glows
    sph = labels == 8
    if sph.mean() > 0.01:
        glow = np.clip(_noise((h, w), 6 * u, rng) - 2.0, 0, None)
        img[sph] += (glow[sph] * 40)[:, None] * np.array([1.0, 0.85, 0.55], dtype=np.float32)
    # relief: dark halo on the soft side of hard grains, faint bright fringe inside
    hard = np.zeros(256, dtype=bool)
    for c, ph in PHASES.items():
        hard[c] = ph.hard
    hm = hard[labels]
    k = max(1, round(u))
    if hm.any():
        outer = ndimage.binary_dilation(hm, iterations=k) & ~hm & ~bg
        img[outer] *= 0.72
        inner = hm & ~ndimage.binary_erosion(hm, iterations=k)
        img[inner] *= 1.04
    # galena: triangular cleavage pits (too small to be outlined in real masks either)
    gl = labels == 2
    ngl = int(np.count_nonzero(gl) / (500 * u * u))
    if ngl:
        pit = Image.new("L", (w, h), 0)
        dp = ImageDraw.Draw(pit)
        yx = np.argwhere(gl[:: max(1, round(2 * u)), :: max(1, round(2 * u))]) * max(1, round(2 * u))
        for (py, px), r, a0 in zip(yx[rng.integers(0, len(yx), ngl)], rng.uniform(0.8, 2.5, ngl) * u,
                                   rng.uniform(0, 2 * np.pi, ngl)):
            ang = a0 + np.array([0.0, 2.1, 4.2])
            dp.polygon([(px + r * np.cos(t), py + r * np.sin(t)) for t in ang], fill=1)
        pm = np.asarray(pit, dtype=bool) & gl
        img[pm] *= 0.35
    # contact grooves: phase boundaries are polished out into thin dark seams of varying depth
    edge = np.zeros((h, w), dtype=bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    if k > 1:
        edge = ndimage.binary_dilation(edge, iterations=k - 1)
    depth = np.clip(0.22 + 0.25 * _noise((h, w), 25 * u, rng), 0.0, 0.6)
    img[edge] *= (1 - depth[edge])[:, None]
    # mixed pixels: contacts are a little out of focus and blur over a couple of pixels
    img = _blur_u8(np.clip(img + 0.5, 0, 255).astype(np.uint8), rng.uniform(0.6, 1.1) * u).astype(np.float32)
    # polishing scratches across all phases (darker, thin, straight or slightly curved)
    sc = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(sc)
    diag = float(np.hypot(h, w))
    main = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(10, 50) * (h * w) / (1024 * 768 / u**2) ** 0.5 / 28 + 3)):
        th = main + rng.normal(0, 0.5) if rng.random() < 0.7 else rng.uniform(0, np.pi)
        c = rng.uniform((0, 0), (w, h))
        ln = rng.uniform(0.2, 1.0) * diag
        dd = np.array([np.cos(th), np.sin(th)]) * ln / 2
        bend = rng.normal(0, 0.03) * ln * np.array([-np.sin(th), np.cos(th)])
        pts = [tuple(c - dd), tuple(c + bend), tuple(c + dd)]
        d.line(pts, fill=int(rng.integers(25, 110)), width=1 if u < 1.5 else round(u), joint="curve")
    s = np.asarray(sc, dtype=np.float32) / 255.0
    soft = np.where(hm, 0.4, 1.0).astype(np.float32)
    img *= (1 - 0.6 * s * soft)[..., None]
    return img


def generate_section(
    deposit: Deposit | str, size: tuple[int, int], rng: np.random.Generator, scale: float = BASE_SCALE,
    composition: Mapping[int, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic polished section.

    Args:
        deposit: a :class:`Deposit` or a key of :data:`DEPOSITS`.
        size: image size ``(width, height)`` in px.
        rng: random generator (the section is a pure function of its state).
        scale: scale relative to native ×100 (0.5 = the real sample's resolution; lengths scale with it).
        composition: modal composition of this section ``{code: share}``; default: drawn around the
            deposit's composition (Dirichlet with the deposit's ``variability``).

    Returns:
        ``(image, mask)``: ``(H, W, 3)`` uint8 sRGB image and ``(H, W)`` uint8 LumenStone codes, aligned.

    Raises:
        KeyError: unknown deposit key (the message lists valid keys).
        ValueError: size smaller than 16×16 or scale outside (0, 4].
    """
    dep = _deposit(deposit)
    w, h = int(size[0]), int(size[1])
    if w < 16 or h < 16:
        raise ValueError(f"size must be at least 16x16 px, got {w}x{h}")
    if not 0 < scale <= 4:
        raise ValueError(f"scale must be in (0, 4] relative to native ×100, got {scale}")
    u = scale / BASE_SCALE
    comp = dict(dep.composition)
    if composition is None:
        codes = list(comp)
        alpha = np.array([comp[c] for c in codes]) * dep.variability + 0.05
        draw = rng.dirichlet(alpha)
        draw = 0.7 * draw + 0.3 * np.array([comp[c] for c in codes])
        comp_img = {c: float(v) for c, v in zip(codes, draw)}
    else:
        tot = sum(composition.values())
        comp_img = {int(c): float(v) / tot for c, v in composition.items()}
    scale_t = {c: comp_img.get(c, 0.0) / comp[c] if comp.get(c) else 1.0 for c in comp_img}
    targets = _host_targets(dep, comp_img, scale_t)
    labels = _host_map((h, w), dep, targets, u, rng)
    cells = _grains((h, w), dep, u, rng)
    for t in dep.textures:
        _paint_texture(labels, t, t.amount * scale_t.get(t.phase, 1.0), u, cells, rng)
    # black holes inside the gangue and plucked gaps along ore contacts (they stay background in the mask)
    bg = labels == 0
    holes = bg & (_noise((h, w), 6 * u, rng) > float(special.ndtri(1 - dep.holes)))
    gap = ndimage.binary_dilation(~bg, iterations=max(1, round(2 * u))) & bg
    holes |= gap & (_noise((h, w), 15 * u, rng) > 0.0)
    image = _render(labels, cells, dep, u, rng, holes)
    image = _optics(image, u, rng)
    return image, labels


def _optics(img: np.ndarray, u: float, rng: np.random.Generator) -> np.ndarray:
    """Vignetting, white-balance drift, camera noise and defocus; returns uint8."""
    h, w = img.shape[:2]
    # vignetting: radial falloff around an off-centre optical axis, relative to the native field of view
    cy, cx = h / 2 + rng.normal(0, 0.1) * h, w / 2 + rng.normal(0, 0.1) * w
    fov = 0.5 * np.hypot(3396, 2547) * u * BASE_SCALE
    yy = ((np.arange(h, dtype=np.float32) - cy) / fov) ** 2
    xx = ((np.arange(w, dtype=np.float32) - cx) / fov) ** 2
    vig = 1 - rng.uniform(0.25, 0.6) * (yy[:, None] + xx[None, :])
    # uneven illumination: a tilted, lumpy field (lamp alignment, dirt in the optics), a few % of the signal
    ty, tx = rng.normal(0, 0.04, 2)
    vig = vig * (1 + ty * np.linspace(-1, 1, h, dtype=np.float32)[:, None]
                 + tx * np.linspace(-1, 1, w, dtype=np.float32)[None, :])
    vig *= 1 + rng.uniform(0.03, 0.08) * _noise((h, w), 150 * u, rng)
    gain = (rng.normal(1.0, 0.03, 3) * np.exp(rng.normal(0, 0.08))).astype(np.float32)
    img *= vig[..., None]
    img *= gain
    # camera noise (shot + read); the defocus blur below correlates it slightly, as demosaicing does
    noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    img += noise * (2.0 + 0.15 * np.sqrt(np.maximum(img, 0)))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return _blur_u8(out, rng.uniform(0.4, 0.8) * u)


def _deposit(deposit: Deposit | str) -> Deposit:
    if isinstance(deposit, Deposit):
        return deposit
    try:
        return DEPOSITS[deposit]
    except KeyError:
        raise KeyError(f"unknown deposit {deposit!r}; valid keys: {', '.join(DEPOSITS)}") from None


# -- dataset --------------------------------------------------------------------------------------
def image_name(key: str, split: str, k: int) -> str:
    """File stem of image ``k`` of ``split``: ``pbzn_a_003`` (train) or ``pbzn_a_t003`` (test)."""
    return f"{key}_{'' if split == 'train' else split[0]}{k:03d}"


def write_dataset(
    out: str | Path,
    n_train: int,
    n_test: int,
    size: tuple[int, int] = (1024, 768),
    seed: int = 0,
    overwrite: bool = False,
    scale: float = BASE_SCALE,
    deposits: Sequence[str] = SCHEDULE,
    quality: int = JPEG_QUALITY,
    progress: bool = False,
) -> Path:
    """Write a synthetic dataset in LumenStone layout, atomically.

    Creates ``OUT/imgs/{train,test}/NAME.jpg``, ``OUT/masks/{train,test}/NAME.png`` (LumenStone codes),
    ``OUT/dataset.yaml`` (name, scale, classes) and ``OUT/deposits.csv`` (image, deposit, association).
    The folder is built beside ``out`` and renamed into place, so readers never see a half-written
    dataset. Image ``k`` of a split depends only on ``(seed, split, k)``: a larger dataset starts with the
    images of a smaller one, byte for byte.

    Args:
        out: output folder.
        n_train: training images (≥ 1).
        n_test: test images (≥ 0).
        size: image size ``(width, height)`` in px.
        seed: random seed.
        overwrite: replace an existing ``out``.
        scale: scale stored in ``dataset.yaml`` and used to size textures (0.5 = the real sample's).
        deposits: deposit keys cycled over images (default :data:`SCHEDULE`).
        quality: JPEG quality (1–95).
        progress: show a tqdm progress bar.

    Returns:
        The dataset folder.

    Raises:
        SynthExistsError: ``out`` exists and ``overwrite`` is false.
        ValueError: bad counts, sizes or deposit keys.
    """
    out = Path(out).expanduser()
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train ≥ 1 and n_test ≥ 0, got {n_train} and {n_test}")
    for k in deposits:
        _deposit(k)
    if not deposits:
        raise ValueError("deposits must name at least one deposit")
    if out.exists() and not overwrite:
        raise SynthExistsError(
            f"{out}: folder already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
            "or choose another --out"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        rows = []
        used: set[int] = set()
        jobs = [("train", k) for k in range(n_train)] + [("test", k) for k in range(n_test)]
        it = jobs
        if progress:
            from tqdm import tqdm

            it = tqdm(jobs, desc="synth", unit="img")
        for split, k in it:
            key = deposits[k % len(deposits)]
            dep = DEPOSITS[key]
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, k])
            image, mask = generate_section(dep, size, rng, scale=scale)
            name = image_name(key, split, k)
            save_image(image, tmp / "imgs" / split / f"{name}.jpg", quality=quality)
            save_image(mask, tmp / "masks" / split / f"{name}.png")
            used.update(dep.codes)
            rows.append((name, key, dep.association))
        if n_test == 0:
            (tmp / "imgs" / "test").mkdir(parents=True, exist_ok=True)
            (tmp / "masks" / "test").mkdir(parents=True, exist_ok=True)
        write_text(tmp / "dataset.yaml", _dataset_yaml(scale, sorted(used), seed, size, deposits))
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["image", "deposit", "association"])
        wr.writerows(rows)
        write_text(tmp / "deposits.csv", buf.getvalue())
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _dataset_yaml(scale: float, codes: list[int], seed: int, size: tuple[int, int], deposits: Sequence[str]) -> str:
    keys = list(dict.fromkeys(deposits))
    return (
        "name: \"lumenkit synthetic polished sections\"\n"
        f"scale: {scale}  # relative to native 3396x2547 images at x100\n"
        f"classes: [{', '.join(str(c) for c in codes)}]\n"
        "generator: lumenkit.synth\n"
        f"seed: {seed}\n"
        f"size: [{size[0]}, {size[1]}]\n"
        f"deposits: [{', '.join(keys)}]\n"
    )
