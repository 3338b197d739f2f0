"""Time to quality, not only throughput: MixVI vs scVI, and MixVI's batch size.

Rerun (writes ``time_to_quality.csv``, ``time_to_quality.png``, prints the tables)::

    python benchmarks/scaling/run_time_to_quality.py

For each run, every epoch records the wall time since training started and the validation
ELBO (10% of the cells held out, scvi-tools' split), and every ``--score-every`` epochs the
scIB total of the latent of all cells (scib-metrics through
:func:`mixvi.metrics.integration_scores` with iLISI, graph connectivity, PCR comparison,
silhouette label and cLISI: the metrics whose code compiles in seconds; the scoring time is
excluded from the clock). Reported: time until the validation ELBO is within 1% of its final
value, and until the scIB total is within 0.01 of its final value (each: from then on, not
only a first touch).

Data: Kang (1,556 cells, 400 epochs: both models' default for this size) and a 50,000-cell
resample of it with 2,000 genes (``run_scaling.make_rna``; 40 epochs for every run: the default
of 160 epochs of SCVI at this size does not fit the benchmark's budget). Models: MixVI at its
defaults with batch size 128, 256 and 512 (learning rate scaled by sqrt(batch / 128)), and
scvi-tools' SCVI at its defaults (batch 128). A second data family for the batch size: the
RNA of SNARE-seq (10,309 cells, 12 sub-libraries, 23 types), MixVI at batch 128 and 512, 100
epochs (its default of 400 does not fit the budget). 1 torch thread each, one run at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RUNS = [("kang", "mixvi", 128), ("kang", "mixvi", 256), ("kang", "mixvi", 512), ("kang", "scvi", 128),
        ("kang50k", "mixvi", 128), ("kang50k", "mixvi", 256), ("kang50k", "mixvi", 512),
        ("kang50k", "scvi", 128), ("snare_rna", "mixvi", 128), ("snare_rna", "mixvi", 512)]
EPOCHS = {"kang": 400, "kang50k": 40, "snare_rna": 100}


def child(dataset: str, model_name: str, batch_size: int, score_every: int) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import anndata as ad
    import scanpy as sc
    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    import mixvi
    from mixvi.metrics import integration_scores

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from run_scaling import make_rna

    if dataset == "kang":
        adata = mixvi.datasets.kang_pbmc_ifnb()
        adata.X = adata.layers.pop("counts")
    elif dataset == "snare_rna":  # a second data family for the batch-size question
        adata = mixvi.datasets.snareseq_mouse_cortex()["rna"].copy()
        adata.X = adata.layers.pop("counts")
    else:
        adata = ad.read_h5ad(make_rna(50_000))
    pca = adata.copy()
    sc.pp.normalize_total(pca)
    sc.pp.log1p(pca)
    sc.pp.pca(pca, n_comps=30, random_state=0)
    adata.obsm["X_pca"] = pca.obsm["X_pca"]
    sets = {"bio_conservation_metrics": BioConservation(isolated_labels=False,
                                                        nmi_ari_cluster_labels_kmeans=False),
            "batch_correction_metrics": BatchCorrection(bras=False, kbet_per_label=False)}
    epochs = EPOCHS[dataset]
    holder = {}

    class Clock(Callback):
        def __init__(self):
            self.rows, self.paused = [], 0.0

        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            e = trainer.current_epoch + 1
            now = time.perf_counter() - self.t0 - self.paused
            row = {"epoch": e, "seconds": now,
                   "elbo_validation": float(trainer.callback_metrics["elbo_validation"])}
            if e % score_every == 0 or e == epochs:
                t = time.perf_counter()
                was = pl_module.module.training
                pl_module.module.eval()
                model = holder["model"]
                model.is_trained_ = True
                adata.obsm["X_z"] = model.get_latent_representation()
                pl_module.module.train(was)
                row["scib_total"] = integration_scores(adata, "X_z", "batch", "cell_type",
                                                       pre_integrated_key="X_pca", **sets)["Total"]
                self.paused += time.perf_counter() - t
            self.rows.append(row)

    clock = Clock()
    scvi.settings.seed = 0
    kw = dict(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False,
              check_val_every_n_epoch=1, callbacks=[clock])
    if model_name == "mixvi":
        mixvi.MixVI.setup_anndata(adata, batch_key="batch")
        model = mixvi.MixVI(adata)
        holder["model"] = model
        model.train(plan_kwargs={"lr": 1e-3 * np.sqrt(batch_size / 128)}, **kw)
    else:
        scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
        model = scvi.model.SCVI(adata)
        holder["model"] = model
        model.train(**kw)
    return {"dataset": dataset, "model": model_name, "batch_size": batch_size,
            "n_cells": adata.n_obs, "curve": clock.rows}


def _settled(within: np.ndarray) -> int:
    """First index from which every later value stays within the tolerance (not a first touch)."""
    outside = np.flatnonzero(~within)
    return 0 if outside.size == 0 else int(outside[-1]) + 1


def summarize(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        curve = r["curve"]
        elbo = np.array([c["elbo_validation"] for c in curve])
        secs = np.array([c["seconds"] for c in curve])
        final = elbo[-1]
        t_elbo = secs[_settled(np.abs(elbo - final) <= 0.01 * abs(final))]
        scored = [(c["seconds"], c["scib_total"]) for c in curve if "scib_total" in c]
        st = np.array([s for _, s in scored])
        t_scib = scored[_settled(np.abs(st - st[-1]) <= 0.01)][0]
        rows.append({"dataset": r["dataset"], "model": r["model"], "batch_size": r["batch_size"],
                     "epochs": len(curve), "train_s": secs[-1],
                     "cells_epochs_per_s": r["n_cells"] * 0.9 * len(curve) / secs[-1],
                     "final_elbo_validation": final, "final_scib_total": st[-1],
                     "s_to_elbo_within_1pct": t_elbo, "s_to_scib_within_0.01": t_scib})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--score-every", type=int, default=None)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.child:
        dataset, model, bs = a.child
        every = a.score_every or max(EPOCHS[dataset] // 10, 1)
        print(json.dumps(child(dataset, model, int(bs), every)))
        return
    raw = HERE / "time_to_quality_runs.json"
    results = json.loads(raw.read_text()) if raw.exists() else []
    done = {(r["dataset"], r["model"], r["batch_size"]) for r in results}
    for dataset, model, bs in [] if a.report_only else RUNS:
        if (dataset, model, bs) in done:
            continue
        out = subprocess.run([sys.executable, __file__, "--child", dataset, model, str(bs)],
                             capture_output=True, text=True, env={"OMP_NUM_THREADS": "1",
                                                                  **__import__("os").environ})
        if out.returncode != 0:
            print(f"FAILED {dataset} {model} {bs}\n{out.stderr[-3000:]}", flush=True)
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        raw.write_text(json.dumps(results))
        print(f"done {dataset} {model} {bs}", flush=True)
    import pandas as pd

    table = pd.DataFrame(summarize(results))
    table.to_csv(HERE / "time_to_quality.csv", index=False)
    print(table.round(3).to_string(index=False))
    plot(results)


def plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 7), squeeze=False)
    for j, name in enumerate(datasets):
        for r in (r for r in results if r["dataset"] == name):
            label = f"{r['model']} batch {r['batch_size']}"
            c = r["curve"]
            axes[0][j].plot([x["seconds"] for x in c], [x["elbo_validation"] for x in c], label=label)
            sc = [x for x in c if "scib_total" in x]
            axes[1][j].plot([x["seconds"] for x in sc], [x["scib_total"] for x in sc], "o-", label=label)
        axes[0][j].set(title=f"{name}: validation -ELBO", xlabel="training seconds", yscale="log")
        axes[1][j].set(title=f"{name}: scIB total (reduced metric set)", xlabel="training seconds")
        axes[1][j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "time_to_quality.png", dpi=120)


if __name__ == "__main__":
    main()
