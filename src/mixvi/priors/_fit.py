"""Fitting a mixture prior to a latent: k-means start and moment matching.

The prior's parameters are part of the ELBO only through ``sum_cells E_q[log p(z)]``; a
mixture fitted to the posteriors of the cells maximises exactly that term, so these fits
are steps on the training objective, not a second objective.
"""

from __future__ import annotations

import numpy as np

from ._leiden import leiden_assignments

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
    resolution: float | None = None,
    min_size: int = 10,
    batch: np.ndarray | None = None,
    align_to: np.ndarray | None = None,
) -> np.ndarray:
    """Place the components of ``prior`` on clusters of an (early) latent.

    An uninitialised mixture tends to collapse onto few components; starting from clusters
    of the encoder's means avoids that (as scVAE / scMVP do). Components tied to known
    labels start at the moments of their labelled cells (a label with no cell in ``latent``
    starts at the overall moments and keeps its slot); the free components start at k-means
    clusters of the unlabelled cells, or -- with ``resolution`` -- at Leiden communities, as
    many as the data shows (up to the prior's capacity; the other slots are switched off).
    Variances are moment-matched to the aggregated posterior of each cluster, so the KL does
    not jump when the mixture replaces N(0, I).

    Parameters
    ----------
    prior
        A :class:`~mixvi.priors.MixturePrior`.
    latent
        Posterior means, shape ``(n_cells, n_latent)``.
    component
        Known component of each cell (``-1`` unknown), shape ``(n_cells,)``.
    seed
        Seed of the k-means / Leiden run.
    latent_var
        Posterior variances, shape ``(n_cells, n_latent)``.
    n_label_components
        Number of components tied to labels (the first ones).
    resolution
        ``None``: fill every free component by k-means. A number: choose the number of free
        components by Leiden at this resolution (:func:`leiden_assignments`).
    min_size
        Smallest Leiden community kept as a component.
    batch
        Batch of each cell, for the batch-balanced Leiden graph.
    align_to
        With ``resolution``: each cell's current component, shape ``(n_cells,)``. Each
        community then takes the slot of the component it shares most cells with (one slot
        each, :func:`scipy.optimize.linear_sum_assignment`), so a refit keeps the components'
        identities -- and what a mixture posterior's ``q(c|x)`` has learnt of them.

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
    active = np.ones(n_free, dtype=bool)
    if resolution is None:
        assign = kmeans_assignments(latent, n_free, component, n_label_components, seed)
    else:
        assign = np.full(latent.shape[0], -1, dtype=np.int64)
        known = np.zeros(latent.shape[0], dtype=bool)
        if component is not None:
            known = np.asarray(component) >= 0
            assign[known] = np.asarray(component)[known]
        room = n_free - n_label_components
        pool = ~known if (~known).sum() > min_size else np.ones_like(known)
        if room > 0:
            communities = leiden_assignments(
                latent[pool], resolution, max_clusters=room, min_size=min_size,
                batch=None if batch is None else np.asarray(batch)[pool], seed=seed,
            )
            n_found = int(communities.max()) + 1
            slot = np.arange(n_found)
            if align_to is not None:
                current = np.asarray(align_to)[pool] - n_label_components
                slot = _slots_by_overlap(communities, current, room)
            free_assign = np.full(latent.shape[0], -1)
            free_assign[pool] = slot[communities] + n_label_components
            assign[~known] = free_assign[~known]
            active[n_label_components:] = False
            active[n_label_components + slot] = True
        active[: max(n_label_components, 0)] = True
        if active.sum() < prior.min_active:
            active[: prior.min_active] = True
    means, stds, weights = moment_match(latent, latent_var, np.eye(n_free)[assign])
    # a label without cells keeps its slot (its weight is the floor, not a k-means cluster)
    weights = np.where(active, np.maximum(weights, 1e-3), 0.0)
    prior.set_components(means, stds, weights / weights.sum(), active)
    return assign


def _slots_by_overlap(communities: np.ndarray, current: np.ndarray, n_slots: int) -> np.ndarray:
    """Slot of each community: distinct slots, as many shared cells as possible with the
    slot's current component (``current``: ``0..n_slots-1``, other values belong to none)."""
    from scipy.optimize import linear_sum_assignment

    n_found = int(communities.max()) + 1
    mine = (current >= 0) & (current < n_slots)
    overlap = np.zeros((n_found, n_slots))
    np.add.at(overlap, (communities[mine], current[mine]), 1.0)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    slot = np.empty(n_found, dtype=np.int64)
    slot[rows] = cols
    return slot


def refit_at_communities(
    prior,
    latent: np.ndarray,
    latent_var: np.ndarray,
    component: np.ndarray | None = None,
    n_label_components: int = 0,
    resolution: float = 1.0,
    batch: np.ndarray | None = None,
    seed: int = 0,
) -> int:
    """Re-read the clusters from the current latent: place the free components on its Leiden
    communities again, each community in the slot of the component it overlaps most.

    The number of components is read from the latent at the end of the KL warm-up; the
    latent goes on changing, and EM can move, merge or drop components but not add one where
    a group of cells has become a community of its own. Re-placed before each refit (the
    training plan's ``reread_clusters``, on by default), the mixture stays on the
    communities of the latent it is trained with, the last refit on those of the trained
    latent; the EM refit (:func:`em_refit`) then fits the Gaussians to them.

    Parameters
    ----------
    prior
        A :class:`~mixvi.priors.MixturePrior`.
    latent, latent_var
        Posterior means and variances, ``(n_cells, d)``.
    component
        Known component per cell (``-1`` unknown), ``(n_cells,)``.
    n_label_components
        Components tied to labels (kept on their labelled cells).
    resolution
        Leiden's resolution.
    batch
        Batch of each cell, for the batch-balanced graph.
    seed
        Seed of Leiden.

    Returns
    -------
    The number of components in use afterwards.
    """
    initialize_from_latent(prior, latent, component, seed, latent_var, n_label_components,
                           resolution, batch=batch,
                           align_to=current_components(prior, latent, latent_var))
    return prior.n_active


def current_components(prior, latent: np.ndarray, latent_var: np.ndarray) -> np.ndarray:
    """Each cell's most probable component in use (its free-component slot), by the expected
    log responsibilities of its posterior (:func:`expected_log_resp`), shape ``(n_cells,)``."""
    means, stds, weights, active = prior.free_components()
    on = np.where(active)[0]
    log_r = expected_log_resp(np.asarray(latent, np.float64), np.asarray(latent_var, np.float64),
                              np.log(np.maximum(weights[on], 1e-300)), means[on], stds[on] ** 2)
    return on[log_r.argmax(1)]


# -- EM on the aggregated posterior ---------------------------------------------------------
LOG_2PI = float(np.log(2 * np.pi))


def expected_log_resp(
    latent: np.ndarray,
    latent_var: np.ndarray,
    log_w: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
) -> np.ndarray:
    """``log pi_k + E_q[log N(z; m_k, s_k^2)]`` for every cell and component, ``(n, K)``.

    The E-step of EM on uncertain data: each cell is its posterior ``N(mu_i, sigma_i^2)``.
    Normalised over ``k`` these are the responsibilities that maximise the Jensen lower bound
    of ``sum_i E_q[log p(z)]``. The quadratic form is expanded into matrix products
    (``sum_d (sigma^2 + mu^2) / s^2 - 2 mu m / s^2 + m^2 / s^2``), no ``n x K x d`` array.
    """
    precision = 1.0 / variances  # (K, d)
    quad = (
        (latent_var + latent**2) @ precision.T
        - 2.0 * latent @ (means * precision).T
        + (means**2 * precision).sum(-1)
    )
    log_det = np.log(variances).sum(-1)
    return log_w - 0.5 * (quad + log_det + means.shape[1] * LOG_2PI)


#: two components closer than this (symmetric KL, nats) describe the same cells: merged
DUPLICATE_KL = 0.1


def symmetric_kl_matrix(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """``KL(N_j || N_k) + KL(N_k || N_j)`` between all pairs of diagonal Gaussians, ``(K, K)``."""
    ratio = variances[:, None] / variances[None]
    diff2 = (means[:, None] - means[None]) ** 2
    inv = 1.0 / variances
    return 0.5 * ((ratio + 1.0 / ratio - 2.0) + diff2 * (inv[:, None] + inv[None])).sum(-1)


def _merge_duplicates(means, variances, weights, active, n_label_components, min_active=1):
    """Switch off free components that coincide with another (EM can drive two components
    that split one group of cells onto the same parameters): their weight goes to the one
    kept, the mixture density is unchanged."""
    on = np.where(active & (np.arange(len(active)) >= n_label_components))[0]
    if len(on) < 2:
        return weights, active, []
    skl = symmetric_kl_matrix(means[on], variances[on])
    merged = []
    for a in range(len(on)):
        j = on[a]
        if not active[j]:
            continue
        for b in range(a + 1, len(on)):
            k = on[b]
            if active[k] and skl[a, b] < DUPLICATE_KL and active.sum() > min_active:
                weights[j] += weights[k]
                weights[k] = 0.0
                active[k] = False
                merged.append((int(j), int(k)))
    return weights, active, merged


def em_refit(
    prior,
    latent: np.ndarray,
    latent_var: np.ndarray,
    component: np.ndarray | None = None,
    n_label_components: int = 0,
    n_iter: int = 3,
    min_fraction: float = 0.0,
    switch_off: bool = True,
) -> dict:
    """EM steps of the mixture on the aggregated posterior, written back into ``prior``.

    The prior's parameters enter the ELBO only through ``sum_i E_q[log p(z)]``; each EM step
    (responsibilities from :func:`expected_log_resp`, then moment matching) cannot lower its
    Jensen bound, so a refit is a step on the training objective that moves the components
    onto where the cells are now -- which the slow gradient steps of a moving latent do not
    guarantee. Labelled cells keep their label's component. Components whose weight falls
    below ``min_fraction`` are switched off (pruned), except label components.

    Parameters
    ----------
    prior
        A :class:`~mixvi.priors.MixturePrior` (a tree prior refits its leaves and rebuilds
        the tree over them).
    latent, latent_var
        Posterior means and variances of the cells, ``(n_cells, d)``.
    component
        Known component per cell (``-1`` unknown), ``(n_cells,)``.
    n_label_components
        Components tied to labels (never pruned).
    n_iter
        EM iterations.
    min_fraction
        Weight below which a free component is switched off.
    switch_off
        Allow switching components off (pruned below ``min_fraction``, or merged when EM
        drives two onto the same parameters). ``False`` keeps the number of components the
        user asked for.

    Returns
    -------
    ``{"n_active": ..., "pruned": [...], "mean_log_lik": ..., "reseeded": ...}`` after the
    refit; ``reseeded`` says a fixed number of components was re-placed by k-means because
    EM had driven two onto the same cells.
    """
    means, stds, weights, active = prior.free_components()
    latent = np.asarray(latent, dtype=np.float64)
    latent_var = np.asarray(latent_var, dtype=np.float64)
    variances = stds.astype(np.float64) ** 2
    weights = np.where(active, np.maximum(weights, 1e-12), 0.0)
    known = None if component is None else np.asarray(component)
    pruned: list[int] = []
    log_lik = float("nan")
    for _ in range(max(int(n_iter), 1)):
        on = np.where(active)[0]  # switched-off components take no cells: skip them
        log_r = np.full((latent.shape[0], len(weights)), -np.inf)
        log_r[:, on] = expected_log_resp(latent, latent_var, np.log(weights[on] / weights[on].sum()),
                                         means[on], variances[on])
        top = log_r.max(1, keepdims=True)
        resp = np.exp(log_r - top)
        total = resp.sum(1, keepdims=True)
        log_lik = float(np.mean(np.log(total).ravel() + top.ravel()))
        resp /= total
        if known is not None and (known >= 0).any():
            lab = known >= 0
            resp[lab] = 0.0
            resp[lab, known[lab]] = 1.0
        new_means, new_stds, new_weights = moment_match(latent, latent_var, resp)
        keep_mass = new_weights > 0
        means = np.where(keep_mass[:, None], new_means, means)
        if prior.learns_scales:  # fixed scales (the tree prior's default) stay fixed
            variances = np.where(keep_mass[:, None], new_stds**2, variances)
        mass = new_weights.copy()  # each component's share of the cells
        if switch_off:
            mass, active, dups = _merge_duplicates(means, variances, mass, active.copy(),
                                                   n_label_components, prior.min_active)
            pruned += [k for _, k in dups]
        weights = mass if prior.learns_weights else active / active.sum()
        free = np.arange(len(weights)) >= n_label_components
        drop = active & free & (mass < min_fraction) & switch_off
        if drop.any() and (active & ~drop).sum() >= max(prior.min_active, 1):
            pruned += np.where(drop)[0].tolist()
            active = active & ~drop
            weights = np.where(active, weights, 0.0)
    reseeded = False
    if not switch_off and _has_duplicates(means, variances, active, n_label_components):
        # a fixed number of components stays as many distinct clusters: where EM drove two
        # onto one group (a latent with less structure than components), start them again
        # from k-means on the current latent instead
        means, variances, weights = _kmeans_components(
            latent, latent_var, known, len(weights), n_label_components, means, variances,
            weights, prior.learns_scales,
        )
        reseeded = True
    weights = np.where(active, np.maximum(weights, 1e-6), 0.0)
    prior.set_components(means, np.sqrt(variances), weights / weights.sum(), active,
                         responsibilities=None if reseeded else resp)
    return {"n_active": int(active.sum()), "pruned": pruned, "mean_log_lik": log_lik,
            "reseeded": reseeded}


def _has_duplicates(means, variances, active, n_label_components) -> bool:
    """Would :func:`_merge_duplicates` merge any two free components (run on copies)?"""
    _, _, merged = _merge_duplicates(means, variances, np.ones(len(active)), active.copy(),
                                     n_label_components)
    return bool(merged)


def _kmeans_components(latent, latent_var, known, n_components, n_label_components,
                       means, variances, weights, learns_scales):
    """Means, variances and weights of a k-means fit of all components (labels kept)."""
    # cells in a canonical order: the training loader hands them over shuffled, and k-means
    # must not depend on that order (a run resumed from a checkpoint sees another order)
    order = np.lexsort(latent.T[::-1])
    assign = np.empty(latent.shape[0], dtype=np.int64)
    assign[order] = kmeans_assignments(latent[order], n_components,
                                       None if known is None else known[order], n_label_components)
    resp = np.zeros((latent.shape[0], n_components))
    resp[np.arange(latent.shape[0]), assign] = 1.0
    new_means, new_stds, mass = moment_match(latent, latent_var, resp)
    filled = mass > 0
    means = np.where(filled[:, None], new_means, means)
    if learns_scales:
        variances = np.where(filled[:, None], new_stds**2, variances)
    weights = np.where(filled, mass, weights)
    return means, variances, weights
