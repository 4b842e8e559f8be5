"""How much IoU the model scale alone costs: the true masks taken to each scale and back (a perfect model's score).

Usage: python scripts/scale_ceiling.py --data DIR [--split val] [--scales 0.5 0.25 0.125] [--n-val 10] [--val-seed 0]
[--val-fold 0]

Prints one row per scale: the mean IoU, pixel accuracy and per-class IoU of :func:`lumenkit.lab.studies.scale_ceiling`
(block-majority down-sampling as the dataset loads masks, nearest-neighbour back to the stored size, summed over the
split). A model working at that scale cannot beat these figures by much (its probabilities come back bilinearly).
"""

from __future__ import annotations

import argparse

from lumenkit.data.datasets import ValidationSplit
from lumenkit.lab.studies import scale_ceiling


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder in LumenStone layout (e.g. .../S1_v1_x05)")
    p.add_argument("--split", default="val", help="split to read (default val, carved from train)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.25, 0.125],
                   help="model scales relative to native (default 0.5 0.25 0.125)")
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--val-seed", type=int, default=0)
    p.add_argument("--val-fold", type=int, default=0)
    a = p.parse_args()
    for s in a.scales:
        sc = scale_ceiling(a.data, s, split=a.split, validation=ValidationSplit(a.n_val, a.val_seed, a.val_fold))
        per_class = " ".join(f"{lbl} {v:.3f}" for lbl, v in zip(sc.labels, sc.iou, strict=True))
        print(f"scale {s:g}: mean IoU {sc.mean_iou:.3f}, pixel acc. {sc.pixel_accuracy:.3f}; {per_class}", flush=True)


if __name__ == "__main__":
    main()
