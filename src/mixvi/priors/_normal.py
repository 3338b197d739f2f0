"""Standard normal prior with the closed-form KL (the scVI prior)."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

from ._base import LatentPrior, kl_diag_gaussians


class StandardNormalPrior(LatentPrior):
    """``p(z) = N(0, I)``; KL = 1/2 sum_i (mu_i^2 + sigma_i^2 - 1 - log sigma_i^2).

    Parameters
    ----------
    n_latent
        Dimensionality of the latent space.
    """

    n_components = 1

    def kl(
        self,
        qz: Normal,
        z: torch.Tensor | None = None,
        component: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Closed-form KL per cell, shape ``(n_cells,)``; ``z`` and ``component`` are unused."""
        zero = torch.zeros_like(qz.loc)
        return kl_diag_gaussians(qz.loc, qz.scale, zero, torch.ones_like(zero))

    def distribution(self, like: torch.Tensor) -> Independent:
        """``N(0, I)`` on the device and dtype of ``like`` (shape ``(..., n_latent)``)."""
        zero = torch.zeros(self.n_latent, device=like.device, dtype=like.dtype)
        return Independent(Normal(zero, torch.ones_like(zero)), 1)

    def log_prob(self, z: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
        """``log N(z; 0, I)``, shape ``z.shape[:-1]``; ``component`` is unused."""
        return self.distribution(z).log_prob(z)
