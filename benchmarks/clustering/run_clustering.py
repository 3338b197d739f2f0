"""Are the mixture's own clusters the best clustering of their latent? (issue: "The mixture is
the clustering").

Rerun (writes ``runs/*.json``, ``results.csv``, ``results.md`` tables and ``results.png``)::

    python benchmarks/clustering/run_clustering.py                 # all runs, 2 at a time
    python benchmarks/clustering/run_clustering.py --report-only   # tables from runs/

Data: Kang IFN-beta PBMC (5 types, ctrl/stim), SNARE-seq RNA (23 fine types, 15 coarse;
``Mis`` excluded from every label score), SNARE-seq RNA + ATAC (MultiMixVI, joint latent).

Methods, each with 3 seeds:

* ``mixvi``: MixVI at its defaults (``n_components="auto"``, Leiden resolution 1 on the
  batch-balanced graph, groups cut off inside a community split from it, each EM refit
  preceded by a component for each separated community of the current latent without one,
  ``reread_clusters="add"``); its own clusters, and on its latent k-means with the true
  number of types and Leiden at scanpy's defaults;
* ``mixvi_bb``: the same with the batch-balance penalty (``batch_balance_weight``);
  ``mixvi_bb_replace`` (``--options``) with the previous re-read;
* ``mixvi_normal``: ``prior="normal"`` (scVI's prior, same networks): scIB reference;
* ``mixvi_no_refits`` / ``mixvi_prior_lr_1`` / ``mixvi_prior_lr_100`` / ``mixvi_refit_often``
  (``--options``, Kang): the mixture fitted only once (no EM refits), the prior's learning-rate
  factor at 1 or 100 instead of 10, EM refits every 10 epochs instead of every 40;
* ``mixvi_resolution_0.5`` / ``mixvi_resolution_2`` (``--options``, Kang and SNARE RNA): the
  Leiden resolution that chooses K (default 1);
* ``mixvi_em_only`` (``--options``, Kang and SNARE RNA): refits are EM steps from the
  current mixture (``reread_clusters=False``), so K is read once, from the warm-up latent,
  and can only fall after it (a seed's run depends on the machine's floating-point
  arithmetic, so options are compared with the defaults run on the same machine);
  ``mixvi_replace`` (``--options``, Kang and SNARE RNA): every component re-placed on the
  current communities before each refit (``reread_clusters="replace"``, the previous
  default); ``mixvi_tree_reread`` (SNARE RNA): the tree with each refit started from the
  current communities (``reread_clusters=True``; the tree's default reads its leaves once);
* ``mixvi_tree``: ``prior="hierarchical"`` (SNARE RNA): each tree level against the fine and
  the coarse labels, beside a Ward tree of Leiden clusters cut to the same sizes;
* ``scvi``: scvi-tools' SCVI at its defaults + Leiden at scanpy's defaults;
* ``multimixvi``: MultiMixVI at its defaults (early stopping) on SNARE RNA + ATAC, joint
  latent.

Epochs: the models' defaults on Kang (400 for 1,556 cells) and for MultiMixVI (early
stopping); 100 for every model on SNARE RNA (the default heuristic would run 400 epochs of
10,309 cells per run, which does not fit the 2-core budget of this benchmark; every model
gets the same 100).

Calibration: a cell is *right* when its label is the majority label of its cluster;
``ece`` is the expected calibration error of the cluster confidence
(:func:`mixvi.metrics.cluster_calibration`), for the default responsibilities (posterior
uncertainty integrated out) and for point responsibilities at the posterior mean.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _jobs import load_results, run_jobs, save_result  # benchmarks/_jobs.py
from _scib import scib_scores  # benchmarks/_scib.py

RUNS = HERE / "runs"
SEEDS = (0, 1, 2)
JOBS = [
    ("kang", "mixvi"), ("kang", "mixvi_bb"), ("kang", "mixvi_normal"), ("kang", "scvi"),
    ("snare_rna", "mixvi"), ("snare_rna", "mixvi_bb"), ("snare_rna", "mixvi_normal"),
    ("snare_rna", "mixvi_tree"), ("snare_rna", "scvi"), ("snare_joint", "multimixvi"),
]
BATCH_BALANCE_WEIGHT = 10.0
#: MixVI variants: method -> (model arguments, training-plan arguments)
MIXVI_VARIANTS = {
    "mixvi": ({}, {}),
    "mixvi_bb": ({"batch_balance_weight": BATCH_BALANCE_WEIGHT}, {}),
    "mixvi_bb_replace": ({"batch_balance_weight": BATCH_BALANCE_WEIGHT},
                         {"reread_clusters": "replace"}),
    "mixvi_normal": ({"prior": "normal"}, {}),
    "mixvi_tree": ({"prior": "hierarchical"}, {}),
    # what the mixture-fitting options do (issue 9.1; ``--options``, Kang)
    "mixvi_no_refits": ({}, {"refit_every": 0, "final_refit": False}),
    "mixvi_prior_lr_1": ({}, {"prior_lr_factor": 1.0}),
    "mixvi_prior_lr_100": ({}, {"prior_lr_factor": 100.0}),
    "mixvi_refit_often": ({}, {"refit_every": 10}),
    # the one knob of n_components="auto" (``--options``, Kang and SNARE-seq RNA)
    "mixvi_resolution_0.5": ({"resolution": 0.5}, {}),
    "mixvi_resolution_2": ({"resolution": 2.0}, {}),
    # K read once, from the warm-up latent (EM refits only)
    "mixvi_em_only": ({}, {"reread_clusters": False}),
    # each refit re-places every component on the current communities (the previous default;
    # the default adds a component only for a separated community without one)
    "mixvi_replace": ({}, {"reread_clusters": "replace"}),
    "mixvi_tree_reread": ({"prior": "hierarchical"}, {"reread_clusters": True}),
}
OPTION_JOBS = [("kang", m) for m in ("mixvi_no_refits", "mixvi_prior_lr_1", "mixvi_prior_lr_100",
                                     "mixvi_refit_often")] + [
    (d, m) for d in ("kang", "snare_rna")
    for m in ("mixvi_resolution_0.5", "mixvi_resolution_2", "mixvi_em_only", "mixvi_replace")] + [
    ("snare_rna", "mixvi_tree_reread"), ("kang", "mixvi_bb_replace"),
    ("snare_rna", "mixvi_bb_replace")]
SNARE_EPOCHS = 100


# ---------------------------------------------------------------------------------- data
def load(dataset: str):
    import mixvi

    if dataset == "kang":
        return mixvi.datasets.kang_pbmc_ifnb()
    if dataset == "snare_rna":
        return mixvi.datasets.snareseq_mouse_cortex_rna()
    return mixvi.datasets.snareseq_mouse_cortex()


def labels_of(adata) -> tuple[np.ndarray, np.ndarray]:
    fine = adata.obs["cell_type"].astype(str).to_numpy()
    coarse = adata.obs.get("cell_type_coarse", adata.obs["cell_type"]).astype(str).to_numpy()
    return fine, coarse


# ---------------------------------------------------------------------------------- scores
def leiden_scanpy(latent: np.ndarray, seed: int) -> np.ndarray:
    """Leiden at scanpy's defaults (15-NN UMAP graph, resolution 1) on an embedding."""
    import anndata as ad
    import scanpy as sc

    holder = ad.AnnData(np.zeros((len(latent), 0), dtype=np.float32), obsm={"z": latent})
    sc.pp.neighbors(holder, use_rep="z", random_state=seed)
    sc.tl.leiden(holder, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return holder.obs["leiden"].astype(str).to_numpy()


def score_partition(pred, fine, coarse, prefix: str) -> dict:
    from mixvi.metrics import cluster_agreement

    out = {}
    for name, truth in (("", fine), ("_coarse", coarse)):
        agree = cluster_agreement(pred, truth, exclude=["Mis"])
        out[f"{prefix}_ari{name}"], out[f"{prefix}_nmi{name}"] = agree["ari"], agree["nmi"]
    keep = fine != "Mis"
    out[f"{prefix}_k"] = int(len(np.unique(np.asarray(pred)[keep])))
    return out


def score_latent(latent, fine, coarse, batch, seed: int) -> dict:
    from sklearn.cluster import KMeans

    keep = fine != "Mis"
    n_types = len(np.unique(fine[keep]))
    out = {"n_types": n_types, "n_types_coarse": len(np.unique(coarse[keep]))}
    km = KMeans(n_types, n_init=10, random_state=seed).fit(latent).labels_
    out.update(score_partition(km, fine, coarse, "kmeans"))
    out.update(score_partition(leiden_scanpy(latent, seed), fine, coarse, "leiden"))
    return out


def batch_dependence(pred, batch) -> float:
    """Normalised mutual information between cluster and batch (0: every cluster holds the
    batches in the data's proportions)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(batch, pred))


# ---------------------------------------------------------------------------------- one run
def run(dataset: str, method: str, seed: int) -> dict:
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    import scvi

    import mixvi
    from mixvi.metrics import cluster_calibration

    scvi.settings.seed = seed
    adata = load(dataset)  # an AnnData, or the MuData of "snare_joint"
    fine, coarse = labels_of(adata)
    batch = adata.obs["batch"].astype(str).to_numpy()
    epochs = SNARE_EPOCHS if dataset == "snare_rna" else None
    out = {"dataset": dataset, "method": method, "seed": seed, "n_cells": int(adata.n_obs)}
    t0 = time.perf_counter()
    if method == "scvi":
        scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="batch")
        model = scvi.model.SCVI(adata)
        model.train(max_epochs=epochs, enable_progress_bar=False)
        out["train_s"] = time.perf_counter() - t0
        latent = model.get_latent_representation()
        out.update(score_latent(latent, fine, coarse, batch, seed))
        out.update(scib_scores(adata, latent, "X_scvi"))
        return out
    if method == "multimixvi":
        mixvi.MultiMixVI.setup_mudata(adata, batch_key="batch")
        model = mixvi.MultiMixVI(adata)
        model.train(enable_progress_bar=False)
    else:
        model_kwargs, plan_kwargs = MIXVI_VARIANTS[method]
        mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
        model = mixvi.MixVI(adata, **model_kwargs)
        model.train(max_epochs=epochs, plan_kwargs=plan_kwargs, enable_progress_bar=False)
    out["train_s"] = time.perf_counter() - t0
    out["epochs"] = int(len(model.history["elbo_train"]))
    latent = model.get_latent_representation()
    out.update(score_latent(latent, fine, coarse, batch, seed))
    if dataset != "snare_joint":
        out.update(scib_scores(adata, latent, "X_mixvi"))
    if method == "mixvi_normal":
        return out
    clusters = model.get_cluster_assignments()
    own = clusters["cluster"].astype(str).to_numpy()
    out.update(score_partition(own, fine, coarse, "own"))
    out["own_batch_nmi"] = batch_dependence(own, batch)
    out["leiden_batch_nmi"] = batch_dependence(leiden_scanpy(latent, seed), batch)
    cal = cluster_calibration(clusters["confidence"].to_numpy(), own, fine, exclude=["Mis"])
    out["ece"], out["mean_confidence"], out["purity"] = cal["ece"], cal["mean_confidence"], cal["accuracy"]
    # the ablation of the neighbour smoothing: each cell's responsibilities alone
    alone = model.get_cluster_assignments(smoothing=0)
    out.update(score_partition(alone["cluster"].astype(str).to_numpy(), fine, coarse, "own_unsmoothed"))
    out["ece_unsmoothed"] = cluster_calibration(
        alone["confidence"].to_numpy(), alone["cluster"].astype(str).to_numpy(), fine, exclude=["Mis"])["ece"]
    # point responsibilities at the posterior mean, for comparison
    prior = model.module.prior
    with torch.no_grad():
        point = prior.responsibilities(torch.as_tensor(latent)).numpy()
    tree = method.startswith("mixvi_tree")
    if not tree:
        point = point[:, prior.active.numpy()]
    cal = cluster_calibration(point.max(1), own, fine, exclude=["Mis"])
    out["ece_point"] = cal["ece"]
    if tree:
        out.update(tree_levels(model, latent, fine, coarse, seed))
    return out


def tree_levels(model, latent, fine, coarse, seed: int) -> dict:
    """ARI of every tree level, and of a Ward tree of Leiden clusters cut to the same sizes."""
    from scipy.cluster.hierarchy import fcluster, linkage

    from mixvi.metrics import cluster_agreement

    out = {}
    leiden = leiden_scanpy(latent, seed)
    names = np.unique(leiden)
    centres = np.stack([latent[leiden == n].mean(0) for n in names])
    tree = linkage(centres, method="ward")
    for level in model.cluster_levels:
        own = model.get_cluster_assignments(level=level)["cluster"].astype(str).to_numpy()
        k = len(np.unique(own))
        cut = fcluster(tree, t=min(k, len(names)), criterion="maxclust")
        ward = cut[np.searchsorted(names, leiden)]
        for name, truth in (("fine", fine), ("coarse", coarse)):
            out[f"tree_l{level}_{name}_ari"] = cluster_agreement(own, truth, exclude=["Mis"])["ari"]
            out[f"ward_l{level}_{name}_ari"] = cluster_agreement(ward, truth, exclude=["Mis"])["ari"]
        out[f"tree_l{level}_k"] = k
    return out


# ---------------------------------------------------------------------------------- driver
def report() -> None:
    import pandas as pd

    df = load_results(RUNS, HERE / "results.csv")
    if df is None:
        return
    cols = ["own_ari", "own_unsmoothed_ari", "own_ari_coarse", "own_k", "kmeans_ari", "leiden_ari",
            "leiden_k", "own_batch_nmi", "ece", "ece_unsmoothed", "ece_point", "scib_batch_correction",
            "scib_bio_conservation", "scib_total", "train_s"]
    cols = [c for c in cols if c in df]
    mean = df.groupby(["dataset", "method"])[cols].mean()
    sd = df.groupby(["dataset", "method"])[cols].std()
    n = df.groupby(["dataset", "method"]).size()
    table = mean.round(3).astype(str) + " ± " + sd.round(3).astype(str)
    table["seeds"] = n
    print(table.to_string())
    (HERE / "table.md").write_text(table.to_markdown())
    tree = [c for c in df.columns if c.startswith(("tree_l", "ward_l"))]
    if tree:
        runs = df[df["method"] == "mixvi_tree"].set_index("seed")
        t = runs[tree].mean().dropna().round(3)
        print(t.to_string())
        # the target: the tree's best level against the coarse labels, beside the best Ward cut
        best = {f"best {who} level, {name}": runs.filter(regex=rf"^{who}_l\d+_{name}_ari$").max(1)
                for who in ("tree", "ward") for name in ("coarse", "fine")}
        best = pd.DataFrame(best).round(3)
        print(best.to_string())
        (HERE / "tree.md").write_text(t.to_frame("mean over seeds").to_markdown() + "\n\n"
                                      + best.to_markdown() + "\n")
    plot(df)


def plot(df) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = df[df["method"].isin(["mixvi", "mixvi_bb", "multimixvi", "scvi"])]
    panels = [("own_ari", "own clusters"), ("kmeans_ari", "k-means, true K"),
              ("leiden_ari", "Leiden (scanpy defaults)")]
    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        sub = data[data["dataset"] == name]
        methods = list(dict.fromkeys(sub["method"]))
        x = np.arange(len(methods))
        for i, (col, label) in enumerate(panels):
            vals = [sub[sub["method"] == m][col].mean() if col in sub else np.nan for m in methods]
            err = [sub[sub["method"] == m][col].std() if col in sub else 0 for m in methods]
            ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=err, label=label)
        ax.set_xticks(x, methods, rotation=20, fontsize=8)
        ax.set_title(f"{name}: ARI vs labels (Mis excluded)", fontsize=9)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=3, metavar=("DATASET", "METHOD", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated datasets to run")
    p.add_argument("--options", action="store_true",
                   help="the mixture-fitting variants and resolutions (OPTION_JOBS) instead")
    a = p.parse_args()
    if a.one:
        dataset, method, seed = a.one
        save_result(RUNS, a.one, run(dataset, method, int(seed)))
        return
    if not a.report_only:
        wanted = set(a.only.split(",")) if a.only else None
        chosen = OPTION_JOBS if a.options else JOBS
        jobs = [(d, m, s) for s in SEEDS for d, m in chosen if wanted is None or d in wanted]
        run_jobs(Path(__file__), RUNS, jobs, a.parallel)
    report()


if __name__ == "__main__":
    main()
