"""Where one training epoch's time goes, for MixVI and MultiMixVI (issue: profile first).

Rerun (prints the tables for results.md, writes ``profile.csv``)::

    python benchmarks/scaling/run_profile.py            # 10k-cell resamples, 3 epochs each

Two views of the same trainings, 1 torch thread, batch 128, all cells in training, the
models' defaults otherwise (the mixture fitted at epoch 0 so every step pays for it):

* **Lightning's SimpleProfiler** splits the steps of the measured epochs into data loading
  (``train_dataloader_next``), forward + loss (``training_step``), backward, the optimiser
  update (``optimizer_step`` minus the closure's forward and backward) and the batch-end
  hooks (metric updates, logging, callbacks).
* **torch.profiler** over the same kind of steps gives the share of the prior's KL
  (``PriorLayer.kl``, a ``record_function`` scope added here) and of the operator families
  (matrix products, NB log-likelihood special functions, sparse gathers, Adam) in self CPU time.

The data are the scaling benchmark's resamples (``run_scaling.make_rna`` / ``make_multi``).
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAMILIES = {
    "matmul": ("addmm", "mm", "bmm", "matmul", "linear"),
    "nb special functions": ("lgamma", "digamma", "polygamma"),
    "elementwise log/exp/softplus": ("log", "exp", "softplus", "log1p", "logsumexp", "sigmoid"),
    "batch norm / dropout / relu": ("batch_norm", "native_batch_norm", "dropout", "relu", "threshold"),
    "gather / index / sparse": ("index_select", "gather", "index", "_sparse", "embedding", "scatter",
                                "index_add", "sparse"),
    "optimiser (Adam)": ("_fused_adam", "adam", "_foreach"),
}


def _family(name: str) -> str:
    short = name.split("::")[-1]
    for fam, keys in FAMILIES.items():
        if any(short == k or short.startswith(k + "_") or short.startswith("_" + k) for k in keys):
            return fam
    return "other ops"


def _fit(model_name: str, path: Path, epochs: int, profiler):
    import anndata as ad
    import mudata as md
    import scvi

    import mixvi

    scvi.settings.seed = 0
    common = {"max_epochs": epochs, "batch_size": 128, "train_size": 1.0,
              "enable_progress_bar": False, "profiler": profiler}
    if model_name == "mixvi":
        adata = ad.read_h5ad(path)
        mixvi.MixVI.setup_anndata(adata, batch_key="batch")  # counts in .X
        model = mixvi.MixVI(adata)
        model.train(prior_init_epoch=0, **common)
    else:
        mdata = md.read_h5mu(path)
        mixvi.MultiMixVI.setup_mudata(mdata, rna_layer=None, atac_layer=None, batch_key="batch",
                                      modalities={"rna": "rna", "atac": "atac"})
        model = mixvi.MultiMixVI(mdata)
        model.train(prior_init_epoch=0, **common)  # all cells train: no validation, no stopping
    return model


def lightning_breakdown(model_name: str, path: Path, epochs: int) -> dict:
    from lightning.pytorch.profilers import SimpleProfiler

    import tempfile

    prof = SimpleProfiler(dirpath=tempfile.mkdtemp(), filename="simple")  # summary to a file
    _fit(model_name, path, epochs, prof)
    d = {k: sum(v) for k, v in prof.recorded_durations.items()}

    def pick(*needles):
        return sum(t for k, t in d.items() if all(n in k for n in needles))

    data = pick("train_dataloader_next")
    forward = pick("training_step")
    backward = pick("backward")
    opt_total = pick("optimizer_step")
    optimiser = max(opt_total - forward - backward, 0.0)
    hooks = pick("on_train_batch_end") + pick("on_before_optimizer_step") + pick("on_after_backward")
    # the mixture fits run in the plan's epoch-start and train-end hooks
    fits = pick("MixTrainingPlan.on_train_epoch_start") + pick("MixTrainingPlan.on_train_end")
    epoch_end = pick("on_train_epoch_end")
    parts = {"data loading": data, "forward + loss": forward, "backward": backward,
             "optimiser step": optimiser, "batch-end hooks (metrics, logging, callbacks)": hooks,
             "epoch-end hooks (metric logging)": epoch_end,
             "mixture fits (Leiden init, EM refits)": fits}
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def op_breakdown(model_name: str, path: Path, epochs: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from mixvi.module import PriorLayer

    kl = PriorLayer.kl

    def scoped_kl(self, *args, **kwargs):
        with record_function("mixvi.PriorLayer.kl"):
            return kl(self, *args, **kwargs)

    PriorLayer.kl = scoped_kl
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _fit(model_name, path, epochs, None)
    finally:
        PriorLayer.kl = kl
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    fam = defaultdict(float)
    kl_total = 0.0
    for e in events:
        if e.key == "mixvi.PriorLayer.kl":
            kl_total = e.cpu_time_total
            continue
        fam[_family(e.key)] += e.self_cpu_time_total
    out = {f"ops: {k}": v / total for k, v in sorted(fam.items(), key=lambda kv: -kv[1])}
    out["prior KL (PriorLayer.kl, inclusive)"] = kl_total / total
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("mixvi").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import run_scaling

    paths = {"mixvi": run_scaling.make_rna(10_000), "multimixvi": run_scaling.make_multi(10_000)}
    rows = []
    for name, path in paths.items():
        for part, share in lightning_breakdown(name, path, 3).items():
            rows.append({"model": name, "view": "lightning", "part": part, "share": share})
        for part, share in op_breakdown(name, path, 2).items():
            rows.append({"model": name, "view": "torch.profiler", "part": part, "share": share})
    with open(HERE / "profile.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["model", "view", "part", "share"])
        writer.writeheader()
        writer.writerows(rows)
    for view in ("lightning", "torch.profiler"):
        print(f"\n{view}: share of the training time")
        print("| part | MixVI | MultiMixVI |\n|---|---:|---:|")
        parts = list(dict.fromkeys(r["part"] for r in rows if r["view"] == view))
        for part in parts:
            vals = {r["model"]: r["share"] for r in rows if r["view"] == view and r["part"] == part}
            print(f"| {part} | {100 * vals.get('mixvi', float('nan')):.1f} % | "
                  f"{100 * vals.get('multimixvi', float('nan')):.1f} % |")


if __name__ == "__main__":
    main()
