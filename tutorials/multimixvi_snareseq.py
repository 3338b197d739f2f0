"""MultiMixVI on SNARE-seq mouse cortex: one latent space for RNA and ATAC, and translation.

Run:  python tutorials/multimixvi_snareseq.py [--epochs 30]   (figures -> tutorials/figures/)

The shipped data (``mixvi.datasets.snareseq_mouse_cortex()``) are 10,309 adult mouse
cortex cells with RNA (1,677 genes) and ATAC (25,734 peaks) measured in the same cell
(Chen et al. 2019), 12 sub-libraries as batches, 23 cell types. ``Mis`` (1,119 cells) is
the paper's "miscellaneous" cluster, not a cell type: we leave it out of label scores.

We hold out 20% of the cells (stratified by cell type) to show translation on cells the
model never saw, as one would for new RNA-only or ATAC-only cells.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import scvi
import torch
from anndata import AnnData
from sklearn.model_selection import train_test_split

import mixvi
from mixvi import metrics as M

warnings.filterwarnings("ignore")
FIG = Path(__file__).resolve().parent / "figures"
FIG.mkdir(exist_ok=True)
sc.settings.figdir = FIG

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=30)
args = p.parse_args()
torch.set_num_threads(1)  # the 2-core machine is shared; one thread was faster here
scvi.settings.seed = 0

# 1. data and split ------------------------------------------------------------------------
mdata = mixvi.datasets.snareseq_mouse_cortex()
idx = np.arange(mdata.n_obs)
tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=mdata.obs["cell_type"])
train, test = mdata[np.sort(tr)].copy(), mdata[np.sort(te)].copy()

# 2. setup (modality names are arguments, with defaults), model, training ---------------------
mixvi.MultiMixVI.setup_mudata(
    train, rna_layer="counts", atac_layer="counts", batch_key="batch",
    modalities={"rna": "rna", "atac": "atac"},
)
model = mixvi.MultiMixVI(train, n_latent=16, n_components=20, prior="gmm")
print(model)
model.train(max_epochs=args.epochs, train_size=1.0, enable_progress_bar=False)

# 3. joint embedding, clusters, per-modality latents -> MuData -------------------------------
model.write_to_mudata(train)  # obsm["X_multimixvi"], obs["multimixvi_cluster"], mod[...].obsm
# a light AnnData for plotting (scanpy 1.11's kNN failed on the MuData's modality AnnData)
rna = AnnData(np.zeros((train.n_obs, 1), np.float32),
              obs=train.obs[["cell_type", "batch", "multimixvi_cluster"]].copy())
rna.obsm["X_multimixvi"] = train.obsm["X_multimixvi"]
sc.pp.neighbors(rna, use_rep="X_multimixvi")
sc.tl.umap(rna)
sc.pl.umap(rna, color=["cell_type", "multimixvi_cluster", "batch"], ncols=3, wspace=0.45,
           save="_multimixvi_joint.png", show=False)
print("mixture clusters vs cell types (train, Mis excluded):",
      M.cluster_agreement(train.obs["multimixvi_cluster"], train.obs["cell_type"], exclude=["Mis"]))

# both modalities' latents of the same cells in one picture, coloured by modality
zr, za = train["rna"].obsm["X_multimixvi_rna"], train["atac"].obsm["X_multimixvi_atac"]
both = AnnData(np.zeros((2 * len(zr), 1), np.float32))
both.obsm["X_latent"] = np.vstack([zr, za])
both.obs["modality"] = ["RNA"] * len(zr) + ["ATAC"] * len(za)
both.obs["cell_type"] = np.concatenate([train.obs["cell_type"].to_numpy()] * 2)
sc.pp.neighbors(both, use_rep="X_latent")
sc.tl.umap(both)
sc.pl.umap(both, color=["modality", "cell_type"], wspace=0.45, save="_multimixvi_modality.png", show=False)

# RNA-only and ATAC-only embeddings of the same (held-out) cells, side by side
mixvi.MultiMixVI.setup_mudata(test, batch_key="batch")
zr_te = model.get_latent_representation(test, modality="rna")
za_te = model.get_latent_representation(test, modality="atac")
print(f"held-out FOSCTTM (RNA-only vs ATAC-only): {M.foscttm(zr_te, za_te):.3f} (chance 0.5)")
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
for ax, z, name in zip(axes, (zr_te, za_te), ("RNA encoder only", "ATAC encoder only")):
    a = AnnData(np.zeros((len(z), 1), np.float32), obs=test.obs[["cell_type"]].copy())
    a.obsm["X_latent"] = z
    sc.pp.neighbors(a, use_rep="X_latent")
    sc.tl.umap(a)
    sc.pl.umap(a, color="cell_type", ax=ax, show=False, title=f"{name} (held-out cells)",
               legend_loc="on data" if name.startswith("ATAC") else "right margin", legend_fontsize=6)
fig.tight_layout()
fig.savefig(FIG / "multimixvi_rna_vs_atac_only.png", dpi=120)

# 4. translation on held-out cells -------------------------------------------------------------
rna_pred = model.predict_rna_from_atac(test["atac"])  # AnnData, cells x genes, counts per 1e4
atac_pred = model.predict_atac_from_rna(test["rna"])  # AnnData, cells x peaks, P(open)
obs_rna, obs_atac = test["rna"].layers["counts"], test["atac"].layers["counts"]
r = M.rna_translation_metrics(rna_pred.X, obs_rna)
r0 = M.rna_translation_metrics(M.mean_profile_baseline(train["rna"].layers["counts"], test.n_obs), obs_rna)
a = M.atac_translation_metrics(atac_pred.X, obs_atac)
a0 = M.atac_translation_metrics(
    M.mean_profile_baseline(train["atac"].layers["counts"], test.n_obs, modality="atac"), obs_atac
)
print(f"RNA from ATAC: per-cell r {r['pearson_cell']:.3f} (mean-profile floor {r0['pearson_cell']:.3f}), "
      f"per-gene r {r['pearson_gene']:.3f}")
print(f"peaks from RNA: AUROC {a['auroc']:.3f} (floor {a0['auroc']:.3f}), AUPRC {a['auprc']:.4f} "
      f"(floor {a0['auprc']:.4f})")

# predicted (from ATAC alone) vs observed marker expression, per cell type
markers = ["Sst", "Vip", "Pvalb", "Mbp"]
obs_norm = test["rna"].copy()
obs_norm.X = obs_norm.layers["counts"].copy()
sc.pp.normalize_total(obs_norm, target_sum=1e4)
sc.pp.log1p(obs_norm)
pred_log = np.log1p(rna_pred[:, markers].X)
types = test.obs["cell_type"].astype(str).to_numpy()
fig, axes = plt.subplots(1, len(markers), figsize=(4 * len(markers), 3.8))
for ax, g, j in zip(axes, markers, range(len(markers))):
    o = np.asarray(obs_norm[:, g].X.todense()).ravel() if hasattr(obs_norm.X, "todense") else obs_norm[:, g].X.ravel()
    ts = np.unique(types)
    mo = np.array([o[types == t].mean() for t in ts])
    mp = np.array([pred_log[types == t, j].mean() for t in ts])
    ax.scatter(mo, mp, s=15)
    for t, x, y in zip(ts, mo, mp):
        if x > 0.5 * mo.max() or y > 0.5 * mp.max():
            ax.annotate(t, (x, y), fontsize=7)
    rr = np.corrcoef(o, pred_log[:, j])[0, 1]
    ax.set_title(f"{g}: per-cell r = {rr:.2f}", fontsize=9)
    ax.set_xlabel("observed log-norm (cell-type mean)")
    ax.set_ylabel("predicted from ATAC")
fig.suptitle("RNA translated from ATAC alone, held-out cells")
fig.tight_layout()
fig.savefig(FIG / "multimixvi_translation_markers.png", dpi=120)

# 5. save / load ------------------------------------------------------------------------------
model.save(FIG.parent / "_multimixvi_snareseq_model", overwrite=True)
loaded = mixvi.MultiMixVI.load(FIG.parent / "_multimixvi_snareseq_model", adata=train)
assert np.allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-5)
print("figures in", FIG)
