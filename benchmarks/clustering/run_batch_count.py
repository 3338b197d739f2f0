"""Does the number of clusters ``n_components="auto"`` starts from depend on the number of
batches? (issue "The mixture is the clustering", item 2: K from the data, across data).

Rerun (trains MixVI at its defaults on Kang and on SNARE-seq RNA, 100 epochs as in
``run_clustering.py``, seeds 0-2; prints the table, writes ``batch_count.csv`` and
``batch_count.png``)::

    python benchmarks/clustering/run_batch_count.py

On each trained latent, the cells get random batch labels (1 to 100 batches, drawn
uniformly: no batch effect at all), and Leiden at ``resolution=1`` runs on two graphs:

* ``per_batch_share``: :func:`mixvi.priors.batch_balanced_knn` as shipped -- the
  ``ceil(15 / n_batches)`` nearest cells of every batch are candidates, each cell keeps the
  15 nearest of them;
* ``fixed_per_batch``: the previous rule, kept here for the comparison -- every cell linked
  to its ``max(ceil(15 / n_batches), 2)`` nearest cells in every batch (24 neighbours with 12
  batches, 200 with 100).

Labels without a batch effect should not change K: the number of Leiden clusters (of at
least 10 cells) and their ARI against the cell types (``Mis`` excluded) are reported for each.
The same seed's random labels are used by both graphs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_clustering import SNARE_EPOCHS, load

N_BATCHES = (1, 2, 4, 12, 30, 100)
N_NEIGHBORS = 15


def fixed_per_batch_graph(latent: np.ndarray, batch: np.ndarray, n_neighbors: int = N_NEIGHBORS):
    """The previous batch-balanced graph: a fixed number of neighbours in every batch."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    n = latent.shape[0]
    groups = [np.where(batch == b)[0] for b in np.unique(batch)]
    per = max(int(np.ceil(n_neighbors / len(groups))), 2)
    rows, cols = [], []
    for idx in groups:
        k = min(per + 1, len(idx))
        _, found = NearestNeighbors(n_neighbors=k).fit(latent[idx]).kneighbors(latent)
        rows.append(np.repeat(np.arange(n), k))
        cols.append(idx[found].ravel())
    graph = sp.csr_matrix(
        (np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    graph.setdiag(0)
    graph.eliminate_zeros()
    return ((graph + graph.T) > 0).astype(np.float32).tocsr()


def leiden_k(graph, seed: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    holder = ad.AnnData(np.zeros((graph.shape[0], 0), dtype=np.float32))
    sc.tl.leiden(holder, resolution=1.0, adjacency=graph, random_state=seed, flavor="igraph",
                 n_iterations=2, directed=False)
    return holder.obs["leiden"].astype(int).to_numpy()


def trained_latent(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import scvi
    import torch

    import mixvi

    torch.set_num_threads(1)
    scvi.settings.seed = seed
    adata = load(dataset)
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata)
    model.train(max_epochs=SNARE_EPOCHS if dataset == "snare_rna" else None,
                enable_progress_bar=False)
    return model.get_latent_representation(), adata.obs["cell_type"].astype(str).to_numpy()


def measure(dataset: str, seed: int) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    from mixvi.priors import batch_balanced_knn

    latent, types = trained_latent(dataset, seed)
    scored = types != "Mis"
    rng = np.random.default_rng(seed)
    rows = []
    for n_batches in N_BATCHES:
        batch = rng.integers(0, n_batches, latent.shape[0])
        for graph_name, graph in (
            ("per_batch_share", batch_balanced_knn(latent, batch, N_NEIGHBORS)),
            ("fixed_per_batch", fixed_per_batch_graph(latent, batch)),
        ):
            found = leiden_k(graph, seed)
            rows.append({
                "dataset": dataset, "seed": seed, "n_batches": n_batches, "graph": graph_name,
                "neighbours_per_cell": graph.nnz / graph.shape[0],
                "k": int((np.bincount(found) >= 10).sum()),
                "ari": adjusted_rand_score(types[scored], found[scored]),
            })
    return rows


def main() -> None:
    import pandas as pd

    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--datasets", nargs="+", default=["kang", "snare_rna"])
    a = p.parse_args()
    rows = [r for d in a.datasets for s in a.seeds for r in measure(d, s)]
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "batch_count.csv", index=False)
    table = df.groupby(["dataset", "graph", "n_batches"])[["neighbours_per_cell", "k", "ari"]]
    summary = table.agg(["mean", "std"]).round(3)
    print(summary.to_markdown())
    plot(df)


def plot(df) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(df["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for graph_name, part in df[df["dataset"] == dataset].groupby("graph"):
            mean = part.groupby("n_batches")["k"].mean()
            ax.plot(mean.index, mean.values, marker="o", label=graph_name)
        ax.set_xscale("log")
        ax.set_xlabel("random batches (no batch effect)")
        ax.set_ylabel("Leiden clusters at resolution 1")
        ax.set_title(dataset)
        ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(HERE / "batch_count.png", dpi=120)


if __name__ == "__main__":
    main()
