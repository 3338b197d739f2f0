"""``mixvi fit-multi``: train MultiMixVI on a MuData (RNA + ATAC), write embeddings,
clusters and, on request, the translations between the modalities."""

from __future__ import annotations

import argparse
import difflib
import time
import warnings
from pathlib import Path

from ._fit import _smoothing, _train_kwargs, _umap_png, check_batch_mixing
from ._inputs import CommandError, check_input_file
from ._logging import logger
from ._summary import _print_table, print_summary


def _obs_column(mdata, key: str, mods: dict[str, str], role: str):
    """Column ``key`` of ``mdata.obs``, else of the RNA, then the ATAC modality's ``.obs``."""
    places = [("mdata.obs", mdata.obs)] + [(f"mdata[{m!r}].obs", mdata.mod[m].obs) for m in mods.values()]
    for _, obs in places:
        if key in obs:
            return obs[key]
    columns = sorted({str(c) for _, obs in places for c in obs.columns})
    close = difflib.get_close_matches(key, columns, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise CommandError(
        f"{role} {key!r} is not a column of {', '.join(w for w, _ in places)}; available: "
        f"{columns[:20]}.{hint}"
    )


def fit_multi(path: Path, args: argparse.Namespace) -> tuple[list, dict]:
    """Read, set up, train MultiMixVI and write its results; returns (written, metrics)."""
    import mudata as md
    import numpy as np
    import scvi

    import mixvi

    logger.info("reading %s", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdata = md.read_h5mu(path)
    except OSError as err:
        raise CommandError(f"cannot read {path} as an .h5mu file: {err}") from err
    mods, key = {"rna": args.rna_mod, "atac": args.atac_mod}, args.key_added
    write_kwargs = _smoothing(args.smoothing)  # checked before training
    mixvi.data.check_mudata_modalities(mdata, mods)
    layers = {role: None if name == "X" and "X" not in mdata.mod[mods[role]].layers else name
              for role, name in (("rna", args.rna_layer), ("atac", args.atac_layer))}
    labels = _obs_column(mdata, args.labels_key, mods, "--labels-key") if args.labels_key else None
    logger.info("%d cells; %s: %d genes, %s: %d peaks", mdata.n_obs, mods["rna"],
                mdata.mod[mods["rna"]].n_vars, mods["atac"], mdata.mod[mods["atac"]].n_vars)
    scvi.settings.seed = args.seed
    mixvi.MultiMixVI.setup_mudata(mdata, rna_layer=layers["rna"], atac_layer=layers["atac"],
                                  batch_key=args.batch_key, modalities=mods)
    options = {"prior": args.prior, "n_components": args.n_components,
               "resolution": args.resolution, "batch_balance_weight": args.batch_balance_weight}
    model = mixvi.MultiMixVI(mdata, **{k: v for k, v in options.items() if v is not None})
    logger.info("%s", model._model_summary_string)
    start = time.perf_counter()
    model.train(**_train_kwargs(args.max_epochs, args.early_stopping, args.accelerator,
                                False if args.quiet else None))
    elapsed = time.perf_counter() - start
    epochs = len(model.history["elbo_train"])
    model.write_to_mudata(mdata, key_added=key, **write_kwargs)
    metrics: dict[str, float] = {}
    batch = _obs_column(mdata, args.batch_key, mods, "--batch-key") if args.batch_key else None
    if batch is not None:
        score = check_batch_mixing(mdata.obsm[f"X_{key}"], batch, epochs)
        if score is not None:
            metrics["batch_predictability"] = score
    if labels is not None:
        metrics.update({f"cluster_{k}": v for k, v in mixvi.metrics.cluster_agreement(
            mdata.obs[f"{key}_cluster"].astype(str).values, labels.astype(str).values).items()})
    has = [np.asarray(mixvi.data.get_matrix(mdata.mod[mods[r]], layers[r]).sum(1)).ravel() > 0
           for r in ("rna", "atac")]
    paired = np.flatnonzero(has[0] & has[1])
    if len(paired) >= 2:
        rows = np.sort(np.random.default_rng(args.seed).permutation(paired)[:5000])
        metrics["foscttm_train_cells"] = mixvi.metrics.foscttm(
            mdata.mod[mods["rna"]].obsm[f"X_{key}_rna"][rows],
            mdata.mod[mods["atac"]].obsm[f"X_{key}_atac"][rows])
    written = [("results", Path(args.out), (f".obsm['X_{key}'], .obs['{key}_cluster'], "
                                            f"per-modality .obsm['X_{key}_rna'|'X_{key}_atac']"))]
    if args.translate in ("both", "rna"):
        logger.info("translating ATAC -> RNA")
        mdata.mod[mods["rna"]].layers[f"{key}_from_atac"] = model.predict_rna_from_atac(mdata).X
        written.append(("RNA from ATAC", f"{mods['rna']}.layers['{key}_from_atac']",
                        "normalised expression"))
    if args.translate in ("both", "atac"):
        logger.info("translating RNA -> ATAC")
        mdata.mod[mods["atac"]].layers[f"{key}_from_rna"] = model.predict_atac_from_rna(mdata).X
        written.append(("ATAC from RNA", f"{mods['atac']}.layers['{key}_from_rna']", "P(open)"))
    if args.umap_png:
        import anndata as ad
        import pandas as pd

        logger.info("drawing the UMAP")
        view = ad.AnnData(obs=pd.DataFrame({f"{key}_cluster": mdata.obs[f"{key}_cluster"].values},
                                           index=mdata.obs_names.copy()))
        view.obsm[f"X_{key}"] = mdata.obsm[f"X_{key}"]
        kinds = {f"{key}_cluster": "cluster"}
        for name, values, kind in ((args.batch_key, batch, "batch"),
                                   (args.labels_key, labels, "label")):
            if values is not None:
                view.obs[name], kinds[name] = values.values, kind
        _umap_png(view, list(kinds), Path(args.umap_png), f"X_{key}", kinds=kinds)
        written.append(("UMAP", Path(args.umap_png), None))
    if args.model_dir:
        model.save(str(args.model_dir), overwrite=True)
        written.append(("model", Path(args.model_dir), "mixvi.MultiMixVI.load(dir, mdata)"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata.write_h5mu(args.out)
    metrics.update(epochs=epochs, train_seconds=elapsed, seconds_per_epoch=elapsed / max(epochs, 1))
    return written, metrics


def _cmd_fit_multi(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    path = check_input_file(args.input, ".h5mu", other={".h5ad": "mixvi fit"})
    written, metrics = fit_multi(path, args)
    print_summary("fit-multi", time.perf_counter() - start, metrics, written)
    _print_table({k: v for k, v in metrics.items() if k not in ("epochs", "train_seconds")})
    return 0
