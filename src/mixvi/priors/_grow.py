"""Growing a fitted mixture: a component for each group of cells that has come apart.

The number of components is read from the latent at the end of the KL warm-up. Groups that
separate later (a rare type that splits off its neighbour as the encoder learns) then share
a component with that neighbour. Re-reading every component from the current communities
(:func:`mixvi.priors.refit_at_communities`) finds them, but also re-cuts continua that the
EM-fitted mixture had split well (CD4 / CD8 T cells on Kang, ``benchmarks/clustering``).
:func:`add_separated_communities` keeps the fitted components and only adds one for each
community that is nearly cut off from the rest of the graph yet has no component of its own.
"""

from __future__ import annotations

import numpy as np

from mixvi.data._args import check_real
from mixvi.priors._fit import current_components, moment_match
from mixvi.priors._leiden import communities_and_graph, conductance

#: Most conductance (fraction of its kNN links that leave it) of a community that gets a
#: component of its own: the bound :func:`mixvi.priors.leiden_assignments` uses for a group
#: split off inside a community
MAX_CONDUCTANCE = 0.1


def add_separated_communities(
    prior,
    latent: np.ndarray,
    latent_var: np.ndarray,
    component: np.ndarray | None = None,
    n_label_components: int = 0,
    resolution: float = 1.0,
    batch: np.ndarray | None = None,
    seed: int = 0,
    max_conductance: float = MAX_CONDUCTANCE,
    min_size: int = 10,
) -> list[int]:
    """Give each separated community that shares a component with another one its own.

    The Leiden communities of the current latent are compared with the mixture's current
    clusters (each cell's most probable component). A community is *absorbed* when the
    component that holds most of its cells holds still more cells of another community. An
    absorbed community whose conductance in the kNN graph is at most ``max_conductance``
    (it is nearly cut off from every other cell) gets a switched-off free slot, placed on
    its cells (moment-matched mean and variance, its share of the cells as weight). The
    other components are left as they are, so a continuum that the fitted mixture splits
    in its own way is not re-cut; EM refits (:func:`mixvi.priors.em_refit`) then fit all
    components together.

    Parameters
    ----------
    prior
        A :class:`~mixvi.priors.MixturePrior`.
    latent, latent_var
        Posterior means and variances, ``(n_cells, d)``.
    component
        Known component per cell (``-1`` unknown), ``(n_cells,)``: labelled cells keep their
        label's component and are left out of the communities.
    n_label_components
        Components tied to labels (the first ones; never re-used).
    resolution
        Leiden's resolution.
    batch
        Batch of each cell, for the batch-balanced graph, ``(n_cells,)``.
    seed
        Seed of Leiden.
    max_conductance
        Most conductance of a community that gets a component, in ``(0, 1]``.
    min_size
        Fewest cells of a community.

    Returns
    -------
    The slots switched on, most separated community first (empty when none was added, or
    when no slot is free).
    """
    check_real("max_conductance", max_conductance, 0.0, 1.0, low_open=True)
    means, stds, weights, active = prior.free_components()
    free_slots = [k for k in range(n_label_components, len(active)) if not active[k]]
    if not free_slots or not active.any():
        return []
    latent = np.asarray(latent, np.float64)
    latent_var = np.asarray(latent_var, np.float64)
    pool = np.ones(latent.shape[0], dtype=bool)
    if component is not None:
        pool = np.asarray(component) < 0
    if pool.sum() < 3 * min_size:
        return []
    current = current_components(prior, latent[pool], latent_var[pool])
    codes, graph = communities_and_graph(
        latent[pool], resolution, min_size=min_size,
        batch=None if batch is None else np.asarray(batch)[pool], seed=seed,
    )
    n_codes = int(codes.max()) + 1
    overlap = np.zeros((n_codes, len(active)))
    np.add.at(overlap, (codes, current), 1.0)
    host = overlap.argmax(1)  # the component holding most of each community
    owner = overlap.argmax(0)  # the community holding most of each component
    absorbed = [c for c in range(n_codes) if owner[host[c]] != c]
    if not absorbed:
        return []
    degree = np.asarray(graph.sum(1)).ravel()
    phi = {c: conductance(graph, codes == c, degree) for c in absorbed}
    separated = sorted((c for c in absorbed if phi[c] <= max_conductance), key=phi.get)
    added = []
    for c, slot in zip(separated, free_slots, strict=False):
        cells = np.where(pool)[0][codes == c]
        m, s, _ = moment_match(latent[cells], latent_var[cells], np.ones((len(cells), 1)))
        means[slot] = m[0]
        if prior.learns_scales:  # fixed scales (the tree's default) stay as they are
            stds[slot] = s[0]
        weights[slot] = len(cells) / latent.shape[0]
        active[slot] = True
        added.append(slot)
    if added:
        new = np.zeros(len(active), dtype=bool)
        new[added] = True
        # the new components take their cells' share from the components they were part of
        weights[~new] *= max(1.0 - weights[new].sum(), 1e-3) / max(weights[~new].sum(), 1e-300)
        weights = np.where(active, weights, 0.0)
        prior.set_components(means, stds, weights / weights.sum(), active)
    return added
