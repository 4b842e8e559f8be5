"""Notebook 03's helper: its parameters (a preset, overrides, the shared seed and fold) as one training config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lumenkit.training.config import TrainConfig


def notebook_train_config(
    data: str,
    preset: str,
    overrides: dict[str, Any] | None = None,
    class_set: str = "",
    seed: int = 0,
    val_fold: int = 0,
    run_dir: str | Path = "",
    resume: bool = False,
) -> TrainConfig:
    """The :class:`TrainConfig` notebook 03 trains with: ``preset``, then ``overrides``, then the shared names.

    The report's parameter files give every notebook the same ``data``, ``class_set`` (empty: the dataset's own),
    ``seed`` (of the validation split, the initialisation and the patch streams) and ``val_fold``; notebook 03 adds
    a preset name and the fields it changes. The model goes to ``RUN_DIR/train``; with ``resume`` an existing
    ``last.pt`` there is continued, otherwise the folder is overwritten.

    Raises:
        ConfigError: unknown preset or field.
    """
    out = Path(run_dir) / "train"
    fields: dict[str, Any] = {"data": data, "class_set": class_set or None, "seed": seed, "val_seed": seed,
                              "val_fold": val_fold, **(overrides or {})}
    cfg = TrainConfig.from_preset(preset, **fields)
    cfg.out = str(out)
    cfg.resume = bool(resume and (out / "last.pt").exists())
    cfg.overwrite = not resume
    cfg.quiet = True
    return cfg
