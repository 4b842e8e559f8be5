"""Compare synthetic sections with the real LumenStone sample: per-class colour (ΔE) and grain-size table + figure.

Example:
    python scripts/calibrate_synth.py --real /work/shared/lumenstone/S1_v1_x05 \
        --real2 /work/shared/lumenstone/S2_v1_x05 --synthetic data/synthetic --out docs/

Without --synthetic a small synthetic set (54 images, seed 0, 1024x768; 12 of them Cu-Ni) is generated into a
temporary folder.
The figure written to --out holds no real pixels; --with-real-thumbnails DIR writes one that does (do not commit it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from lumenkit.errors import LumenkitError
from lumenkit.lab.calibration_study import run_calibration
from lumenkit.synth.calibration import to_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, help="real S1 (Pb-Zn-Cu) dataset folder")
    p.add_argument("--real2", default=None, help="real S2 (Cu-Ni) dataset folder")
    p.add_argument("--synthetic", default=None, help="synthetic dataset folder (default: generate 54 images)")
    p.add_argument("--out", default="docs", help="folder for calibration.md and calibration.png")
    p.add_argument("--max-images", type=int, default=None, help="at most this many images per dataset")
    p.add_argument("--with-real-thumbnails", default=None, metavar="DIR",
                   help="also write a figure with real thumbnails into DIR (e.g. reports/; never commit it)")
    a = p.parse_args(argv)
    real = {"S1": a.real}
    if a.real2:
        real["S2"] = a.real2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            synthetic = a.synthetic
            if synthetic is None:
                from lumenkit.synth.writer import write_dataset

                synthetic = write_dataset(Path(tmp) / "synthetic", n_train=54, n_test=0, seed=0)
            tables = run_calibration(real, synthetic, a.out, max_images=a.max_images,
                                     real_thumbnails_dir=a.with_real_thumbnails)
    except LumenkitError as e:
        print(f"calibrate_synth: error: {e}", file=sys.stderr)
        return 2
    for assoc, t in tables.items():
        print(to_markdown(t, title=assoc))
    print(f"wrote {Path(a.out) / 'calibration.md'} and {Path(a.out) / 'calibration.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
