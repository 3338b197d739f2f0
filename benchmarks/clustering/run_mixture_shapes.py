"""Why do the mixture's own clusters trail Leiden on Kang? The shape of the components.

MixVI at its defaults on Kang, trained without the final refit (``final_refit=False``), so that
each way of placing Gaussian components can be applied to the same latent afterwards:

* ``prior at the end of training`` and ``+ final refit (default)``: the model's own clusters
  without and with the 9 EM iterations that end a default training;
* ``Gaussians moment-matched to Leiden``: one diagonal Gaussian per community of the
  batch-balanced Leiden graph (the communities that start the mixture), cells assigned by
  responsibility; then ``+ EM`` (what the refits do from there);
* ``tied variances`` / ``variances capped at the median``: the same EM with every component's
  variance set to the weighted mean variance, or capped at the median component's;
* ``full covariances`` (sklearn's GaussianMixture from the same start): what a non-diagonal
  mixture could do;
* k-means with the true K, Leiden on the batch-balanced graph and Leiden at scanpy's defaults.

For each seed it also writes every component's spread (mean standard deviation over latent
dimensions), weight, purity (share of its majority label) and batch composition.

Rerun (``mixture_shapes.csv``, ``mixture_components.csv``, table printed for results.md)::

    python benchmarks/clustering/run_mixture_shapes.py          # seeds 0, 1, 2, two at a time
    python benchmarks/clustering/run_mixture_shapes.py --report-only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _jobs import run_jobs, save_result  # benchmarks/_jobs.py

RUNS = HERE / "shape_runs"
SEEDS = (0, 1, 2)
EM_ITER = 9  # as the final refit


def responsibilities(mu, var, means, variances, weights) -> np.ndarray:
    """``r_k propto w_k N(mu; m_k, s_k^2 + sigma^2)`` (posterior uncertainty integrated out,
    as ``get_cluster_assignments``), shape ``(n, K)``."""
    total = variances[None] + var[:, None]
    log_p = np.log(np.maximum(weights, 1e-300))[None] - 0.5 * (
        ((mu[:, None] - means[None]) ** 2 / total).sum(-1) + np.log(total).sum(-1)
    )
    log_p -= log_p.max(1, keepdims=True)
    r = np.exp(log_p)
    return r / r.sum(1, keepdims=True)


def em(mu, var, means, variances, weights, n_iter, variance_rule=None):
    """EM of a diagonal mixture on the posteriors (moment matching, as the refits do), with
    an optional rule applied to the variances after each M-step."""
    from mixvi.priors import moment_match

    for _ in range(n_iter):
        r = responsibilities(mu, var, means, variances, weights)
        means, stds, weights = moment_match(mu, var, r)
        variances = stds**2
        if variance_rule is not None:
            variances = variance_rule(variances, weights)
    return means, variances, weights


def tied(variances, weights):
    return np.repeat((weights[:, None] * variances).sum(0, keepdims=True), len(weights), 0)


def capped(variances, weights):
    return np.minimum(variances, np.median(variances, 0, keepdims=True))


def run(seed: int) -> dict:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mixvi").setLevel(logging.WARNING)
    import pandas as pd
    import scvi
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.mixture import GaussianMixture

    import mixvi
    from mixvi.priors import em_refit, leiden_assignments, moment_match

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from run_clustering import leiden_scanpy

    scvi.settings.seed = seed
    adata = mixvi.datasets.kang_pbmc_ifnb()
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata)
    model.train(enable_progress_bar=False, plan_kwargs={"final_refit": False})
    mu, var = model.get_latent_representation(return_dist=True)
    mu, var = mu.astype(np.float64), var.astype(np.float64)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    batch = adata.obs["batch"].astype(str).to_numpy()
    prior = model.module.prior
    means, stds, weights, active = prior.free_components()
    end = (means[active], stds[active] ** 2, weights[active] / weights[active].sum())

    parts: dict[str, np.ndarray] = {}
    parts["prior at the end of training"] = responsibilities(mu, var, *end).argmax(1)
    em_refit(prior, mu, var, None, 0, n_iter=EM_ITER, min_fraction=5 / len(mu))
    means, stds, weights, active = prior.free_components()
    final = (means[active], stds[active] ** 2, weights[active] / weights[active].sum())
    parts["+ final refit (default)"] = responsibilities(mu, var, *final).argmax(1)
    codes = np.unique(batch, return_inverse=True)[1]
    communities = leiden_assignments(mu, 1.0, max_clusters=prior.n_components, batch=codes,
                                     seed=seed)
    onehot = np.eye(communities.max() + 1)[communities]
    m0, s0, w0 = moment_match(mu, var, onehot)
    start = (m0, s0**2, w0)
    parts["Gaussians moment-matched to Leiden"] = responsibilities(mu, var, *start).argmax(1)
    parts["+ EM"] = responsibilities(mu, var, *em(mu, var, *start, EM_ITER)).argmax(1)
    parts["+ EM, tied variances"] = responsibilities(
        mu, var, *em(mu, var, *start, EM_ITER, tied)).argmax(1)
    parts["+ EM, variances capped at the median"] = responsibilities(
        mu, var, *em(mu, var, *start, EM_ITER, capped)).argmax(1)
    full = GaussianMixture(len(w0), covariance_type="full", means_init=m0, random_state=seed,
                           max_iter=200).fit(mu)
    parts["full covariances (EM from the same start)"] = full.predict(mu)
    n_types = len(np.unique(labels))
    parts[f"k-means, true K = {n_types}"] = KMeans(n_types, n_init=10,
                                                   random_state=seed).fit(mu).labels_
    parts["Leiden, batch-balanced graph"] = communities
    parts["Leiden, scanpy defaults"] = leiden_scanpy(mu.astype(np.float32), seed)

    rows = [{"seed": seed, "clustering": name, "ari": adjusted_rand_score(labels, p),
             "k": len(np.unique(p)), "batch_nmi": normalized_mutual_info_score(batch, p)}
            for name, p in parts.items()]
    own = parts["+ final refit (default)"]
    comps = []
    for k in np.unique(own):
        cells = own == k
        counts = pd.Series(labels[cells]).value_counts()
        comps.append({"seed": seed, "component": int(k), "weight": float(final[2][k]),
                      "mean_std": float(np.sqrt(final[1][k]).mean()), "n_cells": int(cells.sum()),
                      "majority": counts.index[0], "purity": float(counts.iloc[0] / cells.sum()),
                      "stim_share": float((batch[cells] == "stim").mean())})
    return {"rows": rows, "components": comps}


def report() -> None:
    import pandas as pd

    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    rows = pd.DataFrame([r for run in runs for r in run["rows"]])
    comps = pd.DataFrame([c for run in runs for c in run["components"]])
    rows.to_csv(HERE / "mixture_shapes.csv", index=False)
    comps.to_csv(HERE / "mixture_components.csv", index=False)
    order = list(dict.fromkeys(rows["clustering"]))
    table = rows.groupby("clustering").agg(
        ari=("ari", "mean"), ari_sd=("ari", "std"), k=("k", "mean"), batch_nmi=("batch_nmi", "mean"),
        seeds=("seed", "nunique")).loc[order]
    print(f"| clustering of the same latent (Kang, {table['seeds'].max()} seeds) | ARI | K | "
          "cluster/batch NMI |\n|---|---:|---:|---:|")
    for name, r in table.iterrows():
        print(f"| {name} | {r['ari']:.3f} ± {r['ari_sd']:.3f} | {r['k']:.1f} | {r['batch_nmi']:.3f} |")
    print("\ncomponents after the final refit:")
    print(comps.round(3).to_string(index=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=2, metavar=("DATASET", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--parallel", type=int, default=2)
    a = p.parse_args()
    if a.one:
        save_result(RUNS, a.one, run(int(a.one[1])))
        return
    if not a.report_only:
        run_jobs(Path(__file__), RUNS, [("kang", seed) for seed in SEEDS], a.parallel)
    report()


if __name__ == "__main__":
    main()
