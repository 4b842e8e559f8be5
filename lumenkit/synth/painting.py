"""Painting a section's mask: host grains, textures (inclusions, rims, veinlets, flames) and bands."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from scipy.spatial import cKDTree

from lumenkit.synth.deposits import Deposit, Texture


# -- random fields --------------------------------------------------------------------------------
def noise_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian noise of unit std and correlation length ``sigma`` px, float32 ``shape``."""
    h, w = shape
    step = max(1, int(sigma / 1.25))
    ch, cw = h // step + 3, w // step + 3
    z = ndimage.gaussian_filter(rng.standard_normal((ch, cw)).astype(np.float32), sigma / step, mode="wrap")
    z /= z.std() + 1e-6
    if step > 1:
        z = np.asarray(Image.fromarray(z, mode="F").resize((cw * step, ch * step), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(z[:h, :w])


def blur_u8(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a uint8 image (2-D or RGB) with PIL (fast), same shape."""
    if sigma < 0.3:
        return a
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(sigma)))


def _sizes(rng: np.random.Generator, median: float, spread: float, n: int) -> np.ndarray:
    return median * np.exp(spread * rng.standard_normal(n))


# -- host map -------------------------------------------------------------------------------------
def host_map(
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
        noise_field((ch, cw), big * (1.4 if c == 0 else 1.0), rng) + rough * noise_field((ch, cw), small, rng)
        for c in codes
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


def grain_field(shape: tuple[int, int], dep: Deposit, u: float, rng: np.random.Generator) -> np.ndarray:
    """Grain ids (int32): a warped Voronoi mosaic of grain size ``dep.grain_size`` (log-normal density).

    Grains do not decide the phase (see :func:`host_map`); they give each crystal of a phase its own
    tint (bireflectance, orientation) and the grain boundaries where granular textures sit.
    """
    h, w = shape
    step = max(2, round(4 * u))
    ch, cw = -(-h // step), -(-w // step)
    gs = dep.grain_size * u
    n = int(rng.poisson(3 * h * w / gs**2)) + 2
    seeds = rng.uniform((0, 0), (h, w), size=(n, 2))
    dens = noise_field((ch, cw), 0.5 * dep.domain_size * u / step, rng)
    iy = np.minimum(seeds[:, 0] // step, ch - 1).astype(np.intp)
    ix = np.minimum(seeds[:, 1] // step, cw - 1).astype(np.intp)
    keep = rng.random(n) < np.exp(0.9 * (dens[iy, ix] - 2.5))
    keep[:2] = True
    gy, gx = np.mgrid[0:ch, 0:cw]
    pts = np.column_stack([gy.ravel() * step + step / 2, gx.ravel() * step + step / 2])
    coarse = cKDTree(seeds[keep]).query(pts)[1].reshape(ch, cw).astype(np.int32)
    wy = noise_field((h, w), 24 * u, rng) * (5 * u) + noise_field((h, w), 2.5 * u, rng) * (0.8 * step)
    wx = noise_field((h, w), 24 * u, rng) * (5 * u) + noise_field((h, w), 2.5 * u, rng) * (0.8 * step)
    yy = np.clip((np.arange(h, dtype=np.float32)[:, None] + wy) / step, 0, ch - 1).astype(np.intp)
    xx = np.clip((np.arange(w, dtype=np.float32)[None, :] + wx) / step, 0, cw - 1).astype(np.intp)
    return coarse[yy, xx]


def host_targets(dep: Deposit, comp: dict[int, float], scale_t: dict[int, float]) -> dict[int, float]:
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


def paint_texture(
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
        hit &= noise_field((h, w), 20 * u, rng) > -0.8
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
    patch = noise_field(c2.shape, 20 * u / sub, rng)
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
