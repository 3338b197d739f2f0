"""Training throughput and peak memory against the number of cells (issue #5).

MixVI vs scvi-tools SCVI on up-sampled Kang PBMC (2,000 genes), and MultiMixVI vs scvi-tools
MULTIVI on up-sampled SNARE-seq (all 1,677 genes, the 5,000 most accessible peaks).

Rerun (writes results.csv, scaling.png and prints the table for results.md):

    python benchmarks/scaling/run_scaling.py                       # the sizes in results.md
    python benchmarks/scaling/run_scaling.py --rna-sizes 10000 50000 --multi-sizes 10000

Data. Up-sampling resamples cells of the shipped data with replacement and redraws every
stored count from a Poisson with that count times a per-cell log-normal size factor (sd 0.2),
so cells are new draws with the same sparsity; zeros stay zeros, nothing is densified. Kang
has 1,267 genes; 733 more are binomially thinned copies (keep probability 0.3-1) of randomly
chosen Kang genes, to reach 2,000. Each dataset is written once to an h5ad / h5mu cache.

``mixvi_backed`` trains MixVI from ``anndata.read_h5ad(path, backed="r")``: the counts stay on
disk and each minibatch is read from the file.

Runs. Every (model, size) pair is trained in a fresh child process that loads the data from
disk, so its peak resident memory (``VmHWM`` of ``/proc/self/status``; ``ru_maxrss`` would
inherit the parent's size) is its own.
The pairs of a size run back to back (MixVI then SCVI, ...) to share machine conditions.
SCVI runs with its default ZINB likelihood (``scvi``) and, at the smaller sizes, with MixVI's
default NB (``scvi_nb``), which isolates the cost of the mixture prior. Same settings for all:
1 torch thread, the models' default batch size (128; MixVI: 512 from 20,000 cells on, with
its learning rate scaled, see ``MixVI.train``), all cells for training
(``train_size=1.0``), ``n_hidden=128``, ``n_latent`` 16 (MixVI / SCVI) or 20 (multi), and the
models' defaults otherwise (MixVI: ``n_components="auto"``; the mixture is initialised at epoch 0
so that the mixture KL is active in every measured step, and the Leiden initialisation falls in
the first epoch, which the throughput leaves out). EM refits keep the schedule of a
default-length training at that size (every tenth of the default epochs: every 40 epochs at
10k cells; MultiMixVI every 5, its early-stopping schedule), so that a few-epoch run does not
refit after every epoch as no real run does; the measured epochs then hold no refit. A refit is
one inference pass over at most 20,000 training cells (the "latent cells / s" column) plus EM
on them: amortised over a real run, about 1 % of the training time (2 % for MultiMixVI).
Throughput = cells x epochs / seconds between Lightning's ``on_train_start`` and
``on_train_end``. After training, ``get_latent_representation`` runs
once with ``batch_size=1024``; "peak incl. inference" is the process peak after it (see
docs/scaling.md: at 200k cells 1024-cell batches leave glibc heap fragmentation of up to
0.8 GB; scvi-tools' default of 128 adds none).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MIXVI_SCALING_CACHE", Path(tempfile.gettempdir()) / "mixvi_scaling"))
N_GENES = 2000
N_PEAKS = 5000


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return None


def _rss_mb() -> float:
    return _status_mb("VmRSS") or float("nan")


def _peak_mb() -> float:
    """Peak resident memory of this process.

    ``VmHWM`` (the high-water mark of this process's own address space) where available:
    Linux's ``getrusage(RUSAGE_SELF).ru_maxrss`` carries over the parent's resident size at
    ``fork`` across ``exec``, so a child started from a big parent would report the parent's.
    """
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------- data
def _resample(X, idx, rng, size):
    """Rows ``idx`` of CSR ``X`` with every stored count redrawn from Poisson(count * size)."""
    import scipy.sparse as sp

    out = X[idx].tocsr()
    per_row = np.repeat(size, np.diff(out.indptr))
    out.data = rng.poisson(out.data * per_row).astype(np.float32)
    out.eliminate_zeros()
    return sp.csr_matrix(out)


def make_rna(n_cells: int, seed: int = 0) -> Path:
    path = CACHE / f"kang_{n_cells}x{N_GENES}_X.h5ad"
    if path.exists():
        return path
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    import mixvi

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kang = mixvi.datasets.kang_pbmc_ifnb()
    X = sp.csr_matrix(kang.layers["counts"], dtype=np.float32)
    extra = N_GENES - X.shape[1]
    src = rng.choice(X.shape[1], extra, replace=True)
    thin = sp.csc_matrix(X[:, src])
    keep = np.repeat(rng.uniform(0.3, 1.0, extra), np.diff(thin.indptr))
    thin.data = rng.binomial(thin.data.astype(np.int64), keep).astype(np.float32)
    X = sp.hstack([X, thin.tocsr()], format="csr")
    idx = np.sort(rng.integers(0, X.shape[0], n_cells))
    size = rng.lognormal(0.0, 0.2, n_cells)
    counts = _resample(X, idx, rng, size)
    obs = kang.obs.iloc[idx][["batch", "cell_type"]].reset_index(drop=True)
    obs.index = [f"c{i}" for i in range(n_cells)]
    var = pd.DataFrame(
        index=list(kang.var_names) + [f"{kang.var_names[j]}_copy{i}" for i, j in enumerate(src)]
    )
    adata = ad.AnnData(X=counts, obs=obs, var=var)  # one copy of the counts, in .X
    adata.write_h5ad(path)
    return path


def make_multi(n_cells: int, seed: int = 0) -> Path:
    path = CACHE / f"snare_{n_cells}x{N_PEAKS}peaks_X.h5mu"
    if path.exists():
        return path
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    import mixvi

    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    snare = mixvi.datasets.snareseq_mouse_cortex()
    R = sp.csr_matrix(snare["rna"].layers["counts"], dtype=np.float32)
    A = sp.csr_matrix(snare["atac"].layers["counts"], dtype=np.float32)
    top = np.sort(np.argsort(-np.asarray((A > 0).sum(0)).ravel())[:N_PEAKS])
    A = A[:, top]
    idx = np.sort(rng.integers(0, R.shape[0], n_cells))
    size = rng.lognormal(0.0, 0.2, n_cells)
    obs = snare.obs.iloc[idx][["batch", "cell_type"]].reset_index(drop=True)
    obs.index = [f"c{i}" for i in range(n_cells)]
    mods = {}
    for name, M, var in (
        ("rna", R, snare["rna"].var.iloc[:, :0]),
        ("atac", A, snare["atac"].var.iloc[top, :0]),
    ):
        counts = _resample(M, idx, rng, size)
        mods[name] = ad.AnnData(X=counts, obs=obs.copy(), var=var.copy())  # counts in .X
    mdata = md.MuData(mods)
    mdata.obs["batch"] = obs["batch"].to_numpy()
    mdata.write(path)
    return path


# ----------------------------------------------------------------------------------- compute
N_HIDDEN, N_LATENT = 128, 16


def flop_per_cell(model: str, n_features: int) -> float:
    """Multiply-adds x 2 of the dense layers of one training step per cell, forward and
    backward (x 3): encoder ``G -> 128 -> 2 x 16``, decoder ``16 -> 128 -> G`` (SCVI's ZINB
    adds a second ``128 -> G`` head). Element-wise work (likelihoods, batch norm) is not
    counted: this is the arithmetic a matmul-bound implementation could not avoid."""
    if model.startswith(("multi",)):
        return float("nan")
    heads = 2 if model == "scvi" else 1
    dense = n_features * N_HIDDEN + N_HIDDEN * 2 * N_LATENT + N_LATENT * N_HIDDEN
    dense += heads * N_HIDDEN * n_features
    return 3 * 2 * dense


def matmul_gflops(threads: int = 1, size: int = 1024, repeat: int = 20) -> float:
    """fp32 matmul throughput of this machine right now (GFLOP/s), for the compute limit."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - t) / 1e9


# ----------------------------------------------------------------------------------- child
def child(model_name: str, path: str, epochs: int, threads: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(threads)
    import scvi
    from lightning.pytorch.callbacks import Callback

    import mixvi
    from mixvi.model._training import default_batch_size, default_max_epochs, default_plan

    def real_refit_schedule(n_cells: int, early_stopping: bool) -> dict:
        """The EM-refit interval of a default-length training on ``n_cells`` (every tenth of
        the default epochs; every 5 epochs with early stopping, MultiMixVI's default). A
        few-epoch run would otherwise refit after every epoch, which no real run does."""
        plan = default_plan(default_max_epochs(n_cells), None, None, n_cells, early_stopping)
        return {"refit_every": plan["refit_every"]}

    rss_imports = _rss_mb()

    class Clock(Callback):
        """Whole training (from on_train_start) and every epoch on its own."""

        def __init__(self):
            self.epochs: list[float] = []

        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_start(self, trainer, pl_module):
            self.e0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.epochs.append(time.perf_counter() - self.e0)

        def on_train_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.t0

    clock = Clock()
    scvi.settings.seed = 0
    common = dict(max_epochs=epochs, train_size=1.0, enable_progress_bar=False,
                  enable_model_summary=False, callbacks=[clock])
    # every model at its default batch size: MixVI picks its own from the number of cells
    batch_size = 128
    if not model_name.startswith("mixvi"):
        common["batch_size"] = batch_size
    if model_name in ("mixvi", "scvi", "scvi_nb", "mixvi_backed"):
        import anndata as ad

        if model_name == "mixvi_backed":
            adata = ad.read_h5ad(path, backed="r")
            group = adata.X.group
            data_mb = sum(group[k].size * group[k].dtype.itemsize
                          for k in ("data", "indices", "indptr")) / 2**20
        else:
            adata = ad.read_h5ad(path)
            X = adata.X
            data_mb = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
        rss_data = _rss_mb()
        t_setup = time.perf_counter()
        if model_name.startswith("mixvi"):
            mixvi.MixVI.setup_anndata(adata, batch_key="batch")
            model = mixvi.MixVI(adata, n_latent=16)
            t_setup = time.perf_counter() - t_setup
            model.train(prior_init_epoch=0, plan_kwargs=real_refit_schedule(adata.n_obs, False),
                        **common)
            batch_size = default_batch_size(adata.n_obs)
        else:
            scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
            likelihood = "nb" if model_name == "scvi_nb" else "zinb"  # SCVI's default: zinb
            model = scvi.model.SCVI(adata, n_latent=16, gene_likelihood=likelihood)
            t_setup = time.perf_counter() - t_setup
            model.train(**common)
        n_obs, n_features = adata.n_obs, adata.n_vars
    else:
        import mudata as md

        mdata = md.read_h5mu(path)
        data_mb = sum(m.X.data.nbytes + m.X.indices.nbytes + m.X.indptr.nbytes
                      for m in mdata.mod.values()) / 2**20
        rss_data = _rss_mb()
        t_setup = time.perf_counter()
        if model_name == "multimixvi":
            mixvi.MultiMixVI.setup_mudata(
                mdata, rna_layer=None, atac_layer=None, batch_key="batch"
            )
            model = mixvi.MultiMixVI(mdata, n_latent=20)
            t_setup = time.perf_counter() - t_setup
            model.train(prior_init_epoch=0, plan_kwargs=real_refit_schedule(mdata.n_obs, True),
                        **common)
        else:
            from scvi.model import MULTIVI

            mods = {"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"}
            MULTIVI.setup_mudata(mdata, rna_layer=None, atac_layer=None, batch_key="batch",
                                 modalities=mods)
            model = MULTIVI(mdata, n_genes=mdata["rna"].n_vars, n_regions=mdata["atac"].n_vars,
                            n_latent=20)
            t_setup = time.perf_counter() - t_setup
            model.train(early_stopping=False, **common)
        n_obs, n_features = mdata.n_obs, mdata["rna"].n_vars + mdata["atac"].n_vars
    peak_train = _peak_mb()
    rss_train = _rss_mb()
    t_inf = time.perf_counter()
    z = model.get_latent_representation(batch_size=1024)
    t_inf = time.perf_counter() - t_inf
    assert np.isfinite(z).all()
    # steady state: the epochs after the first (which holds the mixture's first fit, Leiden
    # on up to 20k cells, and the data store's construction)
    steady = clock.epochs[1:] if len(clock.epochs) > 1 else clock.epochs
    return {
        "model": model_name, "n_cells": n_obs, "n_features": n_features, "epochs": epochs,
        "batch_size": batch_size, "steps": int(model.trainer.global_step),
        "threads": threads, "setup_s": t_setup, "train_s": clock.seconds,
        "first_epoch_s": clock.epochs[0],
        "cells_epochs_per_s": n_obs * len(steady) / sum(steady),
        "cells_epochs_per_s_incl_first": n_obs * epochs / clock.seconds,
        "flop_per_cell": flop_per_cell(model_name, n_features),
        "latent_cells_per_s": n_obs / t_inf,
        "data_mb": data_mb, "rss_imports_mb": rss_imports, "rss_after_load_mb": rss_data,
        "peak_train_mb": peak_train, "peak_mb": _peak_mb(),
        "train_overhead_mb": peak_train - rss_data, "rss_after_train_mb": rss_train,
        "rss_end_mb": _rss_mb(),
    }


def run_child(model: str, path: Path, epochs: int, threads: int, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", model, str(path), str(epochs), str(threads)]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{model} on {path.name} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.time() - t
    print(
        f"{res['model']:>10} {res['n_cells']:>7} cells x {res['epochs']} ep: "
        f"{res['cells_epochs_per_s']:8.0f} cells*ep/s, peak {res['peak_mb']:7.0f} MB "
        f"(after load {res['rss_after_load_mb']:6.0f}, data {res['data_mb']:6.0f}), "
        f"wall {res['wall_s']:.0f} s",
        flush=True,
    )
    return res


# ----------------------------------------------------------------------------------- report
def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    style = {"mixvi": ("C0", "-o"), "mixvi_backed": ("C0", ":o"), "scvi": ("C1", "--s"),
             "scvi_nb": ("C4", ":s"),
             "multimixvi": ("C2", "-^"), "multivi": ("C3", "--v")}
    for model, (color, fmt) in style.items():
        sel = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n_cells"])
        if not sel:
            continue
        n = [r["n_cells"] for r in sel]
        axes[0].plot(n, [r["cells_epochs_per_s"] for r in sel], fmt, color=color, label=model)
        axes[1].plot(n, [r["peak_train_mb"] - r["rss_imports_mb"] for r in sel], fmt,
                     color=color, label=model)
    data = sorted({(r["n_cells"], r["data_mb"]) for r in rows if r["model"] == "scvi"})
    if data:
        axes[1].plot([d[0] for d in data], [d[1] for d in data], ":", color="grey",
                     label="RNA counts in memory (CSR)")
    axes[0].set(xscale="log", xlabel="cells", ylabel="training cells x epochs / s",
                title="Throughput (1 CPU thread)")
    axes[1].set(xscale="log", yscale="log", xlabel="cells",
                ylabel="peak RSS in training - RSS after imports (MB)",
                title="Memory above the ~0.7 GB of imports")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


REFERENCE = {"mixvi": "scvi", "scvi_nb": "scvi", "mixvi_backed": "mixvi",
             "multimixvi": "multivi"}


def table(rows: list[dict]) -> str:
    by_key = {(r["model"], r["n_cells"]): r for r in rows}
    lines = [
        "| model | cells | batch | epochs | cells x epochs / s | vs | peak RSS in training (MB) | "
        "RSS after loading data (MB) | training overhead (MB) | counts (MB) | "
        "peak incl. inference (MB) | latent cells / s | % of matmul limit |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = ["mixvi", "scvi", "scvi_nb", "mixvi_backed", "multimixvi", "multivi"]
    for r in sorted(rows, key=lambda r: (r["model"] in ("multimixvi", "multivi"), r["n_cells"],
                                         order.index(r["model"]))):
        ref = by_key.get((REFERENCE.get(r["model"]), r["n_cells"]))
        vs = (f"{r['cells_epochs_per_s'] / ref['cells_epochs_per_s']:.2f}x {ref['model']}"
              if ref else "")
        lines.append(
            f"| {r['model']} | {r['n_cells']:,} | {r['batch_size']} | "
            f"{r['epochs']} | "
            f"{r['cells_epochs_per_s']:,.0f} | {vs} | {r['peak_train_mb']:,.0f} | "
            f"{r['rss_after_load_mb']:,.0f} | {r['train_overhead_mb']:,.0f} | "
            f"{r['data_mb']:,.0f} | {r['peak_mb']:,.0f} | {r['latent_cells_per_s']:,.0f} | "
            f"{100 * r.get('fraction_of_compute_limit', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, model, path, epochs, threads = sys.argv
        print(json.dumps(child(model, path, int(epochs), int(threads))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rna-sizes", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    parser.add_argument("--multi-sizes", type=int, nargs="*", default=[10_000, 50_000])
    parser.add_argument("--epochs", type=str, default="10000:6,50000:4,200000:3",
                        help="epochs per size, 'cells:epochs,...' (other sizes: 2); throughput "
                             "is measured on the epochs after the first")
    parser.add_argument("--multi-epochs", type=int, default=5)
    parser.add_argument("--nb-sizes", type=int, nargs="*", default=[10_000, 50_000],
                        help="sizes at which SCVI is also run with gene_likelihood='nb'")
    parser.add_argument("--backed-sizes", type=int, nargs="*", default=[50_000, 200_000],
                        help="sizes at which MixVI also trains from read_h5ad(backed='r')")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", type=Path, default=HERE / "results.csv")
    parser.add_argument("--report-only", action="store_true",
                        help="redraw scaling.png and the table from the CSV without training")
    args = parser.parse_args()
    epochs = {int(k): int(v) for k, v in (p.split(":") for p in args.epochs.split(",") if p)}

    rows: list[dict] = []
    if args.out.exists():  # keep results of other sizes / models
        with open(args.out) as fh:
            rows = [
                {k: (v if k == "model" else float(v) if v != "" else float("nan"))
                 for k, v in r.items()}
                for r in csv.DictReader(fh)
            ]
    t0 = time.time()

    def add(res):
        if "flop_per_cell" in res and not args.report_only:
            res["matmul_gflops"] = gflops
            res["fraction_of_compute_limit"] = (
                res["cells_epochs_per_s"] * res["flop_per_cell"] / (gflops * 1e9)
            )
        rows[:] = [r for r in rows if not (r["model"] == res["model"]
                                           and int(r["n_cells"]) == res["n_cells"])]
        rows.append(res)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    if not args.report_only:
        gflops = matmul_gflops(args.threads)
        print(f"fp32 matmul on {args.threads} thread(s): {gflops:.0f} GFLOP/s", flush=True)
    for n in [] if args.report_only else args.rna_sizes:
        path = make_rna(n)
        models = ["mixvi", "scvi"] + ["scvi_nb"] * (n in args.nb_sizes)
        models += ["mixvi_backed"] * (n in args.backed_sizes)
        for model in models:
            add(run_child(model, path, epochs.get(n, 2), args.threads, args.timeout))
    for n in [] if args.report_only else args.multi_sizes:
        path = make_multi(n)
        for model in ("multimixvi", "multivi"):
            add(run_child(model, path, args.multi_epochs, args.threads, args.timeout))
    for r in rows:
        for key in ("n_cells", "n_features", "epochs", "threads"):
            r[key] = int(r[key])
        size = r.get("batch_size")  # absent or NaN in rows written before the column: 128
        r["batch_size"] = 128 if size is None or size != size else int(size)
    plot(rows, HERE / "scaling.png")
    print(table(rows))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
