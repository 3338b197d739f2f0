"""Latent priors, small torch modules composed by the mixvi VAEs.

``make_prior`` builds one from the model's ``prior=`` argument:

* ``"normal"`` -- :class:`StandardNormalPrior`, closed-form KL.
* ``"gmm"`` -- :class:`GaussianMixturePrior`, Monte-Carlo KL with a log-sum-exp.
* ``"hierarchical"`` -- :class:`HierarchicalGaussianMixturePrior`, tree of components.

Mixture densities are :class:`torch.distributions.MixtureSameFamily` objects
(:meth:`MixturePrior.distribution`).
"""

from __future__ import annotations

from typing import Literal

from ._base import LatentPrior, gaussian_entropy, kl_diag_gaussians
from ._fit import (
    em_refit,
    expected_log_resp,
    initialize_from_latent,
    kmeans_assignments,
    moment_match,
    refit_at_communities,
)
from ._gmm import GaussianMixturePrior, MixturePrior
from ._grow import add_separated_communities, density_valley
from ._hierarchical import (
    HierarchicalGaussianMixturePrior,
    balanced_tree,
    merge_order,
    node_depths,
)
from ._leiden import batch_balanced_knn, conductance, leiden_assignments, split_separated
from ._normal import StandardNormalPrior

PriorName = Literal["normal", "gmm", "hierarchical"]
PRIORS = ("normal", "gmm", "hierarchical")


def make_prior(
    prior: PriorName,
    n_latent: int,
    n_components: int,
    **kwargs,
) -> LatentPrior:
    """Build a prior module from its name.

    Parameters
    ----------
    prior
        ``"normal"``, ``"gmm"`` or ``"hierarchical"``.
    n_latent
        Latent dimensionality.
    n_components
        Mixture components (``"gmm"``) or tree leaves (``"hierarchical"``, which then
        has ``2 n_components - 1`` components); ignored by ``"normal"``.
    **kwargs
        Passed to the prior's constructor (e.g. ``learn_scales``, ``n_kl_samples``,
        ``kl_estimator``); ignored by ``"normal"``.

    Returns
    -------
    The prior module.
    """
    if prior == "normal":
        return StandardNormalPrior(n_latent)
    if prior == "gmm":
        return GaussianMixturePrior(n_latent, n_components, **kwargs)
    if prior == "hierarchical":
        return HierarchicalGaussianMixturePrior(n_latent, n_components, **kwargs)
    raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}.")


__all__ = [
    "LatentPrior",
    "MixturePrior",
    "StandardNormalPrior",
    "GaussianMixturePrior",
    "HierarchicalGaussianMixturePrior",
    "balanced_tree",
    "merge_order",
    "node_depths",
    "gaussian_entropy",
    "kl_diag_gaussians",
    "add_separated_communities",
    "batch_balanced_knn",
    "conductance",
    "density_valley",
    "em_refit",
    "expected_log_resp",
    "initialize_from_latent",
    "leiden_assignments",
    "kmeans_assignments",
    "moment_match",
    "refit_at_communities",
    "split_separated",
    "make_prior",
    "PRIORS",
    "PriorName",
]
