"""Callbacks the presets use besides Lightning's own."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


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
