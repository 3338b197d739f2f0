"""Training plan: scvi-tools' plan plus mixture initialisation and Gumbel annealing."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scvi import REGISTRY_KEYS, settings
from scvi.train import SaveCheckpoint, TrainingPlan


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss term becomes NaN or infinite."""


_SUGGESTIONS = {
    "reconstruction": (
        "check the counts for extreme values or cells with huge library sizes, or try "
        "gene_likelihood='nb' if another likelihood was chosen"
    ),
    "kl": (
        "lower the learning rate of the mixture (plan_kwargs={'prior_lr_factor': 1.0}) or "
        "start from fewer components (n_components=)"
    ),
}
_GENERIC_SUGGESTION = (
    "Try a lower learning rate (plan_kwargs={'lr': 1e-4}) or clip gradients with "
    "model.train(..., gradient_clip_val=1.0)"
)


def _loss_terms(loss_output) -> dict[str, torch.Tensor]:
    """Every named term of a LossOutput: reconstruction and KL terms, then the total."""
    terms: dict[str, torch.Tensor] = {}
    rec = loss_output.reconstruction_loss
    if isinstance(rec, dict):
        for k, v in rec.items():
            terms[k if k == "reconstruction_loss" else f"reconstruction_loss[{k!r}]"] = v
    elif rec is not None:
        terms["reconstruction_loss"] = rec
    for k, v in (loss_output.kl_local or {}).items():
        terms[k] = v
    kl_global = loss_output.kl_global
    for k, v in (kl_global.items() if isinstance(kl_global, dict) else ()):
        terms[k] = v
    terms["loss"] = loss_output.loss
    return terms


def describe_nonfinite_loss(loss_output, where: str) -> str | None:
    """Message naming the non-finite loss terms of ``loss_output``, or ``None`` if all are finite.

    Parameters
    ----------
    loss_output
        A :class:`~scvi.module.base.LossOutput`.
    where
        Where in training this happened (e.g. ``"epoch 3, step 12"``).
    """
    bad = []
    for name, value in _loss_terms(loss_output).items():
        if not torch.is_tensor(value):
            continue
        value = value.detach()
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
        cells = f" in {n_bad} of {value.numel()} cells" if value.numel() > 1 else ""
        bad.append((name, kind, cells))
    if not bad:
        return None
    named = [n for n, _, _ in bad if n != "loss"] or ["loss"]
    first = named[0]
    what = "; ".join(f"{n} is {k}{c}" for n, k, c in bad)
    hints = [
        _SUGGESTIONS[key] for key in ("reconstruction", "kl")
        if any(n.startswith(key) for n in named)
    ]
    advice = _GENERIC_SUGGESTION + ("; or " + "; or ".join(hints) if hints else "") + "."
    return (
        f"Training stopped at {where}: the {first} term of the loss became non-finite ({what}). "
        "The model keeps the weights of the last completed step (this step was not applied), "
        f"and model.history holds the completed epochs. {advice}"
    )


def check_finite_loss(loss_output, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the non-finite loss term(s).

    Parameters
    ----------
    loss_output
        A :class:`~scvi.module.base.LossOutput`.
    where
        Where in training this happened (e.g. ``"epoch 3, step 12"``).
    """
    message = describe_nonfinite_loss(loss_output, where)
    if message is not None:
        raise NonFiniteLossError(message)


def _rng_state() -> dict:
    """Generator states as tensors and plain Python values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # other number of devices: keep the fresh state
            pass


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

    def on_train_start(self) -> None:
        """Put the module in training mode (dropout, batch norm): Lightning 2.6 leaves it as
        it was, so inference before ``train()`` would otherwise train in eval mode."""
        self.module.train()

    # -- hooks -------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Initialise the mixture when due and set this epoch's Gumbel temperature."""
        layer = self.module.prior_layer
        if layer.is_mixture and not layer.initialized and self.current_epoch >= self.prior_init_epoch:
            self.initialize_prior()
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
        """Training step that refuses to continue past a non-finite loss.

        On one process it raises :class:`NonFiniteLossError` (naming the loss term) before
        the backward pass, so the step is not applied. Under DDP a rank must not stop alone
        (the others would wait for it forever): it returns a loss whose gradient is NaN for
        every parameter, the all-reduce spreads it, and every rank stops in
        :meth:`on_before_optimizer_step`, again before the step is applied.
        """
        loss = super().training_step(batch, batch_idx)
        value = loss["loss"] if isinstance(loss, dict) else loss
        if bool(torch.isfinite(value.detach()).all()):
            if self._world_size() > 1 and not isinstance(loss, dict):
                # DDP needs every parameter in the graph of every step; the mixture is
                # unused before its initialisation (N(0, I) pre-training) and some heads
                # can be unused in a minibatch. A zero-weighted term uses them all without
                # changing the gradients (cheaper than find_unused_parameters=True).
                params = [p for p in self.module.parameters() if p.requires_grad]
                loss = loss + 0.0 * sum(p.sum() for p in params)
            return loss
        where = f"epoch {self.current_epoch}, step {batch_idx}"
        loss_output = getattr(self, "_last_loss_output", None)
        message = describe_nonfinite_loss(loss_output, where) if loss_output is not None else None
        if message is None:
            message = (
                f"Training stopped at {where}: the loss became {value.detach().item()}. The model "
                f"keeps the weights of the last completed step. {_GENERIC_SUGGESTION}."
            )
        if self._world_size() > 1:
            self._nonfinite_message = message
            params = [p for p in self.module.parameters() if p.requires_grad]
            return sum(p.sum() for p in params) * float("nan")
        raise NonFiniteLossError(message)

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
        try:  # one fused kernel per device instead of one per parameter
            norms = torch.stack(torch._foreach_norm([g.detach() for _, g in grads]))
        except (AttributeError, RuntimeError):  # pragma: no cover - older torch
            norms = torch.stack([g.detach().norm() for _, g in grads])
        if bool(torch.isfinite(norms).all()):
            return
        message = getattr(self, "_nonfinite_message", None)
        if message is None:
            bad = [name for (name, _), n in zip(grads, norms.tolist()) if not math.isfinite(n)]
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
        """Store the random-number generators, so a resumed training repeats the original."""
        checkpoint["mixvi_rng_state"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the random generators saved with the checkpoint."""
        state = checkpoint.get("mixvi_rng_state")
        if state is not None:
            _set_rng_state(state)

    # -- mixture initialisation --------------------------------------------------------------
    @torch.no_grad()
    def initialize_prior(self) -> None:
        """Fit the mixture to posterior means of training cells (k-means), on every rank alike."""
        layer = self.module.prior_layer
        latent, latent_var, components = self._collect_latent()
        layer.prior.initialize_from_latent(
            latent, components, seed=settings.seed or 0, latent_var=latent_var,
            n_label_components=layer.n_label_components,
        )
        layer.mark_initialized()
        strategy = getattr(self.trainer, "strategy", None)
        if strategy is not None and getattr(self.trainer, "world_size", 1) > 1:
            # each rank saw other cells: take rank 0's mixture everywhere
            state = strategy.broadcast({k: v.cpu() for k, v in layer.prior.state_dict().items()})
            layer.prior.load_state_dict(state)

    def _collect_latent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        module = self.module
        was_training = module.training
        module.eval()
        latents, variances, comps, n = [], [], [], 0
        for tensors in self.trainer.train_dataloader:
            tensors = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in tensors.items()}
            out = module.inference(**module._get_inference_input(tensors))
            latents.append(out["qz"].loc.cpu().numpy())
            variances.append(out["qz"].scale.pow(2).cpu().numpy())
            known = module.prior_layer.known_components(tensors.get(REGISTRY_KEYS.LABELS_KEY))
            if known is not None:
                comps.append(known.cpu().numpy())
            n += latents[-1].shape[0]
            if n >= self.n_prior_init_cells:
                break
        module.train(was_training)
        latent = np.concatenate(latents)
        if not np.isfinite(latent).all():
            warnings.warn("Non-finite latent values while initialising the mixture.", stacklevel=2)
            latent = np.nan_to_num(latent)
        return latent, np.concatenate(variances), (np.concatenate(comps) if comps else None)


class ResumeCheckpoint(SaveCheckpoint):
    """Lightning checkpoints to resume an interrupted training (``last.ckpt``).

    A plain :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that scvi-tools' trainer
    accepts as its checkpoint callback (it subclasses :class:`scvi.train.SaveCheckpoint`
    only for that; none of that class's behaviour is kept). It writes
    ``<dirpath>/last.ckpt`` (weights, optimizer, epoch, loops, mixture state and random
    generators) every ``every_n_epochs`` epochs.

    Examples
    --------
    >>> from mixvi.train import ResumeCheckpoint
    >>> model.train(max_epochs=400, callbacks=[ResumeCheckpoint("ckpt")])  # interrupted
    >>> model = mixvi.MixVI(adata, ...)  # same data, arguments and seed
    >>> model.train(max_epochs=400, callbacks=[ResumeCheckpoint("ckpt")],
    ...             ckpt_path="ckpt/last.ckpt")

    Parameters
    ----------
    dirpath
        Folder for the checkpoints.
    every_n_epochs
        Save every this many epochs.
    **kwargs
        Passed to :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (``monitor`` and
        ``save_top_k`` to also keep the best checkpoints).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, **kwargs):
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_top_k", 0 if kwargs.get("monitor") is None else 1)
        ModelCheckpoint.__init__(
            self, dirpath=str(dirpath), every_n_epochs=every_n_epochs, **kwargs
        )
        self.load_best_on_end = False
        self.check_nan_gradients = False
        self.loss_is_nan = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: D102
        return None

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        ModelCheckpoint._remove_checkpoint(self, trainer, filepath)

    def _update_best_and_save(self, current, trainer, monitor_candidates) -> None:
        ModelCheckpoint._update_best_and_save(self, current, trainer, monitor_candidates)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        ModelCheckpoint.on_train_end(self, trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:  # noqa: D102
        ModelCheckpoint.on_train_batch_end(self, trainer, pl_module, *args, **kwargs)

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: D102
        ModelCheckpoint.on_exception(self, trainer, pl_module, exception)


__all__ = [
    "MixTrainingPlan",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "check_finite_loss",
    "describe_nonfinite_loss",
]
