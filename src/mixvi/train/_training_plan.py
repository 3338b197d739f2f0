"""Training plan: scvi-tools' plan plus mixture initialisation and Gumbel annealing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scvi import settings
from scvi.module._constants import MODULE_KEYS
from scvi.train import TrainingPlan

from mixvi.priors import MixturePrior


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss term becomes NaN or infinite."""


def check_finite_loss(loss_output, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite loss term.

    Parameters
    ----------
    loss_output
        A :class:`~scvi.module.base.LossOutput`.
    where
        Where in training this happened (e.g. ``"epoch 3, step 12"``).
    """
    terms = {"reconstruction_loss": loss_output.reconstruction_loss_sum}
    terms.update({k: v.sum() for k, v in loss_output.kl_local.items()})
    terms["loss"] = loss_output.loss
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"The {name} term became {value.item()} at {where}. The weights of the last "
                "completed step are kept. Try a lower learning rate (plan_kwargs={'lr': 1e-4}), "
                "check the input for extreme counts, or set gradient_clip_val=1.0 in train()."
            )


class MixTrainingPlan(TrainingPlan):
    """scvi-tools :class:`~scvi.train.TrainingPlan` for mixture-prior modules.

    Adds three things:

    * at epoch ``prior_init_epoch`` the mixture is placed on k-means clusters of
      the encoder's posterior means (on up to ``n_prior_init_cells`` training cells);
      before that the module uses the N(0, I) KL when it was built with
      ``pretrain_normal=True``;
    * the Gumbel-softmax temperature of a mixture posterior is annealed
      geometrically from ``gumbel_temperature[0]`` to ``gumbel_temperature[1]`` over
      ``n_epochs_gumbel_anneal`` epochs;
    * a non-finite loss stops training with :class:`NonFiniteLossError` naming the term.

    Parameters
    ----------
    module
        A :class:`~mixvi.module.MixVAE` (or a module with the same prior interface).
    prior_init_epoch
        Epoch at whose start the mixture is initialised from the data.
    n_prior_init_cells
        Cells used for that initialisation.
    gumbel_temperature
        ``(start, end)`` temperatures.
    n_epochs_gumbel_anneal
        Epochs over which the temperature goes from start to end.
    prior_lr_factor
        Learning rate of the prior's parameters relative to ``lr``. The mixture is fitted
        to a latent that keeps moving; at the networks' learning rate its means lag
        behind the cells (Adam moves a parameter by about ``lr`` per step).
    **kwargs
        Passed to :class:`~scvi.train.TrainingPlan` (``lr``, ``n_epochs_kl_warmup``, ...).
    """

    def __init__(
        self,
        module,
        *,
        prior_init_epoch: int = 5,
        n_prior_init_cells: int = 20_000,
        gumbel_temperature: tuple[float, float] = (1.0, 0.3),
        n_epochs_gumbel_anneal: int = 100,
        prior_lr_factor: float = 10.0,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.prior_lr_factor = prior_lr_factor
        self.prior_init_epoch = prior_init_epoch
        self.n_prior_init_cells = n_prior_init_cells
        self.gumbel_temperature = gumbel_temperature
        self.n_epochs_gumbel_anneal = max(int(n_epochs_gumbel_anneal), 1)

    def configure_optimizers(self):
        """scvi-tools' optimizer, with the prior's parameters in a group of their own."""
        config = super().configure_optimizers()
        prior = getattr(self.module, "prior", None)
        prior_params = [p for p in prior.parameters() if p.requires_grad] if prior else []
        if not prior_params or self.prior_lr_factor == 1.0:
            return config
        optimizer = config["optimizer"]
        ids = {id(p) for p in prior_params}
        group = optimizer.param_groups[0]
        group["params"] = [p for p in group["params"] if id(p) not in ids]
        optimizer.add_param_group({"params": prior_params, "lr": group["lr"] * self.prior_lr_factor})
        return config

    # -- hooks -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Initialise the mixture when due and set this epoch's Gumbel temperature."""
        if (
            isinstance(getattr(self.module, "prior", None), MixturePrior)
            and not bool(self.module.prior_initialized)
            and self.current_epoch >= self.prior_init_epoch
        ):
            self.initialize_prior()
        if hasattr(self.module, "gumbel_temperature"):
            start, end = self.gumbel_temperature
            frac = min(self.current_epoch / self.n_epochs_gumbel_anneal, 1.0)
            self.module.gumbel_temperature.fill_(start * math.exp(frac * math.log(end / start)))

    def training_step(self, batch, batch_idx):
        """Training step that refuses to continue past a non-finite loss."""
        loss = super().training_step(batch, batch_idx)
        if not torch.isfinite(loss):
            _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
            check_finite_loss(loss_output, f"epoch {self.current_epoch}, step {batch_idx}")
            raise NonFiniteLossError(
                f"The loss became {loss.item()} at epoch {self.current_epoch}; lower the "
                "learning rate or clip gradients."
            )
        return loss

    # -- mixture initialisation --------------------------------------------------------------
    @torch.no_grad()
    def initialize_prior(self) -> None:
        """Fit the mixture to posterior means of training cells (k-means), on every rank alike."""
        module = self.module
        latent, latent_var, components = self._collect_latent()
        was_training = module.training
        module.prior.initialize_from_latent(
            latent, components, seed=settings.seed or 0, latent_var=latent_var
        )
        module.prior_initialized.fill_(True)
        module.train(was_training)
        strategy = getattr(self.trainer, "strategy", None)
        if strategy is not None and getattr(self.trainer, "world_size", 1) > 1:
            # each rank saw other cells: take rank 0's mixture everywhere
            state = strategy.broadcast({k: v.cpu() for k, v in module.prior.state_dict().items()})
            module.prior.load_state_dict(state)

    def _collect_latent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        module = self.module
        was_training = module.training
        module.eval()
        latents, variances, comps, n = [], [], [], 0
        for tensors in self.trainer.train_dataloader:
            tensors = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in tensors.items()}
            out = module.inference(**module._get_inference_input(tensors))
            latents.append(out[MODULE_KEYS.QZ_KEY].loc.cpu().numpy())
            variances.append(out[MODULE_KEYS.QZ_KEY].scale.pow(2).cpu().numpy())
            if getattr(module, "n_label_components", 0):
                comps.append(module._components(tensors).cpu().numpy())
            n += latents[-1].shape[0]
            if n >= self.n_prior_init_cells:
                break
        module.train(was_training)
        latent = np.concatenate(latents)
        if not np.isfinite(latent).all():
            warnings.warn("Non-finite latent values while initialising the mixture.", stacklevel=2)
            latent = np.nan_to_num(latent)
        return latent, np.concatenate(variances), (np.concatenate(comps) if comps else None)


__all__ = ["MixTrainingPlan", "NonFiniteLossError", "check_finite_loss"]
