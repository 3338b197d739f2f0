"""Torch module of MixVI: scVI's encoder/decoder with a pluggable (mixture) prior."""

from __future__ import annotations

from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.module import VAE
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch import nn
from torch.distributions import Normal

from mixvi.priors import (
    LatentPrior,
    MixturePrior,
    PriorName,
    StandardNormalPrior,
    make_prior,
)

PosteriorName = Literal["gaussian", "mixture"]


def known_components(labels: torch.Tensor, n_label_components: int) -> torch.Tensor:
    """Map registered label codes to prior components; ``-1`` for unlabelled cells.

    scvi-tools puts the unlabelled category last, so codes ``< n_label_components``
    are known labels and are tied to the component of the same index.

    Parameters
    ----------
    labels
        Label codes, shape ``(n_cells, 1)``.
    n_label_components
        Number of known label categories.

    Returns
    -------
    Long tensor of shape ``(n_cells,)``.
    """
    codes = labels.view(-1).long()
    return torch.where(codes < n_label_components, codes, torch.full_like(codes, -1))


def mixture_moments(
    probs: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of a Gaussian mixture, per cell.

    Parameters
    ----------
    probs
        Component probabilities, shape ``(n_cells, K)``.
    loc, scale
        Component parameters, shape ``(n_cells, K, n_latent)``.

    Returns
    -------
    ``(mean, std)``, each of shape ``(n_cells, n_latent)``.
    """
    w = probs.unsqueeze(-1)
    mean = (w * loc).sum(-2)
    second = (w * (scale.pow(2) + loc.pow(2))).sum(-2)
    return mean, (second - mean.pow(2)).clamp(min=1e-8).sqrt()


class MixVAE(VAE):
    """Variational autoencoder with a trainable Gaussian-mixture latent prior.

    The encoder, decoder, likelihoods and covariate handling are scvi-tools'
    :class:`~scvi.module.VAE`; this module swaps the N(0, I) prior for a
    :class:`~mixvi.priors.LatentPrior` and optionally the Gaussian posterior for a
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
        sampled with the (straight-through) Gumbel-softmax, then N(mu_c, sigma_c^2).
    n_label_components
        Number of known label categories tied to the first prior components
        (semi-supervised label prior); ``0`` disables it.
    classification_weight
        Weight of ``-log q(c = label | x)`` for labelled cells with the mixture posterior.
    pretrain_normal
        Use the N(0, I) KL until the mixture is initialised from the data (see
        :class:`~mixvi.train.MixTrainingPlan`); avoids pulling an untrained latent
        onto randomly placed components.
    prior_kwargs
        Passed to the prior (``learn_scales``, ``n_kl_samples``, ``kl_estimator``, ...).
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
        pretrain_normal: bool = True,
        prior_kwargs: dict | None = None,
        **vae_kwargs,
    ):
        super().__init__(n_input=n_input, n_latent=n_latent, **vae_kwargs)
        self.prior: LatentPrior = make_prior(prior, n_latent, n_components, **(prior_kwargs or {}))
        self.is_mixture = isinstance(self.prior, MixturePrior)
        if posterior not in ("gaussian", "mixture"):
            raise ValueError(f"posterior must be 'gaussian' or 'mixture', got {posterior!r}.")
        if posterior == "mixture" and not self.is_mixture:
            raise ValueError("posterior='mixture' needs a mixture prior (prior='gmm' or 'hierarchical').")
        if n_label_components and not self.is_mixture:
            raise ValueError("A label prior needs a mixture prior (prior='gmm' or 'hierarchical').")
        n_assignable = getattr(self.prior, "n_leaves", self.prior.n_components)
        if n_label_components > n_assignable:
            raise ValueError(
                f"{n_label_components} known labels need at least as many mixture components "
                f"(got {n_assignable}); raise n_components."
            )
        self.posterior = posterior
        self.n_label_components = n_label_components
        self.classification_weight = classification_weight
        self.standard_normal = StandardNormalPrior(n_latent)
        self.register_buffer("prior_initialized", torch.tensor(not (pretrain_normal and self.is_mixture)))
        self.register_buffer("gumbel_temperature", torch.tensor(1.0))
        if posterior == "mixture":
            K = self.prior.n_components
            n_hidden = self.z_encoder.mean_encoder.in_features
            # Every component gets its own posterior mean/variance head; q(c|x) shares the trunk.
            self.z_encoder.mean_encoder = nn.Linear(n_hidden, K * n_latent)
            self.z_encoder.var_encoder = nn.Linear(n_hidden, K * n_latent)
            self.qc_encoder = nn.Linear(n_hidden, K)

    # -- inference ---------------------------------------------------------------------------
    def _components(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.n_label_components:
            return None
        return known_components(tensors[REGISTRY_KEYS.LABELS_KEY], self.n_label_components)

    @auto_move_data
    def _regular_inference(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor,
        cont_covs: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        n_samples: int = 1,
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
        n, K, d = x.shape[0], self.prior.n_components, self.n_latent
        loc = enc.mean_encoder(h).view(n, K, d)
        scale = (enc.var_activation(enc.var_encoder(h)) + enc.var_eps).sqrt().view(n, K, d)
        qc_logits = self.qc_encoder(h)
        shape = (n_samples,) if n_samples > 1 else ()
        z = self.sample_mixture_posterior(qc_logits, loc, scale, shape)
        mean, std = mixture_moments(torch.softmax(qc_logits, -1), loc, scale)
        if n_samples > 1:
            library = library.unsqueeze(0).expand((n_samples, n, 1))
        return {
            MODULE_KEYS.Z_KEY: z,
            MODULE_KEYS.QZ_KEY: Normal(mean, std),  # moment-matched, for scvi-tools' getters
            MODULE_KEYS.QL_KEY: None,
            MODULE_KEYS.LIBRARY_KEY: library,
            "qc_logits": qc_logits,
            "qz_components": (loc, scale),
        }

    def sample_mixture_posterior(
        self,
        qc_logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        sample_shape: tuple[int, ...] = (),
    ) -> torch.Tensor:
        """Gumbel-softmax draw of ``c`` then reparametrised ``z`` in the chosen component.

        The straight-through estimator keeps the forward draw one-hot (a sample from
        the chosen component) while gradients flow through the relaxed weights.

        Returns
        -------
        Tensor of shape ``sample_shape + (n_cells, n_latent)``.
        """
        logits = qc_logits.expand(sample_shape + qc_logits.shape)
        y = nn.functional.gumbel_softmax(logits, tau=float(self.gumbel_temperature), hard=True)
        eps = torch.randn(sample_shape + loc.shape, device=loc.device)
        return (y.unsqueeze(-1) * (loc + scale * eps)).sum(-2)

    # -- assignments -------------------------------------------------------------------------
    @torch.inference_mode()
    def cluster_probabilities(self, inference_outputs: dict) -> torch.Tensor:
        """Component probabilities of each cell, shape ``(n_cells, K)``.

        q(c|x) for the mixture posterior; otherwise the prior responsibilities at
        the posterior mean, ``r_k propto pi_k N(mu(x); m_k, s_k^2)``.
        """
        if self.posterior == "mixture":
            return torch.softmax(inference_outputs["qc_logits"], dim=-1)
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        return self.prior.responsibilities(qz.loc, qz.scale)

    # -- loss --------------------------------------------------------------------------------
    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
    ) -> LossOutput:
        """Negative ELBO: reconstruction + ``kl_weight`` x KL(q(z|x) || p(z)) (+ library KL).

        Returns
        -------
        :class:`~scvi.module.base.LossOutput` with per-cell ``reconstruction_loss``,
        ``kl_local`` (``kl_divergence_z``, ``kl_divergence_l``) and, for mixtures,
        the scalar ``mixture_entropy`` in ``extra_metrics``.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        z = inference_outputs[MODULE_KEYS.Z_KEY]
        component = self._components(tensors)
        reconst = -generative_outputs[MODULE_KEYS.PX_KEY].log_prob(x).sum(-1)
        extra = {}
        if self.posterior == "mixture":
            loc, scale = inference_outputs["qz_components"]
            kl_c, kl_z = self.prior.kl_mixture_posterior(
                inference_outputs["qc_logits"], loc, scale, component
            )
            kl_z = kl_c + kl_z
            classification = torch.zeros_like(kl_z)
            if component is not None:
                log_qc = torch.log_softmax(inference_outputs["qc_logits"], dim=-1)
                own = log_qc.gather(1, component.clamp(min=0).unsqueeze(1)).squeeze(1)
                classification = torch.where(component >= 0, -own, classification)
                extra["classification_loss"] = classification.mean().detach()
        elif self.prior_initialized:
            kl_z = self.prior.kl(qz, z, component)
            classification = torch.zeros_like(kl_z)
        else:
            kl_z = self.standard_normal.kl(qz)
            classification = torch.zeros_like(kl_z)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = torch.distributions.kl_divergence(
                inference_outputs[MODULE_KEYS.QL_KEY], generative_outputs[MODULE_KEYS.PL_KEY]
            ).sum(dim=1)
        loss = torch.mean(
            reconst + kl_weight * kl_z + kl_l + self.classification_weight * classification
        )
        if self.is_mixture:
            extra["mixture_entropy"] = self.prior.mixture_entropy().detach()
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconst,
            kl_local={MODULE_KEYS.KL_Z_KEY: kl_z, MODULE_KEYS.KL_L_KEY: kl_l},
            extra_metrics=extra,
        )
