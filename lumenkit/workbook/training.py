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
    n_val: int = 0,
) -> TrainConfig:
    """The :class:`TrainConfig` notebook 03 trains with: ``preset``, then ``overrides``, then the shared names.

    The report's parameter files give every notebook the same ``data``, ``class_set`` (empty: the dataset's own),
    ``seed`` (of the validation split, the initialisation and the patch streams), ``val_fold`` and, when set,
    ``n_val`` (validation images; 0 = the preset's or ``overrides``'); notebook 03 adds a preset name and the fields
    it changes. The model goes to ``RUN_DIR/train``; with ``resume`` an existing ``last.pt`` there is continued
    when it was trained with the same recipe, otherwise the folder is overwritten.

    Raises:
        ConfigError: unknown preset or field, or ``resume`` with a run trained on another recipe (the message
            names the differences and the fix).
    """
    out = Path(run_dir) / "train"
    fields: dict[str, Any] = {"data": data, "class_set": class_set or None, "seed": seed, "val_seed": seed,
                              "val_fold": val_fold, **(overrides or {})}
    if n_val:
        fields["n_val"] = n_val
    cfg = TrainConfig.from_preset(preset, **fields)
    cfg.out = str(out)
    cfg.resume = bool(resume and (out / "last.pt").exists())
    if cfg.resume:
        _refuse_another_recipe(out / "last.pt", cfg)
    cfg.overwrite = not resume
    cfg.quiet = True
    return cfg


def _refuse_another_recipe(last: Path, cfg: TrainConfig) -> None:
    """A complete recipe asked to continue ``last``: every field must be the saved one.

    Raises:
        ConfigError: the saved run was trained with other settings.
    """
    from lumenkit.errors import ConfigError
    from lumenkit.models.checkpoint import load_checkpoint
    from lumenkit.training.config import config_differences

    saved = TrainConfig.from_dict(load_checkpoint(last).config.get("train", {}), source=str(last), saved=True)
    diffs = config_differences(saved, cfg, strict=True)
    diffs += [f"{k}: saved {getattr(saved, k)!r}, now {getattr(cfg, k)!r}" for k in ("minutes", "epochs")
              if getattr(saved, k) != getattr(cfg, k)]  # a complete recipe: its budget too
    if diffs:
        raise ConfigError(f"{last}: was trained with another recipe ({'; '.join(diffs)}); set resume=False to start "
                          "afresh, or choose another run_dir (to change only the budget: lumenkit train --resume "
                          f"--minutes N --out {last.parent})")
