"""Importance-sampled marginal likelihood: the sampling loop shared by both modules, and the
importance weights of the paired (RNA + ATAC) module.

``log p(x) ~ log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x)`` with ``z_s ~ q(z|x)``, drawn in
passes of a few samples so that memory stays ``n_cells x samples x features``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from scvi import REGISTRY_KEYS

from mixvi.module._keys import LIBRARY_KEY, QZ_KEY
from mixvi.module._likelihood import count_log_likelihood
from mixvi.module._prior_layer import log_mean_exp

if TYPE_CHECKING:
    from mixvi.module._multimixvae import MultiMixVAE


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


def paired_log_likelihood(
    module: MultiMixVAE,
    tensors: dict[str, torch.Tensor],
    modality: Literal["joint", "rna", "atac"],
    n_mc_samples: int,
    n_mc_samples_per_pass: int = 1,
) -> torch.Tensor:
    """Per-cell importance-sampled log-likelihood of a :class:`~mixvi.module.MultiMixVAE`.

    The proposal is the ``modality``'s posterior (``"joint"``: the joint one); each sample is
    decoded by the decoders of the modalities scored (``"joint"``: those the cell has), and
    ``p(z)`` is the shared prior of the loss. See :meth:`MultiMixVAE.marginal_ll`.

    Parameters
    ----------
    module
        The paired module.
    tensors
        One minibatch.
    modality
        ``"joint"`` (``log p(x, y)``), ``"rna"`` (``log p(x)``) or ``"atac"`` (``log p(y)``).
    n_mc_samples
        Importance samples per cell.
    n_mc_samples_per_pass
        Samples drawn per pass.

    Returns
    -------
    Tensor of shape ``(n_cells,)``.
    """
    x, y = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.ATAC_X_KEY]
    batch_index = tensors[REGISTRY_KEYS.BATCH_KEY]
    labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
    inf = module.inference(**module._get_inference_input(tensors))
    qz = inf[{"joint": QZ_KEY, "rna": "qz_rna", "atac": "qz_atac"}[modality]]
    use_rna = inf["has_rna"] if modality != "atac" else torch.zeros_like(inf["has_rna"])
    use_atac = inf["has_atac"] if modality != "rna" else torch.zeros_like(inf["has_atac"])
    # the ATAC loss leaves out the Poisson constant log(y!); the likelihood needs it
    atac_const = torch.lgamma(y + 1).sum(-1) if module.atac_likelihood == "poisson" else 0.0

    def log_weights(s: int) -> torch.Tensor:
        z = qz.sample((s,))  # (s, n, d)
        log_w = module.prior_layer.log_prob(z, labels) - qz.log_prob(z).sum(-1)
        for k in range(s):
            _, px = module.decode_rna(z[k], batch_index, inf[LIBRARY_KEY])
            rna_ll = count_log_likelihood(px, x)
            atac_out = module.decode_atac(z[k], batch_index, inf["factor_atac"])
            atac_ll = -module._atac_nll(atac_out, y) - atac_const
            log_w[k] = log_w[k] + use_rna * rna_ll + use_atac * atac_ll
        return log_w

    return importance_sampled_log_likelihood(log_weights, n_mc_samples, n_mc_samples_per_pass)
