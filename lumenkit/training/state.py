"""What a training run saves to resume: its position, running sums and the state of its optimiser and sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainingState:
    """The counters of a run, saved in ``RUN/last.pt`` beside the optimiser, schedule, scaler, sampler and average.

    Attributes:
        epoch: epochs finished.
        done_in_epoch: patches of the current epoch already trained on (an interrupted epoch resumes there).
        restarts: how often the current epoch was resumed mid-way (seeds fresh patch streams each time).
        loss_sum, loss_n: training loss summed over the current epoch's patches, and their number.
        best: best validation mean IoU so far (``-inf`` before the first validation).
        elapsed_before: seconds spent by earlier sessions of the run (the time budget counts them).
        step: optimizer steps taken.
        history: one row per finished epoch (as ``history.csv``).
    """

    epoch: int = 0
    done_in_epoch: int = 0
    restarts: int = 0
    loss_sum: float = 0.0
    loss_n: int = 0
    best: float = -math.inf
    elapsed_before: float = 0.0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def next_epoch(self) -> None:
        """Count a finished epoch and reset the per-epoch sums."""
        self.epoch += 1
        self.done_in_epoch, self.restarts, self.loss_sum, self.loss_n = 0, 0, 0.0, 0

    def to_dict(self, parts: Any, elapsed: float) -> dict[str, Any]:
        """The ``train_state`` of ``last.pt``: these counters and the state of ``parts``' optimiser and friends.

        Args:
            parts: the run's pieces (``opt``, ``sched``, ``scaler``, ``sampler``, ``averaged``, ``world``).
            elapsed: seconds of training of the whole run so far.
        """
        return {
            "optimizer": parts.opt.state_dict(), "scheduler": parts.sched.state_dict(),
            "scaler": parts.scaler.state_dict(), "sampler_served": [int(v) for v in parts.sampler.served],
            "epoch": self.epoch, "patches_done": self.done_in_epoch, "restarts": self.restarts,
            "loss_sum": self.loss_sum, "loss_n": self.loss_n, "best_miou": self.best, "elapsed": elapsed,
            "world_size": parts.world, "step": self.step,
            **({"ema": parts.averaged.state_dict()} if parts.averaged is not None else {}),
        }

    @classmethod
    def restore(cls, checkpoint: Any, parts: Any) -> TrainingState:
        """Load ``checkpoint.train_state`` into ``parts`` (optimiser, schedule, scaler, sampler, average).

        Returns:
            The counters, with ``restarts`` counting this resumption when it falls in the middle of an epoch.
        """
        st = checkpoint.train_state or {}
        parts.opt.load_state_dict(st["optimizer"])
        parts.sched.load_state_dict(st["scheduler"])
        if "scaler" in st and parts.use_amp:
            parts.scaler.load_state_dict(st["scaler"])
        parts.sampler.load_state_dict({"served": st["sampler_served"]})  # the balancing totals
        if parts.averaged is not None:  # a run saved without ema is refused earlier (config_differences)
            parts.averaged.load_state_dict(st["ema"])
        done = int(st["patches_done"])
        return cls(
            epoch=int(st["epoch"]), done_in_epoch=done, restarts=int(st.get("restarts", 0)) + (1 if done else 0),
            loss_sum=float(st["loss_sum"]), loss_n=int(st["loss_n"]), best=float(st["best_miou"]),
            elapsed_before=float(st["elapsed"]), step=int(st.get("step", 0)), history=list(checkpoint.history),
        )
