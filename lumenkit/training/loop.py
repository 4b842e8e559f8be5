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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml
from torch import nn

from lumenkit.data.catalogue import IGNORE, ClassMap
from lumenkit.data.imageio import write_text
from lumenkit.errors import ConfigError
from lumenkit.evaluation.metrics import Scores
from lumenkit.models.checkpoint import Checkpoint, load_checkpoint
from lumenkit.models.resunet import SegmentationModel, count_flops, create_model
from lumenkit.runtime.devices import cpu_gflops, dist_init, resolve_device, torch_threads, usable_cores, versions
from lumenkit.runtime.heap import heap_retention, heap_retention_available, retained_heap
from lumenkit.training.config import (
    COMPILE_AUTO_MINUTES,
    COMPILE_AUTO_PATCHES,
    TrainConfig,
    config_differences,
    resumed_config,
)
from lumenkit.training.ema import WeightAverage
from lumenkit.training.losses import SegmentationLoss
from lumenkit.training.state import TrainingState
from lumenkit.training.validation import load_validation, validate

if TYPE_CHECKING:
    from lumenkit.data.augment import Augment

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


def train(
    config: TrainConfig | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a segmentation model (alone or under ``torchrun``) and write the run folder.

    Args:
        config: the configuration (default ``TrainConfig()``, the ``s1`` preset); keyword ``overrides`` replace its
            fields.
        on_step: called after every optimizer step with ``{"epoch", "step", "loss", "lr"}`` (e.g. live plots).
        **overrides: fields of :class:`TrainConfig`. On resume, a budget or validation window given here
            (``minutes``, ``epochs``, ``val_tile``, ``val_margin``) replaces the saved run's even where it equals the
            default; one left in ``config`` at its default keeps the saved one.

    Returns:
        A :class:`TrainResult` (on every rank; only rank 0 wrote files).

    Raises:
        ConfigError: bad options, or a run folder that already holds a run without ``resume``/``overwrite``.
        DatasetNotFoundError, BadImageError, BadMaskError, UnknownClassError: bad dataset.
        CheckpointError: ``last.pt`` is unreadable or belongs to another architecture.
    """
    cfg = dataclasses.replace(config, **overrides) if config is not None else TrainConfig.from_dict(overrides)
    cfg.check()
    cfg, resumed = _resume_or_start(cfg, stated=overrides)
    dev = resolve_device(cfg.device)
    rank, world, started_here = dist_init(dev)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = cfg.threads or max(1, usable_cores() // max(1, local_world))
    try:
        with torch_threads(threads), retained_heap(), _StopRequest() as stop:
            return _Trainer(cfg, resumed, dev, rank, world, threads, stop, on_step).run()
    finally:
        if started_here:
            dist.destroy_process_group()


def _resume_or_start(cfg: TrainConfig, stated: Iterable[str] = ()) -> tuple[TrainConfig, Checkpoint | None]:
    """The configuration to run and the checkpoint to resume (``None``: a new run).

    ``stated``: the fields given explicitly; a budget among them replaces the saved one even at its default.

    Raises:
        ConfigError: ``last.pt`` holds no training state, the new settings conflict with the saved run, or the
            folder holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    run = Path(cfg.out)
    last_path = run / "last.pt"
    if not last_path.exists():
        return cfg, None
    if not cfg.resume:
        if cfg.overwrite:
            return cfg, None
        raise ConfigError(
            f"{run}: already holds a training run (last.pt); pass resume=True (--resume) to continue it, "
            "overwrite=True to start afresh, or choose another out folder"
        )
    resumed = load_checkpoint(last_path)
    if not resumed.train_state:
        raise ConfigError(f"{last_path}: holds no training state to resume; start a new run with another --out")
    saved = TrainConfig.from_dict(resumed.config["train"], source=str(last_path), saved=True)
    diffs = config_differences(saved, cfg)
    if diffs:
        raise ConfigError(
            f"{last_path}: cannot resume with a different configuration ({'; '.join(diffs)}); drop those "
            "options to continue the saved run, or start afresh with overwrite=True (--overwrite) or another out"
        )
    return resumed_config(saved, cfg, stated), resumed


class _Trainer:
    """One training run, in steps: data, model and optimiser, patches, then epochs of steps and validation.

    The order of the set-up steps is part of the behaviour (it fixes which random numbers each draws): keep it.
    """

    def __init__(self, cfg: TrainConfig, resumed: Checkpoint | None, dev: torch.device, rank: int, world: int,
                 threads: int, stop: _StopRequest, on_step: Callable[[dict[str, Any]], None] | None) -> None:
        from tqdm.auto import tqdm

        self.cfg, self.resumed, self.dev, self.rank, self.world = cfg, resumed, dev, rank, world
        self.threads, self.stop, self.on_step = threads, stop, on_step
        self.run_dir = Path(cfg.out)
        self.t_start = time.monotonic()
        quiet = cfg.quiet or rank
        self.say: Callable[[str], None] = (lambda msg: None) if quiet else (
            lambda msg: tqdm.write(msg, file=sys.stderr))
        self.state = TrainingState()

    # -- set-up -----------------------------------------------------------------------------------------------
    def build_data(self) -> None:
        """The training images and masks (model indices, model scale) and the validation images."""
        from lumenkit.data.datasets import LumenStoneDataset
        from lumenkit.data.samplers import load_arrays

        cfg = self.cfg
        # ConfigError naming the fix for a bad split
        self.fit = LumenStoneDataset(cfg.data, "fit", scale=cfg.scale, class_set=cfg.class_set,
                                     validation=cfg.validation)
        self.scale, self.class_map = self.fit.scale, self.fit.classes
        if self.resumed is not None and self.resumed.class_map != self.class_map:
            raise ConfigError(f"{self.run_dir / 'last.pt'}: was trained on classes {self.resumed.class_map.codes}, "
                              f"the dataset gives {self.class_map.codes}")
        self.images, self.masks = load_arrays(self.fit, self.class_map)
        for path, m in zip(self.fit.mask_paths, self.masks, strict=True):
            if not (m != IGNORE).any():
                what = "at the training scale (strokes too thin for it)" if self.fit.factor < 1 else ""
                raise ConfigError(f"{path}: no labelled pixel {what}".rstrip() + "; paint at least one stroke of a "
                                  "mineral in it (255 = unlabelled), or remove the image from the training split")
        self.val = load_validation(cfg, self.class_map, self.scale)

    def build_model(self) -> None:
        """The network (new or resumed), its DDP wrapper, the compiled step, the average, optimiser and loss."""
        cfg, dev, k = self.cfg, self.dev, len(self.class_map)
        self.init_record = None
        if self.resumed is not None:
            net = self.resumed.model
            self.mean, self.std = list(net.mean), list(net.std)
            if cfg.freeze == "encoder":
                from lumenkit.training.init import freeze_encoder

                freeze_encoder(net)
        elif cfg.init:
            from lumenkit.training.init import init_from_checkpoint

            net, self.init_record = init_from_checkpoint(cfg.init, self.class_map, cfg.arch, cfg.width, cfg.depth,
                                                         cfg.block, cfg.seed, cfg.freeze, context=cfg.context)
            self.mean, self.std = list(net.mean), list(net.std)
            self.say(self.init_record.summary())
        else:
            self.mean, self.std = _channel_stats(self.images)
            torch.manual_seed(cfg.seed)
            net = create_model(cfg.arch, in_channels=3, classes=k, width=cfg.width, depth=cfg.depth,
                               block=cfg.block, context=cfg.context, mean=self.mean, std=self.std)
        self.net = net.to(dev).to(memory_format=torch.channels_last)  # channels_last: ~10× faster convs on CPU
        self.model: nn.Module = self.net
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.use_amp = cfg.amp and dev.type == "cuda"
        compiled, why = compile_decision(cfg, dev)
        # same parameters; checkpoints save ``net``
        self.step_model: Any = torch.compile(self.model) if compiled else self.model
        self.compiled_ok = False
        self.training_step = f"{'torch.compile' if compiled else 'eager'} ({why})"
        self.say(f"training step: {self.training_step}")
        self.averaged = WeightAverage(self.net, cfg.ema) if cfg.ema else None
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        weight = _class_weights(cfg, self.masks, k)
        self.criterion = SegmentationLoss(weight, cfg.dice_weight if cfg.loss == "ce+dice" else 0.0).to(dev)

    def build_patches(self) -> None:
        """Every rank its own seeded patch stream: the sampler, the augmentation and the patch dataset."""
        from lumenkit.data.samplers import BalancedSampler, PatchDataset, UniformSampler

        cfg, k = self.cfg, len(self.class_map)
        rank_seed = int(np.random.SeedSequence([cfg.seed, self.rank]).generate_state(1)[0])
        if cfg.sampler == "balanced":
            self.sampler: Any = BalancedSampler(self.masks, cfg.patch_size, k, strength=cfg.strength,
                                                alpha=cfg.alpha, kappa=cfg.kappa, grid=cfg.grid,
                                                void_border=cfg.void_border, seed=rank_seed)
        else:
            self.sampler = UniformSampler(self.masks, cfg.patch_size, k, void_border=cfg.void_border, seed=rank_seed)
        self.sampler.record_history = False
        self.per_rank = math.ceil(cfg.patches_per_epoch / self.world)
        self.patches = PatchDataset(self.images, self.masks, self.sampler, length=self.per_rank,
                                    augment=patch_augment(cfg), seed=rank_seed)

    def restore(self) -> None:
        """Continue the saved run: optimiser, schedule, scaler, sampler totals, average and counters."""
        if self.resumed is None:
            return
        self.state = TrainingState.restore(self.resumed, self)
        st = self.state
        self.say(f"resuming {self.run_dir} at epoch {st.epoch + 1} ({st.done_in_epoch} patches into it), "
                 f"best mIoU {st.best:.3f}")

    def start(self) -> None:
        """Deadline, the first learning rate of a cosine schedule, and ``config.yaml`` (rank 0)."""
        from lumenkit.data.datasets import LumenStoneDataset

        cfg = self.cfg
        self.deadline = self.t_start + cfg.minutes * 60 - self.state.elapsed_before if cfg.minutes else math.inf
        if cfg.schedule == "cosine":
            self.set_lr(self.progress())
        self.ckpt_config = {"train": cfg.to_dict(), "val_names": self.val.names}
        if self.init_record is not None:
            self.ckpt_config["init"] = self.init_record.to_dict()
        elif self.resumed is not None and "init" in (self.resumed.config or {}):
            self.ckpt_config["init"] = self.resumed.config["init"]
        if self.fit.pixel_size_um is not None:  # µm per pixel at the model's scale (prediction resamples to it)
            self.ckpt_config["pixel_size_um"] = self.fit.pixel_size_um
        if self.rank == 0:
            data_hash = LumenStoneDataset(cfg.data, "train").content_hash()
            labels = ("sparse: trained on strokes, validation scores count labelled pixels only" if self.fit.sparse
                      else "dense")
            _write_config(self.run_dir, cfg, self.net, self.class_map, self.scale, self.val.names, self.fit.names,
                          self.world, self.dev, self.threads, self.mean, self.std, data_hash, self.training_step,
                          {"labels": labels, "init": self.ckpt_config.get("init")})

    # -- running ----------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Set up, then train epoch by epoch until the epochs or the time budget run out or a signal stops it."""
        self.build_data()
        self.build_model()
        self.build_patches()
        self.restore()
        self.start()
        cfg, st = self.cfg, self.state
        self.val_seconds = 0.0
        interrupted = False
        while st.epoch < cfg.epochs:
            t_epoch = time.monotonic()
            interrupted, time_up = self.train_epoch()
            if interrupted:
                self.save_last()
                self.say(f"interrupted: saved resumable state to {self.run_dir / 'last.pt'} "
                         "(continue with resume=True / --resume)")
                break
            self.end_epoch(t_epoch)
            if time_up:
                self.say(f"time budget of {cfg.minutes} min reached after epoch {st.epoch}")
                break
        if not interrupted and self.fit.sparse and cfg.strokes_prior > 0 and self.rank == 0:
            self.correct_prior()
        final = self.averaged.model if self.averaged is not None else self.net
        return TrainResult(self.run_dir, final, pd.DataFrame(st.history), st.best, interrupted, self.rank,
                           self.world)

    def correct_prior(self) -> None:
        """Correct ``model.pt`` of a run on strokes to its images' class prior, estimated by EM (``strokes_prior``).

        Its validation mean IoU before and after is said and recorded in ``config["prior_correction"]``. A run that
        finished before (resumed with nothing left to train) is not corrected twice.
        """
        from lumenkit.training.prior import em_prior_correction

        path = self.run_dir / "model.pt"
        ckpt = load_checkpoint(path)
        if any(c.get("natural_from") == "em" for c in ckpt.config.get("prior_correction") or []):
            return
        tau = self.cfg.strokes_prior
        fixed, info = em_prior_correction(ckpt, self.fit, self.sampler.served, tau)
        fixed.model.to(self.dev).eval()
        ev = validate(fixed.model, self.val, len(self.class_map), tile=self.cfg.val_tile, margin=self.cfg.val_margin)
        after = Scores(ev["cm"], self.class_map.labels).mean_iou
        fixed.config["prior_correction"][-1]["val_miou"] = [round(float(self.state.best), 6), round(float(after), 6)]
        fixed.model.cpu()
        fixed.save(path)
        shares = ", ".join(f"{lbl} {n / 1e4:.1f} %" for lbl, n in zip(info["labels"], info["natural"], strict=True))
        self.say(f"model.pt corrected to the images' class shares estimated by EM ({shares}; τ {tau}): validation "
                 f"mean IoU {self.state.best:.3f} → {after:.3f} (strokes_prior=0 / --strokes-prior 0 turns it off)")

    def progress(self) -> float:
        """Fraction of the run done, for the cosine schedule: of the epochs, or of the time budget if that is further.

        A run ends at whichever of its epochs and its time budget runs out first, so the schedule follows the one
        nearer its end: a fast machine that reaches the epoch cap (1000 unless set) before the budget still ends
        at ``min_lr``.
        """
        cfg, st = self.cfg, self.state
        done = (st.epoch + st.done_in_epoch / max(1, self.per_rank)) / cfg.epochs
        if cfg.minutes:
            return max(done, (st.elapsed_before + time.monotonic() - self.t_start) / (cfg.minutes * 60))
        return done

    def set_lr(self, frac: float) -> None:
        """Set the cosine schedule's learning rate at fraction ``frac`` of the run."""
        lr = cosine_lr(self.cfg.lr, self.cfg.min_lr, frac)
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_epoch(self) -> tuple[bool, bool]:
        """The optimizer steps of one epoch (or what is left of it); returns ``(interrupted, time_up)``."""
        from tqdm.auto import tqdm

        cfg, st, dev = self.cfg, self.state, self.dev
        self.patches.length = max(0, self.per_rank - st.done_in_epoch)
        self.patches.set_epoch(st.epoch + RESTART_EPOCH_OFFSET * st.restarts if st.done_in_epoch else st.epoch)
        loader = torch.utils.data.DataLoader(self.patches, batch_size=cfg.batch_size, num_workers=cfg.workers,
                                             pin_memory=dev.type == "cuda")
        n_steps = math.ceil(self.patches.length / cfg.batch_size)
        bar = tqdm(total=n_steps, desc=f"epoch {st.epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=cfg.quiet or self.rank != 0)
        self.model.train()
        try:
            for batch in loader:
                x = self.net.normalize(batch["image"].to(dev, non_blocking=True))
                x = x.contiguous(memory_format=torch.channels_last)
                y = batch["mask"].to(dev, non_blocking=True)
                loss = self.optimizer_step(x, y)
                st.done_in_epoch += len(y)
                st.loss_sum += float(loss.detach()) * len(y)
                st.loss_n += len(y)
                bar.update(1)
                bar.set_postfix(loss=f"{st.loss_sum / st.loss_n:.4f}")
                if self.on_step is not None:
                    lr = self.opt.param_groups[0]["lr"]
                    self.on_step({"epoch": st.epoch + 1, "step": st.step, "loss": float(loss.detach()), "lr": lr})
                stop, time_up = self.after_step()
                if stop or time_up:
                    return stop, time_up
            return False, False
        finally:
            bar.close()

    def optimizer_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward and update (compiled when asked; a failed compilation falls back to eager once)."""
        net, model = self.net, self.model
        # until a compiled step has succeeded, keep the BN statistics so a failed attempt leaves no trace
        saved = [b.clone() for b in net.buffers()] if self.step_model is not model and not self.compiled_ok else None
        try:
            loss = self._forward_backward(self.step_model, x, y)
            self.compiled_ok = self.compiled_ok or self.step_model is not model
        except Exception as e:  # compilation (forward or the lazily built backward) failed: carry on eagerly
            if self.step_model is model:
                raise
            if saved is not None:
                with torch.no_grad():
                    for b, v in zip(net.buffers(), saved, strict=True):
                        b.copy_(v)
            first = (str(e).strip().splitlines() or [""])[0][:200]
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {first}); training eagerly "
                          "(compile='off' / --compile off skips the attempt)", RuntimeWarning, stacklevel=2)
            self.step_model = model
            loss = self._forward_backward(model, x, y)  # any other error recurs here
        self.scaler.step(self.opt)
        self.scaler.update()
        self.state.step += 1
        if self.averaged is not None:
            self.averaged.update(net, self.state.step)
        return loss

    def _forward_backward(self, m: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.dev.type, dtype=torch.float16, enabled=self.use_amp):
            loss = self.criterion(m(x), y)
        self.scaler.scale(loss).backward()
        return loss

    def after_step(self) -> tuple[bool, bool]:
        """Stop request and time budget, agreed between ranks; the cosine learning rate of the most advanced rank."""
        flags = torch.tensor([float(self.stop.signum is not None),
                              float(time.monotonic() + self.val_seconds > self.deadline), self.progress()])
        if self.world > 1:  # the most advanced rank's progress: every rank sets the same learning rate
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if self.cfg.schedule == "cosine":
            self.set_lr(float(flags[2]))
        return bool(flags[0]), bool(flags[1])

    def end_epoch(self, t_epoch: float) -> None:
        """Validate on whole images, step the plateau schedule, append to the history, write the checkpoints."""
        cfg, st, class_map = self.cfg, self.state, self.class_map
        if self.world > 1:  # BN running statistics drift apart per rank: validate and save rank 0's everywhere
            for buf in self.net.buffers():
                dist.broadcast(buf, src=0)
            if self.averaged is not None:
                for buf in self.averaged.model.buffers():
                    dist.broadcast(buf, src=0)
        judged = self.averaged.model if self.averaged is not None else self.net  # validated, saved, returned
        t_val = time.monotonic()
        ev = validate(judged, self.val, len(class_map), tile=cfg.val_tile, margin=cfg.val_margin, rank=self.rank,
                      world_size=self.world)
        self.val_seconds = time.monotonic() - t_val
        scores = Scores(ev["cm"], class_map.labels)
        miou = scores.mean_iou
        if cfg.schedule == "plateau":
            self.sched.step(ev["loss"])
        tl = torch.tensor([st.loss_sum, float(st.loss_n)], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(tl)
        row: dict[str, Any] = {
            "epoch": st.epoch + 1, "train_loss": float(tl[0] / tl[1].clamp(min=1)), "val_loss": ev["loss"],
            "val_miou": miou, "val_pixel_acc": scores.pixel_accuracy,
            **{f"iou_{lbl}": float(v) for lbl, v in zip(class_map.labels, scores.iou, strict=True)},
            "lr": self.opt.param_groups[0]["lr"], "seconds": time.monotonic() - t_epoch,
            "patches": int(tl[1]), "steps": math.ceil(st.loss_n / cfg.batch_size),
        }
        st.history.append(row)
        improved = not math.isnan(miou) and miou > st.best
        if improved:
            st.best = miou
        st.next_epoch()
        if self.rank == 0:
            best_path = self.run_dir / "model.pt"
            write_text(self.run_dir / "history.csv", pd.DataFrame(st.history).to_csv(index=False, float_format="%.6g"))
            if improved or not best_path.exists():
                Checkpoint(judged, class_map, self.scale, st.history, None, self.ckpt_config).save(best_path)
            self.save_last()
        self.say(f"epoch {st.epoch}: train loss {row['train_loss']:.4f}, val loss {ev['loss']:.4f}, val mIoU "
                 f"{miou:.3f}{' (best)' if improved else ''}, lr {row['lr']:.1e}, {row['seconds']:.0f} s")

    def save_last(self) -> None:
        """``RUN/last.pt``: the raw weights with everything :class:`TrainingState` needs to resume (rank 0)."""
        if self.rank == 0:
            elapsed = self.state.elapsed_before + time.monotonic() - self.t_start
            Checkpoint(self.net, self.class_map, self.scale, self.state.history, self.state.to_dict(self, elapsed),
                       self.ckpt_config).save(self.run_dir / "last.pt")


def patch_augment(cfg: TrainConfig) -> Augment | None:
    """The augmentation of training patches ``cfg`` asks for (``None`` when it asks for none).

    Flips and rot90, brightness jitter of ``max(photometric, exposure)``, gamma and white-balance jitter of
    ``photometric``, sensor noise and defocus.
    """
    from lumenkit.data.augment import Augment

    p = cfg.photometric
    if not (cfg.flips or cfg.rot90 or p or cfg.exposure or cfg.noise or cfg.blur):
        return None
    return Augment(flips=cfg.flips, rot90=cfg.rot90, brightness=max(p, cfg.exposure), gamma=p, white_balance=p,
                   noise=cfg.noise, blur=cfg.blur)


def cosine_lr(lr: float, min_lr: float, frac: float) -> float:
    """Learning rate at fraction ``frac`` (clipped to [0, 1]) of a half-cosine from ``lr`` down to ``min_lr``."""
    f = min(1.0, max(0.0, frac))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * f))


def _write_config(
    run: Path, cfg: TrainConfig, net: SegmentationModel, class_map: ClassMap, scale: float, val_names: list[str],
    fit_names: list[str], world: int, dev: torch.device, threads: int, mean: list[float], std: list[float],
    data_hash: str = "", training_step: str = "", extra: dict[str, Any] | None = None,
) -> None:
    doc = {
        **cfg.to_dict(),
        "resolved": {
            "scale": scale, "class_codes": list(class_map.codes), "class_labels": class_map.labels,
            "mean": mean, "std": std, "model": dict(net.config),
            "gflop_per_megapixel": round(count_flops(net, 256, 256) / (256 * 256 / 1e6) / 1e9, 1),
            "world_size": world, "device": str(dev), "threads_per_process": threads,
            "val_names": val_names, "fit_names": fit_names, "data_sha1_train_split": data_hash,
            "training_step": training_step, "heap_retained": heap_retention() and heap_retention_available(),
            "cpu_sgemm_gflops": round(cpu_gflops(), 1),
            **(extra or {}),
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
