"""Prior / posterior family of MixVI on the shipped RNA datasets with batches.

Answers the design notes' open question -- does the GMM prior reduce the batch effect
compared with the Gaussian prior? -- and reports what KL warm-up does to the GMM prior
and how many mixture components stay in use.

Rerun (what this folder's results.md reports; one invocation per seed, each tagged, so
that a partial run still leaves complete files; --report merges every results_*.csv)::

    python benchmarks/priors/run_priors.py --datasets kang --seeds 0 --max-epochs 150 --tag s0
    for s in 1 2; do python benchmarks/priors/run_priors.py --datasets kang --seeds $s \
        --max-epochs 150 --configs normal gmm --tag s$s; done
    python benchmarks/priors/run_priors.py --datasets snare --seeds 0 --max-epochs 40 \
        --configs normal gmm --tag s0
    python benchmarks/priors/run_priors.py --datasets snare --seeds 0 --max-epochs 40 \
        --configs hierarchical --tag s0h
    python benchmarks/priors/run_priors.py --datasets snare --seeds 1 --max-epochs 40 \
        --configs normal gmm --tag s1
    python benchmarks/priors/run_priors.py --report   # all_runs.csv, summary.md, priors.png

Without ``--configs`` a dataset runs all five configurations on Kang and
normal / gmm / hierarchical on SNARE. ``--rescore --datasets kang --tag s2`` reruns only
the scIB benchmark on saved latents.

Quick smoke run (a minute or two on a free core; writes into ``--out``)::

    python benchmarks/priors/run_priors.py --quick --out /tmp/priors_quick

Configurations (``--configs``), all ``MixVI(n_latent=16, n_hidden=128)``, batch in the
decoder, negative binomial, batch size 128, linear KL warm-up over a quarter of training
unless said otherwise:

=================  ==========================================================================
``normal``         ``prior="normal"`` (scVI's N(0, I)); no components, so its "own clusters"
                   are Leiden (resolution 1) on the latent
``gmm``            ``prior="gmm"`` (trainable mixture, k-means initialised)
``hierarchical``   ``prior="hierarchical"`` (tree; clusters at the finest level)
``gmm_mixture``    ``prior="gmm", posterior="mixture"`` (Gumbel-softmax; clusters from q(c|x))
``gmm_nowarmup``   ``prior="gmm"`` with ``n_epochs_kl_warmup=0`` (KL weight 1 from the start)
=================  ==========================================================================

Components: ``n_components`` = 8 on Kang (5 cell types), 20 on SNARE-seq RNA (23 types;
tree leaves for the hierarchical prior). SNARE-seq's ``Mis`` ("miscellaneous") cells are
left out of every label-based score and of the scIB benchmark (scored on the other
9,190 cells); they are trained on.

Per run: scIB scores from :func:`mixvi.metrics.scib_benchmark` (scib-metrics' Benchmarker,
un-scaled; one Benchmarker per dataset over all runs' embeddings), ARI / NMI of the model's
own clusters and of
Leiden on the latent, the number of components in use, and the entropy of the mixture
weights (``mixture_entropy_train``) per epoch.

Outputs in ``--out`` (``<name>`` = dataset, plus ``_<tag>``): ``results_<name>.csv`` (one row
per run, plus the unintegrated-PCA reference row of the Benchmarker),
``history_<name>.csv`` (per-epoch KL weight, ELBO, mixture entropy),
``latents_<name>.npz`` (embeddings, so scores can be recomputed), and from all of them
``all_runs.csv``, ``summary.md`` (the mean ± sd tables of results.md) and ``priors.png``.
"""

from __future__ import annotations

import argparse
import logging
import os

# Before numpy / numba load: the machine is shared. numba (scanpy's UMAP connectivities)
# otherwise resets the OpenMP pool that torch shares to all cores, and two spinning threads
# on an oversubscribed machine made training ~5x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
THREADS = 1

CONFIGS = {
    "normal": {"model": {"prior": "normal"}, "train": {}},
    "gmm": {"model": {"prior": "gmm"}, "train": {}},
    "hierarchical": {"model": {"prior": "hierarchical"}, "train": {}},
    "gmm_mixture": {"model": {"prior": "gmm", "posterior": "mixture"}, "train": {}},
    "gmm_nowarmup": {"model": {"prior": "gmm"}, "train": {"n_epochs_kl_warmup": 0}},
}
DATASETS = {
    # name: (loader, n_components, default epochs, labels excluded from label metrics)
    "kang": ("kang_pbmc_ifnb", 8, 150, ()),
    "snare": ("snareseq_mouse_cortex_rna", 20, 40, ("Mis",)),
}
SCIB_COLS = {
    "Batch correction": "scib_batch",
    "Bio conservation": "scib_bio",
    "Total": "scib_total",
    "Isolated labels": "scib_isolated_labels",
    "KMeans NMI": "scib_kmeans_nmi",
    "KMeans ARI": "scib_kmeans_ari",
    "Silhouette label": "scib_silhouette_label",
    "cLISI": "scib_clisi",
    "BRAS": "scib_bras",
    "iLISI": "scib_ilisi",
    "KBET": "scib_kbet",
    "Graph connectivity": "scib_graph_connectivity",
    "PCR comparison": "scib_pcr_comparison",
}


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)


def load(dataset: str):
    import mixvi

    loader, n_comp, _, exclude = DATASETS[dataset]
    adata = getattr(mixvi.datasets, loader)()
    return adata, n_comp, exclude


def leiden_labels(emb: np.ndarray, seed: int = 0, resolution: float = 1.0) -> np.ndarray:
    """Leiden (igraph, resolution 1) on scanpy's UMAP connectivities of an exact 15-NN graph.

    The same graph ``sc.pp.neighbors`` builds for fewer than 4,096 cells. It is built here
    with scikit-learn because ``sc.pp.neighbors`` fails above 4,096 cells with the tested
    versions (scanpy 1.11.5 + scipy 1.17: ``'csr_array' object has no attribute 'getnnz'``
    on pynndescent's sparse result).
    """
    import anndata as ad
    import scanpy as sc
    from scanpy.neighbors._connectivity import umap as umap_connectivities
    from sklearn.neighbors import NearestNeighbors

    k = 15
    dist, idx = NearestNeighbors(n_neighbors=k).fit(emb).kneighbors(emb)
    conn = umap_connectivities(idx, dist.astype(np.float32), n_obs=emb.shape[0], n_neighbors=k)
    tmp = ad.AnnData(np.zeros((emb.shape[0], 1), np.float32))
    sc.tl.leiden(tmp, adjacency=conn, resolution=resolution, random_state=seed,
                 flavor="igraph", n_iterations=2, directed=False)
    return tmp.obs["leiden"].astype(str).to_numpy()


def train_one(adata, dataset: str, config: str, seed: int, n_comp: int, epochs: int):
    """Train one model; return its latent, own clusters and per-epoch history."""
    import scvi
    import torch

    import mixvi

    scvi.settings.seed = seed
    torch.manual_seed(seed)
    torch.set_num_threads(THREADS)  # scoring (numba) may have changed it
    cfg = CONFIGS[config]
    adata = adata.copy()
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, n_components=n_comp, **cfg["model"])
    t0 = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False,
                **cfg["train"])
    train_s = time.time() - t0
    latent = model.get_latent_representation()
    hist = pd.DataFrame({k: v.iloc[:, 0].to_numpy() for k, v in model.history.items()
                         if k in ("kl_weight", "elbo_train", "mixture_entropy_train",
                                  "kl_local_train", "reconstruction_loss_train")})
    hist.insert(0, "epoch", np.arange(len(hist)))
    if cfg["model"]["prior"] == "normal":
        clusters, conf, n_used = None, None, np.nan
    else:
        assign = model.get_cluster_assignments()
        clusters = assign["cluster"].astype(str).to_numpy()
        conf = float(assign["confidence"].mean())
        n_used = len(np.unique(clusters))
    info = {
        "train_s": train_s,
        "n_components": int(model.module.prior.n_components),
        "n_clusters_used": n_used,
        "mean_confidence": conf,
        "final_kl_weight": float(hist["kl_weight"].iloc[-1]) if "kl_weight" in hist else np.nan,
    }
    if "mixture_entropy_train" in hist:
        ent = hist["mixture_entropy_train"].to_numpy()
        info["mixture_entropy_final"] = float(ent[-1])
        info["mixture_entropy_min"] = float(np.nanmin(ent))
        info["mixture_entropy_max_possible"] = float(np.log(info["n_components"]))
        # effective number of components in use: exp(entropy of the weights)
        info["effective_components"] = float(np.exp(ent[-1]))
    info["elbo_train_final"] = float(hist["elbo_train"].iloc[-1])
    return latent, clusters, info, hist


def score_run(latent, clusters, adata, exclude, seed):
    from mixvi.metrics import cluster_agreement

    truth = adata.obs["cell_type"].astype(str).to_numpy()
    out = {}
    leiden = leiden_labels(latent, seed=seed)
    agree = cluster_agreement(leiden, truth, exclude=exclude)
    out["leiden_ari"], out["leiden_nmi"] = agree["ari"], agree["nmi"]
    out["n_leiden"] = len(np.unique(leiden))
    if clusters is None:  # normal prior: no components, Leiden stands in for its clusters
        own, out["own_cluster_source"] = leiden, "leiden"
    else:
        own, out["own_cluster_source"] = clusters, "mixture"
    agree = cluster_agreement(own, truth, exclude=exclude)
    out["own_ari"], out["own_nmi"] = agree["ari"], agree["nmi"]
    return out


def run_scib(adata, latents: dict[str, np.ndarray], exclude, n_jobs: int = 1) -> pd.DataFrame:
    """One scib-metrics Benchmarker over every run's embedding (un-scaled scores)."""
    import scanpy as sc

    from mixvi.metrics import scib_benchmark

    truth = adata.obs["cell_type"].astype(str).to_numpy()
    keep = ~np.isin(truth, list(exclude))
    sub = adata[keep].copy()
    sc.pp.normalize_total(sub, target_sum=1e4)
    sc.pp.log1p(sub)
    for key, emb in latents.items():
        sub.obsm[key] = emb[keep]
    # unintegrated reference: the Benchmarker's own PCA (50 comps, arpack) scored as an embedding
    sub.obsm["X_pca"] = sc.pp.pca(sub.X, n_comps=50, svd_solver="arpack")
    sub.obsm["unintegrated_pca"] = sub.obsm["X_pca"]
    res = scib_benchmark(sub, [*latents, "unintegrated_pca"], batch_key="batch",
                         label_key="cell_type", n_jobs=n_jobs)
    res = res.drop(index="Metric Type", errors="ignore")
    res = res[[c for c in SCIB_COLS if c in res.columns]].rename(columns=SCIB_COLS)
    res.index.name = "run"
    # the unintegrated PCA reference is also reported
    return res.astype(float)


def run_dataset(dataset: str, configs, seeds, epochs: int, out: Path, scib: bool, n_jobs: int,
                tag: str = ""):
    adata, n_comp, exclude = load(dataset)
    name = f"{dataset}_{tag}" if tag else dataset
    rows, hists, latents = [], [], {}
    for config in configs:
        for seed in seeds:
            t0 = time.time()
            latent, clusters, info, hist = train_one(adata, dataset, config, seed, n_comp, epochs)
            scores = score_run(latent, clusters, adata, exclude, seed)
            key = f"{config}__s{seed}"
            latents[key] = latent
            row = {"dataset": dataset, "config": config, "seed": seed, "epochs": epochs,
                   "run": key, **info, **scores}
            rows.append(row)
            hist.insert(0, "seed", seed)
            hist.insert(0, "config", config)
            hist.insert(0, "dataset", dataset)
            hists.append(hist)
            print(f"[{dataset}] {key}: own ARI {scores['own_ari']:.3f} leiden ARI "
                  f"{scores['leiden_ari']:.3f} ({time.time() - t0:.0f}s)", flush=True)
            # keep partial results on disk
            pd.DataFrame(rows).to_csv(out / f"results_{name}.partial.csv", index=False)
    df = pd.DataFrame(rows)
    np.savez_compressed(out / f"latents_{name}.npz", **latents)
    pd.concat(hists).to_csv(out / f"history_{name}.csv", index=False)
    if scib:
        df = add_scib(df, adata, latents, dataset, exclude, n_jobs)
    df.to_csv(out / f"results_{name}.csv", index=False)
    (out / f"results_{name}.partial.csv").unlink(missing_ok=True)
    return df


def add_scib(df, adata, latents, dataset, exclude, n_jobs) -> pd.DataFrame:
    """Merge the Benchmarker's scores into the per-run rows, plus the unintegrated row."""
    t0 = time.time()
    res = run_scib(adata, latents, exclude, n_jobs=n_jobs)
    print(f"[{dataset}] scib-metrics Benchmarker: {time.time() - t0:.0f}s", flush=True)
    df = df[df["config"] != "unintegrated_pca"].drop(columns=list(res.columns), errors="ignore")
    df = df.merge(res, left_on="run", right_index=True, how="left")
    reference = res.loc[[i for i in res.index if i not in latents]]
    for run, prow in reference.iterrows():  # unintegrated reference row
        df = pd.concat([df, pd.DataFrame([{"dataset": dataset, "config": "unintegrated_pca",
                                           "seed": -1, "run": run, **prow.to_dict()}])])
    return df


def rescore(dataset: str, tag: str, out: Path, n_jobs: int) -> None:
    """Rerun the scIB benchmark on saved latents (``latents_<name>.npz``)."""
    name = f"{dataset}_{tag}" if tag else dataset
    adata, _, exclude = load(dataset)
    path = out / f"results_{name}.csv"
    if not path.exists():
        path = out / f"results_{name}.partial.csv"
    df = pd.read_csv(path)
    with np.load(out / f"latents_{name}.npz") as f:
        latents = {k: f[k] for k in f.files}
    df = add_scib(df, adata, latents, dataset, exclude, n_jobs)
    df.to_csv(out / f"results_{name}.csv", index=False)
    (out / f"results_{name}.partial.csv").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- report
TABLE_COLS = [
    ("scib_batch", "scIB batch"),
    ("scib_bio", "scIB bio"),
    ("scib_total", "scIB total"),
    ("scib_ilisi", "iLISI"),
    ("scib_kbet", "kBET"),
    ("own_ari", "own-cluster ARI"),
    ("own_nmi", "own-cluster NMI"),
    ("leiden_ari", "Leiden ARI"),
    ("n_clusters_used", "clusters used"),
    ("effective_components", "exp(H(π))"),
    ("train_s", "train s"),
]


DIGITS = {"n_clusters_used": 1, "effective_components": 1, "train_s": 0}


def fmt(values: pd.Series, digits: int = 3) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    if len(v) == 1:
        return f"{v.iloc[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def summary_table(df: pd.DataFrame) -> str:
    lines = []
    for dataset, d in df.groupby("dataset", sort=False):
        epochs = d["epochs"].dropna().unique()
        lines.append(f"\n**{dataset}** ({', '.join(str(int(e)) for e in epochs)} epochs; "
                     f"mean ± sd over seeds {sorted(int(s) for s in d['seed'].unique() if s >= 0)})\n")
        cols = [(c, n) for c, n in TABLE_COLS if c in d.columns]
        lines.append("| config | n | " + " | ".join(n for _, n in cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        order = [c for c in [*CONFIGS, "unintegrated_pca"] if c in set(d["config"])]
        for config in order:
            g = d[d["config"] == config]
            lines.append(f"| {config} | {len(g)} | " + " | ".join(fmt(g[c], DIGITS.get(c, 3)) for c, _ in cols) + " |")
    return "\n".join(lines)


def figure(df: pd.DataFrame, hist: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("scib_batch", "scib_bio", "scib_total", "own_ari") if m in df.columns]
    datasets = list(dict.fromkeys(df["dataset"]))
    ncol = len(metrics) + 1
    fig, axes = plt.subplots(len(datasets), ncol, figsize=(3.3 * ncol, 3.2 * len(datasets)),
                             squeeze=False)
    colors = dict(zip([*CONFIGS, "unintegrated_pca"],
                      ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#7f7f7f"]))
    for i, dataset in enumerate(datasets):
        d = df[df["dataset"] == dataset]
        order = [c for c in [*CONFIGS, "unintegrated_pca"] if c in set(d["config"])]
        for j, m in enumerate(metrics):
            ax = axes[i, j]
            for x, config in enumerate(order):
                v = d.loc[d["config"] == config, m].dropna().astype(float)
                if v.empty:
                    continue
                ax.bar(x, v.mean(), color=colors[config], alpha=0.5)
                ax.scatter(np.full(len(v), x), v, color=colors[config], s=14, zorder=3)
            ax.set_xticks(range(len(order)))
            ax.set_xticklabels(order, rotation=45, ha="right", fontsize=8)
            ax.set_title(f"{dataset}: {m}", fontsize=9)
            vals = d[m].dropna().astype(float)
            if len(vals):
                lo, hi = vals.min(), vals.max()
                pad = max(0.05 * (hi - lo), 0.01)
                ax.set_ylim(max(lo - 4 * pad, 0), hi + 2 * pad)
        ax = axes[i, -1]
        h = hist[hist["dataset"] == dataset] if "dataset" in hist else hist.iloc[:0]
        for config, g in h.groupby("config"):
            if "mixture_entropy_train" not in g or g["mixture_entropy_train"].isna().all():
                continue
            for seed, gs in g.groupby("seed"):
                ax.plot(gs["epoch"], gs["mixture_entropy_train"], color=colors.get(config, "k"),
                        lw=1, alpha=0.8, label=config if seed == g["seed"].min() else None)
        ax.set_title(f"{dataset}: mixture-weight entropy", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def report(out: Path) -> pd.DataFrame | None:
    frames = [pd.read_csv(p) for p in sorted(out.glob("results_*.csv"))
              if "partial" not in p.name]
    if not frames:
        print("no results_*.csv found in", out)
        return None
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(out / "all_runs.csv", index=False)
    hists = []
    for p in sorted(out.glob("history_*.csv")):
        hists.append(pd.read_csv(p))
    hist = pd.concat(hists, ignore_index=True) if hists else pd.DataFrame()
    table = summary_table(df)
    (out / "summary.md").write_text(table + "\n")
    figure(df, hist, out / "priors.png")
    print(table)
    return df


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["kang", "snare"], choices=list(DATASETS))
    p.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS),
                   help="default: all five on kang, normal/gmm/hierarchical on snare")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=None,
                   help="default: 150 on kang, 40 on snare")
    p.add_argument("--no-scib", action="store_true", help="skip scib-metrics' Benchmarker")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: kang, seed 0, 10 epochs, gmm + normal, no scIB")
    p.add_argument("--report", action="store_true", help="only rebuild summary + figure")
    p.add_argument("--rescore", action="store_true",
                   help="rerun only the scIB benchmark on the saved latents of --datasets/--tag")
    p.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
    p.add_argument("--out", type=Path, default=HERE)
    p.add_argument("--tag", default="",
                   help="suffix of the output files, so that runs split over several "
                        "invocations (e.g. one per seed) are all picked up by --report")
    args = p.parse_args(argv)

    quiet()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(args.out)
        return
    import torch

    global THREADS
    THREADS = args.threads
    torch.set_num_threads(args.threads)
    if args.rescore:
        for dataset in args.datasets:
            rescore(dataset, args.tag, args.out, args.threads)
        report(args.out)
        return
    if args.quick:
        args.datasets, args.seeds, args.max_epochs = ["kang"], [0], args.max_epochs or 10
        args.configs = args.configs or ["normal", "gmm"]
        args.no_scib = True
    for dataset in args.datasets:
        configs = args.configs or (list(CONFIGS) if dataset == "kang"
                                   else ["normal", "gmm", "hierarchical"])
        epochs = args.max_epochs or DATASETS[dataset][2]
        print(f"== {dataset}: configs {configs}, seeds {args.seeds}, {epochs} epochs", flush=True)
        run_dataset(dataset, configs, args.seeds, epochs, args.out, scib=not args.no_scib,
                    n_jobs=args.threads, tag=args.tag)
    report(args.out)


if __name__ == "__main__":
    sys.exit(main())
