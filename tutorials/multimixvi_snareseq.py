"""MultiMixVI on SNARE-seq mouse cortex: one latent space for RNA and ATAC, and translation.

The shipped data (``mixvi.datasets.snareseq_mouse_cortex()``) are 10,309 adult mouse
cortex cells with RNA (1,677 genes) and ATAC (25,734 peaks) measured in the same cell
(Chen et al. 2019), 12 sub-libraries as batches, 23 cell types. ``Mis`` (1,119 cells) is
the paper's "miscellaneous" cluster, not a cell type: we leave it out of label scores.

We hold out 20% of the cells (stratified by cell type) to show alignment and translation
on cells the model never saw, as one would for new RNA-only or ATAC-only cells. The script

1. trains MultiMixVI (RNA + ATAC encoders, one shared Gaussian-mixture prior) on the 80%;
2. embeds the joint latent (UMAP by cell type, mixture cluster, batch) and the two
   modalities' own latents in one UMAP (by modality, cell type, mixture cluster);
3. encodes the held-out cells with the RNA encoder alone and the ATAC encoder alone and
   draws both in one shared UMAP, side by side (FOSCTTM, label transfer);
4. translates held-out ATAC into RNA and RNA into peaks and scores both against the
   mean-training-profile floor (marker genes Sst, Vip, Pvalb, Mbp);
5. saves / reloads the model.

Run from the repository root::

    python tutorials/multimixvi_snareseq.py                # 30 epochs
    python tutorials/multimixvi_snareseq.py --epochs 5     # smoke run
    python tutorials/multimixvi_snareseq.py --reuse        # redraw with the saved model

Figures go to ``tutorials/figures/snare_*.png``; the model to ``out/multimixvi_snareseq_model``
(git-ignored).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scanpy as sc  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402
from anndata import AnnData  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsTransformer  # noqa: E402

import mixvi  # noqa: E402
from mixvi import metrics as M  # noqa: E402

ROOT = Path(__file__).resolve().parent
FIGURES = ROOT / "figures"
MODEL_DIR = ROOT.parent / "out" / "multimixvi_snareseq_model"
MARKERS = {"Sst": "InS", "Vip": "InV", "Pvalb": "InP", "Mbp": "OliM"}  # gene: cell type expressing it
# Kelly's colours of maximum contrast (without white and grey) and three more, the most distinct
# first: scanpy's default for 23 categories is a set of pastels too alike to tell types apart
DISTINCT = ["#1F77B4", "#BE0032", "#F38400", "#008856", "#875692", "#C2B280", "#A1CAF1", "#E68FAC",
            "#F3C300", "#882D17", "#8DB600", "#604E97", "#17BECF", "#654522", "#F99379", "#B3446C",
            "#DCD300", "#0067A5", "#E25822", "#2B3D26", "#F6A600", "#222222"]
MIS_COLOR = "#A9A9A9"  # "Mis" is not a cell type: grey
BACKGROUND = "#EBEBEB"

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30, help="training epochs (30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true",
                   help="load the model saved by an earlier run (--model-dir) instead of training")
    p.add_argument("--model-dir", type=Path, default=MODEL_DIR, help=f"where the model is saved ({MODEL_DIR})")
    p.add_argument("--figdir", type=Path, default=FIGURES)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: the 2-core machine is shared; one thread was faster here)")
    return p.parse_args(argv)


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sc.settings.verbosity = 0


class ExactKNN(KNeighborsTransformer):
    """sklearn's exact kNN graph, returned as ``csr_matrix``.

    scanpy 1.11 reads the kNN graph with ``.getnnz``, which scipy >= 1.17's ``csr_array``
    (what sklearn >= 1.9 and pynndescent return) no longer has, so ``sc.pp.neighbors`` fails
    on more than 4,096 cells in this environment. Exact kNN of ~20k cells in 16 dimensions
    takes seconds.
    """

    def fit_transform(self, X, y=None):
        return sp.csr_matrix(super().fit_transform(X))

    def transform(self, X):
        return sp.csr_matrix(super().transform(X))


def umap_of(z: np.ndarray, obs=None) -> AnnData:
    """A light AnnData holding ``z`` (shape ``(n_cells, n_latent)``) and a UMAP of it."""
    a = AnnData(np.zeros((len(z), 1), np.float32), obs=obs)
    a.obsm["X_latent"] = np.asarray(z, dtype=np.float32)
    sc.pp.neighbors(a, use_rep="X_latent", n_neighbors=15, random_state=0,
                    transformer=ExactKNN(n_neighbors=15, mode="distance"))
    sc.tl.umap(a, random_state=0)
    return a


def panels(a: AnnData, colors: list[str], titles: list[str], path: Path, palettes=None) -> None:
    """One UMAP panel per colour, each with its legend in its own right margin."""
    fig, axes = plt.subplots(1, len(colors), figsize=(6.3 * len(colors), 5), layout="constrained")
    for ax, color, title in zip(axes, colors, titles):
        sc.pl.umap(a, color=color, ax=ax, show=False, frameon=False, title=title, size=6,
                   legend_fontsize=7, palette=(palettes or {}).get(color))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def type_palette(labels) -> dict[str, str]:
    """A colour per cell type, the most distinct colours for the largest types; ``Mis`` grey."""
    counts = labels.astype(str).value_counts()
    others = iter(DISTINCT * 2)
    return {t: MIS_COLOR if t == "Mis" else next(others) for t in counts.index}


def cell_type_colors(a: AnnData, palette: dict[str, str]) -> None:
    """Set ``a.uns["cell_type_colors"]`` from ``palette`` (same colours in every figure)."""
    a.uns["cell_type_colors"] = [palette[c] for c in a.obs["cell_type"].cat.categories]


def log_norm(X) -> np.ndarray:
    """Dense log1p(counts per 10k)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    return np.log1p(X / np.clip(X.sum(1, keepdims=True), 1, None) * 1e4)


def per_cell_pearson(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Pearson r across genes of every cell (NaN for a constant row)."""
    p = pred - pred.mean(1, keepdims=True)
    o = obs - obs.mean(1, keepdims=True)
    den = np.sqrt((p**2).sum(1) * (o**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * o).sum(1) / den, np.nan)


def per_cell_auroc(scores: np.ndarray, observed) -> np.ndarray:
    """AUROC across peaks of every cell, observed peaks binarised (NaN: no open peak).

    Rank-sum (Mann-Whitney) form with average ranks for ties; ``scores`` ``(n_cells, n_peaks)``
    or one row ``(n_peaks,)`` shared by every cell (the mean-profile floor).
    """
    from scipy.stats import rankdata

    observed = sp.csr_matrix(observed)
    n_peaks = observed.shape[1]
    shared = rankdata(scores) if scores.ndim == 1 else None
    out = np.full(observed.shape[0], np.nan)
    for i in range(observed.shape[0]):
        row = observed.indices[observed.indptr[i] : observed.indptr[i + 1]]
        row = row[observed.data[observed.indptr[i] : observed.indptr[i + 1]] > 0]
        n_pos = len(row)
        if 0 < n_pos < n_peaks:
            ranks = shared if shared is not None else rankdata(scores[i])
            out[i] = (ranks[row].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n_peaks - n_pos))
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    quiet()
    torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    figdir = args.figdir
    figdir.mkdir(parents=True, exist_ok=True)

    # 1. data and split ------------------------------------------------------------------------
    mdata = mixvi.datasets.snareseq_mouse_cortex()
    idx = np.arange(mdata.n_obs)
    tr, te = train_test_split(idx, test_size=0.2, random_state=args.seed,
                              stratify=mdata.obs["cell_type"])
    train, test = mdata[np.sort(tr)].copy(), mdata[np.sort(te)].copy()
    palette = type_palette(mdata.obs["cell_type"])
    print(f"SNARE-seq: {mdata.n_obs} cells, {mdata['rna'].n_vars} genes, {mdata['atac'].n_vars} "
          f"peaks; {train.n_obs} training / {test.n_obs} held-out cells")

    # 2. setup (modality names are arguments, with defaults), model, training -----------------
    mixvi.MultiMixVI.setup_mudata(
        train, rna_layer="counts", atac_layer="counts", batch_key="batch",
        modalities={"rna": "rna", "atac": "atac"},
    )
    if args.reuse and args.model_dir.exists():
        model = mixvi.MultiMixVI.load(args.model_dir, adata=train)
        print(f"loaded {args.model_dir} ({len(model.history['elbo_train'])} epochs)")
    else:
        model = mixvi.MultiMixVI(train, n_latent=16, n_components=20, prior="gmm")
        print(model._model_summary_string)
        start = time.perf_counter()
        model.train(max_epochs=args.epochs, train_size=1.0, enable_progress_bar=False,
                    enable_model_summary=False)
        fit = time.perf_counter() - start
        print(f"trained {args.epochs} epochs in {fit:.0f} s "
              f"({train.n_obs * args.epochs / fit:.0f} cells x epochs / s, {args.threads} thread(s))")
        model.save(args.model_dir, overwrite=True)
        # save / load round trip
        loaded = mixvi.MultiMixVI.load(args.model_dir, adata=train)
        assert np.allclose(loaded.get_latent_representation(), model.get_latent_representation(),
                           atol=1e-5)
    # the four reconstructions, the KL to the shared prior, the RNA-ATAC alignment term and
    # the mixture's component usage, per epoch
    keys = ("reconstruction_rna", "reconstruction_atac", "reconstruction_rna_from_atac",
            "reconstruction_atac_from_rna", "kl_local", "alignment_symkl")
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.4), layout="constrained")
    n_epochs = len(model.history["elbo_train"])
    mixvi.pl.training_curves(model, keys=keys, ax=list(axes.flat[:7]), show=False,
                             skip_epochs=1 if n_epochs > 3 else 0)
    axes.flat[7].axis("off")
    log_k = np.log(model.module.prior.n_components)
    axes.flat[6].set_ylim(0, 1.08 * log_k)  # keep the log K line off the frame
    fig.suptitle(f"MultiMixVI training on {train.n_obs} SNARE-seq cells (per cell, per epoch)")
    fig.savefig(figdir / "snare_training.png", dpi=110)
    plt.close(fig)

    # 3. joint embedding, clusters, per-modality latents -> MuData ----------------------------
    model.write_to_mudata(train)  # obsm["X_multimixvi"], obs["multimixvi_cluster"], mod[...].obsm
    cell_type = train.obs["cell_type"].astype(str).to_numpy()
    cluster = train.obs["multimixvi_cluster"].astype(str).to_numpy()
    agree_tr = M.cluster_agreement(cluster, cell_type, exclude=["Mis"])
    n_used = len(np.unique(cluster))
    print(f"mixture clusters vs cell types (training cells, Mis excluded): ARI {agree_tr['ari']:.3f}, "
          f"NMI {agree_tr['nmi']:.3f}; {n_used} of {model.module.prior.n_components} components hold cells")

    obs = train.obs[["cell_type", "batch", "multimixvi_cluster"]].copy()
    order = sorted(obs["multimixvi_cluster"].astype(str).unique(), key=lambda c: (len(c), c))
    obs["multimixvi_cluster"] = pd.Categorical(obs["multimixvi_cluster"].astype(str), categories=order)
    joint = umap_of(train.obsm["X_multimixvi"], obs)
    cell_type_colors(joint, palette)
    cluster_palette = sc.pl.palettes.default_102 if n_used > 20 else sc.pl.palettes.default_20
    panels(joint, ["cell_type", "multimixvi_cluster", "batch"],
           ["cell type (Chen et al.)", f"mixture cluster (ARI {agree_tr['ari']:.2f} vs cell type)",
            "batch (sub-library)"],
           figdir / "snare_joint_umap.png", palettes={"multimixvi_cluster": cluster_palette})

    # both modalities' latents of the same (training) cells in one UMAP
    zr, za = train["rna"].obsm["X_multimixvi_rna"], train["atac"].obsm["X_multimixvi_atac"]
    obs2 = obs.iloc[np.r_[np.arange(train.n_obs), np.arange(train.n_obs)]].reset_index(drop=True)
    obs2.index = obs2.index.astype(str)
    obs2["modality"] = np.repeat(["RNA encoder", "ATAC encoder"], train.n_obs)
    obs2["modality"] = obs2["modality"].astype("category")
    both = umap_of(np.vstack([zr, za]), obs2)
    cell_type_colors(both, palette)
    rng = np.random.default_rng(0)
    both = both[rng.permutation(both.n_obs)].copy()  # neither modality drawn on top of the other
    panels(both, ["modality", "cell_type", "multimixvi_cluster"],
           ["modality (each cell twice)", "cell type", "mixture cluster"],
           figdir / "snare_modality_umap.png",
           palettes={"modality": ["#d62728", "#1f77b4"], "multimixvi_cluster": cluster_palette})

    # 4. held-out cells: RNA encoder only vs ATAC encoder only ---------------------------------
    mixvi.MultiMixVI.setup_mudata(test, batch_key="batch")
    zr_te = model.get_latent_representation(test, modality="rna")
    za_te = model.get_latent_representation(test, modality="atac")
    labels_te = test.obs["cell_type"].astype(str).to_numpy()
    fos = M.foscttm(zr_te, za_te)
    top = M.matching_accuracy(zr_te, za_te, k=(1, 10))
    lt_rna = M.label_transfer(za, cell_type, zr_te, labels_te, exclude=["Mis"])["accuracy"]
    lt_atac = M.label_transfer(zr, cell_type, za_te, labels_te, exclude=["Mis"])["accuracy"]
    cl_te = model.get_cluster_assignments(test)["cluster"]
    agree_te = M.cluster_agreement(cl_te, labels_te, exclude=["Mis"])
    print(f"held-out FOSCTTM (RNA-only vs ATAC-only): {fos:.3f} (chance 0.5); "
          f"top-1 / top-10 matching {top[1]:.1%} / {top[10]:.1%}")
    print(f"held-out label transfer (15-NN, Mis excluded): RNA query on training ATAC latents "
          f"{lt_rna:.3f}, ATAC query on training RNA latents {lt_atac:.3f}")
    print(f"held-out mixture clusters vs cell types: ARI {agree_te['ari']:.3f}, NMI {agree_te['nmi']:.3f}")

    n = test.n_obs
    obs_te = test.obs[["cell_type"]].iloc[np.r_[np.arange(n), np.arange(n)]].reset_index(drop=True)
    obs_te.index = obs_te.index.astype(str)
    shared = umap_of(np.vstack([zr_te, za_te]), obs_te)  # one UMAP: positions comparable
    cell_type_colors(shared, palette)  # copied into both halves below
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 5.6), layout="constrained")
    for ax, part, name in zip(axes, (slice(0, n), slice(n, 2 * n)), ("RNA encoder only", "ATAC encoder only")):
        xy = shared.obsm["X_umap"]
        ax.scatter(xy[:, 0], xy[:, 1], s=3, c=BACKGROUND, lw=0, rasterized=True)  # both halves
        sc.pl.umap(shared[part].copy(), color="cell_type", ax=ax, show=False, frameon=False, size=10,
                   title=f"{name}: {n} held-out cells",
                   legend_loc="right margin" if ax is axes[1] else None, legend_fontsize=7)
    fig.suptitle(f"The same held-out cells encoded from one modality each, in one shared UMAP "
                 f"(light grey: the other half; FOSCTTM {fos:.3f}, chance 0.5)")
    fig.savefig(figdir / "snare_rna_vs_atac_only.png", dpi=110)
    plt.close(fig)

    # 5. translation on held-out cells ---------------------------------------------------------
    rna_pred = model.predict_rna_from_atac(test["atac"])  # AnnData, cells x genes, counts per 1e4
    atac_pred = model.predict_atac_from_rna(test["rna"])  # AnnData, cells x peaks, P(open)
    obs_rna, obs_atac = test["rna"].layers["counts"], test["atac"].layers["counts"]
    floor_rna = M.mean_profile_baseline(train["rna"].layers["counts"], n)
    r = M.rna_translation_metrics(rna_pred.X, obs_rna)
    r0 = M.rna_translation_metrics(floor_rna, obs_rna)
    a = M.atac_translation_metrics(atac_pred.X, obs_atac)
    a0 = M.atac_translation_metrics(
        M.mean_profile_baseline(train["atac"].layers["counts"], n, modality="atac"), obs_atac
    )
    print(f"RNA from ATAC: per-cell r {r['pearson_cell']:.3f} (mean-profile floor "
          f"{r0['pearson_cell']:.3f}), per-gene r {r['pearson_gene']:.3f} (floor: undefined, a "
          f"constant prediction)")
    print(f"peaks from RNA: AUROC {a['auroc']:.3f} (floor {a0['auroc']:.3f}), AUPRC {a['auprc']:.4f} "
          f"(floor {a0['auprc']:.4f}, random {a['positive_rate']:.4f})")

    # marker genes: predicted from ATAC alone vs observed, per cell type. The mean-profile
    # floor predicts the same value for every cell: a flat line, no correlation across cells.
    obs_log = log_norm(obs_rna)
    pred_log = log_norm(rna_pred.X)
    floor_log = log_norm(floor_rna[:1])[0]
    gi = {g: i for i, g in enumerate(rna_pred.var_names)}
    types = np.unique(labels_te)
    fig, axd = plt.subplot_mosaic("AAABBBCCCDDD;EEEEFFFFGGGG", figsize=(17, 8.6),
                                  layout="constrained")
    for ax, (g, home) in zip([axd[k] for k in "ABCD"], MARKERS.items()):
        j = gi[g]
        mo = np.array([obs_log[labels_te == t, j].mean() for t in types])
        mp = np.array([pred_log[labels_te == t, j].mean() for t in types])
        hi = types == home
        ax.scatter(mo[~hi], mp[~hi], s=16, color="tab:blue", label="cell-type mean")
        ax.scatter(mo[hi], mp[hi], s=36, color="tab:red",
                   label="the cell type the marker marks (InS, InV, InP, OliM)")
        ax.axhline(floor_log[j], color="grey", ls="--", lw=1.2,
                   label="mean-profile floor (the same prediction for every cell)")
        lim = max(mo.max(), mp.max(), floor_log[j]) * 1.1
        ax.plot([0, lim], [0, lim], color="lightgrey", lw=0.8, zorder=0, label="y = x")
        labelled = set(np.argsort(-mo)[:2]) | set(np.argsort(-mp)[:2])
        for t in labelled:
            ax.annotate(types[t], (mo[t], mp[t]), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.set_xlim(-0.02 * lim, lim)
        ax.set_ylim(-0.02 * lim, lim)
        rr = np.corrcoef(obs_log[:, j], pred_log[:, j])[0, 1]
        ax.set_title(f"{g} ({home}): r across held-out cells = {rr:.2f}", fontsize=10)
        ax.set_xlabel("observed (cell-type mean, log1p CP10k)", fontsize=8)
        ax.set_ylabel("predicted from ATAC (cell-type mean)", fontsize=8)
    handles, names = axd["A"].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=9, frameon=False,
               title="top row:", title_fontsize=9, alignment="left")
    rc_model = per_cell_pearson(pred_log, obs_log)
    rc_floor = per_cell_pearson(np.broadcast_to(floor_log, obs_log.shape), obs_log)
    ax = axd["E"]
    bins = np.linspace(np.nanmin([rc_model, rc_floor]), np.nanmax([rc_model, rc_floor]), 40)
    ax.hist(rc_floor, bins=bins, alpha=0.55, color="grey", label=f"mean-profile floor (mean {np.nanmean(rc_floor):.3f})")
    ax.hist(rc_model, bins=bins, alpha=0.55, color="tab:blue", label=f"MultiMixVI (mean {np.nanmean(rc_model):.3f})")
    ax.set_xlabel("Pearson r across the 1,677 genes, per held-out cell", fontsize=8)
    ax.set_ylabel("cells", fontsize=8)
    ax.set_title("RNA from ATAC: per-cell r", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax = axd["F"]
    rg = per_cell_pearson(pred_log.T, obs_log.T)  # per gene, across cells
    ax.hist(rg[np.isfinite(rg)], bins=40, color="tab:blue", alpha=0.7,
            label=f"MultiMixVI (mean {np.nanmean(rg):.3f})")
    ax.axvline(0, color="grey", ls="--", lw=1.2, label="mean-profile floor: no signal (r undefined)")
    ytop = ax.get_ylim()[1]
    for k, g in enumerate(sorted(MARKERS, key=lambda g: rg[gi[g]])):
        ax.axvline(rg[gi[g]], color="tab:red", lw=0.8)
        ax.annotate(g, (rg[gi[g]], ytop * (0.55 + 0.12 * k)), fontsize=7, xytext=(2, 0),
                    textcoords="offset points", color="tab:red")
    ax.set_xlabel("Pearson r across held-out cells, per gene", fontsize=8)
    ax.set_ylabel("genes", fontsize=8)
    ax.set_title("RNA from ATAC: per-gene r", fontsize=10)
    ax.legend(fontsize=7, loc="center right", title="red: the four markers", title_fontsize=7)
    ax = axd["G"]
    floor_atac = M.mean_profile_baseline(train["atac"].layers["counts"], 1, modality="atac")[0]
    au_model = per_cell_auroc(atac_pred.X, obs_atac)
    au_floor = per_cell_auroc(np.asarray(floor_atac), obs_atac)
    bins = np.linspace(np.nanmin([au_model, au_floor]), np.nanmax([au_model, au_floor]), 40)
    ax.hist(au_floor, bins=bins, alpha=0.55, color="grey", label=f"mean-profile floor (mean {np.nanmean(au_floor):.3f})")
    ax.hist(au_model, bins=bins, alpha=0.55, color="tab:blue", label=f"MultiMixVI (mean {np.nanmean(au_model):.3f})")
    ax.set_xlabel("AUROC of predicted vs observed open peaks, per held-out cell", fontsize=8)
    ax.set_ylabel("cells", fontsize=8)
    ax.set_title(f"peaks from RNA: per-cell AUROC (all entries: {a['auroc']:.3f}, floor {a0['auroc']:.3f})",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Translation on {n} held-out cells: RNA predicted from ATAC alone (top, bottom "
                 "left and middle), peaks predicted from RNA alone (bottom right)")
    fig.savefig(figdir / "snare_translation.png", dpi=110)
    plt.close(fig)
    print(f"per-cell AUROC of peaks from RNA: {np.nanmean(au_model):.3f} (floor {np.nanmean(au_floor):.3f}); "
          "markers r across cells: " + ", ".join(f"{g} {rg[gi[g]]:.2f}" for g in MARKERS))

    print(f"figures in {figdir}:", ", ".join(sorted(p.name for p in figdir.glob("snare_*.png"))))
    return {
        "foscttm": fos, "top1": top[1], "top10": top[10], "label_transfer_query_rna": lt_rna,
        "label_transfer_query_atac": lt_atac, "mixture_ari_train": agree_tr["ari"],
        "mixture_ari_test": agree_te["ari"], "rna_pearson_cell": r["pearson_cell"],
        "rna_pearson_cell_floor": r0["pearson_cell"], "rna_pearson_gene": r["pearson_gene"],
        "atac_auroc": a["auroc"], "atac_auroc_floor": a0["auroc"],
        "atac_auroc_cell": float(np.nanmean(au_model)), "atac_auroc_cell_floor": float(np.nanmean(au_floor)),
    }


if __name__ == "__main__":
    main()
