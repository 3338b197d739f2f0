"""Training plan: scvi-tools' plan plus mixture initialisation, Gumbel annealing, a NaN
guard and per-epoch (not per-step) metric logging."""

from __future__ import annotations

import math
from typing import Literal

import torch
from scvi.train import TrainingPlan

from mixvi.data._args import check_choice
from mixvi.train._checkpoint import _rng_state, _set_rng_state
from mixvi.train._mixture_fit import REREAD_MODES, MixtureFitMixin
from mixvi.train._nonfinite import _GENERIC_SUGGESTION, NonFiniteLossError, describe_nonfinite_loss

#: on an accelerator the NaN flag is read (a host sync) once every this many steps
NAN_CHECK_EVERY = 100


class MixTrainingPlan(MixtureFitMixin, TrainingPlan):
    """scvi-tools :class:`~scvi.train.TrainingPlan` for mixture-prior modules.

    Adds:

    * at epoch ``prior_init_epoch`` the mixture is placed on clusters of the encoder's
      posteriors (on up to ``n_prior_init_cells`` training cells): k-means for a fixed
      number of components, Leiden communities for ``n_components="auto"``; before that
      the module uses the N(0, I) KL when it was built with ``pretrain_normal=True``;
    * every ``refit_every`` epochs after that, and once more at the end of training,
      EM steps of the mixture on the current posteriors (components that hold less than
      ``min_component_fraction`` of the cells are switched off), so that the components
      stay on the cells while the latent moves; with ``n_components="auto"`` (and a flat
      mixture, by default) each refit first reads the Leiden communities of the current
      latent and gives a component to each group that has come apart from the rest
      (``reread_clusters``), so that the number of clusters can also grow;
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
    refit_every
        Epochs between EM refits of the mixture (``None`` or ``0``: no refits).
    n_refit_iter
        EM iterations per refit (the final refit runs three times as many).
    final_refit
        Refit the mixture once more when training ends, so the clusters describe the
        final latent.
    min_component_fraction
        A free component holding less than this fraction of the cells is switched off at
        a refit.
    reread_clusters
        With ``n_components="auto"``, what each refit takes from the Leiden communities of
        the current latent (one Leiden run per refit):

        * ``"add"``: the fitted components stay; a community nearly cut off from the rest
          of the kNN graph, and parted from the rest of its component by a dip in density,
          that shares a component with another community gets a new one
          (:func:`mixvi.priors.add_separated_communities`), so a group of cells that comes
          apart after the warm-up gets its own cluster without re-cutting the others;
        * ``"replace"`` (or ``True``): every component is re-placed on the communities
          (:func:`mixvi.priors.refit_at_communities`), then fitted by EM;
        * ``"off"`` (or ``False``): EM steps from the current mixture only, which can merge
          and switch off components but not add one (K is read once, from the warm-up
          latent).

        ``None`` (default): ``"add"`` for ``prior="gmm"``, ``"off"`` for
        ``prior="hierarchical"``, whose coarse levels were better when its leaves are read
        once. ``benchmarks/clustering/results.md`` compares them.

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
        refit_every: int | None = None,
        n_refit_iter: int = 3,
        final_refit: bool = True,
        min_component_fraction: float = 0.0,
        reread_clusters: Literal["add", "replace", "off"] | bool | None = None,
        **kwargs,
    ):
        super().__init__(module, **kwargs)
        self.prior_lr_factor = prior_lr_factor
        self.prior_init_epoch = prior_init_epoch
        self.n_prior_init_cells = n_prior_init_cells
        self.gumbel_temperature = gumbel_temperature
        self.n_epochs_gumbel_anneal = max(int(n_epochs_gumbel_anneal), 1)
        self.refit_every = refit_every
        self.n_refit_iter = n_refit_iter
        self.final_refit = final_refit
        self.min_component_fraction = min_component_fraction
        check_choice("reread_clusters", reread_clusters, (*REREAD_MODES, True, False, None))
        self.reread_clusters = reread_clusters
        self.mixture_fits: list = []
        self._epoch_sums: dict = {}
        self._finite_flag: torch.Tensor | None = None
        self._steps_since_check = 0

    def get_optimizer_creator(self):
        """scvi-tools' Adam / AdamW, fused (one kernel for all parameters: ~3x cheaper per step
        on CPU), with the prior's parameters in a group of their own at
        ``prior_lr_factor`` x ``lr`` and without weight decay (the EM refits place the mixture
        where the cells are; a decay would pull its means to the origin between refits). A
        custom optimizer is used as given."""
        if self.optimizer_name not in ("Adam", "AdamW"):
            return super().get_optimizer_creator()
        cls = torch.optim.Adam if self.optimizer_name == "Adam" else torch.optim.AdamW
        prior = getattr(self.module, "prior", None)
        prior_ids = {id(p) for p in prior.parameters()} if prior is not None else set()

        def create(params):
            params = list(params)
            groups = [{"params": [p for p in params if id(p) not in prior_ids]}]
            in_prior = [p for p in params if id(p) in prior_ids]
            if in_prior:
                groups.append(
                    {"params": in_prior, "lr": self.lr * self.prior_lr_factor, "weight_decay": 0.0}
                )
            fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
            return cls(groups, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay,
                       fused=fused or None)

        return create

    def on_train_start(self) -> None:
        """Put the module in training mode (dropout, batch norm): Lightning 2.6 leaves it as
        it was, so inference before ``train()`` would otherwise train in eval mode."""
        self.module.train()

    def on_train_end(self) -> None:
        """A last EM refit, so the mixture (and its clusters) describe the final latent."""
        layer = self.module.prior_layer
        if self.final_refit and layer.is_mixture and layer.initialized and not self._prior_frozen():
            self.refit_prior(n_iter=3 * self.n_refit_iter, kind="final")

    # -- hooks -------------------------------------------------------------------------------
    def _prepare_epoch(self) -> None:
        """Initialise the mixture when due and set this epoch's Gumbel temperature."""
        layer = self.module.prior_layer
        if layer.is_mixture and not layer.initialized and self.current_epoch >= self.prior_init_epoch:
            self.initialize_prior()
        elif layer.is_mixture and layer.initialized and self._refit_due():
            self.refit_prior()
        if hasattr(self.module, "set_gumbel_temperature"):
            start, end = self.gumbel_temperature
            frac = min(self.current_epoch / self.n_epochs_gumbel_anneal, 1.0)
            self.module.set_gumbel_temperature(start * math.exp(frac * math.log(end / start)))

    def forward(self, *args, **kwargs):
        """Run the module and keep the last loss terms (for naming a non-finite one)."""
        out = super().forward(*args, **kwargs)
        self._last_loss_output = out[-1] if isinstance(out, tuple) else None
        return out

    def training_step(self, batch, batch_idx):
        """One step: loss, metrics accumulated on the device, and the NaN guard.

        scvi-tools logs five to ten values through Lightning at every step; here the ELBO
        components update their torchmetrics accumulators and the extra metrics a running
        sum, and everything is logged once per epoch (:meth:`on_train_epoch_end`), with the
        same names in ``model.history``.

        The guard: on one CPU process a non-finite loss raises :class:`NonFiniteLossError`
        (naming the loss term) before the backward pass, so the step is not applied. On an
        accelerator, reading the loss on the host at every step would stall the device: a
        non-finite step is skipped on the device instead (its gradients are set to zero in
        :meth:`on_before_optimizer_step`, so the weights stay finite) and a flag is read every
        ``NAN_CHECK_EVERY`` steps and at the epoch's end. Under DDP a rank must not stop
        alone: it returns a loss whose gradient is NaN for every parameter, the all-reduce
        spreads it, and every rank stops in :meth:`on_before_optimizer_step`.
        """
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})
        _, _, out = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._accumulate(out)
        loss = out.loss
        if self._lazy_checks():
            finite = torch.isfinite(loss.detach())
            self._finite_flag = finite if self._finite_flag is None else self._finite_flag & finite
            self._steps_since_check += 1
            if self._steps_since_check >= NAN_CHECK_EVERY:
                self._check_flag(batch_idx)
            return loss
        if bool(torch.isfinite(loss.detach())):
            if self._world_size() > 1:
                # DDP needs every parameter in the graph of every step; the mixture is
                # unused before its initialisation (N(0, I) pre-training) and some heads
                # can be unused in a minibatch. A zero-weighted term uses them all without
                # changing the gradients (cheaper than find_unused_parameters=True).
                params = [p for p in self.module.parameters() if p.requires_grad]
                loss = loss + 0.0 * sum(p.sum() for p in params)
            return loss
        where = f"epoch {self.current_epoch}, step {batch_idx}"
        message = describe_nonfinite_loss(out, where) or (
            f"Training stopped at {where}: the loss became {loss.detach().item()}. The model "
            f"keeps the weights of the last completed step. {_GENERIC_SUGGESTION}."
        )
        if self._world_size() > 1:
            self._nonfinite_message = message
            params = [p for p in self.module.parameters() if p.requires_grad]
            return sum(p.sum() for p in params) * float("nan")
        raise NonFiniteLossError(message)

    # -- per-epoch metrics ---------------------------------------------------------------
    def _accumulate(self, out) -> None:
        """Add one minibatch to the epoch's running sums (device tensors, no logging)."""
        n = out.n_obs_minibatch
        self.train_metrics["elbo_train"].update(
            reconstruction_loss=out.reconstruction_loss_sum,
            kl_local=out.kl_local_sum,
            kl_global=out.kl_global_sum,
            n_obs_minibatch=n,
        )
        sums = self._epoch_sums
        values = {"train_loss": out.loss, **(out.extra_metrics or {})}
        for key, value in values.items():
            if torch.is_tensor(value) and value.dim() == 0:
                value = value.detach() * n
                sums[key] = value if key not in sums else sums[key] + value
        sums["_n_obs"] = sums.get("_n_obs", 0) + n

    def on_train_epoch_start(self) -> None:
        """Initialise the mixture when due, set this epoch's Gumbel temperature, reset sums."""
        self._epoch_sums: dict = {}
        self._prepare_epoch()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's ELBO components, loss and extra metrics (same names as scvi-tools)."""
        if self._lazy_checks():
            self._check_flag("end of epoch")
        # compute all first: resetting the ELBO (a sum of the others) resets its parts
        values = {name: metric.compute() for name, metric in self.train_metrics.items()}
        for metric in self.train_metrics.values():
            metric.reset()
        for name, value in values.items():
            self.log(name, value, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        layer = self.module.prior_layer
        if layer.is_mixture:
            self.log("n_components_active_train", float(layer.prior.n_active), on_step=False,
                     on_epoch=True, sync_dist=self.use_sync_dist)
        sums = getattr(self, "_epoch_sums", {})
        n = sums.pop("_n_obs", 0)
        for key, total in sums.items():
            name = key if key == "train_loss" else f"{key}_train"
            self.log(name, total / max(n, 1), on_step=False, on_epoch=True,
                     sync_dist=self.use_sync_dist)
        self._epoch_sums = {}

    # -- lazy NaN checks on accelerators ---------------------------------------------------
    def _lazy_checks(self) -> bool:
        return self.device.type != "cpu" and self._world_size() == 1

    def _check_flag(self, where) -> None:
        flag, self._finite_flag, self._steps_since_check = self._finite_flag, None, 0
        if flag is not None and not bool(flag):
            raise NonFiniteLossError(
                f"Training stopped in epoch {self.current_epoch} (checked at step {where}): the "
                f"loss became non-finite within the last {NAN_CHECK_EVERY} steps. Those steps "
                "were skipped (zero gradients), so the weights are finite and usable; "
                f"model.history holds the completed epochs. {_GENERIC_SUGGESTION}."
            )

    def compute_and_log_metrics(self, loss_output, metrics, mode: str) -> None:
        """scvi-tools' metrics, with the extra metrics (mixture entropy, ...) logged outside
        inference mode: Lightning's accumulators created under ``torch.inference_mode`` cannot
        be averaged across processes in place, which broke DDP training at the first epoch end.
        """
        extra = loss_output.extra_metrics
        loss_output.extra_metrics = {}
        try:
            super().compute_and_log_metrics(loss_output, metrics, mode)
        finally:
            loss_output.extra_metrics = extra
        for key, met in (extra or {}).items():
            if torch.is_tensor(met):
                if met.dim() != 0:
                    continue
                met = met.detach().clone()
            self.log(
                f"{key}_{mode}",
                met,
                on_step=self.on_step,
                on_epoch=self.on_epoch,
                batch_size=loss_output.n_obs_minibatch,
                sync_dist=self.use_sync_dist,
            )

    def on_before_optimizer_step(self, optimizer) -> None:
        """Refuse a step whose gradients are not finite; the weights stay as they were."""
        grads = [
            (name, p.grad) for name, p in self.module.named_parameters() if p.grad is not None
        ]
        if not grads:
            return
        total = torch.nn.utils.get_total_norm([g.detach() for _, g in grads])
        if self._lazy_checks():
            # on the device, no host read: a non-finite step becomes a zero-gradient step,
            # and the flag checked every NAN_CHECK_EVERY steps reports it
            ok = torch.isfinite(total)
            for _, g in grads:
                g.copy_(torch.where(ok, g, torch.zeros_like(g)))
            self._finite_flag = ok if self._finite_flag is None else self._finite_flag & ok
            return
        if bool(torch.isfinite(total)):
            return
        message = getattr(self, "_nonfinite_message", None)
        if message is None:
            bad = [name for name, g in grads if not bool(torch.isfinite(g).all())]
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            message = (
                f"Training stopped at epoch {self.current_epoch}, step {self.global_step}: the "
                f"gradients of {shown} became non-finite (the loss on this process was finite"
                f"{'; another process had a non-finite loss' if self._world_size() > 1 else ''}). "
                "The model keeps the weights of the last completed step (this step was not "
                f"applied), and model.history holds the completed epochs. {_GENERIC_SUGGESTION}."
            )
        raise NonFiniteLossError(message)

    def _world_size(self) -> int:
        trainer = getattr(self, "_trainer", None)
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the random-number generators and the batch-balance penalty's memory (a
        buffer kept out of the saved model), so a resumed training repeats the original."""
        checkpoint["mixvi_rng_state"] = _rng_state()
        balance = getattr(self.module, "batch_balance", None)
        if balance is not None:
            checkpoint["mixvi_batch_component_mass"] = balance.mass.detach().cpu().clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore what :meth:`on_save_checkpoint` stored."""
        state = checkpoint.get("mixvi_rng_state")
        if state is not None:
            _set_rng_state(state)
        saved = checkpoint.get("mixvi_batch_component_mass")
        balance = getattr(self.module, "batch_balance", None)
        if saved is not None and balance is not None and balance.mass.shape == saved.shape:
            with torch.no_grad():
                balance.mass.copy_(saved.to(balance.mass.device))


__all__ = ["MixTrainingPlan"]
