"""Growing a fitted mixture: a component for each group of cells that has come apart.

The number of components is read from the latent at the end of the KL warm-up. Groups that
separate later (a rare type that splits off its neighbour as the encoder learns) then share
a component with that neighbour. Re-reading every component from the current communities
(:func:`mixvi.priors.refit_at_communities`) finds them, but also re-cuts continua that the
EM-fitted mixture had split well (CD4 / CD8 T cells on Kang, ``benchmarks/clustering``).
:func:`add_separated_communities` keeps the fitted components and only adds one for each
community that is nearly cut off from the rest of the graph, and parted from the rest of its
component by a drop in density, yet has no component of its own.
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

#: Most density between a community and the rest of its component (at the lowest point
#: between them, as a fraction of the lower of their two peaks) for the community to get a
#: component: the density must fall by a fifth. The end of an elongated cloud is cut off on
#: one side only, so its conductance can be as low as a separate group's, but along the line
#: from the rest of the cloud to it the density does not dip (ratio 0.99-1 in
#: ``tests/test_grow_mixture.py``); two equal Gaussians dip to 0.8 at about 2.7 sd apart
MAX_VALLEY = 0.8


def density_valley(inside: np.ndarray, outside: np.ndarray, n_bins: int = 256) -> float:
    """How far the density dips between two groups of cells, along the line through their
    means: the density at its lowest point between the two groups' medians over the lower
    of the two groups' peaks (0: a gap, 1: no dip, as at the end of a single cloud).

    The density is a Gaussian kernel estimate of the projections, with Silverman's bandwidth
    from the groups' pooled *within-group* spread (the distance between the groups would
    widen a bandwidth from the overall spread and fill the gap).

    Parameters
    ----------
    inside, outside
        Points of the two groups, shapes ``(n_a, d)`` and ``(n_b, d)``.
    n_bins
        Bins of the binned kernel estimate.

    Returns
    -------
    The valley-to-peak ratio in ``[0, 1]``.
    """
    from scipy.ndimage import gaussian_filter1d

    inside, outside = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    if inside.ndim != 2 or outside.ndim != 2 or inside.shape[1] != outside.shape[1] \
            or not len(inside) or not len(outside):
        raise ValueError(f"inside and outside must be non-empty 2-D arrays of points with the "
                         f"same number of dimensions, got shapes {inside.shape} and "
                         f"{outside.shape}.")
    direction = inside.mean(0) - outside.mean(0)
    norm = np.linalg.norm(direction)
    if norm == 0:
        return 1.0
    t_in, t_out = inside @ (direction / norm), outside @ (direction / norm)
    t = np.concatenate([t_in, t_out])
    pooled = np.sqrt((len(t_in) * t_in.var() + len(t_out) * t_out.var()) / len(t))
    if pooled == 0:  # both groups are single points (all projections equal included)
        return 1.0
    width = (t.max() - t.min()) / n_bins
    counts, edges = np.histogram(t, bins=n_bins, range=(t.min(), t.max()))
    density = gaussian_filter1d(counts.astype(np.float64), 1.06 * pooled * len(t) ** -0.2 / width,
                                mode="constant")
    a, b = np.clip(np.searchsorted(edges, [np.median(t_in), np.median(t_out)]) - 1, 0, n_bins - 1)
    lo, hi = sorted((int(a), int(b)))
    valley = lo + int(density[lo:hi + 1].argmin())
    # each group's peak: the highest density on its side of the valley
    peak_in = density[valley:].max() if a > b else density[:valley + 1].max()
    peak_out = density[:valley + 1].max() if a > b else density[valley:].max()
    return float(density[valley] / max(min(peak_in, peak_out), 1e-300))


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
    max_valley: float = MAX_VALLEY,
) -> list[int]:
    """Give each separated community that shares a component with another one its own.

    The Leiden communities of the current latent are compared with the mixture's current
    clusters (each cell's most probable component). A community is *absorbed* when the
    component that holds most of its cells holds still more cells of another community. An
    absorbed community whose conductance in the kNN graph is at most ``max_conductance``
    (it is nearly cut off from every other cell) and whose density, along the line to the
    rest of its host component's cells, dips to at most ``max_valley`` of the lower peak
    (:func:`density_valley`: the end of one elongated cloud is cut off on one side only,
    and the density does not dip towards it) gets a switched-off free slot, placed on
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
    max_valley
        Most density between a community and the rest of its host component, as a fraction
        of the lower peak (:func:`density_valley`), in ``(0, 1]``; ``1`` leaves the density
        test out.

    Returns
    -------
    The slots switched on, most separated community first (empty when none was added, or
    when no slot is free).
    """
    check_real("max_conductance", max_conductance, 0.0, 1.0, low_open=True)
    check_real("max_valley", max_valley, 0.0, 1.0, low_open=True)
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
    points = latent[pool]
    current = current_components(prior, points, latent_var[pool])
    codes, graph = communities_and_graph(
        points, resolution, min_size=min_size,
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
    cut_off = [c for c in absorbed if phi[c] <= max_conductance]
    separated = sorted(
        (c for c in cut_off
         if density_valley(points[codes == c], points[(current == host[c]) & (codes != c)])
         <= max_valley),
        key=phi.get,
    )
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
