"""MultiMixVI vs scvi-tools MULTIVI and a BABEL-style baseline on SNARE-seq (paired RNA + ATAC).

Rerun (``runs/*.json``, ``results.csv``, ``results.png``; tables printed for results.md)::

    python benchmarks/multimodal/run_benchmark.py                 # 3 methods x 2 seeds
    python benchmarks/multimodal/run_benchmark.py --ablation      # MultiMixVI variants, seed 0
    python benchmarks/multimodal/run_benchmark.py --subsets       # defaults on 3k / 5k cells
    python benchmarks/multimodal/run_benchmark.py --report-only

Split: a seeded 80/20 train/test split stratified by cell type; every method holds out the
same 10% of the training cells for validation (scvi-tools' split rule for the seed) and stops
early on it, keeping the best epoch: MultiMixVI at its defaults (early stopping on its
validation ELBO, every reconstruction term included, best weights restored), MULTIVI at its
defaults (its own early stopping, patience 50) capped at ``MULTIVI_MAX_EPOCHS`` epochs to fit
the 2-core budget, the BABEL-style baseline (``babel.py``) with patience 10. Test metrics on
the held-out 20% ('Mis' excluded from label scores):

* FOSCTTM and top-1 / top-10 matching between the RNA-only and ATAC-only embeddings;
* label transfer (15-NN vote) from one modality's training embedding to the other's test
  embedding ("query_rna" / "query_atac");
* translation from one modality alone: RNA per-cell / per-gene Pearson of log-normalised
  profiles, peaks AUROC / AUPRC, each beside the mean-profile floor (training mean profile /
  peak frequencies); MULTIVI translates through its own masking (the other modality zeroed);
  MultiMixVI's also without its held-out calibration (``*_uncalibrated``, same run);
* clusters: ARI ('Mis' excluded) of Leiden (scanpy defaults) on the joint test embedding, and
  of MultiMixVI's own mixture clusters (and without their neighbour smoothing,
  ``*_unsmoothed``); cluster/batch NMI of the own clusters;
* MultiMixVI: scIB (scib-metrics, un-scaled) of the joint test embedding, against the PCA of
  the test cells' log-normalised RNA (``--batch-balance``: the batch-balance penalty at
  weight 10 against the defaults and against ``prior="normal"``, 3 seeds);
* cost: training cells x epochs per second (all epochs run, validation included), peak RSS.
"""

from __future__ import annotations

import argparse
import resource
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
MULTIVI_MAX_EPOCHS = 100
SEEDS = (0, 1)
#: MultiMixVI variants of the ablation (model and train arguments)
ABLATION = {
    "default": {},
    "lr_1e-3": {"train": {"plan_kwargs": {"lr": 1e-3}}},
    "cross_weight_2": {"model": {"cross_weight": 2.0}},
    "alignment_1": {"model": {"alignment_weight": 1.0}},
    "alignment_0.05": {"model": {"alignment_weight": 0.05}},
    "n_latent_32": {"model": {"n_latent": 32}},
    "poisson_atac": {"model": {"atac_likelihood": "poisson"}},
    "no_early_stopping_200": {"train": {"early_stopping": False, "max_epochs": 200}},
    # 60 epochs kept whole: the refits under the shared mixture stay in the model (with early
    # stopping the restored epoch is the mixture's first fit; benchmarks/clustering/results.md)
    "no_early_stopping_60": {"train": {"early_stopping": False, "max_epochs": 60}},
    # scvi-tools' L2 (1e-6, the previous default) instead of MultiMixVI's 1e-2 on its networks.
    # Run files without an entry here are records of the previous code (commit 8d47f99; the
    # best epoch could come from the mixture's fit on): "previous_defaults", "weight_decay_only"
    # (that rule with weight decay 1e-2), "previous_normal_prior", "previous_batch_balance_*",
    # "previous_subset_*"
    "weight_decay_1e-6": {"train": {"plan_kwargs": {"weight_decay": 1e-6}}},
    # the defaults on stratified subsets of SNARE-seq (``--subsets``, seeds 0-1): does the
    # training schedule hold at 3,000 and 5,000 cells? (2,400 / 4,000 of them train)
    "subset_3000": {"cells": 3000},
    "subset_5000": {"cells": 5000},
    "mixture_posterior": {"model": {"posterior": "mixture"}},
    # each refit re-places every component on the current communities (the previous default;
    # the default adds a component only for a separated community without one)
    "reread_replace": {"train": {"plan_kwargs": {"reread_clusters": "replace"}}},
    # ``--batch-balance`` (with scIB of the joint embedding; weight 0 is the defaults)
    "batch_balance_0": {},
    "batch_balance_10": {"model": {"batch_balance_weight": 10.0}},
    "normal_prior": {"model": {"prior": "normal"}},  # scVI's N(0, I): no mixture, no clusters
}
#: ``--batch-balance``: the penalty against the defaults and against the normal prior, 3 seeds,
#: scIB of the joint embedding
BALANCE_JOBS = [("multimixvi", v, s) for v in ("batch_balance_0", "batch_balance_10",
                                                "normal_prior") for s in (0, 1, 2)]


def split(mdata, seed: int = 0):
    from sklearn.model_selection import train_test_split

    idx = np.arange(mdata.n_obs)
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=mdata.obs["cell_type"])
    return np.sort(tr), np.sort(te)


def validation_split(n: int, seed: int, train_size: float = 0.9):
    """scvi-tools' DataSplitter rule: permutation by ``RandomState(seed)``, validation first."""
    from math import ceil

    n_train = ceil(train_size * n)
    perm = np.random.RandomState(seed=seed).permutation(n)
    return np.sort(perm[n - n_train:]), np.sort(perm[: n - n_train])


def zero_modality(mdata, mod: str):
    import scipy.sparse as sp

    out = mdata.copy()
    z = sp.csr_matrix(out[mod].shape, dtype=np.float32)
    out[mod].X = z
    out[mod].layers["counts"] = z.copy()
    return out


def evaluate(zr_tr, za_tr, zr, za, joint, labels_tr, labels, rna_pred, atac_pred, mtr, mte,
             clusters=None, seed=0):
    import scanpy as sc
    from anndata import AnnData

    from mixvi import metrics as M

    res = {"foscttm": M.foscttm(zr, za)}
    acc = M.matching_accuracy(zr, za, k=(1, 10))
    res["top1"], res["top10"] = acc[1], acc[10]
    res["label_transfer_query_rna"] = M.label_transfer(za_tr, labels_tr, zr, labels, exclude=["Mis"])["accuracy"]
    res["label_transfer_query_atac"] = M.label_transfer(zr_tr, labels_tr, za, labels, exclude=["Mis"])["accuracy"]
    obs_rna, obs_atac = mte["rna"].layers["counts"], mte["atac"].layers["counts"]
    r = M.rna_translation_metrics(rna_pred, obs_rna)
    floor_r = M.rna_translation_metrics(M.mean_profile_baseline(mtr["rna"].layers["counts"], mte.n_obs), obs_rna)
    a = M.atac_translation_metrics(atac_pred, obs_atac)
    floor_a = M.atac_translation_metrics(
        M.mean_profile_baseline(mtr["atac"].layers["counts"], mte.n_obs, modality="atac"), obs_atac
    )
    res.update(
        rna_pearson_cell=r["pearson_cell"], rna_pearson_gene=r["pearson_gene"],
        rna_pearson_cell_floor=floor_r["pearson_cell"], atac_auroc=a["auroc"], atac_auprc=a["auprc"],
        atac_auroc_floor=floor_a["auroc"], atac_auprc_floor=floor_a["auprc"],
        atac_calibration_error=a["calibration_error"],
        atac_calibration_error_floor=floor_a["calibration_error"],
    )
    ad = AnnData(np.zeros((len(joint), 1), dtype=np.float32), obsm={"X": joint})
    sc.pp.neighbors(ad, use_rep="X", random_state=seed)
    sc.tl.leiden(ad, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2)
    c = M.cluster_agreement(ad.obs["leiden"].to_numpy(), labels, exclude=["Mis"])
    res["leiden_ari"], res["leiden_nmi"] = c["ari"], c["nmi"]
    res["leiden_k"] = int(ad.obs["leiden"].nunique())  # Leiden's K on the same latent
    if clusters is not None:
        c = M.cluster_agreement(clusters, labels, exclude=["Mis"])
        res["mixture_ari"], res["mixture_nmi"] = c["ari"], c["nmi"]
        res["mixture_k"] = len(np.unique(clusters))
    return res


def uncalibrated_translation(model, mtr, mte) -> dict:
    """MultiMixVI's translation scores without the held-out calibration (the decoders as
    trained), and the fitted calibration: the ablation of that step, from the same run."""
    from mixvi import metrics as M

    if not model.module.translation_calibration.fitted:
        return {}
    cal = model.module.translation_calibration
    r = M.rna_translation_metrics(model.predict_rna_from_atac(mte, calibrated=False).X,
                                  mte["rna"].layers["counts"])
    a = M.atac_translation_metrics(model.predict_atac_from_rna(mte, calibrated=False).X,
                                   mte["atac"].layers["counts"])
    return {"rna_pearson_cell_uncalibrated": r["pearson_cell"],
            "rna_pearson_gene_uncalibrated": r["pearson_gene"],
            "atac_auroc_uncalibrated": a["auroc"], "atac_auprc_uncalibrated": a["auprc"],
            "rna_shrinkage": float(cal.rna_shrinkage), "peak_weights": cal.peak_weights.tolist()}


def load_split(seed: int, n_cells: int | None = None):
    """A run's start: quiet logs, 1 torch thread, the seed, and SNARE-seq split into training
    and test MuData (copies) as :func:`split` draws them; ``n_cells`` first draws a subset
    stratified by cell type (``random_state=100 + seed``)."""
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import scvi
    import torch

    import mixvi

    torch.set_num_threads(1)
    scvi.settings.seed = seed
    md = mixvi.datasets.snareseq_mouse_cortex()
    if n_cells is not None:
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(np.arange(md.n_obs), train_size=n_cells,
                                   random_state=100 + seed, stratify=md.obs["cell_type"])
        md = md[np.sort(keep)].copy()
    tr, te = split(md, seed)
    return md[tr].copy(), md[te].copy()


def run_one(method: str, variant: str, seed: int) -> dict:
    from sklearn.metrics import normalized_mutual_info_score

    import mixvi
    from mixvi import metrics as M

    mtr, mte = load_split(seed, ABLATION.get(variant, {}).get("cells"))
    labels_tr, labels = mtr.obs["cell_type"].to_numpy(), mte.obs["cell_type"].to_numpy()
    clusters, extra = None, {}
    t = time.time()
    if method == "multimixvi":
        cfg = ABLATION[variant]
        mixvi.MultiMixVI.setup_mudata(mtr, batch_key="batch")
        model = mixvi.MultiMixVI(mtr, **cfg.get("model", {}))
        model.train(enable_progress_bar=False, **cfg.get("train", {}))
        fit = time.time() - t
        epochs = len(model.history["elbo_train"])
        mixvi.MultiMixVI.setup_mudata(mte, batch_key="batch")
        g = model.get_latent_representation
        zr_tr, za_tr = g(mtr, modality="rna"), g(mtr, modality="atac")
        zr, za, joint = g(mte, modality="rna"), g(mte, modality="atac"), g(mte)
        rna_pred = model.predict_rna_from_atac(mte).X
        atac_pred = model.predict_atac_from_rna(mte).X
        if model.module.is_mixture:  # prior="normal" has no clusters
            clusters = model.get_cluster_assignments(mte)["cluster"].to_numpy()
            alone = model.get_cluster_assignments(mte, smoothing=0)["cluster"].to_numpy()
            extra["mixture_ari_unsmoothed"] = M.cluster_agreement(
                alone, labels, exclude=["Mis"])["ari"]
            extra["n_components_active"] = int(model.module.prior.n_active)
            extra["mixture_batch_nmi"] = normalized_mutual_info_score(mte.obs["batch"], clusters)
        rna = mte["rna"].copy()
        rna.obs = mte.obs[["batch", "cell_type"]].copy()
        extra.update(scib_scores(rna, joint, "X_multimixvi"))
        extra.update(uncalibrated_translation(model, mtr, mte))
    elif method == "multivi":
        from scvi.model import MULTIVI

        mods = {"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"}
        MULTIVI.setup_mudata(mtr, rna_layer="counts", atac_layer="counts", batch_key="batch", modalities=mods)
        model = MULTIVI(mtr, n_genes=mtr["rna"].n_vars, n_regions=mtr["atac"].n_vars)
        model.train(max_epochs=MULTIVI_MAX_EPOCHS, enable_progress_bar=False)
        fit = time.time() - t
        epochs = len(model.history["elbo_train"])
        MULTIVI.setup_mudata(mte, rna_layer="counts", atac_layer="counts", batch_key="batch", modalities=mods)
        g = model.get_latent_representation
        zr_tr, za_tr = g(mtr, modality="expression"), g(mtr, modality="accessibility")
        zr, za, joint = g(mte, modality="expression"), g(mte, modality="accessibility"), g(mte)
        only_atac, only_rna = zero_modality(mte, "rna"), zero_modality(mte, "atac")
        rna_pred = model.get_normalized_expression(only_atac, return_numpy=True)
        atac_pred = np.asarray(model.get_normalized_accessibility(only_rna, return_numpy=True))
    else:
        sys.path.insert(0, str(HERE))
        import babel

        rna, atac = mtr["rna"].layers["counts"], mtr["atac"].layers["counts"]
        fit_idx, val_idx = validation_split(mtr.n_obs, seed)
        model, epochs = babel.fit(rna, atac, fit_idx, val_idx, seed=seed)
        fit = time.time() - t
        zr_tr, _ = babel.predict(model, rna=rna)
        za_tr, _ = babel.predict(model, atac=atac)
        zr, atac_pred = babel.predict(model, rna=mte["rna"].layers["counts"])
        za, rna_pred = babel.predict(model, atac=mte["atac"].layers["counts"])
        joint = (zr + za) / 2
    res = evaluate(zr_tr, za_tr, zr, za, joint, labels_tr, labels, rna_pred, atac_pred, mtr, mte,
                   clusters, seed)
    res.update(
        method=method, variant=variant, seed=seed, epochs=epochs, n_train=mtr.n_obs, n_test=mte.n_obs,
        fit_s=fit, cells_epochs_per_s=mtr.n_obs * epochs / fit,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra,
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=3, metavar=("METHOD", "VARIANT", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--ablation", action="store_true", help="MultiMixVI variants, seed 0")
    p.add_argument("--batch-balance", action="store_true",
                   help="MultiMixVI defaults, batch_balance_weight=10 and prior='normal', seeds 0-2, "
                        "with scIB")
    p.add_argument("--subsets", action="store_true",
                   help="MultiMixVI defaults on 3,000- and 5,000-cell subsets, seeds 0-1")
    p.add_argument("--methods", default="multimixvi,multivi,babel")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.one:
        method, variant, seed = a.one
        save_result(RUNS, a.one, run_one(method, variant, int(seed)))
        return
    if not a.report_only:
        if a.ablation:
            jobs = [("multimixvi", v, 0) for v in ABLATION if not v.startswith("subset_")]
        elif a.batch_balance:
            jobs = BALANCE_JOBS
        elif a.subsets:
            jobs = [("multimixvi", v, s) for v in ABLATION if v.startswith("subset_")
                    for s in (0, 1)]
        else:
            jobs = [(m, "default", s) for s in SEEDS for m in a.methods.split(",")]
        run_jobs(Path(__file__), RUNS, jobs, a.parallel)
    summarize()


COLUMNS = ["epochs", "foscttm", "label_transfer_query_atac", "label_transfer_query_rna",
           "rna_pearson_cell", "rna_pearson_cell_uncalibrated", "rna_pearson_cell_floor",
           "rna_pearson_gene", "rna_pearson_gene_uncalibrated", "atac_auroc",
           "atac_auroc_uncalibrated", "atac_auroc_floor", "atac_auprc", "atac_auprc_uncalibrated",
           "atac_auprc_floor", "atac_calibration_error", "rna_shrinkage",
           "leiden_ari", "mixture_ari", "mixture_ari_unsmoothed", "mixture_k", "mixture_batch_nmi",
           "scib_batch_correction", "scib_bio_conservation", "scib_total", "cells_epochs_per_s",
           "peak_rss_mb"]


def summarize() -> None:
    df = load_results(RUNS, HERE / "results.csv")
    if df is None:
        return
    cols = [c for c in COLUMNS if c in df]
    main_runs = df[df["variant"] == "default"]
    mean = main_runs.groupby("method")[cols].mean()
    sd = main_runs.groupby("method")[cols].std()
    print("methods (mean over seeds; sd):")
    print((mean.round(3).astype(str) + " (" + sd.round(3).astype(str) + ")").T.to_string())
    abl = df[(df["method"] == "multimixvi") & (df["seed"] == 0)].set_index("variant")[cols]
    print("\nablation (MultiMixVI, seed 0):")
    print(abl.round(3).T.to_string())
    plot(mean)


def plot(df) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("foscttm", "FOSCTTM (lower better)", None),
        ("label_transfer_query_atac", "label transfer, ATAC query", None),
        ("rna_pearson_gene", "RNA from ATAC, per-gene r", None),
        ("rna_pearson_cell", "RNA from ATAC, per-cell r", "rna_pearson_cell_floor"),
        ("atac_auroc", "peaks from RNA, AUROC", "atac_auroc_floor"),
        ("leiden_ari", "Leiden ARI (joint)", None),
        ("cells_epochs_per_s", "train cells x epochs / s", None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (col, title, floor) in zip(axes, panels):
        ax.bar(df.index, df[col], color=["tab:blue", "tab:orange", "tab:green"][: len(df)])
        if floor:
            ax.axhline(df[floor].iloc[0], color="k", ls="--", lw=1, label="mean-profile floor")
            ax.legend(fontsize=6)
            lo = min(df[col].min(), df[floor].iloc[0])
            ax.set_ylim(lo - 0.05, max(df[col].max(), df[floor].iloc[0]) + 0.02)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)


if __name__ == "__main__":
    main()
