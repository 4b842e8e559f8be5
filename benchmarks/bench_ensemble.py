"""Cost of an ensemble per native image, end to end, against one model: what ``--model A --model B`` costs.

Input: ``--images`` native-size 3396×2547 synthetic polished sections saved as JPEG (quality 92); the default
recipe's network (f=16, depth 4, 7 classes) and the ``aspp`` candidate's (the same with an atrous pyramid at the
bottleneck), random weights at model scale ``--scale`` (default 1/8, preset s1; a network's cost does not depend
on its weights). Timed in one process, alternating, best of ``--repeats`` after one warm-up: ``lumenkit predict``
(:func:`lumenkit.inference.predict_files`: decode, predict, upsample, write mask, confidence map, overlay and
composition) with the default's network alone and with the ensemble of both (their probabilities averaged),
each with and without ``--refine``. Decoding, upsampling and writing are done once either way, so the ensemble
costs less than twice the single model.

Prints one line per configuration; the last line is a JSON object: ``seconds`` per image for ``single``,
``ensemble``, ``single_refine`` and ``ensemble_refine``, ``ratio`` (ensemble / single, plain) and
``ratio_refine``, and ``goal_seconds`` (issue 31: ≤ 1.5 s per native image end to end).

    python benchmarks/bench_ensemble.py [--images 2] [--repeats 3] [--scale 0.125]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import predict_seconds_per_image, untrained_checkpoint

from lumenkit.inference.ensemble import Ensemble
from lumenkit.inference.refine import Refine


def _aspp(scale: float):
    import torch

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.models.checkpoint import Checkpoint
    from lumenkit.models.resunet import create_model

    torch.manual_seed(1)
    return Checkpoint(model=create_model(width=16, classes=7, context="aspp"), class_map=ClassMap("S1"), scale=scale)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.125)
    a = p.parse_args()
    single = untrained_checkpoint(a.scale)
    both = Ensemble([single, _aspp(a.scale)])
    runs = {"single": (single, None), "ensemble": (both, None),
            "single_refine": (single, Refine()), "ensemble_refine": (both, Refine())}
    best = predict_seconds_per_image(runs, a.images, a.repeats)
    print(json.dumps({"seconds": {k: round(v, 3) for k, v in best.items()},
                      "ratio": round(best["ensemble"] / best["single"], 3),
                      "ratio_refine": round(best["ensemble_refine"] / best["single_refine"], 3),
                      "images": a.images, "scale": a.scale, "goal_seconds": 1.5}))


if __name__ == "__main__":
    main()
