"""Training progress off a terminal (mixvi.train.TrainingLog), the unfinished-training warning
and batch predictability.

Most tests drive the callback with a stand-in trainer (no training); one trains MixVI for
three epochs on 240 cells to check the hook in ``model.train``.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mixvi
from mixvi.train import (
    TrainingLog,
    TrainingWarning,
    batch_predictability,
    default_log_interval,
    relative_improvement,
    with_training_log,
)

torch.set_num_threads(1)


class FakeTrainer(SimpleNamespace):
    """What TrainingLog reads from a Lightning trainer."""

    def __init__(self, max_epochs: int, **kwargs):
        fields = {"current_epoch": 0, "callback_metrics": {}, "sanity_checking": False,
                  "progress_bar_callback": None, "is_global_zero": True, "should_stop": False}
        super().__init__(max_epochs=max_epochs, **{**fields, **kwargs})


def _module(k: int = 8, initialized: bool = True):
    prior = SimpleNamespace(n_components=k)
    return SimpleNamespace(module=SimpleNamespace(prior=prior,
                                                  prior_layer=SimpleNamespace(initialized=initialized)))


ENTROPY = math.log(7.4)  # 7.4 components in use


def _run(callback, trainer, module, losses, val_every=None, entropy=ENTROPY):
    """Drive the callback's hooks through ``len(losses)`` epochs."""
    callback.on_train_start(trainer, module)
    for epoch, loss in enumerate(losses):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, module)
        trainer.callback_metrics.update({
            "elbo_train": torch.tensor(loss), "reconstruction_loss_train": torch.tensor(loss - 20.0),
            "kl_local_train": torch.tensor(20.0), "kl_global_train": torch.tensor(0.0),
            "mixture_entropy_train": torch.tensor(entropy),
        })
        if val_every and (epoch + 1) % val_every == 0:
            trainer.callback_metrics["elbo_validation"] = torch.tensor(loss + 5.0)
        callback.on_train_epoch_end(trainer, module)
    callback.on_train_end(trainer, module)


def test_default_interval_gives_20_to_40_lines_long_and_every_epoch_short(caplog):
    assert default_log_interval(400) == 16 and default_log_interval(10) == 1
    assert default_log_interval(50) == 2 and default_log_interval(None) == 1
    for epochs, low, high in ((400, 20, 40), (200, 20, 40), (10, 10, 10), (30, 15, 30)):
        log = TrainingLog(warn_unconverged=False)
        _run(log, FakeTrainer(epochs), _module(), np.linspace(500, 400, epochs))
        assert low <= len(log.lines) <= high, (epochs, len(log.lines))
        assert log.lines[0].startswith(f"epoch 1/{epochs}:")
        assert log.lines[-1].startswith(f"epoch {epochs}/{epochs}:")  # the last is always logged


def test_line_content(caplog):
    caplog.set_level(logging.INFO, logger="mixvi")
    log = TrainingLog(every_n_epochs=5, warn_unconverged=False)
    _run(log, FakeTrainer(20), _module(k=8), [300.0 - e for e in range(20)], val_every=5)
    assert len(log.lines) == 5  # epochs 1, 5, 10, 15, 20
    line = log.lines[2]
    assert line.startswith("epoch 10/20: -elbo 291 (reconstruction 271, kl 20)")
    assert "kl_global" not in line  # a zero global KL is left out
    assert "validation -elbo 296" in line
    assert "components in use 7.4 of 8" in line
    assert "s/epoch" in line and "left" in line
    assert "left" not in log.lines[-1]  # nothing left after the last epoch
    records = [r for r in caplog.records if r.name == "mixvi"]
    assert [r.getMessage() for r in records][: len(log.lines)] == log.lines
    assert records[-1].getMessage().startswith("trained 20 epochs in")


def test_mixture_not_fitted_yet_and_missing_terms():
    log = TrainingLog(warn_unconverged=False)
    trainer = FakeTrainer(3)
    log.on_train_start(trainer, _module(initialized=False))
    trainer.callback_metrics = {"train_loss": torch.tensor(12.5),
                                "reconstruction_loss_train": torch.tensor(float("nan"))}
    line = log.format_line(trainer, _module(initialized=False), 0.5)
    assert line == "epoch 1/3: loss 12.5 | 0.50 s/epoch, 1s left"  # nan terms are left out
    trainer.callback_metrics["mixture_entropy_train"] = torch.tensor(math.log(3.0))
    line = log.format_line(trainer, _module(k=3, initialized=False), None)
    assert line.endswith("components in use 3.0 of 3 (mixture not fitted yet)")


def test_no_lines_with_a_progress_bar_but_still_the_warning(caplog):
    caplog.set_level(logging.INFO, logger="mixvi")
    log = TrainingLog()
    trainer = FakeTrainer(10, progress_bar_callback=object())
    with pytest.warns(TrainingWarning, match="still falling"):
        _run(log, trainer, _module(), np.linspace(500, 300, 10))
    assert log.lines == []
    assert [r.levelname for r in caplog.records if r.name == "mixvi"] == ["WARNING"]


def test_relative_improvement():
    assert relative_improvement([1.0]) != relative_improvement([1.0])  # nan
    flat = relative_improvement([100.0] * 50)
    assert abs(flat) < 1e-12
    # 200 down to 101 in steps of 1: the last 10 epochs (110 ... 101) fall by 9 around 105.5
    losses = np.linspace(200, 101, 100)
    assert relative_improvement(losses) == pytest.approx(9 / 105.5, rel=1e-6)
    assert relative_improvement(losses[::-1]) < 0  # rising
    assert relative_improvement([10.0, 9.0]) == pytest.approx(1 / 9.5)


@pytest.mark.parametrize(
    ("losses", "should_warn"),
    [
        (np.linspace(500, 300, 40), True),              # falling 5 per epoch at the end
        (np.r_[np.linspace(500, 300, 36), [300.0] * 4], False),  # plateau over the last 10 %
        (300 + 200 * np.exp(-np.arange(400) / 20), False),        # converged exponential
        (300 + 200 * np.exp(-np.arange(40) / 20), True),          # same curve, cut early
    ],
)
def test_convergence_warning(losses, should_warn, caplog):
    caplog.set_level(logging.INFO, logger="mixvi")
    log = TrainingLog()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(log, FakeTrainer(len(losses)), _module(), losses)
    ours = [w for w in caught if issubclass(w.category, TrainingWarning)]
    assert len(ours) == int(should_warn)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "mixvi"]
    assert len(warned) == int(should_warn)
    if should_warn:
        assert issubclass(TrainingWarning, UserWarning)
        text = str(ours[0].message)
        assert f"max_epochs={2 * len(losses)}" in text and f"of {len(losses)} epochs" in text


def test_no_warning_when_early_stopping_ended_training():
    log = TrainingLog()
    trainer = FakeTrainer(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        log.on_train_start(trainer, _module())
        for epoch, loss in enumerate(np.linspace(500, 300, 30)):  # stopped at 30 of 100
            trainer.current_epoch = epoch
            log.on_train_epoch_start(trainer, _module())
            trainer.callback_metrics["elbo_train"] = torch.tensor(loss)
            log.on_train_epoch_end(trainer, _module())
        trainer.should_stop = True
        log.on_train_end(trainer, _module())
    assert len(log.losses) == 30


def test_handler_added_only_when_logging_is_unconfigured(monkeypatch, capsys):
    mixvi_logger = logging.getLogger("mixvi")
    before = (list(mixvi_logger.handlers), mixvi_logger.level)
    monkeypatch.setattr(mixvi_logger, "hasHandlers", lambda: False)
    monkeypatch.setattr(logging.getLogger(), "level", logging.WARNING)
    log = TrainingLog(warn_unconverged=False)
    trainer, module = FakeTrainer(2), _module()
    log.on_train_start(trainer, module)
    assert len(mixvi_logger.handlers) == len(before[0]) + 1
    assert mixvi_logger.getEffectiveLevel() == logging.INFO
    for epoch in range(2):
        trainer.current_epoch = epoch
        log.on_train_epoch_start(trainer, module)
        trainer.callback_metrics["elbo_train"] = torch.tensor(10.0)
        log.on_train_epoch_end(trainer, module)
    log.on_train_end(trainer, module)
    assert (list(mixvi_logger.handlers), mixvi_logger.level) == before  # removed again
    err = capsys.readouterr().err
    assert "mixvi: epoch 1/2: -elbo 10" in err and "mixvi: epoch 2/2" in err


def test_with_training_log_keeps_user_callbacks(monkeypatch):
    user = [object()]
    out = with_training_log({"callbacks": user, "max_epochs": 3})
    assert out["callbacks"][0] is user[0] and isinstance(out["callbacks"][1], TrainingLog)
    assert len(user) == 1  # the caller's list is not changed
    again = with_training_log(out)
    assert sum(isinstance(c, TrainingLog) for c in again["callbacks"]) == 1
    assert with_training_log({"enable_progress_bar": True})["enable_progress_bar"] is True
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: False))
    assert with_training_log({})["enable_progress_bar"] is False
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(isatty=lambda: True))
    assert with_training_log({})["enable_progress_bar"] is True


def test_training_logs_lines_off_a_terminal(counts_adata, caplog, monkeypatch):
    """The hook in model.train: no TTY -> no progress bar, log lines with real metrics."""
    from lightning.pytorch.callbacks import Callback

    class Count(Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            Count.epochs += 1

    monkeypatch.setattr("mixvi.train._progress.progress_bar_default", lambda: False)  # no TTY
    caplog.set_level(logging.INFO, logger="mixvi")
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=16, n_components=3)
    callbacks = [Count()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingWarning)  # 3 epochs may or may not warn
        model.train(max_epochs=3, train_size=0.8, check_val_every_n_epoch=1,
                    enable_model_summary=False, callbacks=callbacks)
    assert Count.epochs == 3 and len(callbacks) == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    elbo = model.history["elbo_train"].to_numpy().ravel()
    assert f"-elbo {elbo[-1]:.4g}" in lines[-1]
    assert "validation -elbo" in lines[-1] and "components in use" in lines[-1]


def test_batch_predictability_separated_mixed_and_errors():
    rng = np.random.default_rng(0)
    batch = np.repeat(["a", "b"], 300)
    separated = rng.normal(size=(600, 5)) + np.where(batch == "a", 0.0, 8.0)[:, None]
    mixed = rng.normal(size=(600, 5))
    assert batch_predictability(separated, batch) > 0.99
    assert abs(batch_predictability(mixed, batch) - 0.5) < 0.1
    # three batches, one small and imbalanced: chance is 1/3, still found when separated
    batch3 = np.r_[np.repeat(["a", "b"], 4000), ["c"] * 12]
    x = rng.normal(size=(len(batch3), 4))
    x[batch3 == "c"] += 10
    score = batch_predictability(x, batch3, max_cells=1000)
    assert 0.55 < score < 0.8  # c is found, a and b are not: (1 + 0.5 + 0.5) / 3
    assert batch_predictability(x, batch3, max_cells=1000) == score  # seeded
    with pytest.raises(ValueError, match="at least two batches"):
        batch_predictability(mixed, ["a"] * 600)
    with pytest.raises(ValueError, match="one batch per cell"):
        batch_predictability(mixed, batch[:10])
    bad = mixed.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        batch_predictability(bad, batch)


def test_import_does_not_configure_root_logger():
    code = (
        "import logging, mixvi\n"
        "root = logging.getLogger()\n"
        "print(len(root.handlers), root.level, len(logging.getLogger('mixvi').handlers))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", str(logging.WARNING), "0"]
