"""Cost of the guided refinement (``--refine``) per native image, end to end, against plain bilinear upsampling.

Input: ``--images`` native-size 3396×2547 synthetic polished sections saved as JPEG (quality 92), and the default
recipe's network (f=16, depth 4, 7 classes) with random weights at model scale ``--scale`` (default 1/8, preset
s1; a network's cost does not depend on its weights). Timed in one process, alternating, best of ``--repeats``
after one warm-up: ``lumenkit predict`` (:func:`lumenkit.inference.predict_files`: decode, predict, upsample, write
mask, confidence map, overlay and composition) without and with ``--refine``. The refined path decodes each JPEG
at full resolution (the guide) where the plain one decodes straight at the model's scale, so the difference is the
whole price of refinement.

Prints one line per configuration; the last line is a JSON object: ``seconds_plain``, ``seconds_refine`` (per
image), ``ratio`` (refine / plain), ``goal_seconds`` (issue 31: ≤ 1.5 s per native image end to end).

    python benchmarks/bench_refine.py [--images 2] [--repeats 3] [--scale 0.125]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import predict_seconds_per_image, untrained_checkpoint

from lumenkit.inference.refine import Refine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.125)
    a = p.parse_args()
    ckpt = untrained_checkpoint(a.scale)
    best = predict_seconds_per_image({"plain": (ckpt, None), "refine": (ckpt, Refine())}, a.images, a.repeats)
    print(json.dumps({"seconds_plain": round(best["plain"], 3), "seconds_refine": round(best["refine"], 3),
                      "ratio": round(best["refine"] / best["plain"], 3), "images": a.images, "scale": a.scale,
                      "refine": {"radius": Refine().radius, "eps": Refine().eps}, "goal_seconds": 1.5}))


if __name__ == "__main__":
    main()
