"""How far can translation and label transfer go on SNARE-seq? Ceilings beside MultiMixVI.

Rerun (``ceiling_runs/*.json``, ``ceilings.csv``; the table printed for results.md)::

    python benchmarks/multimodal/run_ceilings.py            # seeds 0, 1
    python benchmarks/multimodal/run_ceilings.py --report-only

Same split as ``run_benchmark.py`` (80/20 stratified by cell type, MultiMixVI at its defaults on
the training 80 %), scores on the held-out 20 % with the metrics of that benchmark. Beside the
model's translation from the other modality, predictions that know more than it can:

* **the cell's own RNA**: MultiMixVI's RNA decoder applied to the RNA latent of the same cell
  (the reconstruction; a translation from ATAC cannot be expected to beat it);
* **the cell-type oracle**: every test cell predicted as the mean training profile (RNA) or
  the training open rate (peaks) of its true fine type;
* **the noise ceiling** of the RNA scores: each test cell's counts split in two by binomial
  thinning; the half-vs-half r per gene (per cell), stepped up to full depth
  (Spearman-Brown, ``2r / (1 + r)``) and square-rooted: the r of the observed profile with
  its noiseless expectation;
* **the true ATAC depth**: the peak frequencies scaled to each test cell's number of open
  peaks, ``1 - (1 - f_j)^(d_i / mean d)``, which a prediction from RNA does not know;
* **label transfer within one modality** (15-NN vote, ``Mis`` excluded): from the training
  cells' embedding of the same modality (MultiMixVI's, and PCA of log-normalised RNA / LSI of
  the peaks, 30 components, the first, depth-driven LSI component dropped) instead of the
  other modality's;
* **translation through the shared latent by neighbours**: the mean profile of the 50 training
  cells nearest to a test cell's ATAC embedding in the joint training embedding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _jobs import load_results, run_jobs, save_result  # benchmarks/_jobs.py
from run_benchmark import load_split  # the same split as the main benchmark

RUNS = HERE / "ceiling_runs"
SEEDS = (0, 1)
N_SVD = 30
K_NEIGHBOURS = 50


def _fractions(counts) -> sp.csr_matrix:
    counts = sp.csr_matrix(counts, dtype=np.float64)
    return sp.diags(1.0 / np.maximum(np.asarray(counts.sum(1)).ravel(), 1.0)) @ counts


def _svd_embeddings(train, test, transform) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.decomposition import TruncatedSVD

    svd = TruncatedSVD(N_SVD, random_state=0).fit(transform(train))
    return svd.transform(transform(train)), svd.transform(transform(test))


def _lognorm(counts) -> sp.csr_matrix:
    return (_fractions(counts) * 1e4).log1p()


def _tfidf(peaks, idf) -> sp.csr_matrix:
    return _fractions(sp.csr_matrix(peaks) > 0) @ sp.diags(idf)


def noise_ceiling(counts, seed: int) -> dict:
    """Mean per-gene / per-cell r of observed with noiseless expression, from split halves."""
    from mixvi import metrics as M

    counts = sp.csr_matrix(counts).astype(np.int64)
    half = counts.copy()
    half.data = np.random.default_rng(seed).binomial(half.data, 0.5)
    r = M.rna_translation_metrics(half.toarray().astype(float), (counts - half).toarray().astype(float),
                                  return_values=True)
    def step_up(values):
        values = values[np.isfinite(values)]
        return float(np.mean(np.sqrt(np.clip(2 * values / (1 + values), 0, None))))
    return {"pearson_gene": step_up(r["pearson_gene_values"]), "pearson_cell": step_up(r["pearson_cell_values"])}


def decode_own_rna(model, mdata) -> np.ndarray:
    """Normalised RNA decoded from each cell's own RNA latent (posterior mean)."""
    import torch
    from scvi import REGISTRY_KEYS

    mdata = model._validate_anndata(mdata)  # set up like the training data
    module = model.module
    module.eval()
    out = []
    with torch.inference_mode():
        for tensors in model._make_data_loader(adata=mdata, batch_size=256):
            inf = module.inference(**module._get_inference_input(tensors))
            _, px = module.decode_rna(inf["qz_rna"].loc, tensors[REGISTRY_KEYS.BATCH_KEY], inf["library"])
            out.append(px.scale.cpu().numpy())
    return np.concatenate(out)


def run_one(seed: int) -> dict:
    from sklearn.neighbors import NearestNeighbors

    import mixvi
    from mixvi import metrics as M

    mtr, mte = load_split(seed)
    mixvi.MultiMixVI.setup_mudata(mtr, batch_key="batch")
    model = mixvi.MultiMixVI(mtr)
    model.train(enable_progress_bar=False)
    mixvi.MultiMixVI.setup_mudata(mte, batch_key="batch")

    rna_tr, rna_te = mtr["rna"].layers["counts"], mte["rna"].layers["counts"]
    atac_tr, atac_te = mtr["atac"].layers["counts"], mte["atac"].layers["counts"]
    types_tr, types_te = mtr.obs["cell_type"].to_numpy(), mte.obs["cell_type"].to_numpy()
    res: dict = {"seed": seed, "epochs": len(model.history["elbo_train"])}

    def rna(name, pred):
        m = M.rna_translation_metrics(pred, rna_te)
        res[f"rna_cell_{name}"], res[f"rna_gene_{name}"] = m["pearson_cell"], m["pearson_gene"]

    def peaks(name, pred):
        m = M.atac_translation_metrics(pred, atac_te)
        res[f"auroc_{name}"], res[f"auprc_{name}"] = m["auroc"], m["auprc"]

    rna("floor", M.mean_profile_baseline(rna_tr, mte.n_obs))
    rna("model_from_atac", model.predict_rna_from_atac(mte).X)
    rna("model_own_rna", decode_own_rna(model, mte))
    fractions = _fractions(rna_tr)
    open_tr = (sp.csr_matrix(atac_tr) > 0).astype(np.float64)
    types = np.unique(types_tr)
    type_rna = np.stack([np.asarray(fractions[types_tr == t].mean(0)).ravel() for t in types])
    type_open = np.stack([np.asarray(open_tr[types_tr == t].mean(0)).ravel() for t in types])
    of_type = np.searchsorted(types, types_te)
    rna("type_oracle", type_rna[of_type])
    noise = noise_ceiling(rna_te, seed)
    res["rna_cell_noise_ceiling"], res["rna_gene_noise_ceiling"] = noise["pearson_cell"], noise["pearson_gene"]

    g = model.get_latent_representation
    z = {(part, mod): g(m, modality=mod) for part, m in (("tr", mtr), ("te", mte))
         for mod in ("rna", "atac", "joint")}
    _, nn = NearestNeighbors(n_neighbors=K_NEIGHBOURS).fit(z["tr", "joint"]).kneighbors(z["te", "atac"])
    rna("neighbours_from_atac", np.asarray(fractions.toarray()[nn].mean(1)))

    freq = np.asarray(open_tr.mean(0)).ravel()
    peaks("floor", M.mean_profile_baseline(atac_tr, mte.n_obs, modality="atac"))
    peaks("model_from_rna", model.predict_atac_from_rna(mte).X)
    peaks("type_oracle", type_open[of_type])
    depth_tr = np.asarray(open_tr.sum(1)).ravel()
    depth_te = np.asarray((sp.csr_matrix(atac_te) > 0).sum(1)).ravel()
    peaks("floor_true_depth", 1 - np.power(1 - np.clip(freq, 0, 1 - 1e-6)[None],
                                           (depth_te / depth_tr.mean())[:, None]))
    rna_depth = np.asarray(sp.csr_matrix(rna_te).sum(1)).ravel()
    res["log_depth_correlation"] = float(np.corrcoef(np.log1p(rna_depth), np.log1p(depth_te))[0, 1])

    def transfer(ref, ref_labels, query):
        return M.label_transfer(ref, ref_labels, query, types_te, exclude=["Mis"])["accuracy"]

    res["lt_atac_query_cross"] = transfer(z["tr", "rna"], types_tr, z["te", "atac"])
    res["lt_atac_query_within_model"] = transfer(z["tr", "atac"], types_tr, z["te", "atac"])
    idf = np.log1p(mtr.n_obs / (1.0 + np.asarray(open_tr.sum(0)).ravel()))
    lsi_tr, lsi_te = _svd_embeddings(atac_tr, atac_te, lambda x: _tfidf(x, idf))
    res["lt_atac_query_within_lsi"] = transfer(lsi_tr[:, 1:], types_tr, lsi_te[:, 1:])  # LSI drops 1st
    res["lt_rna_query_cross"] = transfer(z["tr", "atac"], types_tr, z["te", "rna"])
    res["lt_rna_query_within_model"] = transfer(z["tr", "rna"], types_tr, z["te", "rna"])
    pca_tr, pca_te = _svd_embeddings(rna_tr, rna_te, _lognorm)
    res["lt_rna_query_within_pca"] = transfer(pca_tr, types_tr, pca_te)
    return res


ROWS = [  # (label, RNA suffix, peak suffix)
    ("floor (mean profile / peak frequency)", "floor", "floor"),
    ("MultiMixVI from the other modality (defaults)", "model_from_atac", "model_from_rna"),
    ("50 nearest training cells in the shared latent", "neighbours_from_atac", None),
    ("MultiMixVI from the cell's own RNA (reconstruction)", "model_own_rna", None),
    ("cell-type oracle (true fine type's training mean)", "type_oracle", "type_oracle"),
    ("peak frequency at the cell's true ATAC depth", None, "floor_true_depth"),
    ("noise ceiling (split halves, Spearman-Brown)", "noise_ceiling", None),
]


def report() -> None:
    df = load_results(RUNS, HERE / "ceilings.csv")
    if df is None:
        return
    def cell(col):
        return " / ".join(f"{v:.3f}" for v in df[col]) if col in df else ""
    print(f"| held-out test cells, seeds {' / '.join(map(str, df['seed']))} | RNA per-cell r | "
          "RNA per-gene r | peaks AUROC | peaks AUPRC |\n|---|---:|---:|---:|---:|")
    for label, r, a in ROWS:
        rc = cell(f"rna_cell_{r}") if r else ""
        rg = cell(f"rna_gene_{r}") if r and r != "floor" else ""
        print(f"| {label} | {rc} | {rg} | {cell(f'auroc_{a}') if a else ''} | "
              f"{cell(f'auprc_{a}') if a else ''} |")
    print("\n| label transfer (15-NN) | ATAC query | RNA query |\n|---|---:|---:|")
    for label, key in (("from the other modality's training cells (MultiMixVI)", "cross"),
                       ("from the same modality's training cells (MultiMixVI)", "within_model")):
        print(f"| {label} | {cell(f'lt_atac_query_{key}')} | {cell(f'lt_rna_query_{key}')} |")
    print(f"| same modality, no model (LSI of peaks / PCA of RNA) | {cell('lt_atac_query_within_lsi')} | "
          f"{cell('lt_rna_query_within_pca')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--one", nargs=2, metavar=("NAME", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if a.one:
        save_result(RUNS, a.one, run_one(int(a.one[1])))
        return
    if not a.report_only:
        run_jobs(Path(__file__), RUNS, [("ceilings", s) for s in SEEDS], a.parallel)
    report()


if __name__ == "__main__":
    main()
