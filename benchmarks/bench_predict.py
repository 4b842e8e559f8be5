"""Whole-image identification, end to end, against the way petroscope predicts — side by side in one run.

Usage: python benchmarks/bench_predict.py [--quick] [--threads N]
       python benchmarks/bench_predict.py --ablation                   (what each step of (c) buys, separately)
       python benchmarks/bench_predict.py --precision [RUN/model.pt]   (bf16 / int8 variants vs fp32, separately)

Input: one native-size 3396×2547 synthetic polished section (``--image noise``: random uint8 noise, the worst case
for JPEG decoding and PNG encoding; content does not change the network's cost), saved as a JPEG (quality 92) in a
temporary folder. Configurations, each in a
fresh subprocess so its peak RSS is its own:

(a) ``petroscope_f64``: the paper's ResUNet at f=64, predicted petroscope's way: native resolution (scale 1.0),
    2048-px tiles with 50 % overlap, one tile at a time, overlapping probabilities averaged, no fusion, contiguous
    (NCHW) memory; full-size JPEG decode, mask PNG written. ``--quick`` runs it on a 1024×1024 crop (one
    1024-px tile) and extrapolates seconds (per tile pixel) and extra memory (per tile pixel) to the full layout;
    the row then says ``"extrapolated": true``.
(b) ``petroscope_f16``: the same path at f=16.
(c) ``lumenkit_torch``: our default path, ``lumenkit predict`` (:func:`lumenkit.inference.predict_files`): f=16 at
    model scale 0.25, JPEG decoded at reduced size, our tiling (768-px windows with 64-px margins, one at a time),
    BN folded into convs, channels-last; writes mask and
    confidence map at input resolution, an overlay and composition.csv.
(d) ``lumenkit_onnx``: the same path with the model exported to ONNX and run by ONNX Runtime.

Seconds per image are warm (model loaded, one image predicted before); (c) and (d) also give the cold first image
and a split into decode / network / everything else. GFLOP per image counts the convolutions actually run (tiles
and margins included); ``share_of_peak`` is GFLOP/s over this machine's fp32 matmul peak, measured in the same run
with a 2048³ sgemm (as bench_model.py). The last line is one JSON object keyed by configuration; every row has
``seconds_per_image``, ``peak_mb`` and ``gflop_per_image``. With ``--val-data DIR --val-model RUN/model.pt`` the
two lumenkit rows also get ``mean_iou_val``: that trained model evaluated on the validation split carved from
``DIR``'s train split (``lumenkit evaluate --split val``) through the same predict path and runtime.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import matmul_peak, rss_mb, untrained_checkpoint
from common import run_child as common_run_child

NATIVE = (3396, 2547)  # width, height at ×100
REF_TILE = 2048
REF_OVERLAP = 0.5
OUR_SCALE = 0.25


def busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (``/proc/stat``; 0 where unavailable)."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def ref_positions(length: int, tile: int, step: int) -> list[int]:
    """Tile origins along one axis: every ``step`` px, the last one flush with the end."""
    if length <= tile:
        return [0]
    pos = list(range(0, length - tile + 1, step))
    if pos[-1] != length - tile:
        pos.append(length - tile)
    return pos


def reference_predict(model: Any, image: np.ndarray, tile: int, overlap: float) -> tuple[np.ndarray, float]:
    """Petroscope-style prediction: overlapping tiles one at a time, averaged probabilities, argmax.

    No fusion, contiguous NCHW memory, model in eval mode under ``torch.no_grad()``.

    Returns:
        ``(indices, flops)``: ``(H, W)`` uint8 argmax and the convolution FLOPs of the tiles run.
    """
    from lumenkit.models.resunet import count_flops

    h, w = image.shape[:2]
    step = int(tile * (1 - overlap))
    k = model.config["classes"]
    acc = torch.zeros((k, h, w), dtype=torch.float32)
    cnt = torch.zeros((1, h, w), dtype=torch.float32)
    mean = torch.tensor(model.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.std).view(1, -1, 1, 1)
    flops = 0.0
    model.eval()
    with torch.no_grad():
        for y in ref_positions(h, tile, step):
            for x in ref_positions(w, tile, step):
                patch = image[y : y + tile, x : x + tile]
                t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float().contiguous()
                p = torch.softmax(model((t - mean) / std), dim=1)[0]
                flops += count_flops(model, *patch.shape[:2])
                acc[:, y : y + patch.shape[0], x : x + patch.shape[1]] += p
                cnt[:, y : y + patch.shape[0], x : x + patch.shape[1]] += 1
    return (acc / cnt).argmax(0).to(torch.uint8).numpy(), flops


def our_windows(size: tuple[int, int], tile: int, margin: int, stride: int) -> tuple[int, int, int]:
    """Number of windows and their height and width in :func:`lumenkit.inference.tiling.predict_probs`."""
    from lumenkit.inference.tiling import Tiling

    windows = Tiling(tile, margin).layout(size[1], size[0], stride)
    return len(windows.origins), *windows.window


# -- children -------------------------------------------------------------------------------------------------------
def child_reference(a: argparse.Namespace) -> dict[str, Any]:
    from lumenkit.data.imageio import read_image, save_image
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    model = create_model(width=a.width, classes=7).eval()
    base = rss_mb()
    t0 = time.perf_counter()
    image = read_image(a.jpeg)  # full-size decode
    if a.crop:
        image = np.ascontiguousarray(image[: a.crop, : a.crop])
    tile = min(REF_TILE, a.crop) if a.crop else REF_TILE
    t1 = time.perf_counter()
    idx, flops = reference_predict(model, image, tile, REF_OVERLAP)
    t2 = time.perf_counter()
    save_image(idx, Path(a.out) / "ref_mask.png")
    t3 = time.perf_counter()
    h, w = image.shape[:2]
    step = int(tile * (1 - REF_OVERLAP))
    n_tiles = len(ref_positions(h, tile, step)) * len(ref_positions(w, tile, step))
    return {"seconds": t3 - t0, "decode_s": t1 - t0, "network_s": t2 - t1, "encode_s": t3 - t2,
            "tiles": n_tiles, "tile_px": min(tile, h, w), "gflop": flops / 1e9,
            "rss_peak_mb": rss_mb(), "rss_base_mb": base, "threads": torch.get_num_threads()}


def child_ours(a: argparse.Namespace) -> dict[str, Any]:
    from lumenkit.data.imageio import read_image
    from lumenkit.inference.predict import load_model, predict_files, predict_probs
    from lumenkit.models.resunet import count_flops, create_model

    base = rss_mb()
    t0 = time.perf_counter()
    model = load_model(a.model)
    out = Path(a.out)
    rep = predict_files(model, [a.jpeg], out / "cold", scale=1.0, progress=False)  # cold: first image
    cold = time.perf_counter() - t0
    assert rep.ok, rep.failures
    t1 = time.perf_counter()
    rep = predict_files(model, [a.jpeg], out / "warm", scale=1.0, progress=False)
    warm = time.perf_counter() - t1
    peak = rss_mb()
    t2 = time.perf_counter()
    image = read_image(a.jpeg, factor=OUR_SCALE)
    t3 = time.perf_counter()
    predict_probs(model, image)
    t4 = time.perf_counter()
    n, wh, ww = our_windows((image.shape[1], image.shape[0]), 768, 64, 16)
    net = create_model(width=16, classes=7)
    threads = torch.get_num_threads()
    if hasattr(model, "session"):
        threads = model.session.get_session_options().intra_op_num_threads or threads
    return {"seconds": warm, "cold_seconds": cold, "decode_s": t3 - t2, "network_s": t4 - t3,
            "other_s": warm - (t3 - t2) - (t4 - t3), "windows": n, "window_px": [wh, ww],
            "model_input_px": [image.shape[1], image.shape[0]],
            "gflop": n * count_flops(net, wh, ww) / 1e9, "rss_peak_mb": peak, "rss_base_mb": base,
            "threads": threads}


# -- parent ---------------------------------------------------------------------------------------------------------
def run_child(kind: str, **kw: Any) -> dict[str, Any]:
    args = ["--child", kind, "--size", "x".join(map(str, NATIVE))]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return common_run_child(__file__, *args)


class _Variant:
    """A runner for the ablation: a given network (fused or not), in NCHW or channels-last memory."""

    def __init__(self, net: Any, channels_last: bool, input_channels_last: bool | None = None) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.eval().to(memory_format=fmt)
        cl_in = channels_last if input_channels_last is None else input_channels_last
        self.fmt = torch.channels_last if cl_in else torch.contiguous_format
        self.output_stride = net.output_stride
        self.classes = net.config["classes"]

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.net(self.net.normalize(x).contiguous(memory_format=self.fmt)), dim=1)


def ablation(image: np.ndarray) -> dict[str, float]:
    """Network seconds of the (c) path with each optimisation switched off in turn (same process, warm)."""
    import copy

    from lumenkit.inference.predict import predict_probs
    from lumenkit.models.folding import fuse_for_inference
    from lumenkit.models.resunet import create_model

    torch.manual_seed(0)
    model = create_model(width=16, classes=7).eval()
    res: dict[str, float] = {}
    variants: dict[str, tuple[Any, dict[str, Any]]] = {
        "before: unfused, nchw weights, cl input": (_Variant(copy.deepcopy(model), False, True),
                                                     {"tile": 512, "batch": 2}),
        "unfused_nchw_tile512_batch2": (_Variant(copy.deepcopy(model), False), {"tile": 512, "batch": 2}),
        "unfused_cl_tile512_batch2": (_Variant(copy.deepcopy(model), True), {"tile": 512, "batch": 2}),
        "fused_nchw_tile512_batch2": (_Variant(fuse_for_inference(model), False), {"tile": 512, "batch": 2}),
        "fused_cl_tile512_batch2": (model, {"tile": 512, "batch": 2}),
        "fused_cl_tile512_batch1": (model, {"tile": 512, "batch": 1}),
        "fused_cl_tile768_batch1 (default)": (model, {}),
        "fused_cl_tile768_batch2": (model, {"batch": 2}),
        "fused_cl_tile1024_batch1": (model, {"tile": 1024}),
        "fused_cl_tile768_batch1_threads1": (model, {"threads": 1}),
    }
    for name, (m, kw) in variants.items():
        threads = kw.pop("threads", None)
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        predict_probs(m, image[:256, :256], **kw)
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            predict_probs(m, image, **kw)
            best = min(best, time.perf_counter() - t0)
        torch.set_num_threads(old)
        res[name] = round(best, 3)
        print(f"  ablation {name:40s} {best:6.3f} s", flush=True)
    return res


class _SessionRunner:
    """A runner over any ONNX Runtime session with lumenkit's ``image → probs`` signature (e.g. a quantised one)."""

    def __init__(self, session: Any, stride: int, classes: int) -> None:
        self.session, self.output_stride, self.classes = session, stride, classes

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(["probs"], {"image": np.ascontiguousarray(x.numpy())})
        return torch.from_numpy(out)


class _Bf16Runner(_Variant):
    """The fused channels-last network under ``torch.autocast(bfloat16)`` (AMX/AVX-512-BF16 where present)."""

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.softmax(self.net(self.net.normalize(x).contiguous(memory_format=self.fmt)).float(), dim=1)


def precision(model_pt: str | None, n_images: int = 3) -> dict[str, dict[str, float]]:
    """Speed and argmax agreement with fp32 of lower-precision variants, on real images at the model's scale.

    Variants: torch bf16 autocast; ONNX Runtime fp32; ORT int8 static QDQ (per-channel weights, MinMax calibration
    on windows of a held-out image); ORT int8 dynamic (``ConvInteger``). Uses ``model_pt`` (a trained checkpoint)
    and the real sample's training images when present, else a random model and random images (agreement is then
    not meaningful).
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from lumenkit.data.catalogue import ClassMap
    from lumenkit.data.imageio import read_image
    from lumenkit.inference.onnx import onnx_model_proto
    from lumenkit.inference.predict import scale_of
    from lumenkit.inference.runners import fused_model
    from lumenkit.inference.tiling import Tiling, predict_probs
    from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
    from lumenkit.models.resunet import create_model

    ckpt = load_checkpoint(model_pt) if model_pt else Checkpoint(create_model(width=16, classes=7), ClassMap("S1"),
                                                                 OUR_SCALE)
    root = Path(os.environ.get("LUMENKIT_LUMENSTONE", Path(__file__).resolve().parents[2] / "shared" / "lumenstone"))
    files = sorted((root / "S1_v1_x05" / "imgs" / "train").glob("*.jpg"))[: n_images + 1]
    if len(files) > n_images:
        images = [read_image(f, factor=ckpt.scale / scale_of(f)) for f in files]
    else:
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (637, 849, 3), dtype=np.uint8) for _ in range(n_images + 1)]
    calib, images = images[0], images[1:]
    stride, k = ckpt.model.output_stride, ckpt.model.config["classes"]

    class Windows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            windows = Tiling(512, 64).layout(calib.shape[0], calib.shape[1], stride)
            m, (wh, ww) = windows.margin, windows.window
            pad = np.pad(calib, ((m, m + wh), (m, m + ww), (0, 0)), mode="reflect")
            self.items = iter([{"image": np.ascontiguousarray(pad[y : y + wh, x : x + ww].transpose(2, 0, 1)[None])}
                               for y, x in windows.origins])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(onnx_model_proto(ckpt.model, ckpt.class_map, ckpt.scale).SerializeToString())
        quantize_static(fp32, Path(tmp) / "qdq.onnx", Windows(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
        quantize_dynamic(fp32, Path(tmp) / "dyn.onnx", weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv"])

        def session(name: str) -> _SessionRunner:
            sess = ort.InferenceSession(str(Path(tmp) / name), providers=["CPUExecutionProvider"])
            return _SessionRunner(sess, stride, k)

        variants: dict[str, Any] = {
            "torch_fp32_fused_cl": ckpt.model,
            "torch_bf16_autocast": _Bf16Runner(fused_model(ckpt.model), True),
            "ort_fp32": session("fp32.onnx"),
            "ort_int8_static_qdq": session("qdq.onnx"),
            "ort_int8_dynamic_convinteger": session("dyn.onnx"),
        }
        refs = [predict_probs(ckpt.model, im).argmax(0) for im in images]
        for name, runner in variants.items():
            predict_probs(runner, images[0][:256, :256])
            t0 = time.perf_counter()
            preds = [predict_probs(runner, im).argmax(0) for im in images]
            dt = (time.perf_counter() - t0) / len(images)
            agree = float(np.mean([(p == r).float().mean().item() for p, r in zip(preds, refs)]))
            out[name] = {"network_s_per_image": round(dt, 3), "argmax_agreement_vs_fp32": round(agree, 5)}
            print(f"  precision {name:30s} {dt:6.3f} s/image  argmax agreement with fp32 {agree:.4%}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="(a) on a 1024×1024 crop, extrapolated (labelled)")
    ap.add_argument("--ablation", action="store_true",
                    help="only time (c)'s network with each optimisation switched off in turn (separately)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, i.e. all cores)")
    ap.add_argument("--precision", nargs="?", const="", default=None, metavar="MODEL_PT",
                    help="only compare bf16 / int8 variants with fp32 (speed, argmax agreement) on real images")
    ap.add_argument("--image", choices=["synthetic", "noise"], default="synthetic",
                    help="native-size input: a synthetic section (default) or uint8 noise (worst case for codecs)")
    ap.add_argument("--val-data", default=None, help="dataset for mean_iou_val (its split val), e.g. S1_v1_x05")
    ap.add_argument("--val-model", default=None, help="trained checkpoint for mean_iou_val (RUN/model.pt)")
    ap.add_argument("--size", default="3396x2547", help="image WxH (default native; smaller only for a smoke test)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--jpeg", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--crop", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    global NATIVE
    NATIVE = tuple(int(v) for v in a.size.lower().split("x"))  # type: ignore[assignment]
    if a.threads:
        torch.set_num_threads(a.threads)
        os.environ["OMP_NUM_THREADS"] = str(a.threads)
    if a.child:
        print(json.dumps(child_reference(a) if a.child == "reference" else child_ours(a)))
        return
    if a.ablation:
        from lumenkit.data.imageio import read_image, save_image

        started = _dt.datetime.now().isoformat(timespec="seconds")
        print(f"{started}  load average {os.getloadavg()[0]:.2f}; {torch.get_num_threads()} threads", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            img = np.random.default_rng(0).integers(0, 256, (NATIVE[1], NATIVE[0], 3), dtype=np.uint8)
            save_image(img, Path(tmp) / "native.jpg")
            res = ablation(read_image(Path(tmp) / "native.jpg", factor=OUR_SCALE))
        print(json.dumps({"started": started, "ablation_network_s": res}))
        return
    if a.precision is not None:
        started = _dt.datetime.now().isoformat(timespec="seconds")
        print(f"{started}  load average {os.getloadavg()[0]:.2f}; {torch.get_num_threads()} threads", flush=True)
        print(json.dumps({"started": started, "precision": precision(a.precision or None)}))
        return

    from lumenkit.data.imageio import save_image
    from lumenkit.inference.onnx import export_onnx

    started = _dt.datetime.now().isoformat(timespec="seconds")
    load = os.getloadavg()
    busy0, own0, wall0 = busy_seconds(), own_seconds(), time.perf_counter()
    peak = matmul_peak()
    print(f"{started}  load average {load[0]:.2f}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"fp32 sgemm 2048³: {peak:.0f} GFLOP/s", flush=True)
    result: dict[str, Any] = {"machine": {"matmul_gflops": round(peak, 1), "threads": torch.get_num_threads(),
                                          "load_avg_1min_at_start": round(load[0], 2), "started": started,
                                          "image": f"{a.image} {NATIVE[0]}x{NATIVE[1]}, JPEG q92 on disk"}}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        if a.image == "noise":
            img = rng.integers(0, 256, (NATIVE[1], NATIVE[0], 3), dtype=np.uint8)
        else:  # a realistic polished section: realistic JPEG decode and mask/overlay encode costs
            from lumenkit.synth.deposits import DEPOSITS
            from lumenkit.synth.render import generate_section

            img, _ = generate_section(DEPOSITS["pbzn_a"], NATIVE, rng, scale=1.0)
        jpeg = Path(tmp) / "native.jpg"
        save_image(img, jpeg)
        pt = untrained_checkpoint(OUR_SCALE).save(Path(tmp) / "model.pt")
        t0 = time.perf_counter()
        onnx_path = export_onnx(pt)
        export_s = time.perf_counter() - t0

        rows: dict[str, dict[str, Any]] = {}
        for name, width in (("petroscope_f64", 64), ("petroscope_f16", 16)):
            crop = min(1024, *NATIVE) if (a.quick and width == 64) else 0
            r = run_child("reference", jpeg=jpeg, out=tmp, width=width, crop=crop)
            if crop:  # extrapolate per tile pixel to the full 2048-px, 50 %-overlap layout
                step = int(REF_TILE * (1 - REF_OVERLAP))
                n_full = len(ref_positions(NATIVE[1], REF_TILE, step)) * len(ref_positions(NATIVE[0], REF_TILE, step))
                k = n_full * REF_TILE**2 / (r["tiles"] * r["tile_px"] ** 2)
                mem_k = REF_TILE**2 / r["tile_px"] ** 2
                r = {**r, "measured_on": f"{crop}x{crop} crop, {r['tiles']} tile(s) of {r['tile_px']} px",
                     "network_s": r["network_s"] * k, "gflop": r["gflop"] * k,
                     "rss_peak_mb": r["rss_base_mb"] + (r["rss_peak_mb"] - r["rss_base_mb"]) * mem_k,
                     "tiles": n_full, "tile_px": REF_TILE, "extrapolated": True}
                r["seconds"] = r["decode_s"] + r["network_s"] + r["encode_s"] * NATIVE[0] * NATIVE[1] / crop**2
            rows[name] = r
        rows["lumenkit_torch"] = run_child("ours", jpeg=jpeg, out=tmp, model=pt)
        rows["lumenkit_onnx"] = run_child("ours", jpeg=jpeg, out=tmp, model=onnx_path)
        rows["lumenkit_onnx"]["export_s"] = export_s
        for name, r in rows.items():
            r["seconds_per_image"] = r["seconds"]
            r["peak_mb"] = r["rss_peak_mb"]
            r["gflop_per_image"] = r["gflop"]
            r["share_of_peak_end_to_end"] = r["gflop"] / r["seconds"] / peak
            r["share_of_peak_network"] = r["gflop"] / r["network_s"] / peak
            r["rss_extra_mb"] = r["rss_peak_mb"] - r["rss_base_mb"]
            tag = " (extrapolated from a crop)" if r.get("extrapolated") else ""
            print(f"{name:15s} {r['seconds']:8.2f} s/image{tag} | network {r['network_s']:7.2f} s | "
                  f"{r['gflop']:8.0f} GFLOP | {r['share_of_peak_network']:.0%} of peak in the network, "
                  f"{r['share_of_peak_end_to_end']:.0%} end to end | peak RSS {r['rss_peak_mb']:.0f} MB", flush=True)
            result[name] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
        base = rows["petroscope_f64"]["seconds"]
        for name in ("petroscope_f16", "lumenkit_torch", "lumenkit_onnx"):
            result[name]["speedup_vs_petroscope_f64"] = round(base / rows[name]["seconds"], 1)
    result["machine"]["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    if a.val_data and a.val_model:
        from lumenkit.evaluation.evaluate import evaluate

        for name, runtime in (("lumenkit_torch", "torch"), ("lumenkit_onnx", "onnx")):
            ev = evaluate(a.val_data, a.val_model, split="val", baselines=False, progress=False,
                          predict_kwargs={"runtime": runtime})
            result[name]["mean_iou_val"] = round(ev.scores.mean_iou, 4)
            print(f"{name}: validation mean IoU {ev.scores.mean_iou:.3f} ({a.val_model} on {a.val_data}, split val)")
    others = (busy_seconds() - busy0 - (own_seconds() - own0)) / ((time.perf_counter() - wall0) * (os.cpu_count() or 1))
    result["machine"]["other_processes_cpu_share"] = round(max(0.0, others), 3)  # 0 = the cores were ours alone
    print(f"other processes used {max(0.0, others):.0%} of the machine's CPU time during the run", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
