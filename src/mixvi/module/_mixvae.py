"""Torch module of MixVI: scVI's encoder/decoder with the shared (mixture) prior layer."""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module.base import LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from mixvi.dataloaders import NONZERO_SUFFIX
from mixvi.module._batch_balance import BatchBalancePenalty
from mixvi.module._keys import (
    KL_L_KEY,
    KL_Z_KEY,
    LIBRARY_KEY,
    PL_KEY,
    PX_KEY,
    QL_KEY,
    QZ_KEY,
    Z_KEY,
)
from mixvi.module._likelihood import count_log_likelihood
from mixvi.module._marginal import importance_sampled_log_likelihood
from mixvi.module._prior_layer import PosteriorName, PriorLayer
from mixvi.priors import LatentPrior, PriorName


class MixVAE(VAE):
    """Variational autoencoder with a trainable Gaussian-mixture latent prior.

    The encoder, decoder, likelihoods and covariate handling are scvi-tools'
    :class:`~scvi.module.VAE`; the prior is a :class:`~mixvi.module.PriorLayer` (shared
    with :class:`~mixvi.module.MultiMixVAE`), and the posterior is either scVI's Gaussian or a
    Gumbel-softmax mixture posterior.

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Latent dimensionality ``d``.
    prior
        ``"normal"``, ``"gmm"`` or ``"hierarchical"``.
    n_components
        Mixture components ``K`` (tree leaves for ``"hierarchical"``).
    posterior
        ``"gaussian"``: q(z|x) = N(mu, sigma^2). ``"mixture"``: q(c|x) categorical,
        sampled with the (straight-through) Gumbel-softmax, then N(mu_c, sigma_c^2); a
        labelled cell uses its label's component.
    n_label_components
        Number of known label categories tied to the first prior components
        (semi-supervised label prior); ``0`` disables it.
    classification_weight
        Weight of ``-log q(c = label | x)`` for labelled cells with the mixture posterior.
    batch_balance_weight
        Weight of the mutual information between mixture component and batch, estimated on
        each minibatch pooled with the responsibility mass of recent ones
        (:class:`~mixvi.module.BatchBalancePenalty`), added to the per-cell loss; it asks
        each component to hold the batches in the proportions of the data. ``0`` switches
        it off.
    pretrain_normal
        Use the N(0, I) KL until the mixture is fitted to the data (see
        :class:`~mixvi.train.MixTrainingPlan`).
    prior_kwargs
        Passed to the prior (``learn_scales``, ``n_kl_samples``, ``kl_estimator``, ...).
    resolution
        Choose the number of components in use from the data (see
        :class:`~mixvi.module.PriorLayer`); ``None`` uses all ``n_components``.
    **vae_kwargs
        Passed to :class:`scvi.module.VAE` (``n_batch``, ``n_hidden``, ``n_layers``,
        ``dropout_rate``, ``gene_likelihood``, ``encode_covariates``, ...).
    """

    def __init__(
        self,
        n_input: int,
        n_latent: int = 16,
        prior: PriorName = "gmm",
        n_components: int = 10,
        posterior: PosteriorName = "gaussian",
        n_label_components: int = 0,
        classification_weight: float = 10.0,
        batch_balance_weight: float = 0.0,
        pretrain_normal: bool = True,
        prior_kwargs: dict | None = None,
        resolution: float | None = None,
        **vae_kwargs,
    ):
        super().__init__(n_input=n_input, n_latent=n_latent, **vae_kwargs)
        self.prior_layer = PriorLayer(
            n_latent, prior, n_components, posterior, n_label_components, pretrain_normal,
            prior_kwargs, resolution,
        )
        self.posterior = posterior
        self.classification_weight = classification_weight
        self.batch_balance = BatchBalancePenalty(
            batch_balance_weight, self.n_batch, self.prior_layer.n_components
        )
        if posterior == "mixture":
            K = self.prior_layer.n_components
            n_hidden = self.z_encoder.mean_encoder.in_features
            # Every component gets its own posterior mean/variance head; q(c|x) shares the trunk.
            self.z_encoder.mean_encoder = nn.Linear(n_hidden, K * n_latent)
            self.z_encoder.var_encoder = nn.Linear(n_hidden, K * n_latent)
            self.qc_encoder = nn.Linear(n_hidden, K)

    @property
    def prior(self) -> LatentPrior:
        """The prior module (:attr:`prior_layer.prior`)."""
        return self.prior_layer.prior

    @property
    def is_mixture(self) -> bool:
        """Whether the prior is a mixture."""
        return self.prior_layer.is_mixture

    @property
    def gumbel_temperature(self) -> torch.Tensor:
        """The Gumbel-softmax temperature (a buffer of the prior layer)."""
        return self.prior_layer.gumbel_temperature

    def set_gumbel_temperature(self, tau: float) -> None:
        """Temperature of the Gumbel-softmax relaxation (mixture posterior)."""
        self.prior_layer.set_gumbel_temperature(tau)

    # -- inference ---------------------------------------------------------------------------
    def _get_inference_input(self, tensors, full_forward_pass: bool = False):
        inputs = super()._get_inference_input(tensors, full_forward_pass)
        if self.posterior == "mixture" and self.prior_layer.n_label_components:
            inputs["labels"] = tensors[REGISTRY_KEYS.LABELS_KEY]
        return inputs

    @auto_move_data
    def _regular_inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        n_samples: int = 1,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | Normal | None]:
        if self.posterior == "gaussian":
            return super()._regular_inference(x, batch_index, cont_covs, cat_covs, n_samples)
        if not self.use_observed_lib_size:
            raise ValueError("posterior='mixture' needs use_observed_lib_size=True.")
        library = torch.log(x.sum(1)).unsqueeze(1)
        x_ = torch.log1p(x) if self.log_variational else x
        encoder_input = x_
        if cont_covs is not None and self.encode_covariates:
            encoder_input = torch.cat((x_, cont_covs), dim=-1)
        cats = torch.split(cat_covs, 1, dim=1) if (cat_covs is not None and self.encode_covariates) else ()
        enc = self.z_encoder
        h = enc.encoder(encoder_input, batch_index, *cats)
        n, K, d = x.shape[0], self.prior_layer.n_components, self.n_latent
        loc = enc.mean_encoder(h).view(n, K, d)
        scale = (enc.var_activation(enc.var_encoder(h)) + enc.var_eps).sqrt().view(n, K, d)
        qc_logits = self.qc_encoder(h)
        shape = (n_samples,) if n_samples > 1 else ()
        post = self.prior_layer.mixture_posterior(qc_logits, loc, scale, labels, shape)
        z, probs = post["z"], post["probs"]
        mean, std = post["qz"].loc, post["qz"].scale
        if n_samples > 1:
            library = library.unsqueeze(0).expand((n_samples, n, 1))
        return {
            Z_KEY: z,
            QZ_KEY: Normal(mean, std),  # moment-matched, for scvi-tools' getters
            QL_KEY: None,
            LIBRARY_KEY: library,
            "qc_logits": qc_logits,
            "qc_probs": probs,
            "qz_components": (loc, scale),
        }

    def sample_mixture_posterior(self, qc_logits, loc, scale, sample_shape=(), component=None):
        """See :meth:`PriorLayer.sample_mixture_posterior`."""
        return self.prior_layer.sample_mixture_posterior(qc_logits, loc, scale, sample_shape,
                                                          component)

    def posterior_log_prob(self, inference_outputs: dict, z: torch.Tensor) -> torch.Tensor:
        """``log q(z|x)`` of samples ``z`` (``(..., n_cells, d)``), shape ``z.shape[:-1]``.

        For the mixture posterior this is the mixture density
        ``log sum_c q(c|x) N(z; mu_c, sigma_c^2)``.
        """
        if self.posterior == "gaussian":
            return inference_outputs[QZ_KEY].log_prob(z).sum(-1)
        loc, scale = inference_outputs["qz_components"]
        return self.prior_layer.mixture_log_density(inference_outputs["qc_probs"], loc, scale, z)

    # -- assignments -------------------------------------------------------------------------
    @torch.inference_mode()
    def cluster_probabilities(self, inference_outputs: dict) -> torch.Tensor:
        """Component probabilities of each cell, shape ``(n_cells, K)``.

        q(c|x) for the mixture posterior; otherwise the prior responsibilities with the
        posterior uncertainty integrated out, ``r_k propto pi_k N(mu; m_k, s_k^2 + sigma^2)``.
        """
        return self._soft_assignments(inference_outputs)

    # -- loss --------------------------------------------------------------------------------
    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Negative ELBO: reconstruction + ``kl_weight`` x KL(q(z|x) || p(z)) (+ library KL).

        With ``batch_balance_weight > 0`` (and a fitted mixture) the estimate of
        ``I(component; batch)`` (:class:`~mixvi.module.BatchBalancePenalty`) is added, times
        that weight.

        Returns
        -------
        :class:`~scvi.module.base.LossOutput` with per-cell ``reconstruction_loss``,
        ``kl_local`` (``kl_divergence_z``, ``kl_divergence_l``) and, for mixtures, the
        scalars ``mixture_entropy`` (and ``batch_mi``) in ``extra_metrics``.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        layer = self.prior_layer
        qz = inference_outputs[QZ_KEY]
        nonzero = tensors.get(REGISTRY_KEYS.X_KEY + NONZERO_SUFFIX)
        reconst = -count_log_likelihood(generative_outputs[PX_KEY], x, nonzero)
        extra = {}
        classification = torch.zeros_like(reconst)
        if self.posterior == "mixture":
            loc, scale = inference_outputs["qz_components"]
            kl_z = layer.kl_mixture_posterior(inference_outputs["qc_logits"], loc, scale, labels)
            component = layer.known_components(labels)
            if component is not None:
                log_qc = self.prior.posterior_log_probs(inference_outputs["qc_logits"])
                own = log_qc.gather(1, component.clamp(min=0).unsqueeze(1)).squeeze(1)
                classification = torch.where(component >= 0, -own, classification)
                extra["classification_loss"] = classification.mean().detach()
        else:
            kl_z = layer.kl(qz, inference_outputs[Z_KEY], labels)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = torch.distributions.kl_divergence(
                inference_outputs[QL_KEY], generative_outputs[PL_KEY]
            ).sum(dim=1)
        loss = torch.mean(
            reconst + kl_weight * kl_z + kl_l + self.classification_weight * classification
        )
        if self.is_mixture:
            extra["mixture_entropy"] = layer.mixture_entropy().detach()
            loss = self.batch_balance.add_to_loss(
                loss, lambda: self._soft_assignments(inference_outputs),
                tensors[REGISTRY_KEYS.BATCH_KEY], layer.initialized, extra,
            )
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconst,
            kl_local={KL_Z_KEY: kl_z, KL_L_KEY: kl_l},
            extra_metrics=extra,
        )

    def _soft_assignments(self, inference_outputs: dict) -> torch.Tensor:
        """:meth:`cluster_probabilities`, differentiable (the batch-balance penalty's input)."""
        if self.posterior == "mixture":
            return inference_outputs["qc_probs"]
        qz = inference_outputs[QZ_KEY]
        return self.prior_layer.responsibilities(qz.loc, qz.scale)

    # -- marginal likelihood -----------------------------------------------------------------
    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
    ) -> torch.Tensor | float:
        """Importance-sampled ``log p(x)`` under the model's own prior, per cell.

        ``log p(x) ~ log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)`` with ``z_s ~ q(z|x)``; ``p(z)``
        is the prior of the loss (:meth:`PriorLayer.log_prob`: the fitted mixture, the tree,
        or N(0, I) before the mixture is fitted; a labelled cell scores ``log p(x, c)``).
        The estimate is a lower bound that rises towards ``log p(x)`` with ``S``; with
        ``S = 1`` its expectation is the ELBO.

        Parameters
        ----------
        tensors
            One minibatch from a scvi-tools data loader.
        n_mc_samples
            Importance samples ``S`` per cell.
        return_mean
            Return the mean over the cells instead of one value per cell.
        n_mc_samples_per_pass
            Samples drawn per forward pass (memory: ``n_cells x samples x genes``).

        Returns
        -------
        Tensor of shape ``(n_cells,)``, or its mean.
        """
        labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
        x = tensors[REGISTRY_KEYS.X_KEY]

        def log_weights(s: int) -> torch.Tensor:
            inf = self.inference(**self._get_inference_input(tensors), n_samples=s)
            if s == 1:  # one sample comes without a sample axis
                inf = {**inf, Z_KEY: inf[Z_KEY][None], LIBRARY_KEY: inf[LIBRARY_KEY][None]}
            gen = self.generative(**self._get_generative_input(tensors, inf))
            z = inf[Z_KEY]
            log_w = gen[PX_KEY].log_prob(x).sum(-1)
            log_w = log_w + self.prior_layer.log_prob(z, labels) - self.posterior_log_prob(inf, z)
            if not self.use_observed_lib_size:
                batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
                means, variances = self._compute_local_library_params(batch_index)
                lib = inf[LIBRARY_KEY]
                log_w = log_w + Normal(means, variances.sqrt()).log_prob(lib).sum(-1)
                log_w = log_w - inf[QL_KEY].log_prob(lib).sum(-1)
            return log_w

        log_px = importance_sampled_log_likelihood(log_weights, n_mc_samples, n_mc_samples_per_pass)
        return log_px.mean() if return_mean else log_px
