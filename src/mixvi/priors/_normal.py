"""Standard normal prior with the closed-form KL (the scVI prior)."""

from __future__ import annotations

import torch
from torch.distributions import Normal

from ._base import LOG_2PI, LatentPrior, kl_diag_gaussians


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

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)``, shape ``z.shape[:-1]``."""
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
