"""How much a mineral's brightness varies between the images of a dataset (exposure and lamp differences).

Usage: python scripts/exposure_spread.py --data DIR [--split train] [--scale 0.125] [--out levels.csv]

Prints, per class, the median grey level (mean of R, G, B, 0-255) over images of each image's median, its range,
and the range as factors of the median (:func:`lumenkit.lab.studies.exposure_spread`), then the darkest and brightest
image of each class. The factors say how wide an exposure augmentation (``lumenkit train --exposure``) must be
for a model to see every image's brightness in training.
"""

from __future__ import annotations

import argparse

import pandas as pd

from lumenkit.data.datasets import LumenStoneDataset
from lumenkit.data.imageio import write_text
from lumenkit.lab.studies import class_grey_levels, exposure_spread


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (e.g. .../S1_v1_x05)")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument("--scale", type=float, default=0.125, help="scale images are read at (default 0.125)")
    p.add_argument("--out", default=None, help="also write the per-image medians as CSV")
    a = p.parse_args()
    levels = class_grey_levels(LumenStoneDataset(a.data, a.split), scale=a.scale)
    spread = exposure_spread(levels)
    with pd.option_context("display.width", 160, "display.precision", 2):
        print(spread)
        for label in levels.columns:
            col = levels[label].dropna()
            if len(col):
                print(f"{label}: darkest {col.idxmin()} ({col.min():.0f}), brightest {col.idxmax()} ({col.max():.0f})")
    if a.out:
        write_text(a.out, levels.to_csv(float_format="%.1f"))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
