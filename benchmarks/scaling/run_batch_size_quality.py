"""Does MixVI's large-data default batch size keep the clusters and the integration?

From 20,000 cells on, ``MixVI.train()`` uses batch 512 with the learning rate scaled to 2e-3
(below: scvi-tools' 128 and 1e-3). This script trains MixVI on two 50,000-cell resamples at
its defaults (so batch 512, and the default 160 epochs for 50k cells) and with
``batch_size=128``, everything else equal:

* ``kang50k``: the Kang resample of ``run_scaling.py`` (about 32 noisy copies of each of the
  1,556 cells: fine for integration scores, but its copies form clumps that graph clustering
  reads as clusters);
* ``snare50k``: SNARE-seq RNA made of new cells, each the thinned sum of two cells of the same
  type and sub-library (:func:`make_snare_pseudocells`; 22 types, 12 sub-libraries).

Each latent is scored the way
``benchmarks/clustering`` does: the mixture's own clusters (ARI, K), Leiden at scanpy's
defaults and k-means with the true K on the same latent, batch dependence of the clusters,
and the scIB total (scib-metrics' default metric sets, un-scaled) on a fixed 10,000-cell
subset (the same cells for every run; scib on all 50k cells does not fit the budget).

Rerun (one fresh process per run, two at a time, 1 torch thread; ``batch_size_quality.csv``
and the table printed for ``results.md``)::

    python benchmarks/scaling/run_batch_size_quality.py
    python benchmarks/scaling/run_batch_size_quality.py --report-only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _jobs import load_results, run_jobs, save_result  # benchmarks/_jobs.py

RUNS = HERE / "batch_size_runs"
N_CELLS = 50_000
N_SCIB = 10_000
#: the default (``None``: MixVI chooses) against scvi-tools' batch size
SETTINGS = {"default": None, "batch128": 128}
SEEDS = (0,)


def _kang(n_cells: int) -> Path:
    from run_scaling import make_rna

    return make_rna(n_cells)



def make_snare_pseudocells(n_cells: int, seed: int = 0) -> Path:
    """A ``n_cells`` resample of SNARE-seq RNA made of new cells, not copies: each is the sum
    of two random cells of the same type and sub-library, binomially thinned by one half (so
    its depth is that of one cell). Copies of the same cell (as in ``run_scaling.make_rna``)
    would form tight clumps that a kNN graph reads as clusters of their own."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    from run_scaling import CACHE

    import mixvi

    path = CACHE / f"snare_rna_pseudocells_{n_cells}.h5ad"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    real = mixvi.datasets.snareseq_mouse_cortex_rna()
    counts = sp.csr_matrix(real.layers["counts"], dtype=np.float32)
    groups = real.obs.groupby(["cell_type", "batch"], observed=True).indices
    keys = [k for k, idx in groups.items() if len(idx) >= 2]
    sizes = np.array([len(groups[k]) for k in keys], dtype=float)
    picked = rng.choice(len(keys), n_cells, p=sizes / sizes.sum())
    first = np.empty(n_cells, dtype=np.int64)
    second = np.empty(n_cells, dtype=np.int64)
    for g in np.unique(picked):
        where = np.where(picked == g)[0]
        pair = np.array([rng.choice(groups[keys[g]], 2, replace=False) for _ in where])
        first[where], second[where] = pair[:, 0], pair[:, 1]
    summed = (counts[first] + counts[second]).tocsr()
    summed.data = rng.binomial(summed.data.astype(np.int64), 0.5).astype(np.float32)
    summed.eliminate_zeros()
    obs = pd.DataFrame({"cell_type": real.obs["cell_type"].to_numpy()[first],
                        "batch": real.obs["batch"].to_numpy()[first]},
                       index=[f"p{i}" for i in range(n_cells)])
    ad.AnnData(X=summed, obs=obs, var=pd.DataFrame(index=real.var_names)).write_h5ad(path)
    return path


#: name -> function writing the resample (once) and returning its path
DATASETS = {"kang50k": _kang, "snare50k": make_snare_pseudocells}


def run(dataset: str, setting: str, seed: int) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import anndata as ad
    import scanpy as sc
    import scvi
    import torch

    import mixvi
    from mixvi.metrics import integration_scores

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent / "clustering"))
    from run_clustering import batch_dependence, score_latent, score_partition

    scvi.settings.seed = seed
    adata = ad.read_h5ad(DATASETS[dataset](N_CELLS))
    mixvi.MixVI.setup_anndata(adata, batch_key="batch")
    model = mixvi.MixVI(adata)
    t0 = time.perf_counter()
    model.train(batch_size=SETTINGS[setting], enable_progress_bar=False)
    train_s = time.perf_counter() - t0
    steps = int(model.trainer.global_step)
    latent = model.get_latent_representation()
    fine = adata.obs["cell_type"].astype(str).to_numpy()
    batch = adata.obs["batch"].astype(str).to_numpy()
    out = {"dataset": dataset, "setting": setting, "seed": seed, "n_cells": adata.n_obs, "train_s": train_s,
           "epochs": len(model.history["elbo_train"]), "steps": steps,
           "cells_epochs_per_s": adata.n_obs * len(model.history["elbo_train"]) / train_s}
    out.update(score_latent(latent, fine, fine, batch, seed))
    own = model.get_cluster_assignments()["cluster"].astype(str).to_numpy()
    out.update(score_partition(own, fine, fine, "own"))
    out["own_batch_nmi"] = batch_dependence(own, batch)
    # scIB on a fixed subset, with the PCA of that subset as the unintegrated reference
    sub = np.sort(np.random.default_rng(0).choice(adata.n_obs, N_SCIB, replace=False))
    sub = sub[fine[sub] != "Mis"]  # as benchmarks/clustering
    view = adata[sub].copy()
    sc.pp.normalize_total(view)
    sc.pp.log1p(view)
    sc.pp.pca(view, n_comps=50, random_state=0)
    view.obsm["X_mixvi"] = latent[sub]
    scores = integration_scores(view, "X_mixvi", "batch", "cell_type", pre_integrated_key="X_pca")
    out.update({f"scib_{k.lower().replace(' ', '_')}": v for k, v in scores.items()})
    return {k: v for k, v in out.items() if not k.endswith("_coarse")}


def report() -> None:
    frame = load_results(RUNS, HERE / "batch_size_quality.csv")
    if frame is None:
        return
    cols = ["dataset", "batch", "seed", "epochs", "steps", "cells_epochs_per_s", "own_ari", "own_k",
            "kmeans_ari", "leiden_ari", "leiden_k", "own_batch_nmi", "scib_batch_correction",
            "scib_bio_conservation", "scib_total"]
    frame["batch"] = frame["setting"].map({"default": "512 (default)", "batch128": "128"})
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for _, r in frame.sort_values(["dataset", "setting", "seed"]).iterrows():
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) and c not in
                 ("cells_epochs_per_s",) else f"{r[c]:,.0f}" if c == "cells_epochs_per_s"
                 else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |")
    means = frame.groupby(["dataset", "batch"])[cols[6:]].mean(numeric_only=True)
    print("\nmeans over seeds:\n" + means.round(3).to_string())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=3, metavar=("DATASET", "SETTING", "SEED"),
                   help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--parallel", type=int, default=2)
    a = p.parse_args()
    if a.one:
        dataset, setting, seed = a.one
        save_result(RUNS, a.one, run(dataset, setting, int(seed)))
        return
    if not a.report_only:
        jobs = [(d, s, seed) for d in DATASETS for seed in SEEDS for s in SETTINGS]
        run_jobs(Path(__file__), RUNS, jobs, a.parallel)
    report()


if __name__ == "__main__":
    main()
