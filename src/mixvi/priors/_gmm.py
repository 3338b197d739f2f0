"""Trainable Gaussian-mixture prior and the mixture machinery shared with the tree prior."""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from ._base import LOG_2PI, LatentPrior, gaussian_entropy, kl_diag_gaussians

KLEstimator = Literal["mc", "analytic"]
MIN_SCALE = 1e-3
# Logit of a switched-off component: finite (exp underflows to exactly 0 in float32), so
# ``q * (log q - log pi)`` stays 0 instead of 0 * inf = NaN in the forward and backward pass.
OFF_LOGIT = -1e4


def inverse_softplus(x: np.ndarray | float) -> np.ndarray:
    """``log(exp(x) - 1)``, the raw parameter whose softplus is ``x`` (``x > 0``)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 20, x, np.log(np.expm1(np.minimum(x, 20))))


class MixturePrior(LatentPrior):
    """Base class for ``p(z) = sum_k pi_k N(m_k, diag s_k^2)``.

    The density is a :class:`torch.distributions.MixtureSameFamily` of diagonal
    Gaussians. Subclasses only say how the weights, means and scales are parametrised
    (:meth:`_raw_params`) and how fitted values are written back
    (:meth:`set_components`); the KL estimators and responsibilities live here.

    Components can be switched off (buffer ``active``; pruning, merging, a number of
    clusters chosen from the data): an inactive component has weight exactly 0 and
    takes no cells, while the parameter shapes, and so the optimiser, stay as they are.

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    n_components
        Number of mixture components ``K`` (the capacity; see ``active``).
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
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
        if isinstance(n_kl_samples, bool) or not isinstance(n_kl_samples, int) or n_kl_samples < 1:
            raise ValueError(f"n_kl_samples must be a positive integer, got {n_kl_samples!r}.")
        if kl_estimator not in ("mc", "analytic"):
            raise ValueError(f"kl_estimator must be 'mc' or 'analytic', got {kl_estimator!r}.")
        self.n_components = n_components
        self.n_kl_samples = n_kl_samples
        self.kl_estimator = kl_estimator
        self.register_buffer("active", torch.ones(n_components, dtype=torch.bool))

    @abstractmethod
    def _raw_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unnormalised ``(logits (K,), means (K, d), scales (K, d))``."""

    @abstractmethod
    def set_components(
        self, means: np.ndarray, stds: np.ndarray, weights: np.ndarray, active: np.ndarray,
        responsibilities: np.ndarray | None = None,
    ) -> None:
        """Write fitted component parameters (k-means or EM results) into the prior.

        Parameters
        ----------
        means, stds
            Shape ``(n_free, n_latent)``: the free components (all components for the
            GMM, the leaves for the tree prior).
        weights
            Shape ``(n_free,)``, the fraction of cells of each free component.
        active
            Boolean, shape ``(n_free,)``: components to keep in use.
        responsibilities
            Soft assignments of the fitted cells, shape ``(n_cells, n_free)``: the tree
            prior builds its tree from them; a flat mixture does not need them.
        """

    #: fewest components a refit may leave switched on
    min_active: int = 1

    @property
    def learns_scales(self) -> bool:
        """Whether the component scales are trained (else fixed; fits leave them as they are)."""
        return bool(self.raw_scales.requires_grad)

    @property
    def learns_weights(self) -> bool:
        """Whether the mixture weights are trained (else uniform over active components)."""
        return bool(self.logits.requires_grad)

    def n_free_components(self) -> int:
        """Number of components with free means (the leaves of a tree prior)."""
        return self.n_components

    @torch.no_grad()
    def free_components(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The free components as numpy arrays: ``(means, stds, weights, active)``, shapes
        ``(n_free, d)``, ``(n_free, d)``, ``(n_free,)``, ``(n_free,)``; weights renormalised
        over the free components."""
        log_w, means, scales = self.component_params()
        n = self.n_free_components()
        weights = log_w[:n].exp().cpu().double().numpy()
        return (
            means[:n].cpu().double().numpy(),
            scales[:n].cpu().double().numpy(),
            weights / max(weights.sum(), 1e-300),
            self.active[:n].cpu().numpy().copy(),
        )

    @property
    def n_active(self) -> int:
        """Number of components in use."""
        return int(self.active.sum())

    # -- densities ---------------------------------------------------------------------------
    def component_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_weights (K,), means (K, d), scales (K, d))``; switched-off components get
        log weight ``OFF_LOGIT`` (weight exactly 0 in float32)."""
        logits, means, scales = self._raw_params()
        logits = torch.where(self.active, logits, torch.full_like(logits, OFF_LOGIT))
        return torch.log_softmax(logits, dim=-1), means, scales

    def distribution(self) -> MixtureSameFamily:
        """The prior as a :class:`~torch.distributions.MixtureSameFamily` over ``R^d``."""
        log_w, means, scales = self.component_params()
        components = Independent(Normal(means, scales, validate_args=False), 1)
        return MixtureSameFamily(
            Categorical(logits=log_w, validate_args=False), components, validate_args=False
        )

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
        dist = self.distribution()
        log_w = dist.mixture_distribution.logits
        return dist.component_distribution.log_prob(z.unsqueeze(-2)) + log_w

    def log_prob(self, z: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(z)``, shape ``z.shape[:-1]``; a cell with a known ``component`` (``>= 0``)
        gets ``log pi_c + log N(z; m_c, s_c^2)`` (its joint with the label)."""
        lp = self.distribution().log_prob(z)
        if component is None:
            return lp
        per_comp = self.component_log_prob(z)
        idx = component.clamp(min=0).long().expand(per_comp.shape[:-1]).unsqueeze(-1)
        own = per_comp.gather(-1, idx).squeeze(-1)
        return torch.where(component >= 0, own, lp)

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
        ``kl_estimator``. A cell with a known ``component`` (``>= 0``) has the joint prior
        ``pi_c N(m_c, s_c^2)``: its term is ``KL(q || N(m_c, s_c^2)) - log pi_c`` (closed
        form), so the weights also learn from labelled cells.
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
        """``KL(q(z|x) || N(m_c, s_c^2)) - log pi_c`` for each cell's component ``c``.

        This is the KL of ``q(z|x) delta_c`` to the joint prior ``pi_c N(m_c, s_c^2)``.
        ``component`` has shape ``(n_cells,)``; negative entries are clamped to 0 and must
        be masked out by the caller.
        """
        log_w, means, scales = self.component_params()
        idx = component.clamp(min=0).long()
        return kl_diag_gaussians(qz.loc, qz.scale, means[idx], scales[idx]) - log_w[idx]

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
            Logits of q(c|x), shape ``(n_cells, K)`` (switched-off components are masked).
        qz_loc, qz_scale
            Per-component posterior parameters, shape ``(n_cells, K, n_latent)``.
        component
            Known component per cell (``-1`` unknown), shape ``(n_cells,)``. For a known
            cell q(c|x) is the point mass on its label, so the terms are ``-log pi_c`` and
            that component's Gaussian KL.

        Returns
        -------
        ``(kl_c, kl_z)``, each of shape ``(n_cells,)``.
        """
        log_w, means, scales = self.component_params()
        log_qc = self.posterior_log_probs(qc_logits)
        qc = log_qc.exp()
        kl_c = (qc * (log_qc - log_w)).sum(-1)
        kl_z_per_c = kl_diag_gaussians(qz_loc, qz_scale, means, scales)  # (n, K)
        kl_z = (qc * kl_z_per_c).sum(-1)
        if component is not None:
            known = component >= 0
            idx = component.clamp(min=0).long().unsqueeze(1)
            kl_z = torch.where(known, kl_z_per_c.gather(1, idx).squeeze(1), kl_z)
            kl_c = torch.where(known, -log_w.gather(0, idx.squeeze(1)), kl_c)
        return kl_c, kl_z

    def posterior_log_probs(self, qc_logits: torch.Tensor) -> torch.Tensor:
        """``log q(c|x)`` with switched-off components masked out, shape ``(n, K)``."""
        masked = torch.where(self.active, qc_logits, torch.full_like(qc_logits, OFF_LOGIT))
        return torch.log_softmax(masked, dim=-1)

    # -- assignments -------------------------------------------------------------------------
    def responsibilities(
        self, qz_loc: torch.Tensor, qz_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cluster probabilities ``r_k(x) propto pi_k N(mu(x); m_k, s_k^2)``, shape ``(n, K)``.

        With ``qz_scale`` the posterior's own uncertainty is integrated out:
        ``r_k propto pi_k int N(z; m_k, s_k^2) q(z|x) dz = pi_k N(mu; m_k, s_k^2 + sigma^2)``,
        so a cell whose posterior straddles two components is not assigned with certainty.
        """
        if qz_scale is None:
            return torch.softmax(self.component_log_prob(qz_loc), dim=-1)
        log_w, means, scales = self.component_params()
        var = scales.pow(2) + qz_scale.unsqueeze(-2).pow(2)  # (n, K, d)
        diff2 = (qz_loc.unsqueeze(-2) - means).pow(2)
        log_n = -0.5 * (diff2 / var + torch.log(var) + LOG_2PI).sum(-1)
        return torch.softmax(log_w + log_n, dim=-1)

    def initialize_from_latent(
        self,
        latent: np.ndarray,
        component: np.ndarray | None = None,
        seed: int = 0,
        latent_var: np.ndarray | None = None,
        n_label_components: int = 0,
        resolution: float | None = None,
        batch: np.ndarray | None = None,
    ) -> np.ndarray:
        """Place the components on clusters of a latent; see
        :func:`mixvi.priors.initialize_from_latent`."""
        from ._fit import initialize_from_latent

        return initialize_from_latent(
            self, latent, component, seed, latent_var, n_label_components, resolution,
            batch=batch,
        )

    def mixture_entropy(self) -> torch.Tensor:
        """Entropy of the mixture weights (nats); ``log K`` when every component is equally used."""
        log_w = self.component_params()[0]
        return -(log_w.exp() * log_w).sum()


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
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}.")
        self.means = nn.Parameter(torch.randn(n_components, n_latent) * mean_spread)
        self.raw_scales = nn.Parameter(
            torch.full((n_components, n_latent), float(inverse_softplus(init_scale))),
            requires_grad=learn_scales,
        )
        self.logits = nn.Parameter(torch.zeros(n_components), requires_grad=learn_weights)

    def _raw_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scales = nn.functional.softplus(self.raw_scales) + MIN_SCALE
        return self.logits, self.means, scales

    @torch.no_grad()
    def set_components(self, means, stds, weights, active, responsibilities=None) -> None:
        """Write fitted parameters; scales only if trainable, weights only if trainable."""
        dev = self.means.device
        self.means.copy_(torch.as_tensor(means, dtype=torch.float32, device=dev))
        if self.raw_scales.requires_grad:
            raw = inverse_softplus(np.clip(np.asarray(stds) - MIN_SCALE, 1e-4, None))
            self.raw_scales.copy_(torch.as_tensor(raw, dtype=torch.float32, device=dev))
        if self.logits.requires_grad:
            logits = np.log(np.clip(np.asarray(weights, dtype=np.float64), 1e-6, None))
            self.logits.copy_(torch.as_tensor(logits, dtype=torch.float32, device=dev))
        self.active.copy_(torch.as_tensor(np.asarray(active, dtype=bool), device=dev))
