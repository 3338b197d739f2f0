"""What each refit should take from the current latent's communities, across data size.

Rerun (``reread_runs/*.json``, ``reread.csv``; the table printed for results.md)::

    python benchmarks/clustering/run_reread.py
    python benchmarks/clustering/run_reread.py --report-only

MixVI at its defaults but for ``plan_kwargs={"reread_clusters": mode}`` on random subsets of the
shipped labelled sets (Kang: a quarter and a half of the 1,556 cells; SNARE-seq RNA: 2,000 and
5,000 of the 10,309 cells; each subset drawn with the run's seed, seeds 0 and 1; the models'
default epochs). Modes: ``"off"`` (K read once, at the warm-up), ``"replace"`` (every
component re-placed on the current communities at each refit, the previous default) and
``"add"`` (a component added for each separated community without one, the default). The same
subset and seed for all three modes, so the rows differ only in the mode. Own clusters (the
defaults of ``get_cluster_assignments``), K, ECE, and k-means with the true number of types and
Leiden (scanpy defaults) on the same latent; ARI against the fine labels, ``Mis`` excluded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _jobs import load_results, run_jobs, save_result  # benchmarks/_jobs.py
from run_smoothing import train_on_subset  # the same subsets and reference clusterings

RUNS = HERE / "reread_runs"
SEEDS = (0, 1)
SUBSETS = [("kang", 389), ("kang", 778), ("snare_rna", 2000), ("snare_rna", 5000)]
MODES = ("off", "replace", "add")


def run_one(dataset: str, n_cells: int, mode: str, seed: int) -> dict:
    from mixvi.metrics import cluster_agreement, cluster_calibration

    model, fine, res = train_on_subset(dataset, n_cells, seed, {"reread_clusters": mode})
    res["mode"] = mode
    cl = model.get_cluster_assignments()
    own = cl["cluster"].astype(str).to_numpy()
    res["own_ari"] = cluster_agreement(own, fine, exclude=["Mis"])["ari"]
    res["own_k"] = len(model.mixture_summary())
    confidence = cl["confidence"].to_numpy()
    res["ece"] = cluster_calibration(confidence, own, fine, exclude=["Mis"])["ece"]
    return res


def report() -> None:
    df = load_results(RUNS, HERE / "reread.csv")
    if df is None:
        return
    print("| data (seeds 0, 1) | mode | K | own ARI | k-means, true K | Leiden | ECE "
          "| train time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, n), sub in df.groupby(["dataset", "n_cells"]):
        base = sub[sub["mode"] == "off"]["train_s"].mean()
        for mode in MODES:
            m = sub[sub["mode"] == mode]
            if m.empty:
                continue
            ks = " / ".join(str(int(k)) for k in m.sort_values("seed")["own_k"])
            print(f"| {name}, {n} cells ({m['n_types'].iloc[0]} types) | {mode} | {ks} | "
                  f"{m['own_ari'].mean():.3f} | {m['kmeans_ari'].mean():.3f} | "
                  f"{m['leiden_ari'].mean():.3f} | {m['ece'].mean():.3f} | "
                  f"{m['train_s'].mean() / base:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=4, metavar=("DATASET", "N_CELLS", "MODE", "SEED"),
                   help=argparse.SUPPRESS)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.one:
        dataset, n, mode, seed = a.one
        save_result(RUNS, a.one, run_one(dataset, int(n), mode, int(seed)))
        return
    if not a.report_only:
        jobs = [(d, n, m, s) for s in SEEDS for d, n in SUBSETS for m in MODES]
        run_jobs(Path(__file__), RUNS, jobs, a.parallel)
    report()


if __name__ == "__main__":
    main()
