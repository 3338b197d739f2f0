"""Early stopping: when the best epoch may come, and that its weights are the ones restored."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from helpers import tiny_multimixvi

from mixvi.model._training import EARLY_STOPPING_PATIENCE, default_plan, early_stopping_kwargs
from mixvi.train import RestoreBestWeights

torch.set_num_threads(1)


def test_best_epoch_waits_one_warm_up_under_the_mixture():
    plan = default_plan(400, None, None, n_cells=8_000, early_stopping=True)
    assert (plan["n_epochs_kl_warmup"], plan["prior_init_epoch"]) == (20, 20)
    out = early_stopping_kwargs(plan, {})
    best = next(c for c in out["callbacks"] if isinstance(c, RestoreBestWeights))
    assert best.start_epoch == 40  # fitted at 20, then 20 epochs under the mixture
    assert out["min_epochs"] == 40 + EARLY_STOPPING_PATIENCE
    # the user's own trainer options are kept; the minimum follows their patience
    mine = early_stopping_kwargs(plan, {"early_stopping_patience": 3, "callbacks": ["cb"]})
    assert mine["min_epochs"] == 43 and mine["callbacks"][0] == "cb"
    assert early_stopping_kwargs(plan, {"min_epochs": 5})["min_epochs"] == 5


def _fake_trainer(epoch: int, value: float):
    return SimpleNamespace(sanity_checking=False, current_epoch=epoch,
                           callback_metrics={"elbo_validation": torch.tensor(value)})


def test_restores_the_best_epoch_at_or_after_start():
    """Epoch 0 scores best but comes before ``start_epoch``; of the rest epoch 3 is best, and
    its weights (not the last epoch's) are in the module after training."""
    host = SimpleNamespace(module=torch.nn.Linear(3, 2))
    callback = RestoreBestWeights("elbo_validation", start_epoch=2)
    weights = {}
    for epoch, value in enumerate([1.0, 9.0, 8.0, 5.0, 6.0, math.nan, 7.0]):
        with torch.no_grad():
            host.module.weight.fill_(float(epoch))
        weights[epoch] = host.module.weight.detach().clone()
        callback.on_validation_epoch_end(_fake_trainer(epoch, value), host)
    assert callback.best_epoch == 3 and callback.best_score == 5.0
    callback.on_train_end(None, host)
    assert torch.equal(host.module.weight, weights[3])


def test_multimixvi_restores_an_epoch_trained_under_the_mixture():
    model, _ = tiny_multimixvi()
    model.train(max_epochs=12, train_size=0.8, enable_progress_bar=False, batch_size=128)
    best = next(c for c in model.trainer.callbacks if isinstance(c, RestoreBestWeights))
    # 12 epochs: warm-up 3, mixture fitted at epoch 3, best epoch from 6 on
    assert best.start_epoch == 6 and best.best_epoch is not None and best.best_epoch >= 6
    assert len(model.history["elbo_validation"]) == 12  # min_epochs (16) above the cap
    fits = model.trainer.lightning_module.mixture_fits
    assert [epoch for epoch, kind, _ in fits if kind == "init"] == [3]


@pytest.mark.parametrize("kwargs", [{"train_size": 1.0}, {"validation_size": 0}])
def test_early_stopping_without_validation_cells_is_an_error(kwargs):
    model, _ = tiny_multimixvi()
    with pytest.raises(ValueError, match="needs validation cells"):
        model.train(max_epochs=2, early_stopping=True, enable_progress_bar=False, **kwargs)
