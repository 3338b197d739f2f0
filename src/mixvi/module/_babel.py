"""The four reconstruction terms of BABEL-style training of the paired (RNA + ATAC) module.

Each modality is decoded from its own latent and from the other modality's latent; the two
cross terms exist only for cells that have both modalities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from scvi import REGISTRY_KEYS

from mixvi.dataloaders import NONZERO_SUFFIX
from mixvi.module._likelihood import count_log_likelihood, subset_nonzero

if TYPE_CHECKING:
    from mixvi.module._multimixvae import MultiMixVAE


def four_way_reconstruction(
    module: MultiMixVAE,
    tensors: dict[str, torch.Tensor],
    inference_outputs: dict,
    generative_outputs: dict,
) -> dict[str, torch.Tensor]:
    """Per-cell negative log-likelihoods ``rna``, ``atac``, ``rna_from_atac``, ``atac_from_rna``.

    Parameters
    ----------
    module
        The paired module (its decoders' outputs are in ``generative_outputs``).
    tensors
        One minibatch (counts ``(n, genes)``, peaks ``(n, peaks)``, optional non-zero indices).
    inference_outputs, generative_outputs
        The module's outputs on ``tensors``; ``px`` holds the RNA decoded from both latents,
        stacked ``[own; from ATAC]`` (``2n`` rows).

    Returns
    -------
    Four tensors of shape ``(n,)``: the own terms masked by the modality's presence, the
    cross terms weighted by ``module.cross_weight`` and masked to paired cells. The ATAC
    cross term on a random subset of peaks is rescaled to all peaks.
    """
    x, y = tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.ATAC_X_KEY]
    m_r, m_a = inference_outputs["has_rna"], inference_outputs["has_atac"]
    paired = m_r * m_a
    n = x.shape[0]
    nz = tensors.get(REGISTRY_KEYS.X_KEY + NONZERO_SUFFIX)
    nz2 = None
    if nz is not None:  # the stacked [x; x]: the same entries, rows shifted by n
        nz2 = torch.cat([nz, nz + torch.tensor([[n], [0]], device=nz.device)], 1)
    rna_nll = -count_log_likelihood(generative_outputs["px"], torch.cat([x, x]), nz2)
    peaks = generative_outputs["cross_peaks"]
    y_nz = tensors.get(REGISTRY_KEYS.ATAC_X_KEY + NONZERO_SUFFIX)
    cross_nz = y_nz if peaks is None else subset_nonzero(y_nz, peaks, module.n_peaks)
    # y[:, peaks] is only materialised when its values are needed
    needs_y = cross_nz is None or module.atac_likelihood == "poisson"
    y_cross = y if peaks is None else (y[:, peaks] if needs_y else None)
    atac_cross = module._atac_nll(generative_outputs["atac_cross"], y_cross, cross_nz)
    if peaks is not None:
        atac_cross = atac_cross * (module.n_peaks / peaks.numel())
    return {
        "rna": rna_nll[:n] * m_r,
        "atac": module._atac_nll(generative_outputs["atac_own"], y, y_nz) * m_a,
        "rna_from_atac": module.cross_weight * rna_nll[n:] * paired,
        "atac_from_rna": module.cross_weight * atac_cross * paired,
    }
