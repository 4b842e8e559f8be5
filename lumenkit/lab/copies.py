"""Copies of a dataset for a study: the same images' names, one part changed (masks to strokes, images corrected).

A study trains and scores a recipe on the copy exactly as on the original (same names, so the same validation
folds); only the ``train`` split is copied, what is unchanged is hard-linked (copied where links are impossible),
and ``dataset.yaml`` records what was changed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def check_copy(dst: str | Path) -> Path:
    """Refuse a copy's folder before any work, creating nothing: ``dst`` as a path.

    Raises:
        ConfigError: ``dst`` exists.
        OutputPathError: ``dst`` cannot be written (read-only folder, a file in the way).
    """
    from lumenkit.data.imageio import check_writable
    from lumenkit.errors import ConfigError

    dst = Path(dst).expanduser()
    if dst.exists():
        raise ConfigError(f"{dst}: exists; give a new folder for the copy (or remove one a failed run left)")
    check_writable(dst, folder=True)
    return dst


def start_copy(dst: str | Path) -> Path:
    """Make the empty ``imgs/train`` and ``masks/train`` of a new copy at ``dst`` (checked by :func:`check_copy`).

    Raises:
        ConfigError, OutputPathError: as :func:`check_copy`.
    """
    dst = check_copy(dst)
    (dst / "imgs" / "train").mkdir(parents=True)
    (dst / "masks" / "train").mkdir(parents=True)
    return dst


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``, or copy it where links are impossible (another file system, no permission)."""
    try:
        dst.hardlink_to(src.resolve())
    except OSError:
        shutil.copyfile(src, dst)


def finish_copy(src: str | Path, dst: Path, meta: dict[str, Any], names: Iterable[str]) -> None:
    """Write the copy's ``dataset.yaml`` (``meta``) and the rows of ``src``'s ``deposits.csv`` for ``names``."""
    import yaml

    from lumenkit.data.imageio import write_text

    write_text(dst / "dataset.yaml", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    if (Path(src) / "deposits.csv").is_file():
        import pandas as pd

        rows = pd.read_csv(Path(src) / "deposits.csv", dtype=str)
        write_text(dst / "deposits.csv", rows[rows["image"].isin(set(names))].to_csv(index=False))
