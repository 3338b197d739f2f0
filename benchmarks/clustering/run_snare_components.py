"""Which SNARE-seq types share a mixture component, and why the tree meets the coarse labels
where it does (issue "The mixture is the clustering", items 2, 4 and 5).

Rerun (trains MixVI at its defaults, 100 epochs as in ``run_clustering.py``, with the GMM and
the tree prior; prints the tables and writes ``snare_components.csv``)::

    python benchmarks/clustering/run_snare_components.py [--seed 0]

For the GMM model: the cross-table of fine labels against the own clusters; the calibration
of the confidence against the fine and the coarse labels; for every component, a split test
(a 2-component diagonal GMM on its cells' posterior means: BIC gain per cell, and the split's
ARI against the fine labels inside the component) -- would a split move find the merged
types? Leiden at scanpy's defaults on the same latent for comparison. For the tree model: its
first merges and those of a Ward tree of the Leiden clusters, each with the majority labels.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_clustering import SNARE_EPOCHS, leiden_scanpy


def train(prior: str, seed: int):
    import scvi
    import torch

    import mixvi

    torch.set_num_threads(1)
    scvi.settings.seed = seed
    adata = mixvi.datasets.snareseq_mouse_cortex_rna()
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, prior=prior)
    model.train(max_epochs=SNARE_EPOCHS, enable_progress_bar=False)
    return model, adata


def majority(labels: np.ndarray, n: int = 2) -> str:
    import pandas as pd

    return ", ".join(f"{k} {v}" for k, v in pd.Series(labels).value_counts().head(n).items())


def components_table(model, adata, seed: int):
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from mixvi.metrics import cluster_agreement, cluster_calibration

    fine = adata.obs["cell_type"].astype(str).to_numpy()
    coarse = adata.obs["cell_type_coarse"].astype(str).to_numpy()
    keep = fine != "Mis"
    latent = model.get_latent_representation()
    clusters = model.get_cluster_assignments()
    own = clusters["cluster"].astype(str).to_numpy()
    conf = clusters["confidence"].to_numpy()
    for name, truth in (("fine", fine), ("coarse", coarse)):
        cal = cluster_calibration(conf, own, truth, exclude=["Mis"])
        ari = cluster_agreement(own, truth, exclude=["Mis"])["ari"]
        print(f"own clusters vs {name} labels: ARI {ari:.3f}, ECE {cal['ece']:.3f} "
              f"(mean confidence {cal['mean_confidence']:.3f}, purity {cal['accuracy']:.3f})")
    leiden = leiden_scanpy(latent, seed)
    print(f"Leiden (scanpy defaults): {len(np.unique(leiden))} clusters, ARI "
          f"{cluster_agreement(leiden, fine, exclude=['Mis'])['ari']:.3f}")
    rows = []
    for c in sorted(np.unique(own), key=int):
        cells = own == c
        z = latent[cells]
        one = GaussianMixture(1, covariance_type="diag", random_state=seed).fit(z)
        two = GaussianMixture(2, covariance_type="diag", n_init=3, random_state=seed).fit(z)
        split = two.predict(z)
        inside = keep[cells]
        rows.append({
            "component": c, "cells": int(cells.sum()), "fine labels": majority(fine[cells & keep], 3),
            "Leiden clusters": majority(leiden[cells], 2),
            "split BIC gain / cell": (one.bic(z) - two.bic(z)) / len(z),
            "split ARI vs fine": adjusted_rand_score(fine[cells][inside], split[inside]),
        })
    table = pd.DataFrame(rows)
    print(table.round(2).to_markdown(index=False))
    return table


def tree_merges(model, seed: int, n_merges: int = 4) -> None:
    from scipy.cluster.hierarchy import linkage

    fine = model.adata.obs["cell_type"].astype(str).to_numpy()
    keep = fine != "Mis"
    leaf = model.get_cluster_assignments(level=model.cluster_levels[-1])["cluster"].astype(str).to_numpy()
    prior = model.module.prior
    names = {}
    for node in np.unique(leaf):
        names[int(node)] = majority(fine[(leaf == node) & keep], 1)

    def label(node: int) -> str:
        if node in names:
            return names[node]
        a, b = prior.tree_children[node - prior.n_leaves].tolist()
        return f"({label(a)} + {label(b)})"

    print("tree prior, first merges:")
    for j in range(n_merges):
        a, b = prior.tree_children[j].tolist()
        print(f"  {j + 1}. {label(a)}  with  {label(b)}")
    latent = model.get_latent_representation()
    leiden = leiden_scanpy(latent, seed)
    ids = np.unique(leiden)
    merges = linkage(np.stack([latent[leiden == i].mean(0) for i in ids]), "ward")[:, :2].astype(int)
    lei_names = {j: majority(fine[(leiden == i) & keep], 1) for j, i in enumerate(ids)}
    print("Ward tree of the Leiden clusters, first merges:")
    for j in range(n_merges):
        lei_names[len(ids) + j] = f"({lei_names[merges[j, 0]]} + {lei_names[merges[j, 1]]})"
        print(f"  {j + 1}. {lei_names[merges[j, 0]]}  with  {lei_names[merges[j, 1]]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("mixvi").setLevel(logging.WARNING)
    model, adata = train("gmm", a.seed)
    components_table(model, adata, a.seed).to_csv(HERE / "snare_components.csv", index=False)
    tree, _ = train("hierarchical", a.seed)
    tree_merges(tree, a.seed)


if __name__ == "__main__":
    main()
