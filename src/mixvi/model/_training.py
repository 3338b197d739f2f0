"""Training entry shared by MixVI and MultiMixVI: defaults, argument checks, NaN-stop handling."""

from __future__ import annotations

from scvi.model.base import UnsupervisedTrainingMixin

from mixvi.dataloaders import MixDataSplitter
from mixvi.model._validation import check_train_args
from mixvi.train import NonFiniteLossError


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' heuristic: about 400 epochs for 20k cells or fewer, fewer above
    (``min(round(20000 / n_cells * 400), 400)``, at least 1)."""
    return max(1, min(round(20_000 / max(n_cells, 1) * 400), 400))


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
    """scvi-tools' training entry with mixvi's data splitter (tensors held once, no
    single-cell minibatch); after a non-finite loss the kept weights stay usable.

    The module is put in training mode by :class:`~mixvi.train.MixTrainingPlan` when
    training starts (Lightning keeps the module's mode otherwise).
    """

    _data_splitter_cls = MixDataSplitter

    def _train_with_plan(self, plan: dict, max_epochs: int, batch_size: int, **kwargs):
        check_train_args(
            max_epochs, batch_size, kwargs.get("train_size"), kwargs.get("validation_size"),
            self.adata.n_obs,
        )
        try:
            return UnsupervisedTrainingMixin.train(
                self, plan_kwargs=plan, max_epochs=max_epochs, batch_size=batch_size, **kwargs
            )
        except NonFiniteLossError:
            # the weights of the last completed step are kept and usable for inference
            self.module.eval()
            self.is_trained_ = True
            raise
