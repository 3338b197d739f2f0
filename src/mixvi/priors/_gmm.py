"""Trainable Gaussian-mixture prior and the mixture-prior machinery shared with the tree prior."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from ._base import LOG_2PI, LatentPrior, gaussian_entropy, kl_diag_gaussians

KLEstimator = Literal["mc", "analytic"]
MIN_SCALE = 1e-3


class MixturePrior(LatentPrior):
    """Base class for ``p(z) = sum_k pi_k N(m_k, diag s_k^2)``.

    Subclasses only say how the weights, means and scales are parametrised
    (:meth:`component_params`); the KL estimators, responsibilities and the
    data-driven initialisation live here.

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    n_components
        Number of mixture components ``K``.
    n_kl_samples
        Number of reparametrised posterior samples in the Monte-Carlo estimate of
        ``E_q[log p(z)]``.
    kl_estimator
        ``"mc"``: Monte-Carlo with a log-sum-exp over components (unbiased).
        ``"analytic"``: deterministic Jensen bound
        ``E_q[log sum_k pi_k N_k] >= log sum_k pi_k exp(E_q[log N_k])``; it gives an
        upper bound on the KL (so the ELBO stays a lower bound) and is exact for ``K = 1``.
    """

    def __init__(
        self,
        n_latent: int,
        n_components: int,
        n_kl_samples: int = 1,
        kl_estimator: KLEstimator = "mc",
    ):
        super().__init__(n_latent)
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}.")
        if n_kl_samples < 1:
            raise ValueError(f"n_kl_samples must be >= 1, got {n_kl_samples}.")
        if kl_estimator not in ("mc", "analytic"):
            raise ValueError(f"kl_estimator must be 'mc' or 'analytic', got {kl_estimator!r}.")
        self.n_components = n_components
        self.n_kl_samples = n_kl_samples
        self.kl_estimator = kl_estimator

    @abstractmethod
    def component_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_weights (K,), means (K, d), scales (K, d))`` of the mixture."""

    # -- densities ---------------------------------------------------------------------------
    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log pi_k + log N(z; m_k, s_k^2)`` for every component.

        Parameters
        ----------
        z
            Latent points, shape ``(..., n_latent)``.

        Returns
        -------
        Tensor of shape ``(..., K)``.
        """
        log_w, means, scales = self.component_params()
        diff = (z.unsqueeze(-2) - means) / scales  # (..., K, d)
        log_n = -0.5 * (diff.pow(2) + LOG_2PI).sum(-1) - torch.log(scales).sum(-1)
        return log_w + log_n

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log p(z)`` via log-sum-exp over components, shape ``z.shape[:-1]``."""
        return torch.logsumexp(self.component_log_prob(z), dim=-1)

    def expected_component_log_prob(self, qz_loc: torch.Tensor, qz_scale: torch.Tensor):
        """``log pi_k + E_q[log N(z; m_k, s_k^2)]`` in closed form, shape ``(n_cells, K)``."""
        log_w, means, scales = self.component_params()
        mu, sd = qz_loc.unsqueeze(-2), qz_scale.unsqueeze(-2)
        quad = (sd.pow(2) + (mu - means).pow(2)) / scales.pow(2)
        return log_w - 0.5 * (quad + LOG_2PI).sum(-1) - torch.log(scales).sum(-1)

    # -- KL terms ----------------------------------------------------------------------------
    def kl(
        self,
        qz: Normal,
        z: torch.Tensor | None = None,
        component: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per cell, shape ``(n_cells,)``.

        ``-H(q)`` is closed form; ``E_q[log p(z)]`` is estimated as configured by
        ``kl_estimator``. Cells with a known ``component`` (``>= 0``) use the single
        component ``N(m_k', s_k'^2)`` as their prior, with the closed-form KL.
        """
        neg_entropy = -gaussian_entropy(qz)
        if self.kl_estimator == "analytic":
            cross = torch.logsumexp(self.expected_component_log_prob(qz.loc, qz.scale), dim=-1)
        else:
            if z is None or self.n_kl_samples > 1:
                z = qz.rsample((self.n_kl_samples,))
            cross = self.log_prob(z)
            if cross.dim() == 2:
                cross = cross.mean(0)
        kl = neg_entropy - cross
        if component is not None:
            kl = torch.where(component >= 0, self.kl_to_component(qz, component), kl)
        return kl

    def kl_to_component(self, qz: Normal, component: torch.Tensor) -> torch.Tensor:
        """Closed-form KL(q(z|x) || N(m_c, s_c^2)) for each cell's component ``c``.

        ``component`` has shape ``(n_cells,)``; negative entries are clamped to 0 and
        must be masked out by the caller.
        """
        _, means, scales = self.component_params()
        idx = component.clamp(min=0).long()
        return kl_diag_gaussians(qz.loc, qz.scale, means[idx], scales[idx])

    def kl_mixture_posterior(
        self,
        qc_logits: torch.Tensor,
        qz_loc: torch.Tensor,
        qz_scale: torch.Tensor,
        component: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """KL of a mixture posterior q(c|x) q(z|x,c) to the prior p(c) p(z|c).

        ``KL(q(c|x) || pi) + sum_c q(c|x) KL(q(z|x,c) || N(m_c, s_c^2))``, each posterior
        component matched to its prior component; both terms are closed form.

        Parameters
        ----------
        qc_logits
            Logits of q(c|x), shape ``(n_cells, K)``.
        qz_loc, qz_scale
            Per-component posterior parameters, shape ``(n_cells, K, n_latent)``.
        component
            Known component per cell (``-1`` unknown), shape ``(n_cells,)``; a known
            cell's prior is its component alone, so only that component's Gaussian KL counts.

        Returns
        -------
        ``(kl_c, kl_z)``, each of shape ``(n_cells,)``.
        """
        log_w, means, scales = self.component_params()
        log_qc = torch.log_softmax(qc_logits, dim=-1)
        qc = log_qc.exp()
        kl_c = (qc * (log_qc - log_w)).sum(-1)
        kl_z_per_c = kl_diag_gaussians(qz_loc, qz_scale, means, scales)  # (n, K)
        kl_z = (qc * kl_z_per_c).sum(-1)
        if component is not None:
            known = component >= 0
            own = kl_z_per_c.gather(1, component.clamp(min=0).long().unsqueeze(1)).squeeze(1)
            kl_z = torch.where(known, own, kl_z)
            kl_c = torch.where(known, torch.zeros_like(kl_c), kl_c)
        return kl_c, kl_z

    # -- assignments -------------------------------------------------------------------------
    def responsibilities(
        self, qz_loc: torch.Tensor, qz_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cluster probabilities ``r_k(x) propto pi_k N(mu(x); m_k, s_k^2)``, shape ``(n, K)``."""
        return torch.softmax(self.component_log_prob(qz_loc), dim=-1)

    def mixture_entropy(self) -> torch.Tensor:
        """Entropy of the mixture weights (nats); ``log K`` when every component is used."""
        log_w = self.component_params()[0]
        return -(log_w.exp() * log_w).sum()

    # -- initialisation ----------------------------------------------------------------------
    @torch.no_grad()
    def initialize_from_latent(
        self,
        latent: np.ndarray,
        component: np.ndarray | None = None,
        seed: int = 0,
        latent_var: np.ndarray | None = None,
    ) -> np.ndarray:
        """Place the components on clusters of an (early) latent.

        An uninitialised mixture tends to collapse onto few components; starting from
        k-means on the encoder's means avoids that (as scVAE / scMVP do). Components
        tied to known labels start at the centroid of their labelled cells; the others
        come from k-means on the unlabelled cells.

        Parameters
        ----------
        latent
            Posterior means, shape ``(n_cells, n_latent)``.
        component
            Known component of each cell (``-1`` unknown), shape ``(n_cells,)``.
        seed
            Seed of the k-means run.
        latent_var
            Posterior variances, shape ``(n_cells, n_latent)``. Component variances are
            then moment-matched to the aggregated posterior of their cells (spread of
            the means plus mean posterior variance), so the KL does not jump when the
            mixture replaces N(0, I).

        Returns
        -------
        The component each cell was assigned to, shape ``(n_cells,)``.
        """
        from sklearn.cluster import KMeans

        n_comp = self._n_free_components()
        assign = np.full(latent.shape[0], -1)
        if component is not None:
            known = component >= 0
            assign[known] = component[known]
        n_known = int(assign.max()) + 1 if (assign >= 0).any() else 0
        n_rest = n_comp - n_known
        # free components come from k-means on unlabelled cells (all cells if none is)
        pool = assign < 0 if (assign < 0).sum() >= n_rest else np.ones_like(assign, dtype=bool)
        members_of = {}
        if n_rest > 0:
            if pool.sum() < n_rest:
                raise ValueError(
                    f"Cannot initialise {n_comp} mixture components from {latent.shape[0]} "
                    "cells; lower n_components."
                )
            km = KMeans(n_clusters=n_rest, n_init=4, random_state=seed).fit(latent[pool])
            for j in range(n_rest):
                members_of[n_known + j] = latent[pool][km.labels_ == j]
            unlabelled = np.where(assign < 0)[0]
            if len(unlabelled):
                assign[unlabelled] = km.predict(latent[unlabelled]) + n_known
        centers = np.zeros((n_comp, latent.shape[1]), dtype=np.float32)
        stds = np.ones_like(centers)
        pool_var = latent_var if latent_var is not None else np.zeros_like(latent)
        for k in range(n_comp):
            mask = assign == k
            members, member_var = latent[mask], pool_var[mask]
            if k in members_of and len(members) == 0:
                members = members_of[k]
            if len(members) == 0:  # a label with no cell: start at the overall mean
                members, member_var = latent, pool_var
            centers[k] = members.mean(0)
            spread = members.var(0) if len(members) > 1 else latent.var(0)
            extra = member_var.mean(0) if len(member_var) else 0.0
            stds[k] = np.sqrt(spread + extra)
        frac = np.bincount(assign[assign >= 0], minlength=n_comp) / max((assign >= 0).sum(), 1)
        self._set_free_components(centers, np.clip(stds, 0.05, None), frac, latent)
        return assign

    def _n_free_components(self) -> int:
        return self.n_components

    @abstractmethod
    def _set_free_components(
        self, centers: np.ndarray, stds: np.ndarray, frac: np.ndarray, latent: np.ndarray
    ) -> None:
        """Write k-means results into the parameters."""


class GaussianMixturePrior(MixturePrior):
    """Trainable GMM prior: weights (softmax of logits), means and diagonal scales.

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    n_components
        Number of components ``K``.
    learn_scales
        Train the component scales (else fixed at ``init_scale``).
    learn_weights
        Train the mixture weights (else uniform).
    init_scale
        Initial component standard deviation.
    mean_spread
        Standard deviation of the random initial means; they are replaced by k-means
        centres once the model runs its prior initialisation.
    n_kl_samples, kl_estimator
        See :class:`MixturePrior`.
    """

    def __init__(
        self,
        n_latent: int,
        n_components: int = 10,
        learn_scales: bool = True,
        learn_weights: bool = True,
        init_scale: float = 1.0,
        mean_spread: float = 1.0,
        n_kl_samples: int = 1,
        kl_estimator: KLEstimator = "mc",
    ):
        super().__init__(n_latent, n_components, n_kl_samples, kl_estimator)
        self.means = nn.Parameter(torch.randn(n_components, n_latent) * mean_spread)
        self.raw_scales = nn.Parameter(
            torch.full((n_components, n_latent), float(np.log(np.expm1(init_scale)))),
            requires_grad=learn_scales,
        )
        self.logits = nn.Parameter(torch.zeros(n_components), requires_grad=learn_weights)

    def component_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_weights (K,), means (K, d), scales (K, d))``."""
        scales = nn.functional.softplus(self.raw_scales) + MIN_SCALE
        return torch.log_softmax(self.logits, dim=-1), self.means, scales

    def _set_free_components(self, centers, stds, frac, latent) -> None:
        self.means.copy_(torch.as_tensor(centers))
        if self.raw_scales.requires_grad:
            self.raw_scales.copy_(torch.as_tensor(np.log(np.expm1(stds))))
        if self.logits.requires_grad:
            self.logits.copy_(torch.as_tensor(np.log(np.clip(frac, 1e-3, None))))
