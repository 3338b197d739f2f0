"""Training entry shared by MixVI and MultiMixVI: default plan and NaN-stop handling."""

from __future__ import annotations

from scvi.model.base import UnsupervisedTrainingMixin

from mixvi.train import NonFiniteLossError


def default_plan(
    max_epochs: int,
    n_epochs_kl_warmup: int | None,
    prior_init_epoch: int | None,
    prior_init_divisor: int,
) -> dict:
    """Training-plan defaults: KL warm-up over a quarter of training, mixture fitted at
    ``max_epochs // prior_init_divisor`` (at least 1, at most 20) unless given."""
    return {
        "n_epochs_kl_warmup": n_epochs_kl_warmup
        if n_epochs_kl_warmup is not None
        else max(max_epochs // 4, 1),
        "prior_init_epoch": prior_init_epoch
        if prior_init_epoch is not None
        else min(max(max_epochs // prior_init_divisor, 1), 20),
    }


class MixTrainingMixin(UnsupervisedTrainingMixin):
    """scvi-tools' training entry; after a non-finite loss the kept weights stay usable.

    The module is put in training mode by :class:`~mixvi.train.MixTrainingPlan` when
    training starts (Lightning keeps the module's mode otherwise).
    """

    def _train_with_plan(self, plan: dict, **kwargs):
        try:
            return UnsupervisedTrainingMixin.train(self, plan_kwargs=plan, **kwargs)
        except NonFiniteLossError:
            # the weights of the last completed step are kept and usable for inference
            self.module.eval()
            self.is_trained_ = True
            raise
