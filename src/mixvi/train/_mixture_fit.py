"""Fitting the mixture prior to the cells during training: initialisation and EM refits.

The training plan calls these from its epoch hooks. A fit collects the posteriors of (up
to ``n_prior_init_cells``) training cells, fits the mixture on them (k-means or Leiden at
the start, EM steps later), writes the result into the prior and restarts the prior's
optimiser state, on rank 0 under DDP and broadcast to the other ranks.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scvi import REGISTRY_KEYS, settings

from mixvi.priors import (
    HierarchicalGaussianMixturePrior,
    add_separated_communities,
    em_refit,
    refit_at_communities,
)

#: ``reread_clusters`` values, and the bools accepted for them
REREAD_MODES = ("add", "replace", "off")
_REREAD_ALIASES = {True: "replace", False: "off"}


class MixtureFitMixin:
    """Initialisation and EM refits of ``self.module.prior_layer`` (a training-plan mixin).

    The host sets ``n_prior_init_cells``, ``refit_every``, ``n_refit_iter``,
    ``min_component_fraction``, ``prior_init_epoch`` and ``reread_clusters``.
    """

    #: history of the fits: ``[(epoch, kind, n_active), ...]``
    mixture_fits: list
    _collected_batch: np.ndarray | None = None

    def _prior_frozen(self) -> bool:
        """A query model (scArches) keeps the reference's mixture: no fits."""
        return not any(p.requires_grad for p in self.module.prior_layer.prior.parameters())

    def _refit_due(self) -> bool:
        # counted from the scheduled first fit, so a resumed training refits at the same epochs
        every = self.refit_every
        since = self.current_epoch - self.prior_init_epoch
        return bool(every) and since > 0 and since % every == 0 and not self._prior_frozen()

    @torch.no_grad()
    def initialize_prior(self) -> None:
        """Fit the mixture to the posteriors of training cells, on every rank alike: k-means
        with a fixed number of components, Leiden communities with ``n_components="auto"``."""
        layer = self.module.prior_layer
        latent, latent_var, components = self._collect_latent()
        layer.prior.initialize_from_latent(
            latent, components, seed=settings.seed or 0, latent_var=latent_var,
            n_label_components=layer.n_label_components, resolution=layer.resolution,
            batch=self._collected_batch,
        )
        layer.mark_initialized()
        self._after_fit("init")

    @torch.no_grad()
    def refit_prior(self, n_iter: int | None = None, kind: str = "refit") -> dict:
        """EM steps of the mixture on the current posteriors (see :func:`mixvi.priors.em_refit`).

        With ``n_components="auto"`` the Leiden communities of the current latent are read
        first (``reread_clusters``): ``"add"`` gives each separated community without a
        component of its own a new one (:func:`mixvi.priors.add_separated_communities`),
        ``"replace"`` re-places every component on the communities
        (:func:`mixvi.priors.refit_at_communities`)."""
        layer = self.module.prior_layer
        latent, latent_var, components = self._collect_latent()
        mode = self._reread_mode(layer.prior) if layer.resolution is not None else "off"
        if mode != "off":
            reread = add_separated_communities if mode == "add" else refit_at_communities
            reread(
                layer.prior, latent, latent_var, components, layer.n_label_components,
                layer.resolution, batch=self._collected_batch, seed=settings.seed or 0,
            )
        stats = em_refit(
            layer.prior, latent, latent_var, components, layer.n_label_components,
            n_iter=n_iter or self.n_refit_iter, min_fraction=self.min_component_fraction,
            switch_off=layer.resolution is not None,  # a fixed n_components stays as asked
        )
        self._after_fit(kind)
        return stats

    def _reread_mode(self, prior) -> str:
        """``reread_clusters`` as one of :data:`REREAD_MODES`; by default ``"add"`` for a flat
        mixture and ``"off"`` for the tree (its coarse levels lose when its leaves move
        between refits; ``benchmarks/clustering/results.md``)."""
        if self.reread_clusters is None:
            return "off" if isinstance(prior, HierarchicalGaussianMixturePrior) else "add"
        return _REREAD_ALIASES.get(self.reread_clusters, self.reread_clusters)

    def _after_fit(self, kind: str) -> None:
        layer = self.module.prior_layer
        strategy = getattr(self.trainer, "strategy", None)
        if strategy is not None and getattr(self.trainer, "world_size", 1) > 1:
            # each rank saw other cells: take rank 0's mixture everywhere
            state = strategy.broadcast({k: v.cpu() for k, v in layer.prior.state_dict().items()})
            layer.prior.load_state_dict(state)
        self._reset_prior_optimizer_state()
        self.mixture_fits.append((int(self.current_epoch), kind, layer.prior.n_active))

    def _reset_prior_optimizer_state(self) -> None:
        """Adam's moment estimates of the prior's parameters describe the mixture before the
        fit; keeping them would push the fitted parameters back for the next steps."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not trainer.optimizers:
            return
        prior_params = set(map(id, self.module.prior_layer.prior.parameters()))
        for optimizer in trainer.optimizers:
            for p in list(optimizer.state):
                if id(p) in prior_params:
                    del optimizer.state[p]

    def _collect_latent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Posterior means, variances and known components of up to ``n_prior_init_cells``
        training cells (eval mode: no dropout, batch-norm running statistics)."""
        module = self.module
        was_training = module.training
        module.eval()
        latents, variances, comps, batches, n = [], [], [], [], 0
        for tensors in self.trainer.train_dataloader:
            tensors = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in tensors.items()}
            out = module.inference(**module._get_inference_input(tensors))
            latents.append(out["qz"].loc.cpu().numpy())
            batches.append(tensors[REGISTRY_KEYS.BATCH_KEY].view(-1).cpu().numpy())
            variances.append(out["qz"].scale.pow(2).cpu().numpy())
            known = module.prior_layer.known_components(tensors.get(REGISTRY_KEYS.LABELS_KEY))
            if known is not None:
                comps.append(known.cpu().numpy())
            n += latents[-1].shape[0]
            if n >= self.n_prior_init_cells:
                break
        module.train(was_training)
        self._collected_batch = np.concatenate(batches)
        latent = np.concatenate(latents)
        if not np.isfinite(latent).all():
            warnings.warn("Non-finite latent values while fitting the mixture.", stacklevel=2)
            latent = np.nan_to_num(latent)
        return latent, np.concatenate(variances), (np.concatenate(comps) if comps else None)
