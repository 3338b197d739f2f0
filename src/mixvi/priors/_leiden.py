"""The number of clusters from the data: Leiden communities of a batch-balanced kNN graph.

With ``n_components="auto"`` the mixture starts with one component per community (see
:func:`mixvi.priors.initialize_from_latent`); Leiden's ``resolution`` is the one knob.
"""

from __future__ import annotations

import numpy as np


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
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = latent.shape[0]
    batch = np.zeros(n, dtype=np.int64) if batch is None else np.asarray(batch)
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


def leiden_assignments(
    latent: np.ndarray,
    resolution: float = 1.0,
    max_clusters: int | None = None,
    min_size: int = 10,
    batch: np.ndarray | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
) -> np.ndarray:
    """Communities of the (batch-balanced) kNN graph of a latent, by scanpy's Leiden.

    How many clusters the data holds is read from the data, as Leiden does, with Leiden's
    ``resolution`` as the one knob (higher: more, smaller clusters). The graph is
    :func:`batch_balanced_knn`, so batches do not count as clusters. Communities smaller
    than ``min_size`` cells, and beyond the ``max_clusters`` largest, are not clusters of
    their own: their cells join the community of the nearest centroid.

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

    Returns
    -------
    Integer array ``(n_cells,)`` with values ``0..K-1``, largest community first.
    """
    import anndata as ad
    import scanpy as sc

    graph = batch_balanced_knn(np.asarray(latent, dtype=np.float32), batch, n_neighbors)
    holder = ad.AnnData(np.zeros((latent.shape[0], 0), dtype=np.float32))
    sc.tl.leiden(holder, resolution=resolution, adjacency=graph, random_state=seed,
                 flavor="igraph", n_iterations=2, directed=False)
    codes = holder.obs["leiden"].astype(int).to_numpy()
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
    return assign
