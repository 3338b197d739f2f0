"""MixVI on the Kang et al. (2018) IFN-beta PBMCs: integration and clustering in one model.

The shipped data set (``mixvi.datasets.kang_pbmc_ifnb()``) holds 1,556 PBMCs of two
donors, control and interferon-beta stimulated (``batch`` = ``ctrl`` / ``stim``), in 5
annotated cell types. IFN-beta shifts the expression of every cell type, so without
integration the cells split by condition first. This script

1. embeds the unintegrated data (log-normalised copy of the counts, PCA, UMAP);
2. trains MixVI (``batch`` enters the decoder, the latent carries a trainable
   Gaussian-mixture prior), writes its latent and its mixture clusters to the AnnData
   and embeds the latent (neighbours, UMAP);
3. trains a MixVI with ``prior="hierarchical"`` and draws its learned tree;
4. saves the figures to ``tutorials/figures/kang_*.png`` and prints the clustering and
   integration metrics of both embeddings.

Run from the repository root::

    python tutorials/mixvi_kang.py                   # 200 epochs (a few minutes on a CPU)
    python tutorials/mixvi_kang.py --quick           # smoke run: 10 epochs
    python tutorials/mixvi_kang.py --max-epochs 400 --no-tree
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
import scvi  # noqa: E402

import mixvi  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-epochs", type=int, default=200, help="training epochs (200)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10 epochs (overrides --max-epochs)"
    )
    parser.add_argument(
        "--n-components", type=int, default=None,
        help="mixture components (default: MixVI's default)",
    )
    parser.add_argument("--no-tree", action="store_true", help="skip the hierarchical model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figdir", type=Path, default=FIGURES, help="where the PNGs go")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator (auto)")
    return parser.parse_args(argv)


def quiet() -> None:
    """Keep the output to what the tutorial prints."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sc.settings.verbosity = 0


def unintegrated_embedding(adata) -> None:
    """PCA + UMAP of a log-normalised copy; writes ``X_pca`` and ``X_umap_unintegrated``."""
    pp = adata.copy()
    pp.X = pp.layers["counts"].copy()
    sc.pp.normalize_total(pp, target_sum=1e4)
    sc.pp.log1p(pp)
    sc.pp.pca(pp, n_comps=30, random_state=0)
    sc.pp.neighbors(pp, use_rep="X_pca", n_neighbors=15, random_state=0)
    sc.tl.umap(pp, random_state=0)
    adata.obsm["X_pca"] = pp.obsm["X_pca"]
    adata.obsm["X_umap_unintegrated"] = pp.obsm["X_umap"]


def train(adata, args, **model_kwargs):
    """A MixVI with the library's defaults except ``model_kwargs``, trained ``args.max_epochs``."""
    if args.n_components is not None:
        model_kwargs.setdefault("n_components", args.n_components)
    model = mixvi.MixVI(adata, **model_kwargs)
    start = time.perf_counter()
    model.train(
        max_epochs=args.max_epochs,
        check_val_every_n_epoch=1 if args.max_epochs < 50 else 5,
        accelerator=args.accelerator,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    print(f"  {model._model_summary_string}")
    print(f"  trained {args.max_epochs} epochs in {time.perf_counter() - start:.0f} s")
    return model


def umap_figure(adata, path: Path) -> None:
    """Unintegrated vs MixVI UMAPs, coloured by batch, cell type and mixture cluster."""
    colors = ["batch", "cell_type", "mixvi_cluster"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9), layout="constrained")
    rows = [("umap_unintegrated", "log-normalised PCA (unintegrated)"), ("umap", "MixVI latent")]
    for row, (basis, name) in zip(axes, rows):
        for ax, color in zip(row, colors):
            sc.pl.embedding(
                adata, basis=basis, color=color, ax=ax, show=False, frameon=False,
                title=f"{name}: {color}", legend_fontsize=8,
            )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def metrics_table(adata) -> pd.DataFrame:
    """Clustering agreement and scIB-style integration scores of both embeddings."""
    rows = {}
    for name, rep in (("unintegrated PCA", "X_pca"), ("MixVI", "X_mixvi")):
        rows[name] = mixvi.metrics.integration_scores(
            adata, embedding_key=rep, batch_key="batch", label_key="cell_type",
            pre_integrated_key="X_pca",
        )
    return pd.DataFrame(rows).T


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.max_epochs = 10
    quiet()
    scvi.settings.seed = args.seed
    args.figdir.mkdir(parents=True, exist_ok=True)

    adata = mixvi.datasets.kang_pbmc_ifnb()
    print(f"Kang IFN-b PBMCs: {adata.n_obs} cells x {adata.n_vars} genes")
    print(pd.crosstab(adata.obs["cell_type"], adata.obs["batch"]).to_string(), "\n")

    # 1. the unintegrated baseline ------------------------------------------------------------
    unintegrated_embedding(adata)

    # 2. MixVI: one model integrates (batch in the decoder) and clusters (mixture prior) -------
    print("MixVI (prior='gmm'):")
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = train(adata, args)
    model.write_to_adata(adata)  # X_mixvi, mixvi_cluster, mixvi_cluster_confidence, ...
    sc.pp.neighbors(adata, use_rep="X_mixvi", n_neighbors=15, random_state=0)
    sc.tl.umap(adata, random_state=0)

    # 3. figures ------------------------------------------------------------------------------
    figdir = args.figdir
    umap_figure(adata, figdir / "kang_umap.png")
    mixvi.pl.mixture(adata, model, show=False, save=figdir / "kang_mixture.png")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.45 * adata.obs["mixvi_cluster"].nunique() + 2),
                                      layout="constrained")
    mixvi.pl.cluster_confusion(adata, normalize="cluster", ax=left, show=False,
                               title="which cell types make up each cluster (rows sum to 1)")
    mixvi.pl.cluster_confusion(adata, normalize="label", ax=right, show=False,
                               title="where the cells of each type went (columns sum to 1)")
    fig.savefig(figdir / "kang_confusion.png", dpi=120)
    plt.close(fig)
    mixvi.pl.training_curves(model, show=False, save=figdir / "kang_training.png")

    # 4. metrics ------------------------------------------------------------------------------
    truth = adata.obs["cell_type"]
    clusters = adata.obs["mixvi_cluster"]
    agreement = mixvi.metrics.cluster_agreement(clusters, truth)
    sc.tl.leiden(adata, key_added="leiden_mixvi", resolution=0.5, flavor="igraph",
                 n_iterations=2, random_state=0)
    leiden = mixvi.metrics.cluster_agreement(adata.obs["leiden_mixvi"], truth)
    stim = adata.obs["batch"].astype(str).to_numpy() == "stim"
    share = pd.crosstab(clusters, adata.obs["batch"], normalize="index")
    print(f"\nMixture clusters vs cell types: ARI {agreement['ari']:.3f}, NMI "
          f"{agreement['nmi']:.3f} ({clusters.nunique()} clusters used of "
          f"{model.module.prior.n_components}; median confidence "
          f"{np.median(adata.obs['mixvi_cluster_confidence']):.2f})")
    print(f"Leiden (resolution 0.5) on the same latent: ARI {leiden['ari']:.3f}, NMI "
          f"{leiden['nmi']:.3f} ({adata.obs['leiden_mixvi'].nunique()} clusters)")
    print(f"Cluster sizes and stim share (the data are {stim.mean():.0%} stim):")
    print(pd.DataFrame({"cells": clusters.value_counts(), "stim share": share["stim"].round(2)})
          .sort_values("cells", ascending=False).to_string())
    table = metrics_table(adata)
    print("\nscib-metrics (mixvi.metrics.integration_scores, un-scaled; higher is better):")
    print(table.round(3).to_string())

    # 5. the hierarchical prior: the mixture components on a learned tree ---------------------
    tree_model = None
    if not args.no_tree:
        print("\nMixVI (prior='hierarchical'):")
        tree_model = train(adata, args, prior="hierarchical")
        mixvi.pl.tree(tree_model, adata, cluster_key=None, n_genes=3,
                      gene_symbols="gene_symbol", show=False, save=figdir / "kang_tree.png")
        leaves = tree_model.get_cluster_assignments()["cluster"]
        tree_agreement = mixvi.metrics.cluster_agreement(leaves, truth)
        print(f"  leaves vs cell types: ARI {tree_agreement['ari']:.3f}, NMI "
              f"{tree_agreement['nmi']:.3f} ({leaves.nunique()} leaves with cells)")
        for level in tree_model.cluster_levels:
            at = tree_model.get_cluster_assignments(level=level)["cluster"]
            a = mixvi.metrics.cluster_agreement(at, truth)
            print(f"  level {level}: {at.nunique()} clusters, ARI {a['ari']:.3f}, NMI {a['nmi']:.3f}")

    print(f"\nFigures written to {figdir}:")
    for path in sorted(figdir.glob("kang_*.png")):
        print(f"  {path.name}")
    return {"adata": adata, "model": model, "tree_model": tree_model, "scores": table,
            "agreement": agreement}


if __name__ == "__main__":
    main()
