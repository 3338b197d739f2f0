"""Interface shared by every latent prior: a small torch module the VAE composes."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.distributions import Normal

LOG_2PI = math.log(2 * math.pi)


def gaussian_entropy(qz: Normal) -> torch.Tensor:
    """Closed-form entropy of a diagonal Gaussian, summed over the latent dimensions.

    Parameters
    ----------
    qz
        Posterior with ``loc``/``scale`` of shape ``(n_cells, n_latent)``.

    Returns
    -------
    Tensor of shape ``(n_cells,)``: ``(d/2)(1 + log 2pi) + sum_i log sigma_i``.
    """
    d = qz.loc.shape[-1]
    return 0.5 * d * (1.0 + LOG_2PI) + torch.log(qz.scale).sum(-1)


def kl_diag_gaussians(
    q_loc: torch.Tensor, q_scale: torch.Tensor, p_loc: torch.Tensor, p_scale: torch.Tensor
) -> torch.Tensor:
    """Closed-form KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2)) summed over the last axis.

    All arguments broadcast against each other; the last axis is the latent dimension.
    """
    var_ratio = (q_scale / p_scale).pow(2)
    mahalanobis = ((q_loc - p_loc) / p_scale).pow(2)
    return 0.5 * (var_ratio + mahalanobis - 1.0 - torch.log(var_ratio)).sum(-1)


class LatentPrior(nn.Module, ABC):
    """A prior ``p(z)`` over the ``n_latent``-dimensional latent space.

    Subclasses give the KL term of the ELBO, the log density (for the marginal
    likelihood) and, for mixtures, the component responsibilities that serve as
    cluster assignments.

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    """

    #: number of mixture components (1 for a single Gaussian)
    n_components: int = 1

    def __init__(self, n_latent: int):
        super().__init__()
        if isinstance(n_latent, bool) or not isinstance(n_latent, int) or n_latent < 1:
            raise ValueError(f"n_latent must be a positive integer, got {n_latent!r}.")
        self.n_latent = n_latent

    @abstractmethod
    def kl(
        self,
        qz: Normal,
        z: torch.Tensor | None = None,
        component: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL(q(z|x) || p(z)) per cell.

        Parameters
        ----------
        qz
            Diagonal Gaussian posterior, ``loc``/``scale`` of shape ``(n_cells, n_latent)``.
        z
            Reparametrised samples of ``qz``, shape ``(n_cells, n_latent)`` or
            ``(n_samples, n_cells, n_latent)``, used by Monte-Carlo estimators. When
            ``None`` the prior draws its own samples.
        component
            Known component per cell, shape ``(n_cells,)``, ``-1`` where unknown
            (semi-supervised label prior). Ignored by priors without components.

        Returns
        -------
        Tensor of shape ``(n_cells,)``.
        """

    @abstractmethod
    def log_prob(self, z: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
        """Log density ``log p(z)``, shape ``z.shape[:-1]``.

        With ``component`` (shape ``(n_cells,)``, ``-1`` = unknown), a labelled cell's
        density is the joint ``log pi_c + log N(z; m_c, s_c^2)`` of its own component.
        """

    def responsibilities(self, qz_loc: torch.Tensor, qz_scale: torch.Tensor | None = None):
        """Posterior component probabilities, shape ``(n_cells, n_components)``."""
        return torch.ones(qz_loc.shape[0], 1, device=qz_loc.device)
