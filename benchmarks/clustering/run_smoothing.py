"""Does the neighbour smoothing of the cluster probabilities hold across data size?

Rerun (``smoothing_runs/*.json``, ``smoothing.csv``; the table printed for results.md)::

    python benchmarks/clustering/run_smoothing.py
    python benchmarks/clustering/run_smoothing.py --report-only

MixVI at its defaults on random subsets of the shipped labelled sets (Kang: a quarter and a
half of the 1,556 cells; SNARE-seq RNA: 2,000 and 5,000 of the 10,309 cells; each subset drawn
with the run's seed, seeds 0 and 1). On each fitted model, the own clusters of the same
responsibilities spread over ``n_neighbors`` nearest cells with weight ``smoothing``
(:func:`mixvi.model.smooth_over_neighbours`; the default 15 neighbours at 0.8, each cell alone
(0), 0.5, 0.7, 0.9, and 30 neighbours), against k-means with the true number of types and
Leiden (scanpy defaults) on the same latent. ARI against the fine labels, ``Mis`` excluded; ECE of the
confidence (:func:`mixvi.metrics.cluster_calibration`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _jobs import load_results, run_jobs, save_result  # benchmarks/_jobs.py
from run_clustering import labels_of, leiden_scanpy, load  # the clustering benchmark's data

RUNS = HERE / "smoothing_runs"
SEEDS = (0, 1)
SUBSETS = [("kang", 389), ("kang", 778), ("snare_rna", 2000), ("snare_rna", 5000)]
#: (n_neighbors, smoothing) scored on every model; (15, 0.8) is the default
SETTINGS = [(15, 0.0), (15, 0.5), (15, 0.7), (15, 0.8), (15, 0.9), (30, 0.8)]


def train_on_subset(dataset: str, n_cells: int, seed: int, plan_kwargs: dict | None = None):
    """MixVI at its defaults (``plan_kwargs`` aside) on a random subset of ``n_cells`` cells
    drawn with ``seed``; k-means with the true number of types and Leiden on its latent.

    Returns ``(model, fine labels, result dict)``; the dict holds the run's key, the epochs, the
    training time and the two reference ARIs (``Mis`` excluded).
    """
    warnings.filterwarnings("ignore")
    import logging
    import time

    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import scvi
    import torch
    from sklearn.cluster import KMeans

    import mixvi
    from mixvi.metrics import cluster_agreement

    torch.set_num_threads(1)
    scvi.settings.seed = seed
    full = load(dataset)
    rows = np.sort(np.random.default_rng(seed).choice(full.n_obs, n_cells, replace=False))
    adata = full[rows].copy()
    fine, _ = labels_of(adata)
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata)
    t = time.time()
    model.train(enable_progress_bar=False, plan_kwargs=plan_kwargs)
    train_s = time.time() - t
    latent = model.get_latent_representation()
    n_types = len(np.unique(fine[fine != "Mis"]))
    res = {"dataset": dataset, "n_cells": n_cells, "seed": seed, "n_types": n_types,
           "epochs": len(model.history["elbo_train"]), "train_s": train_s}
    km = KMeans(n_types, n_init=10, random_state=seed).fit(latent).labels_
    res["kmeans_ari"] = cluster_agreement(km, fine, exclude=["Mis"])["ari"]
    leiden = leiden_scanpy(latent, seed)
    res["leiden_ari"] = cluster_agreement(leiden, fine, exclude=["Mis"])["ari"]
    return model, fine, res


def run_one(dataset: str, n_cells: int, seed: int) -> dict:
    from mixvi.metrics import cluster_agreement, cluster_calibration

    model, fine, res = train_on_subset(dataset, n_cells, seed)
    keep = fine != "Mis"
    for k, weight in SETTINGS:
        cl = model.get_cluster_assignments(smoothing=weight, n_neighbors=k)
        own = cl["cluster"].astype(str).to_numpy()
        tag = f"k{k}_a{weight}"
        res[f"ari_{tag}"] = cluster_agreement(own, fine, exclude=["Mis"])["ari"]
        res[f"k_{tag}"] = len(np.unique(own[keep]))
        res[f"ece_{tag}"] = cluster_calibration(cl["confidence"].to_numpy(), own, fine,
                                                exclude=["Mis"])["ece"]
    return res


def report() -> None:
    df = load_results(RUNS, HERE / "smoothing.csv")
    if df is None:
        return
    tags = [f"k{k}_a{a}" for k, a in SETTINGS]
    g = df.groupby(["dataset", "n_cells"])
    print("| data (seeds 0, 1) | k-means, true K | Leiden | "
          + " | ".join(f"{k} NN, {a}" + (" (default)" if (k, a) == (15, 0.8) else "")
                       for k, a in SETTINGS) + " |")
    print("|---|" + "---:|" * (2 + len(SETTINGS)))
    for (name, n), sub in g:
        cells = [f"{sub['kmeans_ari'].mean():.3f}", f"{sub['leiden_ari'].mean():.3f}"]
        cells += [f"{sub[f'ari_{t}'].mean():.3f} (K {sub[f'k_{t}'].mean():.1f}, ECE {sub[f'ece_{t}'].mean():.3f})"
                  for t in tags]
        print(f"| {name}, {n} cells ({sub['n_types'].iloc[0]} types) | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=3, metavar=("DATASET", "N_CELLS", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.one:
        dataset, n, seed = a.one
        save_result(RUNS, a.one, run_one(dataset, int(n), int(seed)))
        return
    if not a.report_only:
        run_jobs(Path(__file__), RUNS, [(d, n, s) for s in SEEDS for d, n in SUBSETS], a.parallel)
    report()


if __name__ == "__main__":
    main()
