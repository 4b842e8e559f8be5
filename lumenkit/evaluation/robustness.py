"""Controlled changes of imaging conditions, to measure how a model holds up under other microscopes and light.

Each perturbation maps an RGB uint8 image and a strength to a new image; strengths are in the units named in
:data:`PERTURBATIONS`. ``scale`` is special: it changes the magnification the model sees (the image is read at
``(1 + s)`` × the model's scale but declared at the model's scale), so it is applied inside :func:`evaluate_under`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

Perturb = Callable[[np.ndarray, float], np.ndarray]


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def brightness(image: np.ndarray, s: float) -> np.ndarray:
    """Exposure change: multiply intensities by ``1 + s`` (s = −0.3 is 30% darker)."""
    return _clip(image.astype(np.float32) * (1 + s))


def gamma(image: np.ndarray, s: float) -> np.ndarray:
    """Camera response change: ``I ← 255 · (I/255)^(2^s)`` (s > 0 darkens mid-tones)."""
    return _clip(255.0 * (image.astype(np.float32) / 255.0) ** (2.0**s))


def white_balance(image: np.ndarray, s: float) -> np.ndarray:
    """Colour-temperature shift: red × (1 + s), blue × (1 − s) (s > 0 warmer lamp, s < 0 cooler)."""
    gains = np.array([1 + s, 1.0, 1 - s], dtype=np.float32)
    return _clip(image.astype(np.float32) * gains)


def vignetting(image: np.ndarray, s: float) -> np.ndarray:
    """Uneven illumination: intensity × (1 − s · r²), r = distance from the centre / half-diagonal."""
    h, w = image.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return _clip(image.astype(np.float32) * (1 - s * r2)[..., None])


def defocus(image: np.ndarray, s: float) -> np.ndarray:
    """Defocus: Gaussian blur with sigma ``s`` px (at the image's resolution)."""
    if s <= 0:
        return image
    return _clip(ndi.gaussian_filter(image.astype(np.float32), sigma=(s, s, 0)))


def noise(image: np.ndarray, s: float, seed: int = 0) -> np.ndarray:
    """Sensor noise: additive Gaussian with standard deviation ``s`` grey levels (fixed seed)."""
    rng = np.random.default_rng(seed)
    return _clip(image.astype(np.float32) + rng.normal(0, s, image.shape).astype(np.float32))


def jpeg(image: np.ndarray, s: float) -> np.ndarray:
    """JPEG re-compression at quality ``s`` (1–95, 4:2:0 chroma subsampling as most cameras use)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(s), subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def identity(image: np.ndarray, s: float) -> np.ndarray:
    """No change (the ``scale`` perturbation acts when reading: ``evaluate(magnification=...)``)."""
    return image


@dataclass(frozen=True)
class Perturbation:
    """A named change of imaging conditions with its strengths and units."""

    name: str
    apply: Perturb
    strengths: tuple[float, ...]
    neutral: float
    unit: str
    plain: str


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("brightness", brightness, (-0.4, -0.2, 0.2, 0.4), 0.0, "relative exposure change",
                     "a brighter or dimmer lamp / longer or shorter exposure"),
        Perturbation("gamma", gamma, (-0.5, -0.25, 0.25, 0.5), 0.0, "log2 of the gamma exponent",
                     "another camera's tone curve"),
        Perturbation("white_balance", white_balance, (-0.2, -0.1, 0.1, 0.2), 0.0, "red/blue gain change",
                     "a warmer or cooler lamp, or another white balance"),
        Perturbation("vignetting", vignetting, (0.2, 0.4, 0.6), 0.0, "darkening at the corners",
                     "uneven illumination (dark corners)"),
        Perturbation("defocus", defocus, (1.0, 2.0, 4.0), 0.0, "blur sigma in px", "slightly out of focus"),
        Perturbation("noise", noise, (5.0, 10.0, 20.0), 0.0, "noise std in grey levels", "a noisier camera"),
        Perturbation("jpeg", jpeg, (75.0, 50.0, 25.0), 100.0, "JPEG quality", "stronger JPEG compression"),
        Perturbation("scale", identity, (-0.25, -0.1, 0.1, 0.25), 0.0, "relative magnification change",
                     "another objective or camera pixel size (magnification)"),
    )
}
"""Every perturbation with default strengths."""


def parse_perturb(text: str) -> tuple[str, float]:
    """Parse ``NAME=STRENGTH`` (e.g. ``white_balance=0.1``).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
        ValueError: a non-numeric strength.
    """
    name, _, value = text.partition("=")
    check_perturbations([name])
    try:
        return name, float(value)
    except ValueError:
        raise ValueError(f"perturbation strength must be a number: {text!r} (e.g. {name}=0.2)") from None


def check_perturbations(names: Sequence[str]) -> None:
    """Refuse perturbation names that :data:`PERTURBATIONS` does not define, before any work.

    Raises:
        ConfigError: one or more unknown names; the one-line message lists them and the known ones.
    """
    from lumenkit.errors import ConfigError

    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        names_ = ", ".join(map(repr, unknown))
        raise ConfigError(f"unknown perturbation {names_}; choose from {', '.join(PERTURBATIONS)}")


def image_transform(name: str, strength: float) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """The image function and the magnification factor for one perturbation at one strength.

    Returns:
        ``(function, magnification)``: the function changes an RGB uint8 image; the magnification is the factor
        by which the image is to be resampled when read (``1 + strength`` for ``scale``, else 1.0).

    Raises:
        ConfigError: ``name`` is not one of :data:`PERTURBATIONS`.
    """
    check_perturbations([name])
    p = PERTURBATIONS[name]
    if name == "scale":
        return (lambda im: im), 1.0 + strength
    return (lambda im: p.apply(im, strength)), 1.0


def robustness_curves(
    data: str | Path,
    model: Any,
    split: str = "test",
    names: Sequence[str] | None = None,
    strengths: dict[str, Sequence[float]] | None = None,
    remedy: str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> pd.DataFrame:
    """Evaluate a model under each perturbation and strength (plus the clean reference).

    Args:
        data: dataset folder.
        model: checkpoint or path.
        split: split to evaluate.
        names: perturbations (default: all of :data:`PERTURBATIONS`).
        strengths: per-name strengths (default: each perturbation's own).
        remedy: ``"flat_field"`` to correct each perturbed image with a flat-field / white-balance calibration
            from a reference frame (a blank grey field) imaged under the same condition, as a user would image a
            mirror under their lamp (see :func:`flat_field_remedy`); ``None`` for none.
        progress: print one line per condition.
        **kwargs: passed to :func:`lumenkit.evaluation.evaluate.evaluate` (e.g. ``validation``, ``tiling``,
            ``predict_kwargs``).

    Returns:
        DataFrame with one row per (perturbation, strength): ``mean_iou``, ``pixel_accuracy`` and
        ``iou_<label>`` per class; the clean run has perturbation ``"none"``.

    Raises:
        ConfigError: an unknown perturbation name (in ``names`` or ``strengths``) or remedy, before any evaluation.
        CheckpointError, and what :func:`lumenkit.evaluation.evaluate.evaluate` raises on bad input files.
    """
    from lumenkit.errors import ConfigError
    from lumenkit.evaluation.evaluate import evaluate
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

    if remedy not in (None, "flat_field"):
        raise ConfigError(f"unknown remedy {remedy!r}; use 'flat_field' or None")
    check_perturbations([*(names or ()), *(strengths or {})])
    ckpt = model if isinstance(model, Checkpoint) else load_checkpoint(model)
    rows = []
    conditions: list[tuple[str, float]] = [("none", 0.0)]
    for n in names if names is not None else list(PERTURBATIONS):
        for s in (strengths or {}).get(n, PERTURBATIONS[n].strengths):
            conditions.append((n, float(s)))
    for name, s in conditions:
        fn, mag = image_transform(name, s) if name != "none" else ((lambda im: im), 1.0)
        if remedy is None or name == "none":
            transform = fn
        else:
            fix = flat_field_remedy(name, s)
            transform = (lambda im, f=fn, r=fix: r(f(im)))
        ev = evaluate(data, ckpt, split=split, baselines=False, progress=False, transform=transform,
                      magnification=mag, **kwargs)
        row = {"perturbation": name, "strength": s, "remedy": remedy if remedy and name != "none" else "",
               "mean_iou": ev.scores.mean_iou,
               "pixel_accuracy": ev.scores.pixel_accuracy}
        row.update({f"iou_{lab}": v for lab, v in zip(ev.scores.labels, ev.scores.iou)})
        rows.append(row)
        if progress:
            print(f"{name}={s:g}: mean IoU {ev.scores.mean_iou:.3f}", flush=True)
    return pd.DataFrame(rows)


def flat_field_remedy(name: str, strength: float) -> Callable[[np.ndarray], np.ndarray]:
    """Calibration for one imaging condition, as a function correcting images taken under it.

    A blank mid-grey reference frame of the image's size, imaged under the same condition, gives a
    :class:`lumenkit.data.flatfield.FlatField` that maps it back to grey; that correction is applied to the image.

    Multiplicative changes (exposure, white balance, vignetting) are undone; blur, noise and JPEG leave a blank
    reference unchanged, so the correction does nothing for them (honestly).
    """
    from lumenkit.data.flatfield import FlatField

    fn, _ = image_transform(name, strength)
    cache: dict[tuple[int, ...], FlatField] = {}

    def apply(image: np.ndarray) -> np.ndarray:
        if image.shape not in cache:
            reference = fn(np.full(image.shape, 128, np.uint8))
            cache[image.shape] = FlatField.from_reference(reference, target=128.0)
        return cache[image.shape](image)

    return apply


def worst_conditions(curves: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The ``k`` perturbations whose strongest tested setting loses the most mean IoU, in plain language."""
    clean = float(curves.loc[curves["perturbation"] == "none", "mean_iou"].iloc[0])
    rows = []
    for name, g in curves[curves["perturbation"] != "none"].groupby("perturbation"):
        worst = g.loc[g["mean_iou"].idxmin()]
        p = PERTURBATIONS[str(name)]
        rows.append({"perturbation": name, "what it means": p.plain, "worst strength": worst["strength"],
                     "unit": p.unit, "mean IoU": worst["mean_iou"], "loss": clean - worst["mean_iou"]})
    return pd.DataFrame(rows).sort_values("loss", ascending=False).head(k).reset_index(drop=True)


LIGHTING: tuple[str, ...] = ("brightness", "white_balance", "vignetting", "gamma")
"""Conditions a flat-field / white-balance calibration can address."""


@dataclass
class RobustnessStudy:
    """Degradation curves of a model, and the lighting conditions again after calibration."""

    curves: pd.DataFrame
    calibrated: pd.DataFrame

    @property
    def worst(self) -> pd.DataFrame:
        """The three conditions that hurt most (see :func:`worst_conditions`)."""
        return worst_conditions(self.curves)

    def summary(self) -> str:
        """One plain-language sentence naming the conditions that hurt most."""
        clean = float(self.curves.loc[self.curves["perturbation"] == "none", "mean_iou"].iloc[0])
        parts = [
            f"{r['what it means']} ({r['perturbation']}={r['worst strength']:g}): mean IoU {r['mean IoU']:.3f}, "
            f"{r['loss']:.3f} below the clean {clean:.3f}"
            for _, r in self.worst.iterrows()
        ]
        return "Conditions that hurt most: " + "; ".join(parts) + "."

    def to_csv(self, folder: str | Path) -> None:
        """Write ``robustness.csv`` and ``robustness_calibrated.csv`` into ``folder`` (atomically)."""
        from lumenkit.data.imageio import write_text

        write_text(Path(folder) / "robustness.csv", self.curves.to_csv(index=False))
        write_text(Path(folder) / "robustness_calibrated.csv", self.calibrated.to_csv(index=False))


def robustness_study(data: str | Path, model: Any, split: str = "test", **kwargs: Any) -> RobustnessStudy:
    """All perturbations at their default strengths, then the lighting ones with the flat-field remedy.

    Returns:
        A :class:`RobustnessStudy`; ``calibrated`` has ``mean_iou`` and ``mean_iou_calibrated`` per lighting
        condition and strength.
    """
    curves = robustness_curves(data, model, split=split, progress=False, **kwargs)
    fixed = robustness_curves(data, model, split=split, names=LIGHTING, remedy="flat_field", progress=False,
                              **kwargs)
    cols = ["perturbation", "strength", "mean_iou"]
    both = curves[curves["perturbation"].isin(LIGHTING)][cols].merge(
        fixed[cols], on=["perturbation", "strength"], suffixes=("", "_calibrated")
    )
    return RobustnessStudy(curves, both)


def remedy_table(
    data: str | Path,
    model: Any,
    augmented_model: Any = None,
    split: str = "test",
    names: Sequence[str] | None = None,
    k: int = 3,
    n_val: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Curves of a model, its ``k`` worst conditions, and mean IoU there before and after each remedy.

    Remedies: (a) a model trained with augmentation tuned to these conditions (``augmented_model``: photometric
    jitter, sensor noise, defocus; same data and budget), whose own curves are measured too, and (b) a flat-field /
    white-balance calibration from a reference frame (:func:`flat_field_remedy`), alone and combined with (a).

    Args:
        data: dataset folder.
        model: the baseline checkpoint (or path).
        augmented_model: a checkpoint trained with augmentation (same data and budget as ``model``), or None.
        split: split to evaluate.
        names: perturbations to scan (default all).
        k: how many worst conditions get the remedies.
        n_val: validation images carved from train (split ``val``/``fit``); default: as each model was trained.
            Either way each model is scored on its own training seed and fold (:meth:`ValidationSplit.of_model`).
        **kwargs: passed to :func:`lumenkit.evaluation.evaluate.evaluate` (e.g. ``tiling``, ``predict_kwargs``).

    Returns:
        ``{"curves": DataFrame, "worst": DataFrame, "table": DataFrame}`` plus ``"augmented_curves"`` when an
        augmented model is given; ``table`` has one row per worst condition of the baseline (plus ``none``) and a
        mean-IoU column per model × remedy (``baseline``, ``augmented``, each also ``+ flat-field``).
    """
    from lumenkit.data.datasets import ValidationSplit
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint

    models = {label: m if isinstance(m, Checkpoint) else load_checkpoint(m)
              for label, m in (("baseline", model), ("augmented", augmented_model)) if m is not None}
    given = {label: kwargs if n_val is None else {**kwargs, "validation": ValidationSplit.of_model(m, n_val=n_val)}
             for label, m in models.items()}
    curves = robustness_curves(data, models["baseline"], split=split, names=names, progress=False, **given["baseline"])
    worst = worst_conditions(curves, k=k)
    measured = {"baseline": curves}
    if augmented_model is not None:
        measured["augmented"] = robustness_curves(data, models["augmented"], split=split, names=names, progress=False,
                                                  **given["augmented"])
    rows = []
    conditions = [("none", 0.0), *((str(r["perturbation"]), float(r["worst strength"])) for _, r in worst.iterrows())]
    for name, s in conditions:
        row: dict[str, Any] = {"perturbation": name, "strength": s}
        for label, m in models.items():
            known = measured[label]
            hit = known[(known["perturbation"] == name) & np.isclose(known["strength"], s)]
            if len(hit):  # already on this model's curves
                row[label] = float(hit["mean_iou"].iloc[0])
            for remedy in (None, "flat_field") if name != "none" else (None,):
                if remedy is None and len(hit):
                    continue
                c = robustness_curves(data, m, split=split, names=[name] if name != "none" else [],
                                      strengths={name: [s]}, remedy=remedy, progress=False, **given[label])
                row[f"{label}{' + flat-field' if remedy else ''}"] = float(c["mean_iou"].iloc[-1])
        rows.append(row)
    out = {"curves": curves, "worst": worst, "table": pd.DataFrame(rows)}
    if augmented_model is not None:
        out["augmented_curves"] = measured["augmented"]
    return out
