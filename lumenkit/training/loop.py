"""Training: balanced patches, Adam + plateau (or cosine) schedule, best/last checkpoints, resume, DDP.

One entry point, :func:`train`, runs alone or under ``torchrun --nproc-per-node N`` (DistributedDataParallel;
gloo on CPU, nccl on GPU). Every rank draws its own patch stream; only rank 0 writes files. A run folder holds:

* ``model.pt`` — best checkpoint by validation mean IoU (what ``lumenkit predict`` and evaluation use); with
  ``ema`` set, the moving average of the weights (:class:`WeightAverage`) is what is validated and saved;
* ``last.pt`` — the latest state with optimizer / scheduler / sampler state and the average (``resume=True``
  continues it);
* ``history.csv`` — one row per epoch: losses, validation IoU per class, learning rate, seconds;
* ``config.yaml`` — the full configuration, versions, class set and the validation image names.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn

from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.data.imageio import write_text
from lumenkit.errors import ConfigError
from lumenkit.evaluation.metrics import Scores, confusion_matrix
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import SegmentationModel, count_flops, create_model
from lumenkit.runtime.devices import cpu_gflops, dist_init, resolve_device, torch_threads, usable_cores, versions
from lumenkit.runtime.heap import heap_retention_available, retained_heap
from lumenkit.training.config import (
    COMPILE_AUTO_MINUTES,
    COMPILE_AUTO_PATCHES,
    RUN_CONTROL_FIELDS,
    TrainConfig,
    config_differences,
)
from lumenkit.training.ema import WeightAverage
from lumenkit.training.losses import SegmentationLoss

RESTART_EPOCH_OFFSET = 100_000


"""Added to the epoch number that seeds the patch streams of an epoch resumed mid-way (fresh, distinct streams)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        model: the trained network as it is at the end (not necessarily the best; load ``model.pt`` for that).
        history: one row per epoch (as ``history.csv``).
        best_miou: best validation mean IoU reached.
        interrupted: ``True`` when a signal stopped the run (``last.pt`` is resumable).
        rank, world_size: this process's rank and the number of processes.
    """

    run_dir: Path
    model: SegmentationModel
    history: pd.DataFrame
    best_miou: float
    interrupted: bool = False
    rank: int = 0
    world_size: int = 1

    @property
    def model_path(self) -> Path:
        """``RUN/model.pt`` (best by validation mean IoU)."""
        return self.run_dir / "model.pt"

    @property
    def last_path(self) -> Path:
        """``RUN/last.pt`` (resumable)."""
        return self.run_dir / "last.pt"


def compile_decision(cfg: TrainConfig, dev: torch.device) -> tuple[bool, str]:
    """Whether :func:`train` runs its training step through ``torch.compile``, and why (for the log).

    Raises:
        ConfigError: ``compile="on"`` where ``torch.compile`` cannot run (no C++ compiler for CPU training, no
            triton for CUDA training); the message says what to install or to use ``"off"``.
    """
    if cfg.compile == "off":
        return False, "compile='off'"
    import importlib.util
    import shutil

    if dev.type == "cuda":
        missing = None if importlib.util.find_spec("triton") else "triton (pip install triton)"
    else:
        found = any(shutil.which(c) for c in ("g++", "c++", "clang++", "cl"))
        missing = None if found else "a C++ compiler (g++, clang++ or MSVC cl on PATH)"
    if missing:
        if cfg.compile == "on":
            raise ConfigError(f"compile='on' needs {missing} for torch.compile; install it or use compile='off'")
        return False, f"no {missing.split(' (')[0]} found"
    if cfg.compile == "on":
        return True, "compile='on'"
    if cfg.minutes is not None:
        long = cfg.minutes >= COMPILE_AUTO_MINUTES
        why = f"{cfg.minutes:g}-minute budget {'≥' if long else '<'} {COMPILE_AUTO_MINUTES:g}"
    else:
        n = cfg.epochs * cfg.patches_per_epoch
        long = n >= COMPILE_AUTO_PATCHES
        why = f"{n} patches {'≥' if long else '<'} {COMPILE_AUTO_PATCHES}"
    return long, f"compile='auto', {why}"


def _channel_stats(images: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0–255 units) over every 4th pixel of each image."""
    s = np.zeros(3)
    s2 = np.zeros(3)
    n = 0
    for im in images:
        px = im[::2, ::2].reshape(-1, 3).astype(np.float64)
        s += px.sum(0)
        s2 += (px**2).sum(0)
        n += len(px)
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 1.0))
    return [round(float(v), 3) for v in mean], [round(float(v), 3) for v in std]


def _class_weights(cfg: TrainConfig, masks: list[np.ndarray], k: int) -> torch.Tensor | None:
    if cfg.class_weights is None:
        return None
    if isinstance(cfg.class_weights, str):
        counts = sum(np.bincount(m.ravel(), minlength=256)[:k].astype(np.float64) for m in masks)
        w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
        w[counts == 0] = 0.0
        w = w / w[counts > 0].mean()
        return torch.tensor(w, dtype=torch.float32)
    if len(cfg.class_weights) != k:
        raise ConfigError(f"class_weights has {len(cfg.class_weights)} values but the class set has {k} classes")
    return torch.tensor([float(v) for v in cfg.class_weights], dtype=torch.float32)


class _StopRequest:
    """SIGINT/SIGTERM handler that asks the loop to stop at the next step (a second signal aborts at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# -- validation -----------------------------------------------------------------------------------
@dataclass
class _ValData:
    names: list[str]
    images: list[np.ndarray]  # at the model scale
    masks: list[np.ndarray]  # model indices at the model scale (for the loss)
    stored: list[np.ndarray]  # model indices at the stored resolution (for IoU)


def _load_val(cfg: TrainConfig, class_map: ClassMap, scale: float) -> _ValData:
    from lumenkit.data.datasets import LumenStoneDataset

    ds = LumenStoneDataset(cfg.data, "val", scale=scale, class_set=list(class_map.codes), validation=cfg.validation)
    out = _ValData([], [], [], [])
    for k in range(len(ds)):
        s = ds.load(k)
        out.names.append(s["name"])
        out.images.append(s["image"])
        out.masks.append(class_map.to_index(s["mask"], source=str(ds.mask_paths[k])))
        out.stored.append(class_map.to_index(ds.read_mask(k), source=str(ds.mask_paths[k])))
    return out


def validate(
    model: SegmentationModel,
    val: _ValData,
    num_classes: int,
    tile: int = 512,
    margin: int = 64,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Whole-image validation: loss at the model scale, confusion matrix at the masks' stored resolution.

    Images are shared among processes (``i % world_size == rank``) and the sums all-reduced.

    Returns:
        ``{"loss": mean NLL per labelled pixel, "cm": (K, K) int64 summed confusion matrix}``.
    """
    from lumenkit.inference.predict import predict_probs, resize_probs

    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    nll, npx = 0.0, 0
    for i in range(rank, len(val.images), world_size):
        probs = predict_probs(model, val.images[i], tile=tile, margin=margin, batch=2)
        m = torch.from_numpy(val.masks[i].astype(np.int64))
        valid = m != IGNORE
        p_true = probs.gather(0, m.clamp(max=num_classes - 1)[None])[0][valid]
        nll += float(-(p_true.clamp(min=1e-8).log()).sum())
        npx += int(valid.sum())
        h, w = val.stored[i].shape
        idx, _, _ = resize_probs(probs, (w, h))
        cm += confusion_matrix(idx, val.stored[i], num_classes)
    if world_size > 1:
        t = torch.tensor([nll, float(npx)], dtype=torch.float64)
        c = torch.from_numpy(cm)
        dist.all_reduce(t)
        dist.all_reduce(c)
        nll, npx, cm = float(t[0]), int(t[1]), c.numpy()
    return {"loss": nll / max(npx, 1), "cm": cm}


# -- the loop -------------------------------------------------------------------------------------
def train(
    config: TrainConfig | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a segmentation model (alone or under ``torchrun``) and write the run folder.

    Args:
        config: the configuration; keyword ``overrides`` replace its fields (or build one from scratch).
        on_step: called after every optimizer step with ``{"epoch", "step", "loss", "lr"}`` (e.g. live plots).
        **overrides: fields of :class:`TrainConfig`.

    Returns:
        A :class:`TrainResult` (on every rank; only rank 0 wrote files).

    Raises:
        ConfigError: bad options, or a run folder that already holds a run without ``resume``/``overwrite``.
        DatasetNotFoundError, BadImageError, BadMaskError, UnknownClassError: bad dataset.
        CheckpointError: ``last.pt`` is unreadable or belongs to another architecture.
    """
    cfg = dataclasses.replace(config, **overrides) if config is not None else TrainConfig.from_dict(overrides)
    cfg.check()
    run = Path(cfg.out)
    last_path = run / "last.pt"
    resumed: Checkpoint | None = None
    if last_path.exists() and cfg.resume:
        resumed = load_checkpoint(last_path)
        if not resumed.train_state:
            raise ConfigError(f"{last_path}: holds no training state to resume; start a new run with another --out")
        saved = TrainConfig.from_dict(resumed.config["train"], source=str(last_path))
        diffs = config_differences(saved, cfg)
        if diffs:
            raise ConfigError(
                f"{last_path}: cannot resume with a different configuration ({'; '.join(diffs)}); drop those "
                "options to continue the saved run, or start afresh with overwrite=True (--overwrite) or another out"
            )
        cfg = dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RUN_CONTROL_FIELDS})
    elif last_path.exists() and not cfg.overwrite:
        raise ConfigError(
            f"{run}: already holds a training run (last.pt); pass resume=True (--resume) to continue it, "
            "overwrite=True to start afresh, or choose another out folder"
        )
    dev = resolve_device(cfg.device)
    rank, world, started_here = dist_init(dev)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = cfg.threads or max(1, usable_cores() // max(1, local_world))
    try:
        with torch_threads(threads), retained_heap(cfg.retain_heap), _StopRequest() as stop:
            return _train(cfg, run, resumed, dev, rank, world, threads, stop, on_step)
    finally:
        if started_here:
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    run: Path,
    resumed: Checkpoint | None,
    dev: torch.device,
    rank: int,
    world: int,
    threads: int,
    stop: _StopRequest,
    on_step: Callable[[dict[str, Any]], None] | None,
) -> TrainResult:
    from tqdm.auto import tqdm

    from lumenkit.data.augment import Augment
    from lumenkit.data.datasets import LumenStoneDataset
    from lumenkit.data.samplers import BalancedSampler, PatchDataset, UniformSampler, load_arrays

    t_start = time.monotonic()
    best_path = run / "model.pt"
    say = (lambda msg: None) if (cfg.quiet or rank) else (lambda msg: tqdm.write(msg, file=sys.stderr))
    # data -------------------------------------------------------------------------------------------------------
    # ConfigError naming the fix for a bad split
    fit = LumenStoneDataset(cfg.data, "fit", scale=cfg.scale, class_set=cfg.class_set, validation=cfg.validation)
    scale = fit.scale
    class_map = fit.classes
    if resumed is not None and resumed.class_map != class_map:
        raise ConfigError(f"{run / 'last.pt'}: was trained on classes {resumed.class_map.codes}, "
                          f"the dataset gives {class_map.codes}")
    k = len(class_map)
    images, masks = load_arrays(fit, class_map)
    val = _load_val(cfg, class_map, scale)
    # model ------------------------------------------------------------------------------------------------------
    if resumed is not None:
        net = resumed.model
        mean, std = list(net.mean), list(net.std)
    else:
        mean, std = _channel_stats(images)
        torch.manual_seed(cfg.seed)
        net = create_model(cfg.arch, in_channels=3, classes=k, width=cfg.width, depth=cfg.depth, block=cfg.block,
                           mean=mean, std=std)
    net = net.to(dev).to(memory_format=torch.channels_last)  # channels_last: ~10× faster convs on CPU (oneDNN)
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    use_amp = cfg.amp and dev.type == "cuda"
    compiled, why = compile_decision(cfg, dev)
    step_model: Any = torch.compile(model) if compiled else model  # same parameters; checkpoints save ``net``
    training_step = f"{'torch.compile' if compiled else 'eager'} ({why})"
    say(f"training step: {training_step}")
    averaged = WeightAverage(net, cfg.ema) if cfg.ema else None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    weight = _class_weights(cfg, masks, k)
    criterion = SegmentationLoss(weight, cfg.dice_weight if cfg.loss == "ce+dice" else 0.0).to(dev)
    # patches: every rank its own stream --------------------------------------------------------------------------
    rank_seed = int(np.random.SeedSequence([cfg.seed, rank]).generate_state(1)[0])
    if cfg.sampler == "balanced":
        sampler: Any = BalancedSampler(masks, cfg.patch_size, k, strength=cfg.strength, alpha=cfg.alpha,
                                       kappa=cfg.kappa, grid=cfg.grid, void_border=cfg.void_border, seed=rank_seed)
    else:
        sampler = UniformSampler(masks, cfg.patch_size, k, void_border=cfg.void_border, seed=rank_seed)
    sampler.record_history = False
    per_rank = math.ceil(cfg.patches_per_epoch / world)
    p = cfg.photometric
    augment = (
        Augment(flips=cfg.flips, rot90=cfg.rot90, brightness=max(p, cfg.exposure), gamma=p, white_balance=p,
                noise=cfg.noise, blur=cfg.blur)
        if (cfg.flips or cfg.rot90 or p or cfg.exposure or cfg.noise or cfg.blur) else None
    )
    patches = PatchDataset(images, masks, sampler, length=per_rank, augment=augment, seed=rank_seed)
    # state -------------------------------------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    epoch, done_in_epoch, restarts, elapsed_before = 0, 0, 0, 0.0
    loss_sum, loss_n, best = 0.0, 0, -math.inf
    if resumed is not None:
        st = resumed.train_state or {}
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        if "scaler" in st and use_amp:
            scaler.load_state_dict(st["scaler"])
        sampler.load_state_dict({"served": st["sampler_served"]})  # the balancing totals
        if averaged is not None:  # a run saved without ema is refused earlier (config_differences)
            averaged.load_state_dict(st["ema"])
        history = list(resumed.history)
        epoch, done_in_epoch = int(st["epoch"]), int(st["patches_done"])
        restarts = int(st.get("restarts", 0)) + (1 if done_in_epoch else 0)
        loss_sum, loss_n = float(st["loss_sum"]), int(st["loss_n"])
        best, elapsed_before = float(st["best_miou"]), float(st["elapsed"])
        say(f"resuming {run} at epoch {epoch + 1} ({done_in_epoch} patches into it), best mIoU {best:.3f}")
    deadline = t_start + cfg.minutes * 60 - elapsed_before if cfg.minutes else math.inf

    def progress() -> float:
        """Fraction of the run done (time budget if set, else epochs), for the cosine schedule."""
        if cfg.minutes:
            return (elapsed_before + time.monotonic() - t_start) / (cfg.minutes * 60)
        return (epoch + done_in_epoch / max(1, per_rank)) / cfg.epochs

    def set_lr(frac: float) -> None:
        lr = cosine_lr(cfg.lr, cfg.min_lr, frac)
        for group in opt.param_groups:
            group["lr"] = lr

    if cfg.schedule == "cosine":
        set_lr(progress())
    ckpt_config = {"train": cfg.to_dict(), "val_names": val.names}
    if rank == 0:
        data_hash = LumenStoneDataset(cfg.data, "train").content_hash()
        _write_config(run, cfg, net, class_map, scale, val.names, fit.names, world, dev, threads, mean, std, data_hash,
                      training_step)

    def train_state() -> dict[str, Any]:
        return {
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "sampler_served": [int(v) for v in sampler.served], "epoch": epoch, "patches_done": done_in_epoch,
            "restarts": restarts, "loss_sum": loss_sum, "loss_n": loss_n, "best_miou": best,
            "elapsed": elapsed_before + time.monotonic() - t_start, "world_size": world, "step": step,
            **({"ema": averaged.state_dict()} if averaged is not None else {}),
        }

    def save_last() -> None:
        if rank == 0:
            Checkpoint(net, class_map, scale, history, train_state(), ckpt_config).save(run / "last.pt")

    def forward_backward(m: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
            loss = criterion(m(x), y)
        scaler.scale(loss).backward()
        return loss

    interrupted = False
    compiled_ok = False
    val_seconds = 0.0
    step = int((resumed.train_state or {}).get("step", 0)) if resumed is not None else 0
    while epoch < cfg.epochs and not interrupted:
        t_epoch = time.monotonic()
        patches.length = max(0, per_rank - done_in_epoch)
        patches.set_epoch(epoch + RESTART_EPOCH_OFFSET * restarts if done_in_epoch else epoch)
        loader = torch.utils.data.DataLoader(patches, batch_size=cfg.batch_size, num_workers=cfg.workers,
                                             pin_memory=dev.type == "cuda")
        n_steps = math.ceil(patches.length / cfg.batch_size)
        bar = tqdm(total=n_steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=cfg.quiet or rank != 0)
        time_up = False
        model.train()
        for batch in loader:
            x = net.normalize(batch["image"].to(dev, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            y = batch["mask"].to(dev, non_blocking=True)
            # until a compiled step has succeeded, keep the BN statistics so a failed attempt leaves no trace
            saved = [b.clone() for b in net.buffers()] if step_model is not model and not compiled_ok else None
            try:
                loss = forward_backward(step_model, x, y)
                compiled_ok = compiled_ok or step_model is not model
            except Exception as e:  # compilation (forward or the lazily built backward) failed: carry on eagerly
                if step_model is model:
                    raise
                if saved is not None:
                    with torch.no_grad():
                        for b, v in zip(net.buffers(), saved, strict=True):
                            b.copy_(v)
                first = (str(e).strip().splitlines() or [""])[0][:200]
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {first}); training eagerly "
                              "(compile='off' / --compile off skips the attempt)", RuntimeWarning, stacklevel=2)
                step_model = model
                loss = forward_backward(step_model, x, y)  # any other error recurs here
            scaler.step(opt)
            scaler.update()
            step += 1
            if averaged is not None:
                averaged.update(net, step)
            done_in_epoch += len(y)
            loss_sum += float(loss.detach()) * len(y)
            loss_n += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}")
            if on_step is not None:
                lr = opt.param_groups[0]["lr"]
                on_step({"epoch": epoch + 1, "step": step, "loss": float(loss.detach()), "lr": lr})
            flags = torch.tensor([float(stop.signum is not None),
                                  float(time.monotonic() + val_seconds > deadline), progress()])
            if world > 1:  # the most advanced rank's progress: every rank sets the same learning rate
                dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            if cfg.schedule == "cosine":
                set_lr(float(flags[2]))
            if flags[0]:
                interrupted = True
                break
            if flags[1]:
                time_up = True
                break
        bar.close()
        if interrupted:
            save_last()
            say(f"interrupted: saved resumable state to {run / 'last.pt'} (continue with resume=True / --resume)")
            break
        if world > 1:  # BN running statistics drift apart per rank: validate and save rank 0's everywhere
            for buf in net.buffers():
                dist.broadcast(buf, src=0)
            if averaged is not None:
                for buf in averaged.model.buffers():
                    dist.broadcast(buf, src=0)
        judged = averaged.model if averaged is not None else net  # what is validated, saved as model.pt, returned
        # validation (whole images, model scale → stored masks) ----------------------------------------------
        t_val = time.monotonic()
        ev = validate(judged, val, k, tile=cfg.val_tile, margin=cfg.val_margin, rank=rank, world_size=world)
        val_seconds = time.monotonic() - t_val
        scores = Scores(ev["cm"], class_map.labels)
        iou, miou = scores.iou, scores.mean_iou
        if cfg.schedule == "plateau":
            sched.step(ev["loss"])
        tl = torch.tensor([loss_sum, float(loss_n)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(tl)
        row: dict[str, Any] = {
            "epoch": epoch + 1, "train_loss": float(tl[0] / tl[1].clamp(min=1)), "val_loss": ev["loss"],
            "val_miou": miou,
            "val_pixel_acc": scores.pixel_accuracy,
            **{f"iou_{lbl}": float(v) for lbl, v in zip(class_map.labels, iou, strict=True)},
            "lr": opt.param_groups[0]["lr"], "seconds": time.monotonic() - t_epoch,
            "patches": int(tl[1]), "steps": math.ceil(loss_n / cfg.batch_size),
        }
        history.append(row)
        improved = not math.isnan(miou) and miou > best
        if improved:
            best = miou
        epoch += 1
        done_in_epoch, restarts, loss_sum, loss_n = 0, 0, 0.0, 0
        if rank == 0:
            write_text(run / "history.csv", pd.DataFrame(history).to_csv(index=False, float_format="%.6g"))
            if improved or not best_path.exists():
                Checkpoint(judged, class_map, scale, history, None, ckpt_config).save(best_path)
            save_last()
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {ev['loss']:.4f}, val mIoU {miou:.3f}"
            f"{' (best)' if improved else ''}, lr {row['lr']:.1e}, {row['seconds']:.0f} s")
        if time_up:
            say(f"time budget of {cfg.minutes} min reached after epoch {epoch}")
            break
    final = averaged.model if averaged is not None else net
    return TrainResult(run, final, pd.DataFrame(history), best, interrupted, rank, world)


def cosine_lr(lr: float, min_lr: float, frac: float) -> float:
    """Learning rate at fraction ``frac`` (clipped to [0, 1]) of a half-cosine from ``lr`` down to ``min_lr``."""
    f = min(1.0, max(0.0, frac))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * f))


def _write_config(
    run: Path, cfg: TrainConfig, net: SegmentationModel, class_map: ClassMap, scale: float, val_names: list[str],
    fit_names: list[str], world: int, dev: torch.device, threads: int, mean: list[float], std: list[float],
    data_hash: str = "", training_step: str = "",
) -> None:
    doc = {
        **cfg.to_dict(),
        "resolved": {
            "scale": scale, "class_codes": list(class_map.codes), "class_labels": class_map.labels,
            "mean": mean, "std": std, "model": dict(net.config),
            "gflop_per_megapixel": round(count_flops(net, 256, 256) / (256 * 256 / 1e6) / 1e9, 1),
            "world_size": world, "device": str(dev), "threads_per_process": threads,
            "val_names": val_names, "fit_names": fit_names, "data_sha1_train_split": data_hash,
            "training_step": training_step, "heap_retained": cfg.retain_heap and heap_retention_available(),
            "cpu_sgemm_gflops": round(cpu_gflops(), 1),
        },
        "versions": versions(),
    }
    write_text(run / "config.yaml", yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def read_history(run: str | Path) -> pd.DataFrame:
    """``RUN/history.csv`` as a DataFrame.

    Raises:
        DatasetNotFoundError: no history in that folder.
    """
    from lumenkit.errors import DatasetNotFoundError

    path = Path(run) / "history.csv"
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no training history; train with `lumenkit train --out {run}`")
    return pd.read_csv(path)
