"""Training entry shared by MixVI and MultiMixVI: defaults, argument checks, NaN-stop handling."""

from __future__ import annotations

from scvi.model.base import UnsupervisedTrainingMixin

from mixvi.dataloaders import MixDataSplitter
from mixvi.model._validation import check_train_args
from mixvi.train import NonFiniteLossError
from mixvi.train._progress import with_training_log


def default_max_epochs(n_cells: int) -> int:
    """scvi-tools' heuristic: about 400 epochs for 20k cells or fewer, fewer above
    (``min(round(20000 / n_cells * 400), 400)``, at least 1)."""
    return max(1, min(round(20_000 / max(n_cells, 1) * 400), 400))


#: from this many cells on, MixVI trains with :data:`LARGE_BATCH_SIZE` by default
LARGE_DATA_CELLS = 20_000
SMALL_BATCH_SIZE = 128  # scvi-tools' default
LARGE_BATCH_SIZE = 512
BASE_LR = 1e-3  # scvi-tools' TrainingPlan default, the learning rate of batch 128


def default_batch_size(n_cells: int) -> int:
    """Minibatch size for ``n_cells`` cells: 128 (scvi-tools') below
    :data:`LARGE_DATA_CELLS`, 512 from there on.

    At batch 512 (learning rate scaled by ``sqrt(512 / 128)``) MixVI kept its scIB total within
    0.01 of batch 128 on 1.5k, 10k and 50k cells and trained 1.3-1.5x faster; on 50k-cell
    resamples its mixture clusters were as good or better, but on 10k SNARE-seq cells (100
    epochs) their ARI fell by 0.05 (``benchmarks/scaling/results.md``). Small data has few
    minibatches per epoch already, and a 4x larger batch means 4x fewer optimiser steps.
    """
    return LARGE_BATCH_SIZE if n_cells >= LARGE_DATA_CELLS else SMALL_BATCH_SIZE


def scaled_lr(batch_size: int) -> float:
    """Learning rate for ``batch_size``: ``BASE_LR * sqrt(batch_size / 128)`` (square-root
    scaling keeps the noise of an Adam step about constant as the batch grows)."""
    return BASE_LR * (batch_size / SMALL_BATCH_SIZE) ** 0.5


#: a component whose share of the cells drops below this many cells is switched off
MIN_COMPONENT_CELLS = 5


#: with early stopping, ``max_epochs`` is only a cap: the schedule is set in epochs instead
EARLY_STOPPING_WARMUP = 20
EARLY_STOPPING_REFIT_EVERY = 5
EARLY_STOPPING_PATIENCE = 10


def default_plan(
    max_epochs: int,
    n_epochs_kl_warmup: int | None,
    prior_init_epoch: int | None,
    n_cells: int,
    early_stopping: bool = False,
) -> dict:
    """Training-plan defaults shared by both models.

    KL warm-up over a quarter of training (with early stopping, where ``max_epochs`` is a cap,
    over :data:`EARLY_STOPPING_WARMUP` epochs at most); the mixture is fitted to the cells
    when the warm-up ends (a latent still in warm-up is not yet a good guide to the number
    and place of the clusters), refitted by EM every tenth of training (every
    :data:`EARLY_STOPPING_REFIT_EVERY` epochs with early stopping) and once at the end;
    components holding fewer than :data:`MIN_COMPONENT_CELLS` cells are switched off.
    """
    horizon = min(max_epochs, 4 * EARLY_STOPPING_WARMUP) if early_stopping else max_epochs
    warmup = n_epochs_kl_warmup if n_epochs_kl_warmup is not None else max(horizon // 4, 1)
    init = prior_init_epoch if prior_init_epoch is not None else min(warmup, max_epochs - 1)
    every = EARLY_STOPPING_REFIT_EVERY if early_stopping else max(max_epochs // 10, 1)
    return {
        "n_epochs_kl_warmup": warmup,
        "prior_init_epoch": max(int(init), 0),
        "refit_every": every,
        "min_component_fraction": MIN_COMPONENT_CELLS / max(n_cells, 1),
        "n_epochs_gumbel_anneal": max(horizon // 2, 1),
    }


def early_stopping_kwargs(plan: dict, trainer_kwargs: dict) -> dict:
    """Trainer arguments for early stopping on the validation ELBO, with the best epoch's
    weights restored (:class:`~mixvi.train.RestoreBestWeights`).

    The best epoch comes after the mixture is fitted *and* the networks have trained under it
    for as long as the KL warm-up lasted (``prior_init_epoch + n_epochs_kl_warmup``); training
    stops no earlier than that plus the patience. The warm-up epochs are not the model being
    trained, and the first epochs under the mixture are the encoders still moving the cells
    onto its components: on SNARE-seq (MultiMixVI, 5 seeds) a best epoch allowed from the fit
    on came soon after it, with joint clusters at K 14.0-14.2 for 22 types; one warm-up later
    they reached K 16.4 at the same translation (``benchmarks/multimodal/results.md``).
    """
    from mixvi.train import RestoreBestWeights

    out = dict(trainer_kwargs)
    start = plan["prior_init_epoch"] + plan["n_epochs_kl_warmup"]
    out.setdefault("early_stopping_patience", EARLY_STOPPING_PATIENCE)
    out.setdefault("early_stopping_monitor", "elbo_validation")
    out.setdefault("min_epochs", start + out["early_stopping_patience"])
    out.setdefault("check_val_every_n_epoch", 1)
    best = RestoreBestWeights(out["early_stopping_monitor"], start_epoch=start)
    out["callbacks"] = [*(out.get("callbacks") or []), best]
    return out


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
        if kwargs.get("early_stopping"):
            train_size, val_size = kwargs.get("train_size"), kwargs.get("validation_size")
            if (train_size is not None and train_size >= 1.0) or val_size == 0:
                raise ValueError(
                    "early_stopping=True needs validation cells, but train_size="
                    f"{train_size} / validation_size={val_size} leave none; use e.g. "
                    "train_size=0.9, or early_stopping=False."
                )
            kwargs = early_stopping_kwargs(plan, kwargs)
        kwargs = with_training_log(kwargs)  # log lines off a terminal, progress bar on one
        try:
            return UnsupervisedTrainingMixin.train(
                self, plan_kwargs=plan, max_epochs=max_epochs, batch_size=batch_size, **kwargs
            )
        except NonFiniteLossError:
            # the weights of the last completed step are kept and usable for inference
            self.module.eval()
            self.is_trained_ = True
            raise
