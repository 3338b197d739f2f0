"""``mixvi demo`` and ``mixvi fit``: train MixVI on an AnnData, write and score the results.

Also the pieces ``mixvi fit-multi`` shares: the training arguments, the UMAP PNG and the
batch-mixing check. torch, scvi-tools and scanpy are imported inside the functions, so
importing this module (and ``mixvi --help``) stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ._inputs import CommandError, check_input_file
from ._logging import logger
from ._summary import _print_table, print_summary

#: the demo runs the library defaults (the number of clusters found from the data)
DEMO_N_COMPONENTS = "auto"
#: Balanced accuracy of a kNN batch classifier on the embedding above which the CLI warns
#: that the batches are not mixed (chance is 1 / n_batches).
BATCH_MIXING_THRESHOLD = 0.95


def _umap_png(
    adata, colors: list[str | None], path: Path, rep: str = "X_mixvi",
    kinds: dict[str, str] | None = None,
) -> None:
    """Neighbours + UMAP on the embedding (on a copy) and a PNG with one panel per colour.

    Each kind of panel has its own palette (``kinds`` maps a column to ``"cluster"``,
    ``"batch"`` or ``"label"``); legends sit beside the panels. ``adata.obsm["X_umap"]``
    receives the UMAP.
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    import mixvi

    view = adata.copy()
    sc.pp.neighbors(view, use_rep=rep, random_state=0)
    sc.tl.umap(view, random_state=0)
    adata.obsm["X_umap"] = view.obsm["X_umap"]
    colors = [c for c in colors if c is not None and c in adata.obs]
    path.parent.mkdir(parents=True, exist_ok=True)
    mixvi.pl.embedding(view, colors, kinds=kinds, show=False, save=path)


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


def check_batch_mixing(latent, batch, max_epochs: int | None) -> float | None:
    """Balanced accuracy of predicting the batch from ``latent``; warns above
    :data:`BATCH_MIXING_THRESHOLD`. ``None`` with fewer than two batches."""
    import numpy as np

    from mixvi.train import batch_predictability

    values = np.asarray(batch).astype(str)
    names = np.unique(values)
    if len(names) < 2:
        return None
    logger.info("checking batch mixing (kNN batch classifier on the embedding)")
    try:
        score = batch_predictability(latent, values)
    except ValueError as err:  # e.g. a batch of fewer than 5 cells
        logger.info("batch mixing not checked: %s", err)
        return None
    if score > BATCH_MIXING_THRESHOLD:
        more = f"--max-epochs {2 * max_epochs}" if max_epochs else "a larger --max-epochs"
        logger.warning(
            "The batch is still predictable from the embedding (kNN balanced accuracy "
            "%.2f, chance %.2f): the batches are not mixed. If they hold the same cell types, "
            "train longer (%s) or, for MixVI, ask the mixture to balance the batches "
            "(--batch-balance-weight 1); if they differ in biology (e.g. treated vs "
            "control) some separation is expected.", score, 1 / len(names), more,
        )
    return score


def fit(
    adata,
    out: Path,
    batch_key: str | None,
    labels_key: str | None = None,
    layer: str | None = None,
    prior: str = "gmm",
    n_components: int | str | None = None,
    max_epochs: int | None = None,
    key_added: str = "mixvi",
    model_dir: Path | None = None,
    umap_png: Path | None = None,
    seed: int = 0,
    *,
    early_stopping: bool | None = None,
    resolution: float | None = None,
    batch_balance_weight: float | None = None,
    accelerator: str | None = None,
    progress_bar: bool | None = None,
    smoothing: float | None = None,
) -> dict:
    """Set up, train and write MixVI results; returns the metrics.

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
        Model and training options (``None``: the model's default).
    key_added
        Prefix of the keys written (see :meth:`mixvi.MixVI.write_to_adata`).
    model_dir
        Where to save the trained model (optional).
    umap_png
        Where to draw the UMAP (optional).
    seed
        Random seed (``scvi.settings.seed``).
    early_stopping, resolution, batch_balance_weight, accelerator
        Passed to the model when set (``None``: the model's default).
    progress_bar
        ``enable_progress_bar`` of training; ``None``: on a terminal only.
    smoothing
        Neighbour smoothing of the clusters (:meth:`mixvi.MixVI.write_to_adata`;
        ``None``: its default).

    Returns
    -------
    Cluster and integration scores (with labels), ``batch_predictability`` (with two
    batches or more), ``epochs``, ``train_seconds`` and ``seconds_per_epoch``.
    """
    import scvi

    import mixvi

    if labels_key is not None:
        mixvi.data.check_obs_key(adata, labels_key, role="labels_key")
    write_kwargs = _smoothing(smoothing)  # checked before training
    scvi.settings.seed = seed
    mixvi.MixVI.setup_anndata(adata, layer=layer, batch_key=batch_key)
    options = {"prior": prior, "n_components": n_components, "resolution": resolution,
               "batch_balance_weight": batch_balance_weight}
    model = mixvi.MixVI(adata, **{k: v for k, v in options.items() if v is not None})
    logger.info("%s", model._model_summary_string)
    train_kwargs = _train_kwargs(max_epochs, early_stopping, accelerator, progress_bar)
    start = time.perf_counter()
    model.train(**train_kwargs)
    elapsed = time.perf_counter() - start
    model.write_to_adata(adata, key_added=key_added, **write_kwargs)
    epochs = len(model.history["elbo_train"])
    metrics: dict[str, float] = {}
    if batch_key is not None:
        score = check_batch_mixing(adata.obsm[f"X_{key_added}"], adata.obs[batch_key], epochs)
        if score is not None:
            metrics["batch_predictability"] = score
    if umap_png is not None:
        logger.info("drawing the UMAP")
        kinds = {f"{key_added}_cluster": "cluster", batch_key: "batch", labels_key: "label"}
        _umap_png(adata, [f"{key_added}_cluster", batch_key, labels_key], umap_png,
                  f"X_{key_added}", kinds={k: v for k, v in kinds.items() if k})
    if model_dir is not None:
        model.save(str(model_dir), overwrite=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    if labels_key is not None:
        logger.info("scoring the clusters against %r", labels_key)
    metrics.update(_metrics_table(adata, batch_key, labels_key, key_added, layer=layer))
    metrics["epochs"] = epochs
    metrics["train_seconds"] = elapsed
    metrics["seconds_per_epoch"] = elapsed / max(epochs, 1)
    return metrics


def _train_kwargs(max_epochs, early_stopping, accelerator, progress_bar) -> dict:
    kwargs: dict = {"max_epochs": max_epochs}
    if early_stopping is not None:
        kwargs["early_stopping"] = early_stopping
    if accelerator is not None:
        kwargs["accelerator"] = accelerator
    if progress_bar is not None:
        kwargs["enable_progress_bar"] = progress_bar
    return kwargs


def _smoothing(weight: float | None) -> dict:
    """``smoothing`` for ``write_to_adata`` / ``write_to_mudata`` when given (in [0, 1))."""
    if weight is None:
        return {}
    if not 0.0 <= weight < 1.0:
        raise CommandError(f"--smoothing must be in [0, 1) (0: off), got {weight}.")
    return {"smoothing": weight}


def _written_keys(key: str) -> str:
    return (f".obsm['X_{key}'], .obs['{key}_cluster'], .obs['{key}_cluster_confidence'], "
            f".obsm['{key}_cluster_probs']")


def _cmd_demo(args: argparse.Namespace) -> int:
    import mixvi

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = mixvi.datasets.kang_pbmc_ifnb()
    logger.info("Kang IFN-b PBMC: %d cells x %d genes, batches ctrl/stim", adata.n_obs, adata.n_vars)
    metrics = fit(
        adata, out / "kang_mixvi.h5ad", batch_key="batch", labels_key="cell_type",
        layer="counts", n_components=args.n_components, max_epochs=args.max_epochs,
        model_dir=out / "model", umap_png=out / "kang_mixvi_umap.png", seed=args.seed,
        progress_bar=False if args.quiet else None,
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_summary("demo", time.perf_counter() - start, metrics, [
        ("results", out / "kang_mixvi.h5ad", _written_keys("mixvi")),
        ("UMAP", out / "kang_mixvi_umap.png", "cluster, batch and cell type"),
        ("model", out / "model", "mixvi.MixVI.load(dir, adata)"),
        ("metrics", out / "metrics.json", None),
    ])
    _print_table({k: v for k, v in metrics.items() if k not in ("epochs", "train_seconds")})
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import anndata as ad

    start = time.perf_counter()
    path = check_input_file(args.input, ".h5ad", other={".h5mu": "mixvi fit-multi"})
    logger.info("reading %s", path)
    try:
        adata = ad.read_h5ad(path)
    except OSError as err:
        raise CommandError(f"cannot read {path} as an .h5ad file: {err}") from err
    logger.info("%d cells x %d genes", adata.n_obs, adata.n_vars)
    metrics = fit(
        adata, Path(args.out), batch_key=args.batch_key, labels_key=args.labels_key,
        layer=args.layer, prior=args.prior, n_components=args.n_components,
        max_epochs=args.max_epochs, key_added=args.key_added,
        model_dir=Path(args.model_dir) if args.model_dir else None,
        umap_png=Path(args.umap_png) if args.umap_png else None, seed=args.seed,
        early_stopping=args.early_stopping, resolution=args.resolution,
        batch_balance_weight=args.batch_balance_weight,
        accelerator=args.accelerator, progress_bar=False if args.quiet else None,
        smoothing=args.smoothing,
    )
    print_summary("fit", time.perf_counter() - start, metrics, [
        ("results", Path(args.out), _written_keys(args.key_added)),
        ("UMAP", Path(args.umap_png) if args.umap_png else None, None),
        ("model", Path(args.model_dir) if args.model_dir else None,
         "mixvi.MixVI.load(dir, adata)"),
    ])
    _print_table({k: v for k, v in metrics.items() if k not in ("epochs", "train_seconds")})
    return 0
