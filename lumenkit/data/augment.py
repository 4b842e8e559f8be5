"""Patch + mask augmentations that respect reflected-light physics (geometry freely, colour only gently).

In reflected light a polished section has no preferred orientation, so flips and 90° rotations are always safe
(on by default).  Small rotations and scale changes resample the mask label-preservingly (nearest neighbour) and
fill pixels that come from outside the patch with 255 (ignore); the image is resampled bilinearly with replicated
borders.  Colour is diagnostic (reflectance and tint identify the mineral), so brightness, gamma and
white-balance jitter are off by default and meant to stay modest (a few percent), mimicking lamp and camera drift
between imaging sessions.  Sensor noise and slight defocus (also off by default) leave colour means unchanged and
teach the network not to rely on the very smooth texture of downsampled training images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lumenkit.data.catalogue import IGNORE


class Augment:
    """Composable random augmentation of an ``(H, W, 3)`` uint8 image and its ``(H, W)`` uint8 mask.

    Applied in this order: flips, rot90, rotation + scale (one resampling), defocus blur, photometric jitter (one
    lookup table), sensor noise.  All operations are vectorised (no per-pixel Python loops).

    Args:
        flips: random horizontal and vertical flips (each with probability 1/2).
        rot90: random rotation by a multiple of 90°.
        rotate_deg: rotation angle drawn uniformly from ``[-rotate_deg, rotate_deg]`` degrees (0 = off).
        scale: zoom factor drawn log-uniformly from ``(low, high)``; ``(1, 1)`` = off; > 1 magnifies.
        brightness: relative brightness jitter, factor in ``[1 − b, 1 + b]`` (0 = off; 0.05 is modest).
        gamma: gamma jitter, exponent ``exp(u)`` with ``u`` in ``[−g, g]`` (0 = off; 0.05 is modest).
        white_balance: per-channel gain jitter in ``[1 − w, 1 + w]``, renormalised to mean 1 (0 = off; 0.02).
        noise: additive Gaussian sensor noise, standard deviation drawn uniformly from ``[0, noise]`` grey levels
            (0–255 scale, at the patch's resolution; 0 = off).
        blur: Gaussian defocus applied to half the patches, sigma drawn uniformly from ``[0, blur]`` px (0 = off).
        image_order: image interpolation for rotation/scale: 1 bilinear (default) or 0 nearest.
        seed: seed of the generator used when ``__call__`` gets no ``rng``.

    Raises:
        ValueError: for negative jitters, a non-positive or reversed scale range, or a bad ``image_order``.

    Example:
        >>> aug = Augment(rotate_deg=10, brightness=0.05)
        >>> image2, mask2 = aug(image, mask, rng=np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(
        self,
        flips: bool = True,
        rot90: bool = True,
        rotate_deg: float = 0.0,
        scale: tuple[float, float] = (1.0, 1.0),
        brightness: float = 0.0,
        gamma: float = 0.0,
        white_balance: float = 0.0,
        noise: float = 0.0,
        blur: float = 0.0,
        image_order: int = 1,
        seed: int | None = None,
    ) -> None:
        for name, v in (("rotate_deg", rotate_deg), ("brightness", brightness), ("gamma", gamma),
                        ("white_balance", white_balance), ("noise", noise), ("blur", blur)):
            if not v >= 0:
                raise ValueError(f"{name} must be ≥ 0 (0 = off), got {v}")
        if brightness >= 1 or white_balance >= 1:
            raise ValueError("brightness and white_balance must be < 1 (relative jitter; a few percent is typical)")
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be a range (low, high) with 0 < low ≤ high, got {scale}")
        if image_order not in (0, 1):
            raise ValueError(f"image_order must be 0 (nearest) or 1 (bilinear), got {image_order}")
        self.flips, self.rot90 = bool(flips), bool(rot90)
        self.rotate_deg, self.scale = float(rotate_deg), (lo, hi)
        self.brightness, self.gamma, self.white_balance = float(brightness), float(gamma), float(white_balance)
        self.noise, self.blur = float(noise), float(blur)
        self.image_order = image_order
        self.rng = np.random.default_rng(seed)

    @classmethod
    def mild(cls, seed: int | None = None) -> Augment:
        """A recommended mild set: flips, rot90, ±15° rotation, ×0.9–1.1 scale, 5 % brightness/gamma, 2 % WB."""
        return cls(rotate_deg=15.0, scale=(0.9, 1.1), brightness=0.05, gamma=0.05, white_balance=0.02, seed=seed)

    def config(self) -> dict[str, Any]:
        """Parameters as a plain dict (for run configs)."""
        return {"flips": self.flips, "rot90": self.rot90, "rotate_deg": self.rotate_deg, "scale": list(self.scale),
                "brightness": self.brightness, "gamma": self.gamma, "white_balance": self.white_balance,
                "noise": self.noise, "blur": self.blur, "image_order": self.image_order}

    def __repr__(self) -> str:
        return "Augment(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one image and mask with the same random geometry.

        Args:
            image: ``(H, W, 3)`` uint8.
            mask: ``(H, W)`` uint8 labels (255 = ignore).
            rng: random generator (default: this object's own, seeded by ``seed``).

        Returns:
            ``(image, mask)``: new contiguous arrays of the same dtypes; same size unless ``rot90`` turned a
            non-square patch.

        Raises:
            ValueError: if the shapes or dtypes are wrong or image and mask sizes differ.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} sizes differ")
        if mask.dtype != np.uint8:
            raise ValueError(f"mask must be uint8 labels (255 = ignore), got {mask.dtype}")
        rng = self.rng if rng is None else rng
        if self.flips:
            fy, fx = rng.random(2) < 0.5
            if fy:
                image, mask = image[::-1], mask[::-1]
            if fx:
                image, mask = image[:, ::-1], mask[:, ::-1]
        if self.rot90:
            k = int(rng.integers(0, 4))
            if k:
                image, mask = np.rot90(image, k), np.rot90(mask, k)
        angle = float(rng.uniform(-self.rotate_deg, self.rotate_deg)) if self.rotate_deg > 0 else 0.0
        lo, hi = self.scale
        zoom = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else lo
        if angle != 0.0 or zoom != 1.0:
            image, mask = affine(image, mask, angle, zoom, self.image_order)
        if self.blur > 0 and rng.random() < 0.5:
            image = gaussian_blur(image, float(rng.uniform(0.0, self.blur)))
        if self.brightness > 0 or self.gamma > 0 or self.white_balance > 0:
            b = 1.0 + rng.uniform(-self.brightness, self.brightness) if self.brightness > 0 else 1.0
            g = float(np.exp(rng.uniform(-self.gamma, self.gamma))) if self.gamma > 0 else 1.0
            wb = 1.0 + rng.uniform(-self.white_balance, self.white_balance, 3) if self.white_balance > 0 else np.ones(3)
            image = photometric(image, b, g, wb / wb.mean())
        if self.noise > 0:
            sigma = float(rng.uniform(0.0, self.noise))
            noisy = rng.standard_normal(image.shape, dtype=np.float32)  # one float buffer, updated in place
            noisy *= sigma
            noisy += image
            noisy += 0.5
            image = np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def photometric(image: np.ndarray, brightness: float, gamma: float, gains: np.ndarray) -> np.ndarray:
    """Apply ``255 · (v / 255) ** gamma · brightness · gain[c]`` per channel through a lookup table (uint8 out)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    lut = np.clip(255.0 * (v[None, :] ** gamma) * brightness * np.asarray(gains)[:, None] + 0.5, 0, 255)
    lut = lut.astype(np.uint8)
    out = np.empty_like(image)
    for c in range(image.shape[2]):  # three table lookups, each vectorised over all pixels
        np.take(lut[c], image[..., c], out=out[..., c])
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an ``(H, W, 3)`` uint8 image with ``sigma`` px in both directions (reflect borders)."""
    if sigma <= 0:
        return image
    from scipy import ndimage as ndi

    out = ndi.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect", output=np.float32)
    out += 0.5
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def affine(
    image: np.ndarray, mask: np.ndarray, angle_deg: float, zoom: float, image_order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate by ``angle_deg`` (counter-clockwise) and magnify by ``zoom`` about the centre, keeping the size.

    The mask is sampled nearest-neighbour; mask pixels whose source lies outside the input become 255.  The image
    is sampled bilinearly (``image_order=1``) or nearest (0), with replicated borders (those pixels are ignored
    by the loss anyway, through the 255 mask).

    Returns:
        ``(image, mask)`` of the input sizes, uint8.
    """
    h, w = mask.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    th = np.deg2rad(angle_deg)
    c, s = np.cos(th) / zoom, np.sin(th) / zoom
    dy = (np.arange(h, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(w, dtype=np.float32) - cx)[None, :]
    sy = cy + c * dy - s * dx
    sx = cx + s * dy + c * dx
    iy = np.floor(sy + 0.5).astype(np.intp)
    ix = np.floor(sx + 0.5).astype(np.intp)
    outside = (iy < 0) | (iy >= h) | (ix < 0) | (ix >= w)
    iyc, ixc = np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)
    out_mask = np.take(mask.reshape(-1), (iyc * w + ixc).ravel()).reshape(h, w)
    out_mask[outside] = IGNORE
    flat = image.reshape(-1, image.shape[2])
    if image_order == 0:
        return np.take(flat, (iyc * w + ixc).ravel(), axis=0).reshape(image.shape), out_mask
    y0 = np.floor(sy).astype(np.intp)
    x0 = np.floor(sx).astype(np.intp)
    fy = (sy - y0).ravel()[:, None]
    fx = (sx - x0).ravel()[:, None]
    ya, yb = np.clip(y0, 0, h - 1) * w, np.clip(y0 + 1, 0, h - 1) * w
    xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    top = np.take(flat, (ya + xa).ravel(), axis=0).astype(np.float32)
    top += (np.take(flat, (ya + xb).ravel(), axis=0) - top) * fx
    bot = np.take(flat, (yb + xa).ravel(), axis=0).astype(np.float32)
    bot += (np.take(flat, (yb + xb).ravel(), axis=0) - bot) * fx
    top += (bot - top) * fy
    out = top.reshape(h, w, -1)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), out_mask
