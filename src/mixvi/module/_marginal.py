"""Importance-sampled marginal likelihood: the sampling loop shared by both modules.

``log p(x) ~ log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)`` with ``z_s ~ q(z|x)``, drawn in
passes of a few samples so that memory stays ``n_cells x samples x features``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mixvi.module._prior_layer import log_mean_exp


def importance_sampled_log_likelihood(
    log_weights: Callable[[int], torch.Tensor], n_mc_samples: int, n_mc_samples_per_pass: int = 1
) -> torch.Tensor:
    """``log (1/S) sum_s w_s`` per cell from passes of log importance weights.

    Parameters
    ----------
    log_weights
        ``log_weights(s)`` draws ``s`` samples per cell and returns their log weights
        ``log p(x|z) + log p(z) - log q(z|x)``, shape ``(s, n_cells)``.
    n_mc_samples
        Importance samples ``S`` per cell.
    n_mc_samples_per_pass
        Samples drawn per pass.

    Returns
    -------
    Tensor of shape ``(n_cells,)``.
    """
    per_pass = max(1, min(int(n_mc_samples_per_pass), int(n_mc_samples)))
    chunks, left = [], int(n_mc_samples)
    while left > 0:
        s = min(per_pass, left)
        left -= s
        chunks.append(log_weights(s))
    return log_mean_exp(torch.cat(chunks, dim=0), dim=0)

