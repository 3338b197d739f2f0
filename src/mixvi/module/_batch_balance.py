"""The batch-balance penalty: mutual information between mixture component and batch.

Shared by :class:`~mixvi.module.MixVAE` and :class:`~mixvi.module.MultiMixVAE`: a
component that holds one batch's cells of a type, and another that holds the other
batch's, is a batch effect inside the mixture; the penalty asks every component to hold the
batches in the data's proportions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

#: Per-step decay of the penalty's memory of responsibility mass: it holds about
#: 1 / (1 - 0.98) = 50 minibatches (6,400 cells at 128), which brings the plug-in estimate of
#: I(c; s) over 12 batches and 13 components within ~0.01 nats of the data's (its bias is
#: about (K - 1)(S - 1) / 2N nats for N cells)
BATCH_MI_DECAY = 0.98


def batch_component_mass(
    resp: torch.Tensor, batch_index: torch.Tensor, n_batch: int
) -> torch.Tensor:
    """Responsibilities summed over the cells of each batch, shape ``(n_batch, K)``."""
    onehot = nn.functional.one_hot(batch_index.view(-1).long(), n_batch).to(resp.dtype)
    return onehot.t() @ resp


def mutual_information_of_mass(mass: torch.Tensor) -> torch.Tensor:
    """``I(s; c)`` (nats) of the joint distribution ``mass / sum(mass)``, ``mass`` of shape
    ``(n_batch, K)`` (see :func:`batch_mutual_information`)."""
    joint = mass / mass.sum().clamp(min=1e-12)
    p_s = joint.sum(1, keepdim=True)
    p_c = joint.sum(0, keepdim=True)
    eps = 1e-8
    # sum_s,c p(s,c) log(p(s,c) / (p(s) p(c))) = sum_s p(s) sum_c p(c|s) log(p(c|s) / p(c))
    return (joint * (torch.log(joint + eps) - torch.log(p_s * p_c + eps))).sum()


def batch_mutual_information(
    resp: torch.Tensor, batch_index: torch.Tensor, n_batch: int,
    memory: torch.Tensor | None = None,
) -> torch.Tensor:
    """Plug-in estimate of the mutual information ``I(c; s)`` (nats).

    From the batch-by-component mass ``M[s, c]`` -- the responsibilities summed over the
    minibatch's cells of each batch, plus ``memory`` (earlier minibatches' mass, a
    constant): ``p(s, c) = M / sum M`` and
    ``I = sum_s p(s) sum_c p(c|s) log(p(c|s) / p(c))``. It is 0 when every component
    has the same batch composition as the data, and at most ``log n_batch``.

    A minibatch alone is a poor sample of ``p(c|s)`` when batches are many: with 12
    batches of ~10 cells each in a minibatch of 128 its plug-in estimate is biased far
    above the data's ``I`` (0.41 vs 0.009 nats on SNARE-seq), and a penalty on it
    rewards merging components (the bias grows with the number of components in use).
    ``memory`` pools the minibatch with the mass of earlier ones.

    Parameters
    ----------
    resp
        Differentiable responsibilities, shape ``(n_cells, K)``.
    batch_index
        Batch codes, shape ``(n_cells, 1)``.
    n_batch
        Number of batches.
    memory
        Batch-by-component mass of earlier cells, shape ``(n_batch, K)``; ``None``: the
        minibatch alone.

    Returns
    -------
    Scalar tensor, differentiable in ``resp``.
    """
    mass = batch_component_mass(resp, batch_index, n_batch)
    if memory is not None:
        mass = mass + memory.to(mass.dtype)
    return mutual_information_of_mass(mass)


class BatchBalancePenalty(nn.Module):
    """``weight x I(c; s)`` of the soft assignments, pooled over recent minibatches.

    The buffer :attr:`mass` (``(n_batch, K)``) holds the batch-by-component responsibility
    mass of recent minibatches, decayed by :data:`BATCH_MI_DECAY` a training step. It is not
    saved with the model (a query model's batches differ) but travels in resume
    checkpoints (:class:`~mixvi.train.MixTrainingPlan`).

    Parameters
    ----------
    weight
        Weight of the penalty in the loss; ``0`` switches it off.
    n_batch
        Number of batches; with fewer than 2 the penalty is off.
    n_components
        Number of mixture components ``K``.
    """

    def __init__(self, weight: float, n_batch: int, n_components: int):
        super().__init__()
        self.weight = float(weight)
        self.n_batch = int(n_batch)
        self.register_buffer(
            "mass", torch.zeros(max(self.n_batch, 1), n_components), persistent=False
        )

    @property
    def enabled(self) -> bool:
        """Whether the penalty enters the loss (a positive weight and at least 2 batches)."""
        return self.weight > 0 and self.n_batch > 1

    def forward(
        self, resp: torch.Tensor, batch_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weighted penalty, I(c; s) estimate)`` for one minibatch.

        The penalty has the estimate's value times the weight; its gradient is scaled by
        the pooled mass over the minibatch's, so each cell pulls as hard as in a
        minibatch-only estimate (the weight keeps its meaning) while ``p(c | s)`` comes from
        ~50 minibatches' cells. In training mode the minibatch's mass then joins the memory.

        Parameters
        ----------
        resp
            Differentiable component probabilities of the minibatch, ``(n_cells, K)``.
        batch_index
            Batch codes, ``(n_cells, 1)``.
        """
        mass = batch_component_mass(resp, batch_index, self.n_batch)
        mi = mutual_information_of_mass(mass + self.mass)
        scale = (self.mass.sum() + resp.shape[0]) / resp.shape[0]
        penalty = mi.detach() + scale * (mi - mi.detach())
        if self.training:
            with torch.no_grad():
                self.mass.mul_(BATCH_MI_DECAY).add_(mass.detach())
        return self.weight * penalty, mi.detach()

    def add_to_loss(
        self,
        loss: torch.Tensor,
        assignments: Callable[[], torch.Tensor],
        batch_index: torch.Tensor,
        mixture_fitted: bool,
        extra_metrics: dict,
    ) -> torch.Tensor:
        """``loss`` plus the penalty when it is on and the mixture has been fitted.

        Parameters
        ----------
        loss
            The minibatch's scalar loss.
        assignments
            Returns the differentiable component probabilities ``(n_cells, K)``; only called
            when the penalty applies.
        batch_index
            Batch codes, ``(n_cells, 1)``.
        mixture_fitted
            Whether the mixture has been fitted (before, its components mean nothing).
        extra_metrics
            Receives the estimate of ``I(c; s)`` as ``"batch_mi"`` when the penalty applies.

        Returns
        -------
        The scalar loss.
        """
        if not (self.enabled and mixture_fitted):
            return loss
        penalty, extra_metrics["batch_mi"] = self(assignments(), batch_index)
        return loss + penalty


__all__ = [
    "BATCH_MI_DECAY",
    "BatchBalancePenalty",
    "batch_component_mass",
    "batch_mutual_information",
    "mutual_information_of_mass",
]
