"""Tests for mixvi.metrics: hand-computed cases and cross-checks against numpy / sklearn /
scib-metrics' own Benchmarker."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from sklearn.metrics import average_precision_score, roc_auc_score

from mixvi import metrics as mm

# ---------------------------------------------------------------- fixtures


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _swapped_pair():
    """4 cells on a line; in modality y the first two cells are swapped."""
    x = np.array([[0.0], [10.0], [20.0], [30.0]])
    y = np.array([[10.0], [0.0], [20.0], [30.0]])
    return x, y


def _blobs(rng, n_per=40, offset_label=8.0, offset_batch=0.0, n_labels=3, n_batches=2, d=5):
    """Gaussian blobs: one per label, shifted per batch by ``offset_batch``."""
    labels = np.repeat(np.arange(n_labels), n_per * n_batches)
    batch = np.tile(np.repeat(np.arange(n_batches), n_per), n_labels)
    emb = rng.normal(size=(labels.size, d))
    emb[:, 0] += labels * offset_label
    emb[:, 1] += batch * offset_batch
    return emb, batch.astype(str), np.array([f"ct{v}" for v in labels])


# ---------------------------------------------------------------- FOSCTTM / matching


def test_foscttm_identical_is_zero(rng):
    x = rng.normal(size=(30, 4))
    assert mm.foscttm(x, x.copy()) == 0.0


def test_foscttm_swapped_pair_hand_value():
    x, y = _swapped_pair()
    fx, fy = mm.foscttm_per_cell(x, y)
    # Cell 0: partner at 10, cell y1 at 0 is closer -> 1 of 3. Cell 1: partner at 0, y0 at
    # 10 is closer, y2 at 20 ties (not counted) -> 1 of 3. Cells 2, 3 match exactly.
    np.testing.assert_allclose(fx, [1 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(fy, [1 / 3, 1 / 3, 0, 0])
    assert mm.foscttm(x, y) == pytest.approx(1 / 6)


def test_foscttm_matches_bruteforce_and_is_chunk_invariant(rng):
    x = rng.normal(size=(57, 3))
    y = x + rng.normal(size=x.shape)
    d = cdist(x, y)
    n = len(x)
    ref_x = (d < np.diag(d)[:, None]).sum(1) / (n - 1)
    ref_y = (d.T < np.diag(d)[:, None]).sum(1) / (n - 1)
    fx, fy = mm.foscttm_per_cell(x, y, chunk_size=7)
    np.testing.assert_allclose(fx, ref_x)
    np.testing.assert_allclose(fy, ref_y)
    assert mm.foscttm(x, y, chunk_size=1) == pytest.approx((ref_x.mean() + ref_y.mean()) / 2)
    # Unrelated embeddings sit near chance.
    assert 0.35 < mm.foscttm(x, rng.normal(size=x.shape)) < 0.65


def test_foscttm_rejects_unpaired():
    with pytest.raises(ValueError):
        mm.foscttm(np.zeros((3, 2)), np.zeros((4, 2)))


def test_matching_accuracy_hand_value(rng):
    x, y = _swapped_pair()
    # Partner ranks are [1, 1, 0, 0] in both directions.
    assert mm.matching_accuracy(x, y, k=(1, 2)) == {1: 0.5, 2: 1.0}
    z = rng.normal(size=(20, 3))
    assert mm.matching_accuracy(z, z, k=1) == {1: 1.0}


# ---------------------------------------------------------------- label transfer


def test_label_transfer_separable_clusters(rng):
    ref = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    ref_y = np.array(["A"] * 20 + ["B"] * 20)
    query = np.concatenate([rng.normal(0, 0.1, (10, 2)), rng.normal(5, 0.1, (10, 2))])
    q_y = np.array(["A"] * 10 + ["B"] * 10)
    out = mm.label_transfer(ref, ref_y, query, q_y, n_neighbors=5)
    assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
    np.testing.assert_array_equal(out["predictions"], q_y)
    np.testing.assert_allclose(out["confidence"], 1.0)


def test_label_transfer_known_mistake_and_exclude():
    ref = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    ref_y = np.array(["A", "A", "A", "B", "B", "B"])
    query = np.array([[0.05], [9.9], [0.0]])
    q_y = np.array(["A", "A", "Mis"])  # 2nd cell sits among B: a known mistake
    out = mm.label_transfer(ref, ref_y, query, q_y, n_neighbors=3, exclude=("Mis",))
    np.testing.assert_array_equal(out["predictions"], ["A", "B", "A"])
    assert out["n_scored"] == 2
    assert out["accuracy"] == pytest.approx(0.5)
    # F1(A) = 2/3 (precision 1, recall 1/2), F1(B) = 0 -> macro 1/3.
    assert out["macro_f1"] == pytest.approx(1 / 3)
    # Without exclusion the 'Mis' cell counts as a third (wrong) cell.
    assert mm.label_transfer(ref, ref_y, query, q_y, n_neighbors=3)["accuracy"] == pytest.approx(
        1 / 3
    )


# ---------------------------------------------------------------- translation


def _rowwise_r(a, b):
    return np.array([np.corrcoef(u, v)[0, 1] for u, v in zip(a, b)])


def test_rna_pearson_matches_corrcoef(rng):
    obs = rng.poisson(3.0, (25, 12)).astype(float)
    pred = obs + rng.normal(0, 2, obs.shape) ** 2
    raw = mm.rna_translation_metrics(pred, obs, log_normalize=False, chunk_size=4)
    assert raw["pearson_cell"] == pytest.approx(_rowwise_r(pred, obs).mean(), abs=1e-12)
    assert raw["pearson_gene"] == pytest.approx(_rowwise_r(pred.T, obs.T).mean(), abs=1e-12)

    def lognorm(m):
        return np.log1p(m / m.sum(1, keepdims=True) * 1e4)

    res = mm.rna_translation_metrics(sp.csr_matrix(pred), sp.csc_matrix(obs))
    p, o = lognorm(pred), lognorm(obs)
    assert res["pearson_cell"] == pytest.approx(_rowwise_r(p, o).mean(), abs=1e-12)
    assert res["pearson_gene"] == pytest.approx(_rowwise_r(p.T, o.T).mean(), abs=1e-12)
    assert res["n_cells_used"] == 25 and res["n_genes_used"] == 12


def test_rna_pearson_skips_constant_rows_and_columns(rng):
    obs = rng.poisson(3.0, (10, 6)).astype(float) + 1
    obs[3] = 0.0  # an empty cell: constant row
    obs[:, 2] = 0.0  # a never-detected gene: constant column
    pred = obs + rng.random(obs.shape)
    res = mm.rna_translation_metrics(pred, obs, log_normalize=False)
    keep_r = np.arange(10) != 3
    keep_c = np.arange(6) != 2
    assert res["n_cells_used"] == 9 and res["n_genes_used"] == 5
    assert res["pearson_cell"] == pytest.approx(_rowwise_r(pred[keep_r], obs[keep_r]).mean())
    assert res["pearson_gene"] == pytest.approx(
        _rowwise_r(pred[:, keep_c].T, obs[:, keep_c].T).mean()
    )


def test_atac_auroc_hand_case():
    pred = np.array([[0.1, 0.4], [0.35, 0.8]])
    obs = sp.csr_matrix(np.array([[0, 0], [3, 1]]))  # counts, binarised > 0
    res = mm.atac_translation_metrics(pred, obs, per_cell=True)
    assert res["exact"] and res["auroc"] == pytest.approx(0.75)
    # Ranked: 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert res["auprc"] == pytest.approx(5 / 6)
    assert res["positive_rate"] == 0.5
    assert res["n_cells_used"] == 0  # each cell is all-open or all-closed: skipped


def test_atac_binned_and_per_cell_match_sklearn(rng):
    obs = sp.random(60, 80, density=0.2, format="csr", random_state=1)
    pred = np.clip(obs.toarray() * 0.3 + rng.random((60, 80)) * 0.7, 0, 1)
    dense_o = obs.toarray() > 0
    exact = mm.atac_translation_metrics(pred, obs, per_cell=True)
    binned = mm.atac_translation_metrics(pred, obs, max_exact_entries=0, chunk_size=9)
    assert exact["auroc"] == pytest.approx(roc_auc_score(dense_o.ravel(), pred.ravel()))
    assert exact["auprc"] == pytest.approx(average_precision_score(dense_o.ravel(), pred.ravel()))
    assert not binned["exact"]
    assert binned["auroc"] == pytest.approx(exact["auroc"], abs=1e-4)
    assert binned["auprc"] == pytest.approx(exact["auprc"], abs=1e-3)
    per_cell = [roc_auc_score(o, p) for o, p in zip(dense_o, pred) if 0 < o.sum() < o.size]
    assert exact["auroc_per_cell"] == pytest.approx(np.mean(per_cell))


def test_mean_profile_baseline_hand_values():
    rna = mm.mean_profile_baseline(np.array([[1, 3], [2, 2], [0, 0]]), n_cells=3, target_sum=4)
    assert rna.shape == (3, 2)
    np.testing.assert_allclose(rna, [[1.5, 2.5]] * 3)  # empty training cell ignored
    atac = mm.mean_profile_baseline(sp.csr_matrix([[1, 0], [1, 2]]), n_cells=2, modality="atac")
    np.testing.assert_allclose(atac, [[1.0, 0.5]] * 2)
    # A constant prediction has a per-cell r but no per-gene r (all columns constant).
    obs = np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])
    res = mm.rna_translation_metrics(rna, obs)
    assert res["n_genes_used"] == 0 and np.isnan(res["pearson_gene"])
    with pytest.raises(ValueError):
        mm.mean_profile_baseline(obs, 2, modality="protein")


# ---------------------------------------------------------------- clustering


def test_cluster_agreement():
    truth = np.array(["a", "a", "b", "b", "c", "Mis"])
    same = np.array([5, 5, 1, 1, 7, 7])  # same partition, other names; Mis cell wrong
    res = mm.cluster_agreement(same, truth, exclude=["Mis"])
    assert res == {"ari": 1.0, "nmi": pytest.approx(1.0), "n_scored": 5}
    assert mm.cluster_agreement(same, truth)["ari"] < 1.0


# ---------------------------------------------------------------- scib-metrics integration scores

# Default-run tests use a reduced metric set whose jax code compiles in seconds; the same
# tests with scib-metrics' default sets (kBET, BRAS, k-means, isolated labels: about a
# minute of numba / jax compilation per process) are marked slow.
DEFAULT_BIO = (
    "Isolated labels", "KMeans NMI", "KMeans ARI", "Silhouette label", "cLISI",
)
DEFAULT_BATCH = ("BRAS", "iLISI", "KBET", "Graph connectivity", "PCR comparison")
AGGREGATES = ("Batch correction", "Bio conservation", "Total")


def _metric_sets(which):
    """(bio, batch) metric-set instances; ``None`` means scib-metrics' defaults."""
    if which == "default":
        return None, None
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    bio = BioConservation(
        isolated_labels=False, nmi_ari_cluster_labels_kmeans=False, silhouette_label=True,
        clisi_knn=True,
    )
    batch = BatchCorrection(
        bras=False, ilisi_knn=True, kbet_per_label=False, graph_connectivity=True,
        pcr_comparison=True,
    )
    return bio, batch


METRIC_SETS = ["reduced", pytest.param("default", marks=pytest.mark.slow)]


def _blob_adata(rng, offset_label=10.0, offset_batch=0.0, n_per=40, n_genes=30):
    """240 cells (3 labels x 2 batches) with Poisson counts in X and blobs in obsm."""
    import anndata as ad
    import pandas as pd

    emb, batch, labels = _blobs(rng, n_per=n_per, offset_label=offset_label,
                                offset_batch=offset_batch)
    counts = rng.poisson(2.0, (emb.shape[0], n_genes)).astype(np.float32)
    counts[:, :5] += 6.0 * (batch == "1")[:, None]  # a batch effect in expression
    obs = pd.DataFrame({"batch": batch, "cell_type": labels},
                       index=[f"c{i}" for i in range(emb.shape[0])])
    adata = ad.AnnData(counts, obs=obs)
    adata.obsm["X_emb"] = emb
    return adata


def _benchmarker_row(adata, key, pre, bio, batch):
    """Benchmarker run directly (own light AnnData, own sklearn kNN): the reference."""
    import gc

    import anndata as ad
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    def exact(x, k):
        dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
        return NeighborsResults(indices=idx, distances=dist)

    light = ad.AnnData(
        np.zeros((adata.n_obs, 0), dtype=np.float32), obs=adata.obs[["batch", "cell_type"]].copy(),
        obsm={key: np.asarray(adata.obsm[key]), "X_pre": pre},
    )
    bm = Benchmarker(
        light, batch_key="batch", label_key="cell_type", embedding_obsm_keys=[key],
        bio_conservation_metrics=bio or BioConservation(),
        batch_correction_metrics=batch or BatchCorrection(),
        pre_integrated_embedding_obsm_key="X_pre", progress_bar=False,
    )
    gc.freeze()  # only makes Benchmarker's gc.collect() calls cheap (~1 s each otherwise)
    try:
        bm.prepare(neighbor_computer=exact)
        bm.benchmark()
    finally:
        gc.unfreeze()
    row = bm.get_results(min_max_scale=False).loc[key]
    return {k: float(v) for k, v in row.items()}


def _lognorm_pca(counts, n_comps):
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(counts.copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    return sc.pp.pca(tmp.X, n_comps=n_comps, svd_solver="arpack")


@pytest.mark.parametrize("which", METRIC_SETS)
def test_integration_scores_equal_benchmarker_row_and_leave_adata_unchanged(rng, which):
    from mixvi.data import assert_unchanged, snapshot

    bio, batch = _metric_sets(which)
    adata = _blob_adata(rng, offset_label=4.0, offset_batch=1.5)
    before = snapshot(adata)
    # No X_pca in adata: the fallback is a PCA of the log-normalised counts in X.
    scores = mm.integration_scores(
        adata, "X_emb", "batch", "cell_type", log_normalize=True, n_comps=20,
        bio_conservation_metrics=bio, batch_correction_metrics=batch,
    )
    assert_unchanged(before, adata)  # nothing written back, no X_pca, no uns
    assert all(isinstance(v, float) for v in scores.values())

    ref = _benchmarker_row(adata, "X_emb", _lognorm_pca(adata.X, 20), bio, batch)
    assert list(scores) == list(ref)
    for key, value in ref.items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key
    if which == "default":
        assert list(scores) == [*DEFAULT_BIO, *DEFAULT_BATCH, *AGGREGATES]
    else:
        assert list(scores) == ["Silhouette label", "cLISI", "iLISI", "Graph connectivity",
                                "PCR comparison", *AGGREGATES]
    # The aggregates are Benchmarker's: group means and the 0.4 / 0.6 scIB weighting.
    batch_names = DEFAULT_BATCH if which == "default" else ("iLISI", "Graph connectivity",
                                                            "PCR comparison")
    assert scores["Batch correction"] == pytest.approx(np.mean([scores[k] for k in batch_names]))
    assert scores["Total"] == pytest.approx(
        0.4 * scores["Batch correction"] + 0.6 * scores["Bio conservation"]
    )
    # scib_benchmark reports the same row for this embedding.
    df = mm.scib_benchmark(
        adata, ["X_emb"], "batch", "cell_type", log_normalize=True, n_comps=20,
        bio_conservation_metrics=bio, batch_correction_metrics=batch,
    )
    assert float(df.loc["X_emb", "Total"]) == pytest.approx(scores["Total"], abs=1e-6)
    assert df.loc["Metric Type", "Total"] == "Aggregate score"


@pytest.mark.parametrize("which", METRIC_SETS)
def test_integration_scores_rank_mixed_above_batch_separated(rng, which):
    bio, batch = _metric_sets(which)
    adata = _blob_adata(rng, offset_label=10.0, offset_batch=0.0)
    sep = _blob_adata(rng, offset_label=10.0, offset_batch=30.0)
    adata.obsm["X_sep"] = sep.obsm["X_emb"]
    adata.obsm["X_pca"] = sep.obsm["X_emb"]  # the unintegrated reference: batches apart
    kw = {"bio_conservation_metrics": bio, "batch_correction_metrics": batch}
    good = mm.integration_scores(adata, "X_emb", **kw)
    bad = mm.integration_scores(adata, "X_sep", **kw)
    assert good["Batch correction"] > bad["Batch correction"] + 0.4, (good, bad)
    assert good["iLISI"] > 0.8 and bad["iLISI"] < 0.05
    assert good["PCR comparison"] > 0.9 and bad["PCR comparison"] == 0.0
    for v in (*good.values(), *bad.values()):
        assert -0.05 <= v <= 1.0


@pytest.mark.parametrize("which", METRIC_SETS)
def test_integration_scores_rank_label_separated_above_random(rng, which):
    bio, batch = _metric_sets(which)
    adata = _blob_adata(rng, offset_label=10.0, offset_batch=0.0)
    adata.obsm["X_random"] = rng.normal(size=adata.obsm["X_emb"].shape)
    kw = {"log_normalize": True, "bio_conservation_metrics": bio,
          "batch_correction_metrics": batch}
    good = mm.integration_scores(adata, "X_emb", **kw)
    rand = mm.integration_scores(adata, "X_random", **kw)
    assert good["Bio conservation"] > rand["Bio conservation"] + 0.3, (good, rand)
    assert good["cLISI"] > 0.95 and good["Silhouette label"] > 0.75
    if which == "default":
        assert good["KMeans ARI"] == pytest.approx(1.0) and abs(rand["KMeans ARI"]) < 0.1


def test_integration_scores_missing_keys_raise(rng):
    adata = _blob_adata(rng)
    with pytest.raises(KeyError, match="X_nope"):
        mm.integration_scores(adata, "X_nope", "batch", "cell_type")
    with pytest.raises(KeyError, match="btach"):
        mm.integration_scores(adata, "X_emb", "btach", "cell_type")
    with pytest.raises(KeyError, match="celltype"):
        mm.integration_scores(adata, "X_emb", "batch", "celltype")
    with pytest.raises(KeyError, match="counts"):  # fallback PCA from a missing layer
        mm.integration_scores(adata, "X_emb", "batch", "cell_type", layer="counts")
    with pytest.raises(KeyError, match="X_gone"):
        mm.scib_benchmark(adata, ["X_emb", "X_gone"], "batch", "cell_type")
    with pytest.raises(ValueError, match="more than 90 cells"):
        mm.integration_scores(adata[:90].copy(), "X_emb", "batch", "cell_type")
    with pytest.raises(ValueError, match="neighbors"):
        mm.integration_scores(adata, "X_emb", neighbors="annoy")


def test_integration_scores_quiet_and_restores_state(rng, capsys):
    """scib-metrics' INFO logging (a line per label kBET skips) and jax's "no GPU" warning
    are silenced during a call only; logger levels and the gc state are restored."""
    import gc
    import logging

    import scib_metrics  # noqa: F401  (sets its logger to INFO with a rich handler)
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    from mixvi.metrics._scib import _quiet_scib

    logger = logging.getLogger("scib_metrics")
    level = logger.level
    logger.info("visible outside")
    assert "visible outside" in "".join(capsys.readouterr())
    with _quiet_scib():
        logger.info("cell type X consists of a single batch or is too small. Skip.")
        logging.getLogger("jax._src.xla_bridge").warning("An NVIDIA GPU may be present")
    assert logger.level == level
    assert "Skip" not in "".join(capsys.readouterr())

    adata = _blob_adata(rng)
    mm.integration_scores(
        adata, "X_emb", log_normalize=True,
        bio_conservation_metrics=BioConservation(
            isolated_labels=False, nmi_ari_cluster_labels_kmeans=False, clisi_knn=False
        ),
        batch_correction_metrics=BatchCorrection(
            bras=False, ilisi_knn=False, kbet_per_label=False, pcr_comparison=False
        ),
    )
    assert logger.level == level
    assert gc.get_freeze_count() == 0
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- scib_benchmark


def test_scib_benchmark_missing_dependency(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "scib_metrics", None)
    monkeypatch.setitem(sys.modules, "scib_metrics.benchmark", None)
    adata = _blob_adata(rng)
    with pytest.raises(ImportError, match="scib-metrics"):
        mm.scib_benchmark(adata, ["X_emb"], "batch", "cell_type")
    with pytest.raises(ImportError, match="scib-metrics"):
        mm.integration_scores(adata, "X_emb")


@pytest.mark.slow
def test_scib_benchmark_runs_and_leaves_adata_untouched(rng):
    from mixvi.data import assert_unchanged, snapshot

    adata = _blob_adata(rng, n_per=50, offset_label=6.0)
    adata.obsm["X_good"] = adata.obsm.pop("X_emb")
    adata.obsm["X_bad"] = adata.obsm["X_good"] + 20.0 * (adata.obs["batch"] == "1").to_numpy()[:, None]
    before = snapshot(adata)
    df = mm.scib_benchmark(adata, ["X_good", "X_bad"], "batch", "cell_type", log_normalize=True)
    assert_unchanged(before, adata)  # no X_pca written back
    assert list(df.index) == ["X_good", "X_bad", "Metric Type"]
    assert float(df.loc["X_good", "Batch correction"]) > float(df.loc["X_bad", "Batch correction"])
    # Each row is that embedding's integration_scores (one Benchmarker per embedding).
    one = mm.integration_scores(adata, "X_bad", log_normalize=True)
    for key, value in one.items():
        assert float(df.loc["X_bad", key]) == pytest.approx(value, abs=1e-6), key


def test_peak_probability_calibration_error():
    """Calibrated probabilities score ~0; the same ranking pushed towards 1 scores high."""
    rng = np.random.default_rng(0)
    p = rng.random((400, 60)) * 0.5
    observed = (rng.random(p.shape) < p).astype(np.float32)
    good = mm.atac_translation_metrics(p, observed)
    bad = mm.atac_translation_metrics(np.sqrt(p), observed)
    assert good["calibration_error"] < 0.01
    assert bad["calibration_error"] > 0.2
    assert good["auroc"] == pytest.approx(bad["auroc"])  # same ranking, same AUROC
    assert np.isnan(mm.atac_translation_metrics(p * 3 - 1, observed)["calibration_error"])
