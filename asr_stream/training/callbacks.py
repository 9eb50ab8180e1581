"""Callbacks the presets use besides Lightning's own."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, plus a checkpoint of the final step.

    With ``every_n_train_steps`` alone, a run whose ``max_steps`` is not a multiple of N (or that a
    ``max_time`` stops) ends with ``last.ckpt`` up to N - 1 steps behind the exported model. This saves the
    step on which training stops, at the same point of the step as the periodic saves (after the weight
    average has been updated, before ``on_train_end`` copies the average into the live weights), so
    resuming from it with a larger ``max_steps`` continues exactly.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_step = 0 < trainer.max_steps <= trainer.global_step
        if (last_step or trainer.should_stop) and self._last_global_step_saved != trainer.global_step \
                and not self._should_skip_saving_checkpoint(trainer):
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` with an update that leaves a weight that does not change exactly as it is.

    Lightning's average is ``decay * average + (1 - decay) * weight``, which float32 rounding moves off a constant
    weight: a frozen encoder's weights drifted up to 3.6e-7 over 7,000 steps, so the exported model no longer matched
    the feature cache written from the same encoder (its weight check refused it). Here the update is
    ``average + (1 - decay) * (weight - average)`` (``torch.lerp``): the same average, and a frozen weight's
    difference is 0, so it stays bit-exact."""

    def __init__(self, decay: float = 0.999, **kwargs) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay {decay} must lie in [0, 1]")
        super().__init__(decay=decay, **kwargs)

        @torch.no_grad()
        def update(average: torch.Tensor, weight: torch.Tensor, num_averaged) -> torch.Tensor:
            return torch.lerp(average, weight, 1.0 - decay)

        self._kwargs["avg_fn"] = update

    @property
    def state_key(self) -> str:
        return "EMAWeightAveraging"  # checkpoints of runs with Lightning's callback resume with this one
