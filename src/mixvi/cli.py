"""Command line: ``mixvi demo`` and ``mixvi fit`` for people who do not write Python."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_N_COMPONENTS = 8


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "scvi", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _umap_png(adata, colors: list[str], path: Path, rep: str = "X_mixvi") -> None:
    """Neighbours + UMAP on the embedding (on a copy) and a PNG with one panel per colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    view = adata.copy()
    sc.pp.neighbors(view, use_rep=rep, random_state=0)
    sc.tl.umap(view, random_state=0)
    adata.obsm["X_umap"] = view.obsm["X_umap"]
    colors = [c for c in colors if c in adata.obs]
    fig, axes = plt.subplots(1, len(colors), figsize=(5.2 * len(colors), 4.6))
    for ax, color in zip(list(getattr(axes, "flat", [axes])), colors, strict=True):
        sc.pl.umap(view, color=color, ax=ax, show=False, frameon=False, title=color)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _metrics_table(
    adata, batch_key: str | None, labels_key: str | None, key: str, layer: str | None = None
) -> dict:
    """Scores of a fitted ``adata`` (after ``write_to_adata``), ``adata`` left unchanged.

    ``cluster_ari`` / ``cluster_nmi`` / ``cluster_n_scored``: the mixture clusters
    (``obs[f"{key}_cluster"]``) against ``labels_key``. With a batch too, scib-metrics'
    Benchmarker numbers for ``obsm[f"X_{key}"]`` under its own names (``"iLISI"``,
    ``"KBET"``, ..., ``"Batch correction"``, ``"Bio conservation"``, ``"Total"``; see
    :func:`mixvi.metrics.integration_scores`). Their unintegrated reference is
    ``obsm["X_pca"]`` if present, else a PCA of the log-normalised counts (``layer`` or
    ``.X``, which MixVI requires to hold raw counts) computed on a copy.
    """
    from mixvi.metrics import cluster_agreement, integration_scores

    out: dict[str, float] = {}
    if labels_key is not None:
        out.update({f"cluster_{k}": v for k, v in cluster_agreement(
            adata.obs[f"{key}_cluster"].astype(str).values, adata.obs[labels_key].astype(str).values
        ).items()})
    if batch_key is not None and labels_key is not None:
        out.update(integration_scores(
            adata, embedding_key=f"X_{key}", batch_key=batch_key, label_key=labels_key,
            pre_integrated_key="X_pca", layer=layer, log_normalize=True,
        ))
    return out


def _print_table(rows: dict[str, float]) -> None:
    width = max(len(k) for k in rows) if rows else 10
    print(f"{'metric'.ljust(width)}  value")
    for k, v in rows.items():
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        print(f"{k.ljust(width)}  {text}")


def fit(
    adata,
    out: Path,
    batch_key: str | None,
    labels_key: str | None = None,
    layer: str | None = None,
    prior: str = "gmm",
    n_components: int | None = None,
    max_epochs: int | None = None,
    key_added: str = "mixvi",
    model_dir: Path | None = None,
    umap_png: Path | None = None,
    seed: int = 0,
) -> dict:
    """Set up, train and write MixVI results; returns the metrics (empty without labels).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``.X`` or ``layer``.
    out
        Output ``.h5ad`` path.
    batch_key, labels_key, layer
        As in :meth:`mixvi.MixVI.setup_anndata`; here ``labels_key`` is only used to
        score the clusters (no label prior), so results are unsupervised.
    prior, n_components, max_epochs
        Model and training options.
    key_added
        Prefix of the keys written (see :meth:`mixvi.MixVI.write_to_adata`).
    model_dir
        Where to save the trained model (optional).
    umap_png
        Where to draw the UMAP (optional).
    seed
        Random seed (``scvi.settings.seed``).
    """
    import scvi

    import mixvi

    scvi.settings.seed = seed
    mixvi.MixVI.setup_anndata(adata, layer=layer, batch_key=batch_key)
    model = mixvi.MixVI(adata, prior=prior, n_components=n_components)
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, enable_progress_bar=sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    model.write_to_adata(adata, key_added=key_added)
    epochs = len(model.history["elbo_train"])
    print(f"trained {epochs} epochs in {elapsed:.1f} s ({elapsed / max(epochs, 1):.2f} s/epoch)")
    if umap_png is not None:
        _umap_png(adata, [f"{key_added}_cluster", batch_key, labels_key], umap_png, f"X_{key_added}")
        print(f"wrote {umap_png}")
    if model_dir is not None:
        model.save(str(model_dir), overwrite=True)
        print(f"saved model to {model_dir}")
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    print(f"wrote {out}")
    metrics = _metrics_table(adata, batch_key, labels_key, key_added, layer=layer)
    metrics["seconds_per_epoch"] = elapsed / max(epochs, 1)
    return metrics


def _cmd_demo(args: argparse.Namespace) -> int:
    import mixvi

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = mixvi.datasets.kang_pbmc_ifnb()
    print(f"Kang IFN-b PBMC: {adata.n_obs} cells x {adata.n_vars} genes, batches ctrl/stim")
    metrics = fit(
        adata,
        out / "kang_mixvi.h5ad",
        batch_key="batch",
        labels_key="cell_type",
        layer="counts",
        n_components=args.n_components,
        max_epochs=args.max_epochs,
        model_dir=out / "model",
        umap_png=out / "kang_mixvi_umap.png",
        seed=args.seed,
    )
    _print_table(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import anndata as ad

    adata = ad.read_h5ad(args.input)
    metrics = fit(
        adata,
        Path(args.out),
        batch_key=args.batch_key,
        labels_key=args.labels_key,
        layer=args.layer,
        prior=args.prior,
        n_components=args.n_components,
        max_epochs=args.max_epochs,
        key_added=args.key_added,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        umap_png=Path(args.umap_png) if args.umap_png else None,
        seed=args.seed,
    )
    _print_table(metrics)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``mixvi`` argument parser (sub-commands ``demo`` and ``fit``)."""
    parser = argparse.ArgumentParser(prog="mixvi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train MixVI on the shipped Kang IFN-b PBMC data")
    demo.add_argument("--out", default="mixvi_demo_out", help="output folder")
    demo.add_argument("--max-epochs", type=int, default=200)
    demo.add_argument("--n-components", type=int, default=DEMO_N_COMPONENTS)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    f = sub.add_parser("fit", help="train MixVI on an .h5ad and write the results")
    f.add_argument("input", help="input .h5ad with raw counts")
    f.add_argument("--out", required=True, help="output .h5ad")
    f.add_argument("--batch-key", default=None)
    f.add_argument("--labels-key", default=None, help="cell types, only used to score clusters")
    f.add_argument("--layer", default=None, help="layer with raw counts (default: .X)")
    f.add_argument("--prior", default="gmm", choices=["gmm", "normal", "hierarchical"])
    f.add_argument("--n-components", type=int, default=None)
    f.add_argument("--max-epochs", type=int, default=None)
    f.add_argument("--key-added", default="mixvi")
    f.add_argument("--model-dir", default=None, help="save the trained model here")
    f.add_argument("--umap-png", default=None, help="draw a UMAP of the embedding here")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_cmd_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixvi`` command."""
    args = build_parser().parse_args(argv)
    _quiet()
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"mixvi: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
