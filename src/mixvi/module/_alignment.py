"""Symmetric divergences between the two modalities' posteriors of a paired cell (the
alignment term of :class:`~mixvi.module.MultiMixVAE`)."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence


def symmetric_categorical_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p||q) + KL(q||p)`` of categorical distributions ``(n, K)``, shape ``(n,)``."""
    log_p, log_q = torch.log(p.clamp(min=1e-8)), torch.log(q.clamp(min=1e-8))
    return ((p - q) * (log_p - log_q)).sum(-1)


def symmetric_kl(q1: Normal, q2: Normal) -> torch.Tensor:
    """Symmetric KL ``KL(q1||q2) + KL(q2||q1)`` of diagonal Gaussians, shape ``(n_cells,)``."""
    return (kl_divergence(q1, q2) + kl_divergence(q2, q1)).sum(-1)


__all__ = ["symmetric_categorical_kl", "symmetric_kl"]
