"""Keep the weights of the best validation epoch and restore them when training ends."""

from __future__ import annotations

import copy
import math

import torch
from lightning.pytorch.callbacks import Callback


class RestoreBestWeights(Callback):
    """Track a validation metric; at the end of training load the best epoch's weights.

    With early stopping, training runs ``patience`` epochs past the best one; those epochs'
    weights are worse on held-out cells (the translation decoders overfit first). The best
    state is kept in memory (a copy of the module's state dict, on the CPU), no file is
    written. Epochs before ``start_epoch`` (the mixture is not fitted yet) are not
    candidates.

    Parameters
    ----------
    monitor
        Logged metric to minimise (``"elbo_validation"``: scvi-tools' validation ELBO,
        every reconstruction term included).
    start_epoch
        First epoch that can be the best one.
    """

    def __init__(self, monitor: str = "elbo_validation", start_epoch: int = 0):
        self.monitor = monitor
        self.start_epoch = start_epoch
        self.best_score = math.inf
        self.best_epoch: int | None = None
        self._best_state: dict | None = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        if trainer.sanity_checking or trainer.current_epoch < self.start_epoch:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if math.isfinite(value) and value < self.best_score:
            self.best_score, self.best_epoch = value, int(trainer.current_epoch)
            self._best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.module.state_dict().items()
            }

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        if self._best_state is None:
            return
        device = next(pl_module.module.parameters()).device
        state = {k: v.to(device) for k, v in self._best_state.items()}
        with torch.no_grad():
            pl_module.module.load_state_dict(copy.copy(state))
