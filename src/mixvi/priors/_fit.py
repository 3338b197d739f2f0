"""Fitting a mixture prior to a latent: k-means start and moment matching.

The prior's parameters are part of the ELBO only through ``sum_cells E_q[log p(z)]``; a
mixture fitted to the posteriors of the cells maximises exactly that term, so these fits
are steps on the training objective, not a second objective.
"""

from __future__ import annotations

import numpy as np

MIN_STD = 0.05


def moment_match(
    latent: np.ndarray,
    latent_var: np.ndarray | None,
    resp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component moments of an aggregated posterior under soft or hard assignments.

    Each cell is a Gaussian ``N(mu_i, diag sigma_i^2)``; a component's mean is the weighted
    mean of the ``mu_i`` and its variance the weighted spread of the ``mu_i`` plus the mean
    posterior variance, so the fitted Gaussian has the same first two moments as its cells.

    Parameters
    ----------
    latent
        Posterior means, shape ``(n_cells, d)``.
    latent_var
        Posterior variances, shape ``(n_cells, d)`` (``None``: zeros).
    resp
        Assignment weights, shape ``(n_cells, K)`` (one-hot for hard assignments).

    Returns
    -------
    ``(means (K, d), stds (K, d), weights (K,))``; weights sum to 1. A component without
    cells gets the overall mean and spread and weight 0.
    """
    latent = np.asarray(latent, dtype=np.float64)
    var = np.zeros_like(latent) if latent_var is None else np.asarray(latent_var, np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    mass = resp.sum(0)
    safe = np.maximum(mass, 1e-12)[:, None]
    means = resp.T @ latent / safe
    second = resp.T @ (latent**2 + var) / safe
    stds = np.sqrt(np.maximum(second - means**2, 0.0))
    empty = mass < 1e-8
    if empty.any():
        means[empty] = latent.mean(0)
        stds[empty] = np.sqrt(latent.var(0) + var.mean(0))
    return means, np.maximum(stds, MIN_STD), mass / max(mass.sum(), 1e-12)


def kmeans_assignments(
    latent: np.ndarray,
    n_clusters: int,
    component: np.ndarray | None = None,
    n_label_components: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """Component of each cell for a data-driven start of the mixture.

    Cells with a known label go to their label's component (``0..n_label_components-1``);
    the other ``n_clusters - n_label_components`` components are k-means clusters of the
    unlabelled cells (of all cells when too few are unlabelled).

    Parameters
    ----------
    latent
        Posterior means, shape ``(n_cells, d)``.
    n_clusters
        Number of components to fill.
    component
        Known component per cell (``-1`` unknown), shape ``(n_cells,)``.
    n_label_components
        Components tied to labels; codes in ``component`` must be below it.
    seed
        Seed of the k-means run.

    Returns
    -------
    Integer array of shape ``(n_cells,)`` with values in ``0..n_clusters-1``.
    """
    from sklearn.cluster import KMeans

    n = latent.shape[0]
    assign = np.full(n, -1, dtype=np.int64)
    if component is not None:
        component = np.asarray(component)
        known = component >= 0
        if known.any() and component[known].max() >= n_label_components:
            raise ValueError(
                f"Known components must be below n_label_components={n_label_components}, "
                f"got {int(component[known].max())}."
            )
        assign[known] = component[known]
    n_rest = n_clusters - n_label_components
    if n_rest <= 0:
        unknown = assign < 0
        if unknown.any():  # no free component: unlabelled cells join the nearest label
            onehot = np.zeros((n, n_clusters))
            onehot[~unknown, assign[~unknown]] = 1.0
            centres, _, _ = moment_match(latent, None, onehot)
            dist = ((latent[unknown, None] - centres[None]) ** 2).sum(-1)
            assign[unknown] = dist.argmin(1)
        return assign
    pool = assign < 0 if (assign < 0).sum() >= n_rest else np.ones(n, dtype=bool)
    if pool.sum() < n_rest:
        raise ValueError(
            f"Cannot initialise {n_clusters} mixture components from {n} cells; lower "
            "n_components."
        )
    km = KMeans(n_clusters=n_rest, n_init=4, random_state=seed).fit(latent[pool])
    unlabelled = np.where(assign < 0)[0]
    if len(unlabelled):
        assign[unlabelled] = km.predict(latent[unlabelled]) + n_label_components
    return assign


def initialize_from_latent(
    prior,
    latent: np.ndarray,
    component: np.ndarray | None = None,
    seed: int = 0,
    latent_var: np.ndarray | None = None,
    n_label_components: int = 0,
) -> np.ndarray:
    """Place the components of ``prior`` on clusters of an (early) latent.

    An uninitialised mixture tends to collapse onto few components; starting from
    k-means on the encoder's means avoids that (as scVAE / scMVP do). Components tied to
    known labels start at the moments of their labelled cells (a label with no cell in
    ``latent`` starts at the overall moments and keeps its slot), the others at k-means
    clusters; variances are moment-matched to the aggregated posterior of each cluster, so
    the KL does not jump when the mixture replaces N(0, I).

    Parameters
    ----------
    prior
        A :class:`~mixvi.priors.MixturePrior`.
    latent
        Posterior means, shape ``(n_cells, n_latent)``.
    component
        Known component of each cell (``-1`` unknown), shape ``(n_cells,)``.
    seed
        Seed of the k-means run.
    latent_var
        Posterior variances, shape ``(n_cells, n_latent)``.
    n_label_components
        Number of components tied to labels (the first ones).

    Returns
    -------
    The component each cell was assigned to, shape ``(n_cells,)``.
    """
    n_free = prior.n_free_components()
    if n_label_components > n_free:
        raise ValueError(
            f"{n_label_components} label components need at least as many free components "
            f"(got {n_free})."
        )
    assign = kmeans_assignments(latent, n_free, component, n_label_components, seed)
    means, stds, weights = moment_match(latent, latent_var, np.eye(n_free)[assign])
    # a label without cells keeps its slot (its weight is the floor, not a k-means cluster)
    prior.set_components(means, stds, np.maximum(weights, 1e-3), np.ones(n_free, dtype=bool))
    return assign
