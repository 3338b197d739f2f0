"""Calibration of MultiMixVI's translations on held-out paired cells.

A decoder trained on a few thousand cells is over-confident about what it cannot see: decoded
from the other modality, its cell-specific part is too strong, and on small sparse data it
ranks peaks worse than their open rate alone (the trivial floor). The fix here is shrinkage
toward the population, by an amount fitted on cells the decoders were not trained on:

* RNA from ATAC: ``(1 - alpha) * rho(z) + alpha * rho_bar``, with ``rho_bar`` the mean
  normalised profile of the training cells and ``alpha`` in [0, 1] chosen on a grid by the
  multinomial log-likelihood of the held-out cells' counts;
* peaks from RNA: score ``w0 * g(z) + w1 * a + w2 * f + w3`` on the likelihood's link scale
  (logit for Bernoulli, log-rate for Poisson), with ``g(z)`` the decoded peak term, ``a`` the
  cell's predicted accessibility factor and ``f`` the peak's training open rate on the same
  scale; the four weights by maximum likelihood (logistic / complementary log-log regression)
  on held-out entries.

Both contain the uncalibrated decoder (``alpha = 0``; ``w = (1, 1, 0, 0)``, the state before
fitting) and the floor (``alpha = 1``; ``w = (0, 0, 1, 0)``), so on held-out cells like the
test cells the calibrated translation is at least as good as either, in likelihood.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Link = Literal["logit", "cloglog"]
IDENTITY_PEAK_WEIGHTS = (1.0, 1.0, 0.0, 0.0)
SHRINKAGE_GRID = 21  # alpha in 0, 0.05, ..., 1
MAX_CALIBRATION_ENTRIES = 4_000_000  # cell x peak entries kept for the peak regression


def rate_to_link(rate: torch.Tensor, link: Link) -> torch.Tensor:
    """Open rate ``(n_peaks,)`` on the link scale of the peak scores (clipped to 1e-5)."""
    rate = rate.clamp(1e-5, 1 - 1e-5)
    if link == "logit":
        return torch.log(rate) - torch.log1p(-rate)
    return torch.log(-torch.log1p(-rate))  # P(open) = 1 - exp(-exp(s))


def open_log_likelihood(score: torch.Tensor, is_open: torch.Tensor, link: Link) -> torch.Tensor:
    """Mean Bernoulli log-likelihood of 0/1 outcomes under scores on the link scale."""
    if link == "logit":
        return -F.binary_cross_entropy_with_logits(score, is_open.to(score.dtype))
    rate = torch.exp(score.clamp(max=30.0))
    log_open = torch.log(-torch.expm1(-rate).clamp(max=-1e-12))
    return torch.where(is_open, log_open, -rate).mean()


class TranslationCalibration(nn.Module):
    """Fitted shrinkage of the two translations (buffers, saved with the model).

    Parameters
    ----------
    n_genes, n_peaks
        Features of each modality.
    link
        Scale of the peak scores: ``"logit"`` (Bernoulli peaks) or ``"cloglog"`` (Poisson:
        scores are log-rates).
    """

    def __init__(self, n_genes: int, n_peaks: int, link: Link = "logit"):
        super().__init__()
        self.link = link
        self.register_buffer("rna_reference", torch.full((n_genes,), 1.0 / max(n_genes, 1)))
        self.register_buffer("rna_shrinkage", torch.tensor(0.0))
        self.register_buffer("peak_reference", torch.zeros(n_peaks))
        self.register_buffer("peak_weights", torch.tensor(IDENTITY_PEAK_WEIGHTS))
        self.register_buffer("n_cells_fitted", torch.tensor(0))

    @property
    def fitted(self) -> bool:
        """Whether :meth:`set` has stored a calibration (else both maps are the identity)."""
        return int(self.n_cells_fitted) > 0

    def rna(self, scale: torch.Tensor) -> torch.Tensor:
        """Calibrated normalised expression from the decoder's ``scale`` ``(n, n_genes)``."""
        alpha = self.rna_shrinkage
        return (1.0 - alpha) * scale + alpha * self.rna_reference

    def peak_score(self, decoded: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """Calibrated peak scores ``(n, n_peaks)`` on the link scale, from the decoded peak
        term ``(n, n_peaks)`` (factor excluded) and the cell factor ``(n, 1)``."""
        w = self.peak_weights
        return w[0] * decoded + w[1] * factor + w[2] * self.peak_reference + w[3]

    @torch.no_grad()
    def set(self, rna_reference: torch.Tensor, rna_shrinkage: float, peak_reference: torch.Tensor,
            peak_weights: torch.Tensor, n_cells: int) -> None:
        """Store a fitted calibration."""
        self.rna_reference.copy_(rna_reference)
        self.rna_shrinkage.fill_(float(rna_shrinkage))
        self.peak_reference.copy_(peak_reference)
        self.peak_weights.copy_(peak_weights)
        self.n_cells_fitted.fill_(int(n_cells))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # models saved before calibration existed load uncalibrated (the identity)
        for name, buf in self.named_buffers(recurse=False):
            state_dict.setdefault(prefix + name, buf.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def fit_peak_weights(
    decoded: torch.Tensor, factor: torch.Tensor, reference: torch.Tensor, is_open: torch.Tensor,
    link: Link,
) -> torch.Tensor:
    """Maximum-likelihood weights ``(4,)`` of :meth:`TranslationCalibration.peak_score`.

    Parameters
    ----------
    decoded, factor, reference
        The three features of sampled held-out entries, each ``(m,)``.
    is_open
        Whether each entry's peak is open, ``(m,)`` bool.
    link
        ``"logit"`` or ``"cloglog"``.
    """
    # clones: the entries may come from inference mode, whose tensors autograd cannot save
    features = torch.stack([decoded, factor, reference, torch.ones_like(decoded)], 1).double().clone()
    is_open = is_open.clone()
    w = torch.tensor(IDENTITY_PEAK_WEIGHTS, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -open_log_likelihood(features @ w, is_open, link)
        loss.backward()
        return loss

    optimizer.step(closure)
    out = w.detach().float()
    if not torch.isfinite(out).all():  # degenerate held-out set: keep the decoder as it is
        return torch.tensor(IDENTITY_PEAK_WEIGHTS)
    return out


class RnaShrinkageFit:
    """Streaming grid fit of the RNA shrinkage ``alpha``: add held-out minibatches with
    :meth:`add`, read the best ``alpha`` from :meth:`best`."""

    def __init__(self, reference: torch.Tensor, n_grid: int = SHRINKAGE_GRID):
        self.reference = reference
        self.alphas = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
        self.log_likelihood = torch.zeros(n_grid, dtype=torch.float64)

    def add(self, scale: torch.Tensor, counts: torch.Tensor) -> None:
        """Multinomial log-likelihood of ``counts`` ``(n, n_genes)`` under each mixture of
        the decoder's ``scale`` ``(n, n_genes)`` and the reference profile."""
        for i, a in enumerate(self.alphas.tolist()):
            mix = (1.0 - a) * scale + a * self.reference
            self.log_likelihood[i] += (counts * torch.log(mix.clamp(min=1e-12))).sum().double()

    def best(self) -> float:
        """The grid value with the highest held-out log-likelihood."""
        return float(self.alphas[int(torch.argmax(self.log_likelihood))])
