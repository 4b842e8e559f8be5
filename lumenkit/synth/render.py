"""Rendering a mask as a reflected-light image: reflectance, relief, scratches, pits, vignetting, noise, JPEG."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage, special

from lumenkit.errors import ConfigError
from lumenkit.synth.deposits import BASE_SCALE, DEPOSITS, PHASES, Deposit
from lumenkit.synth.painting import blur_u8, grain_field, host_map, host_targets, noise_field, paint_texture


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
    m = (0.6 * noise_field((h, w), 40 * u, rng) + 0.45 * noise_field((h, w), 5 * u, rng)
         + 0.3 * noise_field((h, w), 1.2 * u, rng))
    bright *= 1 + mo[labels] * m
    img *= bright[..., None]
    # gangue: dark grey silicates with darker patches and black holes
    bg = labels == 0
    if bg.any():
        g = 0.8 * noise_field((h, w), 3 * u, rng) + 0.6 * noise_field((h, w), 30 * u, rng)
        img[bg] *= np.clip(1 + 0.22 * g[bg], 0.3, 2.2)[:, None]
        img[holes] = (11, 11, 12)
    # sphalerite internal reflections: sparse soft warm glows
    sph = labels == 8
    if sph.mean() > 0.01:
        glow = np.clip(noise_field((h, w), 6 * u, rng) - 2.0, 0, None)
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
    depth = np.clip(0.22 + 0.25 * noise_field((h, w), 25 * u, rng), 0.0, 0.6)
    img[edge] *= (1 - depth[edge])[:, None]
    # mixed pixels: contacts are a little out of focus and blur over a couple of pixels
    img = blur_u8(np.clip(img + 0.5, 0, 255).astype(np.uint8), rng.uniform(0.6, 1.1) * u).astype(np.float32)
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
        ConfigError: unknown deposit key (the message lists valid keys).
        ValueError: size smaller than 16×16 or scale outside (0, 4].
    """
    dep = deposit_of(deposit)
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
    targets = host_targets(dep, comp_img, scale_t)
    labels = host_map((h, w), dep, targets, u, rng)
    cells = grain_field((h, w), dep, u, rng)
    for t in dep.textures:
        paint_texture(labels, t, t.amount * scale_t.get(t.phase, 1.0), u, cells, rng)
    # black holes inside the gangue and plucked gaps along ore contacts (they stay background in the mask)
    bg = labels == 0
    holes = bg & (noise_field((h, w), 6 * u, rng) > float(special.ndtri(1 - dep.holes)))
    gap = ndimage.binary_dilation(~bg, iterations=max(1, round(2 * u))) & bg
    holes |= gap & (noise_field((h, w), 15 * u, rng) > 0.0)
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
    vig *= 1 + rng.uniform(0.03, 0.08) * noise_field((h, w), 150 * u, rng)
    gain = (rng.normal(1.0, 0.03, 3) * np.exp(rng.normal(0, 0.08))).astype(np.float32)
    img *= vig[..., None]
    img *= gain
    # camera noise (shot + read); the defocus blur below correlates it slightly, as demosaicing does
    noise = rng.standard_normal((h, w, 3), dtype=np.float32)
    img += noise * (2.0 + 0.15 * np.sqrt(np.maximum(img, 0)))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return blur_u8(out, rng.uniform(0.4, 0.8) * u)


def deposit_of(deposit: Deposit | str) -> Deposit:
    """The deposit itself, or the one of :data:`DEPOSITS` with that key.

    Raises:
        ConfigError: unknown key (the message lists the valid ones; a ValueError).
    """
    if isinstance(deposit, Deposit):
        return deposit
    try:
        return DEPOSITS[deposit]
    except KeyError:
        raise ConfigError(f"unknown deposit {deposit!r}; valid keys: {', '.join(DEPOSITS)}") from None
