"""Prior correction of a model trained on strokes: the class shares of the user's images, estimated by EM.

Strokes label every mineral about equally (that is how a user paints, and what the balancing sampler serves), so a
network trained on them learns class probabilities under that *served* prior π_s, not under the prior of the
images π_n (background is most of a section). Bayes' rule moves a prediction from one prior to the other by adding
``log(π_n / π_s)`` to the logits (Menon et al. 2021, "Long-tail learning via logit adjustment"). With strokes π_n
cannot be counted in the masks; :func:`em_prior` estimates it from the model's own posteriors on the training
images (Saerens, Latinne and Decaestecker 2002). :func:`em_prior_correction` folds ``τ · log(π_n / π_s)`` into
the bias of the 1×1 head, so prediction, TTA, evaluation and ONNX export use it unchanged, and records what it did
in the checkpoint's ``config["prior_correction"]``.

``lumenkit train`` applies it to ``model.pt`` at the end of a run on a sparse dataset (``strokes_prior``, τ = 0.5
by default): measured on LumenStone S2 strokes it added 0.07 validation mean IoU (docs/results-label-efficiency.md, "The
prior strokes teach, corrected by EM"). Fitting τ on whole masks and correcting dense models is research
(:mod:`lumenkit.lab.prior`).

Example:
    >>> import numpy as np
    >>> from lumenkit.training.prior import prior_shift
    >>> np.round(prior_shift([1, 1], [3, 1]), 3)        # served equally, nature 3:1
    array([ 0.405, -0.693])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.models.checkpoint import Checkpoint


def prior_shift(served: Sequence[float], natural: Sequence[float]) -> np.ndarray:
    """Per-class logit shift ``log(π_n / π_s)`` from served and natural pixel counts (any common unit).

    Classes absent from either count get 0 (no information to move them by).

    Raises:
        ValueError: counts of different lengths, negative counts, or nothing counted.
    """
    s = np.asarray(served, dtype=np.float64)
    n = np.asarray(natural, dtype=np.float64)
    if s.shape != n.shape or s.ndim != 1:
        raise ValueError(f"served {s.shape} and natural {n.shape} counts must be two vectors of equal length")
    if (s < 0).any() or (n < 0).any() or s.sum() <= 0 or n.sum() <= 0:
        raise ValueError("served and natural pixel counts must be non-negative and not all zero")
    ok = (s > 0) & (n > 0)
    out = np.zeros_like(s)
    out[ok] = np.log((n[ok] / n.sum()) / (s[ok] / s.sum()))
    return out


def em_prior(probs: Sequence[np.ndarray], served: Sequence[float], iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """The class prior of unlabelled pixels, estimated from a model's posteriors by EM (label-shift adaptation).

    A model trained under the served prior ``π_s`` gives posteriors ``p(y|x)``; under another prior ``π`` they
    become ``p(y|x) · (π/π_s)(y)``, renormalised.  The estimate iterates ``π ← mean over pixels of the adjusted
    posteriors`` from ``π = π_s`` to a fixed point, the maximum-likelihood prior of the pixels (Saerens, Latinne
    and Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities").  No mask is
    needed, so it serves models trained on strokes, whose labelled pixels say nothing of how common each mineral
    is.  Written here because the estimator is ten lines of numpy and no maintained library ships it for
    dense per-pixel posteriors.

    Args:
        probs: posteriors, each ``(K, ...)`` (one array per image, any spatial shape), summing to 1 over ``K``.
        served: ``(K,)`` pixels served per class in training (any common unit); classes never served keep 0.
        iters: maximum EM iterations.
        tol: stop when no class share moves by more than this.

    Returns:
        ``(K,)`` estimated class shares, summing to 1.

    Raises:
        ValueError: no pixels, or ``served`` not one non-negative value per class with a positive sum.
    """
    s = np.asarray(served, dtype=np.float64)
    flat = [np.asarray(p, dtype=np.float64).reshape(s.shape[0], -1) if np.asarray(p).shape[0] == s.shape[0]
            else None for p in probs]
    if any(f is None for f in flat) or s.ndim != 1:
        raise ValueError(f"every posterior needs {s.shape[0]} classes on its first axis, as served has")
    if (s < 0).any() or s.sum() <= 0:
        raise ValueError("served pixel counts must be non-negative and not all zero")
    pix = np.concatenate(flat, axis=1)  # type: ignore[arg-type]
    if pix.shape[1] == 0:
        raise ValueError("no pixels to estimate the prior from")
    s = s / s.sum()
    ok = s > 0
    prior = s.copy()
    for _ in range(iters):
        w = np.where(ok, prior / np.where(ok, s, 1.0), 0.0)
        adj = pix * w[:, None]
        adj /= np.maximum(adj.sum(0, keepdims=True), 1e-300)
        new = adj.mean(1)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return prior / prior.sum()


def estimate_natural_counts(ckpt: Checkpoint, images: LumenStoneDataset, served: Sequence[float],
                            progress: bool = False) -> np.ndarray:
    """``(K,)`` class shares of ``images`` estimated by :func:`em_prior` from ``ckpt``'s posteriors, masks unread.

    Each image is predicted once at the model's scale. Returned as pixel-count-like shares ×1e6 (integers), the
    unit :func:`prior_shift` and the checkpoint record take.

    Raises:
        ValueError: no images, or ``served`` not one count per class; image errors as in
            :class:`lumenkit.data.LumenStoneDataset`.
    """
    from tqdm.auto import tqdm

    from lumenkit.inference.predict import predict_image

    if not len(images):
        raise ValueError("no images to estimate the class shares from")
    probs = []
    for i in tqdm(range(len(images)), desc="class prior by EM", disable=not progress):
        image = images.read_image(i, scale=ckpt.scale)
        probs.append(predict_image(ckpt, image, input_scale=ckpt.scale, return_probs=True)["probs"])
    return np.round(em_prior(probs, served) * 1e6).astype(np.int64)


def em_prior_correction(ckpt: Checkpoint, images: LumenStoneDataset, served: Sequence[float], tau: float = 0.5,
                        progress: bool = False) -> tuple[Checkpoint, dict[str, Any]]:
    """``ckpt`` corrected to the class shares EM estimates on ``images`` (their masks unread), with strength ``tau``.

    The shares (:func:`estimate_natural_counts`) give the shift ``log(π_n / π_s)`` (:func:`prior_shift`), and
    ``tau`` times it is added to the head's bias (:func:`apply_prior_correction`).

    Args:
        ckpt: the trained model (left untouched).
        images: the images it was trained on (e.g. the ``fit`` split of a sparse dataset).
        served: ``(K,)`` pixels served per class in training (the sampler's counts).
        tau: strength of the shift: 0 = none, 1 = the full Bayes shift (best pixel accuracy; it can wipe out a
            very rare class), 0.5 the measured compromise.
        progress: a tqdm bar over the images.

    Returns:
        ``(corrected checkpoint, info)``; ``info`` is what the checkpoint records: ``tau``, ``shift``, ``served``,
        ``natural`` (estimated shares ×1e6), ``labels``, ``natural_from`` = ``"em"``, ``images``.

    Raises:
        ValueError: no images, or ``served`` not one count per class; image errors as in
            :class:`lumenkit.data.LumenStoneDataset`.
    """
    natural = estimate_natural_counts(ckpt, images, served, progress)
    shift = prior_shift(served, natural)
    info = {"tau": float(tau), "shift": [round(float(v), 6) for v in shift], "served": [int(v) for v in served],
            "natural": [int(v) for v in natural], "labels": list(ckpt.class_map.labels), "fitted_on": None,
            "natural_from": "em", "images": len(images)}
    return apply_prior_correction(ckpt, float(tau) * shift, info), info


def apply_prior_correction(ckpt: Checkpoint, bias: Sequence[float], info: dict[str, Any] | None = None) -> Checkpoint:
    """A copy of ``ckpt`` whose head adds ``bias`` (logit units, one per class) to every prediction.

    The original is untouched.  A checkpoint corrected before gets the new bias on top of the old one, and its
    ``config["prior_correction"]`` lists every correction applied, oldest first.

    Raises:
        ValueError: ``bias`` does not have one value per class, or the model's head has no bias to shift.
    """
    b = torch.as_tensor(np.asarray(bias, dtype=np.float32))
    k = len(ckpt.class_map)
    if b.shape != (k,):
        raise ValueError(f"bias needs one value per class ({k}), got shape {tuple(b.shape)}")
    model = copy.deepcopy(ckpt.model)
    head = getattr(model, "head", None)
    if head is None or getattr(head, "bias", None) is None:
        raise ValueError("the model's head has no bias: prior correction needs a 1×1 head with bias")
    with torch.no_grad():
        head.bias.add_(b.to(head.bias))
    config = copy.deepcopy(ckpt.config)
    done = list(config.get("prior_correction") or [])
    done.append({**(info or {}), "bias": [round(float(v), 6) for v in b]})
    config["prior_correction"] = done
    return Checkpoint(model, ckpt.class_map, ckpt.scale, list(ckpt.history), None, config, ckpt.version)


__all__ = ["apply_prior_correction", "em_prior", "em_prior_correction", "estimate_natural_counts", "prior_shift"]
