"""MultiMixVI vs scvi-tools MULTIVI on the shipped SNARE-seq mouse cortex (paired RNA + ATAC).

Rerun:  python benchmarks/multimodal/run_benchmark.py --epochs 25 --threads 1
Each method is trained in its own subprocess (so peak RSS is per method) on the same seeded
80/20 split stratified by cell type, same epochs, batch size 128, all training cells
(``train_size=1.0``). Test metrics use the held-out 20%:

* FOSCTTM / top-1 / top-10 matching between the RNA-only and ATAC-only embeddings;
* label transfer (15-NN vote): query = a test modality's embedding, reference = the
  *other* modality's embedding of the training cells ("query_rna" / "query_atac"); 'Mis'
  excluded;
* translation: RNA predicted from ATAC alone (per-cell / per-gene Pearson of log-normalised
  profiles) and peaks predicted from RNA alone (AUROC), each beside the mean-profile floor;
  MULTIVI translates through its own masking: the other modality's rows are zeroed;
* clusters: ARI / NMI ('Mis' excluded) of Leiden (resolution 1) on the joint test embedding
  for both, and of MultiMixVI's mixture components;
* cost: training cells x epochs per second, peak resident memory of the process.

Writes results.csv, results.md-ready numbers (printed) and figures into this folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def split(mdata, seed: int = 0):
    from sklearn.model_selection import train_test_split

    idx = np.arange(mdata.n_obs)
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=mdata.obs["cell_type"])
    return np.sort(tr), np.sort(te)


def zero_modality(mdata, mod: str):
    import scipy.sparse as sp

    out = mdata.copy()
    z = sp.csr_matrix(out[mod].shape, dtype=np.float32)
    out[mod].X = z
    out[mod].layers["counts"] = z.copy()
    return out


def evaluate(zr_tr, za_tr, zr, za, joint, labels_tr, labels, rna_pred, atac_pred, mtr, mte, clusters=None):
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
    )
    ad = AnnData(np.zeros((len(joint), 1), dtype=np.float32), obsm={"X": joint})
    sc.pp.neighbors(ad, use_rep="X", random_state=0)
    sc.tl.leiden(ad, resolution=1.0, random_state=0, flavor="igraph", n_iterations=2)
    c = M.cluster_agreement(ad.obs["leiden"].to_numpy(), labels, exclude=["Mis"])
    res["leiden_ari"], res["leiden_nmi"] = c["ari"], c["nmi"]
    if clusters is not None:
        c = M.cluster_agreement(clusters, labels, exclude=["Mis"])
        res["mixture_ari"], res["mixture_nmi"] = c["ari"], c["nmi"]
    return res


def run_one(method: str, epochs: int, threads: int, out: Path, seed: int) -> None:
    warnings.filterwarnings("ignore")
    import torch
    import scvi
    import mixvi

    torch.set_num_threads(threads)
    scvi.settings.seed = seed
    md = mixvi.datasets.snareseq_mouse_cortex()
    tr, te = split(md, seed)
    mtr, mte = md[tr].copy(), md[te].copy()
    labels_tr, labels = mtr.obs["cell_type"].to_numpy(), mte.obs["cell_type"].to_numpy()
    if method == "multimixvi":
        mixvi.MultiMixVI.setup_mudata(mtr, batch_key="batch")
        model = mixvi.MultiMixVI(mtr, n_components=20)
        t = time.time()
        model.train(max_epochs=epochs, train_size=1.0, enable_progress_bar=False)
        fit = time.time() - t
        mixvi.MultiMixVI.setup_mudata(mte, batch_key="batch")
        g = model.get_latent_representation
        zr_tr, za_tr = g(mtr, modality="rna"), g(mtr, modality="atac")
        zr, za, joint = g(mte, modality="rna"), g(mte, modality="atac"), g(mte)
        rna_pred = model.predict_rna_from_atac(mte["atac"]).X
        atac_pred = model.predict_atac_from_rna(mte["rna"]).X
        clusters = model.get_cluster_assignments(mte)["cluster"].to_numpy()
        np.save(out.with_suffix(".joint.npy"), joint)
        np.save(out.with_suffix(".clusters.npy"), clusters.astype(str))
    else:
        from scvi.model import MULTIVI

        mods = {"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"}
        MULTIVI.setup_mudata(mtr, rna_layer="counts", atac_layer="counts", batch_key="batch", modalities=mods)
        model = MULTIVI(mtr, n_genes=mtr["rna"].n_vars, n_regions=mtr["atac"].n_vars)
        t = time.time()
        model.train(max_epochs=epochs, train_size=1.0, enable_progress_bar=False, batch_size=128, early_stopping=False)
        fit = time.time() - t
        MULTIVI.setup_mudata(mte, rna_layer="counts", atac_layer="counts", batch_key="batch", modalities=mods)
        g = model.get_latent_representation
        zr_tr, za_tr = g(mtr, modality="expression"), g(mtr, modality="accessibility")
        zr, za, joint = g(mte, modality="expression"), g(mte, modality="accessibility"), g(mte)
        only_atac, only_rna = zero_modality(mte, "rna"), zero_modality(mte, "atac")
        rna_pred = model.get_normalized_expression(only_atac, return_numpy=True)
        atac_pred = model.get_normalized_accessibility(only_rna, return_numpy=True)
        atac_pred = np.asarray(atac_pred)
        clusters = None
    res = evaluate(zr_tr, za_tr, zr, za, joint, labels_tr, labels, rna_pred, atac_pred, mtr, mte, clusters)
    res.update(
        method=method, epochs=epochs, threads=threads, n_train=len(tr), n_test=len(te), fit_s=fit,
        cells_epochs_per_s=len(tr) * epochs / fit,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    out.write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="multimixvi,multivi")
    p.add_argument("--method", default=None, help=argparse.SUPPRESS)
    p.add_argument("--parallel", action="store_true", help="run the methods at the same time")
    a = p.parse_args()
    if a.method:
        run_one(a.method, a.epochs, a.threads, HERE / f"_{a.method}.json", a.seed)
        return
    cmds = [
        [sys.executable, __file__, "--method", m, "--epochs", str(a.epochs), "--threads", str(a.threads), "--seed", str(a.seed)]
        for m in a.methods.split(",")
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    if a.parallel:
        procs = [subprocess.Popen(c, env=env) for c in cmds]
        assert all(pr.wait() == 0 for pr in procs)
    else:
        for c in cmds:
            subprocess.run(c, check=True, env=env)
    summarize(a.methods.split(","))


def summarize(methods) -> None:
    import pandas as pd

    rows = [json.loads((HERE / f"_{m}.json").read_text()) for m in methods]
    df = pd.DataFrame(rows).set_index("method")
    df.to_csv(HERE / "results.csv")
    print(df.T.to_string())
    plot(df)


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
