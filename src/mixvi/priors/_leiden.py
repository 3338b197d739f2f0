"""The number of clusters from the data: Leiden communities of a batch-balanced kNN graph.

With ``n_components="auto"`` the mixture starts with one component per community (see
:func:`mixvi.priors.initialize_from_latent`); Leiden's ``resolution`` is the one knob.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from mixvi.data._args import check_int, check_real

#: Sibling ratio of a separated sub-community: its conductance at most this fraction of the
#: median of the other sub-communities' (a piece of a uniform region is about as linked to
#: the rest as its siblings are; a group hidden in the community is far less)
SIBLING_RATIO = 0.5


def batch_balanced_knn(
    latent: np.ndarray, batch: np.ndarray | None = None, n_neighbors: int = 15
):
    """Symmetric kNN graph whose neighbours are drawn from every batch alike (as BBKNN).

    Each cell's candidates are its ``ceil(n_neighbors / n_batches)`` nearest cells in each
    batch; it keeps the ``n_neighbors`` nearest of them. So no batch supplies more than its
    share of a cell's neighbours -- a community is held together by similarity across
    batches, not by a shared batch, and a cell type seen in two batches is one community even
    where the latent still separates the batches a little -- and every cell has
    ``n_neighbors`` neighbours whatever the number of batches: with many batches a graph of
    a fixed number per batch would grow dense, and Leiden at the same resolution would find
    fewer clusters. Without ``batch`` (or with one batch) it is the plain ``n_neighbors``-NN
    graph.

    Parameters
    ----------
    latent
        Points, shape ``(n_cells, d)``.
    batch
        Batch of each cell, shape ``(n_cells,)``.
    n_neighbors
        Neighbours per cell (fewer only where the data has fewer other cells).

    Returns
    -------
    scipy CSR adjacency ``(n_cells, n_cells)``, 0/1, symmetric (a cell is linked to its own
    neighbours and to the cells that chose it), empty diagonal.
    """
    return _balanced_knn(*_check_graph_args(latent, batch, n_neighbors), n_neighbors)


def _check_graph_args(latent, batch, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """The latent as a finite 2-D array and one batch value per cell (zeros without ``batch``),
    or a ``ValueError`` that says what is wrong."""
    check_int("n_neighbors", n_neighbors)
    latent = np.asarray(latent)
    if latent.ndim != 2 or latent.shape[0] < 2:
        raise ValueError(f"latent must be a 2-D array (n_cells >= 2, n_dims), got shape "
                         f"{latent.shape}; pass e.g. adata.obsm['X_mixvi'].")
    if not np.isfinite(latent).all():
        raise ValueError("latent holds NaN or infinite values; the graph needs finite "
                         "coordinates (check the embedding that produced it).")
    n = latent.shape[0]
    batch = np.zeros(n, dtype=np.int64) if batch is None else np.asarray(batch)
    if batch.shape != (n,):
        raise ValueError(f"batch must hold one value per cell, shape ({n},); got shape "
                         f"{batch.shape}. Pass the batch column, e.g. adata.obs['batch'].")
    return latent, batch


def _balanced_knn(latent: np.ndarray, batch: np.ndarray, n_neighbors: int):
    """:func:`batch_balanced_knn` of checked arguments (:func:`_check_graph_args`)."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = latent.shape[0]
    groups = [np.where(batch == b)[0] for b in np.unique(batch)]
    per = int(np.ceil(n_neighbors / len(groups)))
    dists, cands = [], []
    for idx in groups:
        k = min(per + 1, len(idx))  # + the cell itself where it is in this batch
        d, found = NearestNeighbors(n_neighbors=k).fit(latent[idx]).kneighbors(latent)
        found = idx[found]
        d[found == np.arange(n)[:, None]] = np.inf  # not its own neighbour
        # the batch's share: its ``per`` nearest other cells (kneighbors sorts by distance)
        first = np.argsort(d, axis=1, kind="stable")[:, :per]
        dists.append(np.take_along_axis(d, first, 1))
        cands.append(np.take_along_axis(found, first, 1))
    dists, cands = np.concatenate(dists, 1), np.concatenate(cands, 1)
    keep = np.argsort(dists, axis=1, kind="stable")[:, :n_neighbors]
    cols = np.take_along_axis(cands, keep, 1)
    real = np.isfinite(np.take_along_axis(dists, keep, 1))
    rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)
    graph = sp.csr_matrix(
        (np.ones(int(real.sum())), (rows[real], cols[real])), shape=(n, n)
    )
    return ((graph + graph.T) > 0).astype(np.float32).tocsr()


def _leiden(graph, resolution: float, seed: int) -> np.ndarray:
    """scanpy's Leiden communities of an adjacency matrix, shape ``(n_cells,)``."""
    import anndata as ad
    import scanpy as sc

    holder = ad.AnnData(np.zeros((graph.shape[0], 0), dtype=np.float32))
    sc.tl.leiden(holder, resolution=resolution, adjacency=graph, random_state=seed,
                 flavor="igraph", n_iterations=2, directed=False)
    return holder.obs["leiden"].astype(int).to_numpy()


def conductance(graph, members: np.ndarray, degree: np.ndarray | None = None) -> float:
    """Fraction of the links of ``members`` (or of the rest, whichever has fewer) that cross
    between them: 0 for a group apart, about 0.5 for a random half.

    Parameters
    ----------
    graph
        Symmetric adjacency ``(n, n)``.
    members
        Boolean mask of the group, shape ``(n,)``.
    degree
        The graph's row sums, shape ``(n,)``, when already computed (for many groups of one
        graph); ``None``: computed here.

    Returns
    -------
    ``cut / min(volume(members), volume(rest))``.
    """
    if degree is None:
        degree = np.asarray(graph.sum(1)).ravel()
    cut = float(graph[members][:, ~members].sum())
    return cut / max(min(degree[members].sum(), degree[~members].sum()), 1e-12)


def split_separated(
    graph, codes: np.ndarray, resolution: float, max_conductance: float, min_size: int,
    seed: int = 0,
) -> np.ndarray:
    """Give groups hidden inside a community their own community.

    Modularity has a resolution limit: merging a small group into a big community pays as
    soon as the links between them exceed what the whole graph's density predicts, so a
    rare type (tens of cells) that is nearly cut off from a big community is still merged
    into it. Leiden on each community's own subgraph sees it at the community's scale. A
    sub-community becomes a community when it is nearly cut off from the rest of the graph
    (conductance at most ``max_conductance``) *and* much more so than its sibling
    sub-communities (at most :data:`SIBLING_RATIO` times their median): the pieces Leiden
    cuts from a uniform region -- round, elongated or a curve -- are about as linked as each
    other. One level only.

    Parameters
    ----------
    graph
        Symmetric adjacency ``(n_cells, n_cells)``.
    codes
        Community of each cell, ``0..K-1``, shape ``(n_cells,)``.
    resolution
        Leiden's resolution on each community.
    max_conductance
        Most conductance of a separated sub-community.
    min_size
        Fewest cells of a separated sub-community.
    seed
        Seed of Leiden.

    Returns
    -------
    Community of each cell, ``0..K'-1`` with ``K' >= K``; the old codes are kept.
    """
    out = codes.copy()
    degree = np.asarray(graph.sum(1)).ravel()  # once for every sub-community's conductance
    n_codes = int(codes.max()) + 1
    for c in range(n_codes):
        cells = np.where(codes == c)[0]
        if len(cells) < 3 * min_size:
            continue
        inner = graph[cells][:, cells]
        sub = _leiden(inner, resolution, seed)
        parts = [sub == s for s in range(int(sub.max()) + 1) if (sub == s).sum() >= min_size]
        if len(parts) < 3:  # needs two siblings to compare with
            continue
        # against the whole graph: a piece at a community's edge borders the next community,
        # so only a group cut off from every side is low
        masks = np.zeros((len(parts), len(codes)), dtype=bool)
        for mask, part in zip(masks, parts, strict=True):
            mask[cells[part]] = True
        phi = np.array([conductance(graph, mask, degree) for mask in masks])
        for i, part in enumerate(parts):
            siblings = np.median(np.delete(phi, i))
            if phi[i] <= max_conductance and phi[i] <= SIBLING_RATIO * siblings:
                out[cells[part]] = n_codes
                n_codes += 1
    return out


def leiden_assignments(
    latent: np.ndarray,
    resolution: float = 1.0,
    max_clusters: int | None = None,
    min_size: int = 10,
    batch: np.ndarray | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    max_conductance: float | None = 0.1,
) -> np.ndarray:
    """Communities of the (batch-balanced) kNN graph of a latent, by scanpy's Leiden.

    How many clusters the data holds is read from the data, as Leiden does, with Leiden's
    ``resolution`` as the one knob (higher: more, smaller clusters). The graph is
    :func:`batch_balanced_knn`, so batches do not count as clusters. Groups nearly cut off
    inside a community become communities of their own (:func:`split_separated`, against
    modularity's resolution limit). Communities smaller than ``min_size`` cells, and beyond
    the ``max_clusters`` largest, are not clusters of their own: their cells join the
    community of the nearest centroid.

    Parameters
    ----------
    latent
        Posterior means, shape ``(n_cells, d)``.
    resolution
        Leiden's resolution parameter.
    max_clusters
        Most communities kept (the prior's capacity).
    min_size
        Fewest cells of a kept community.
    batch
        Batch of each cell (``None``: one batch).
    n_neighbors
        Neighbours per cell of the graph.
    seed
        Seed of Leiden.
    max_conductance
        Most conductance (fraction of its links that leave it) of a group split off from
        its community; ``None``: no split, plain Leiden.

    Returns
    -------
    Integer array ``(n_cells,)`` with values ``0..K-1``, largest community first.
    """
    return communities_and_graph(latent, resolution, max_clusters, min_size, batch, n_neighbors,
                                 seed, max_conductance)[0]


def communities_and_graph(
    latent: np.ndarray,
    resolution: float = 1.0,
    max_clusters: int | None = None,
    min_size: int = 10,
    batch: np.ndarray | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    max_conductance: float | None = 0.1,
) -> tuple[np.ndarray, scipy.sparse.csr_matrix]:
    """:func:`leiden_assignments` and the graph they were read from: ``(assign, graph)``,
    shapes ``(n_cells,)`` and ``(n_cells, n_cells)`` (sparse), for callers that go on to
    measure the communities on the graph (:func:`conductance`)."""
    check_real("resolution", resolution, 0.0, low_open=True)
    check_real("max_conductance", max_conductance, 0.0, 1.0, low_open=True, allow_none=True)
    latent = np.asarray(latent)
    points, batch = _check_graph_args(np.asarray(latent, np.float32), batch, n_neighbors)
    graph = _balanced_knn(points, batch, n_neighbors)
    codes = _leiden(graph, resolution, seed)
    if max_conductance is not None:
        codes = split_separated(graph, codes, resolution, max_conductance, min_size, seed)
    sizes = np.bincount(codes)
    order = np.argsort(-sizes, kind="stable")
    kept = [c for c in order if sizes[c] >= min_size][: max_clusters or len(order)]
    if not kept:
        kept = [order[0]]
    new = {c: i for i, c in enumerate(kept)}
    assign = np.array([new.get(c, -1) for c in codes])
    orphans = assign < 0
    if orphans.any():
        centres = np.stack([latent[assign == c].mean(0) for c in range(len(kept))])
        dist = ((latent[orphans, None] - centres[None]) ** 2).sum(-1)
        assign[orphans] = dist.argmin(1)
    return assign, graph
