"""Tests for mixvi.metrics: hand-computed cases and cross-checks against numpy / sklearn /
scib-metrics."""

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


# ---------------------------------------------------------------- scIB-style metrics


def test_silhouette_batch_mixed_vs_separated(rng):
    base = rng.normal(size=(50, 4))
    # Two batches with exactly the same points: |s| = 1/n for every cell -> 1 - 1/50.
    mixed = np.concatenate([base, base])
    batch = np.repeat(["b0", "b1"], 50)
    labels = np.repeat("t", 100)
    assert mm.silhouette_batch(mixed, batch, labels) == pytest.approx(1 - 1 / 50)
    separated = np.concatenate([base, base + 50.0])
    assert mm.silhouette_batch(separated, batch, labels) < 0.1


def test_silhouette_label(rng):
    emb, _, labels = _blobs(rng, offset_label=20.0)
    assert mm.silhouette_label(emb, labels) > 0.9
    assert mm.silhouette_label(rng.normal(size=emb.shape), labels) < 0.55


def test_ilisi_mixed_vs_separated(rng):
    mixed, batch, _ = _blobs(rng, n_labels=1, offset_batch=0.0)
    separated, _, _ = _blobs(rng, n_labels=1, offset_batch=50.0)
    assert mm.ilisi(mixed, batch) > 0.8
    assert mm.ilisi(separated, batch) < 0.05
    # cLISI: well separated labels -> pure neighbourhoods.
    emb, _, labels = _blobs(rng, offset_label=50.0)
    assert mm.clisi(emb, labels) > 0.99


def test_graph_connectivity():
    # Each label is a chain of evenly spaced cells (every cell lists its chain neighbours,
    # so the directed kNN graph is strongly connected); labels are far apart.
    pos = np.arange(80.0)
    emb = np.zeros((240, 2))
    emb[:, 0] = np.concatenate([pos, pos + 1e3, pos + 2e3])
    labels = np.repeat(["ct0", "ct1", "ct2"], 80)
    assert mm.graph_connectivity(emb, labels) == 1.0
    # Split ct0 into two far-apart halves of 40 cells: its score drops to 1/2.
    emb[:40, 1] += 1e4
    assert mm.graph_connectivity(emb, labels) == pytest.approx((0.5 + 1 + 1) / 3)


def test_integration_scores_rank_mixed_above_separated(rng):
    good, batch, labels = _blobs(rng, offset_label=10.0, offset_batch=0.0)
    bad, _, _ = _blobs(rng, offset_label=10.0, offset_batch=30.0)
    s_good = mm.integration_scores(good, batch, labels)
    s_bad = mm.integration_scores(bad, batch, labels)
    for key in ("batch_score", "bio_score", "total", "ilisi", "silhouette_batch"):
        assert 0.0 <= s_good[key] <= 1.0
    assert s_good["batch_score"] > s_bad["batch_score"] + 0.3
    assert s_good["nmi_kmeans"] == pytest.approx(1.0)
    expected_total = 0.4 * s_good["batch_score"] + 0.6 * s_good["bio_score"]
    assert s_good["total"] == pytest.approx(expected_total)


def test_against_scib_metrics(rng):
    """Same formulas as scib-metrics on the same (exact) kNN graph.

    Tolerance 1e-4: scib-metrics computes in float32 (jax default) and stops the LISI
    bisection at |H - log(perplexity)| < 1e-5, so per-cell values differ around 1e-5.
    Benchmarker's own graph comes from approximate pynndescent, which is not compared here.
    """
    scib_metrics = pytest.importorskip("scib_metrics")
    from scib_metrics.nearest_neighbors import NeighborsResults

    from mixvi.metrics._utils import knn

    n = 300
    labels = rng.integers(0, 3, n).astype(str)
    batch = rng.integers(0, 3, n).astype(str)
    emb = rng.normal(size=(n, 6)) + 2.0 * (labels == "1")[:, None] + (batch == "2")[:, None]
    dist, idx = knn(emb, 90)
    nn = NeighborsResults(indices=idx, distances=dist)
    assert mm.ilisi(emb, batch) == pytest.approx(
        float(scib_metrics.ilisi_knn(nn, batch)), abs=1e-4
    )
    assert mm.clisi(emb, labels) == pytest.approx(
        float(scib_metrics.clisi_knn(nn, labels)), abs=1e-4
    )
    assert mm.silhouette_batch(emb, batch, labels) == pytest.approx(
        float(scib_metrics.silhouette_batch(emb, labels, batch)), abs=1e-4
    )
    assert mm.silhouette_label(emb, labels) == pytest.approx(
        float(scib_metrics.silhouette_label(emb, labels)), abs=1e-4
    )
    assert mm.graph_connectivity(emb, labels) == pytest.approx(
        float(scib_metrics.graph_connectivity(nn.subset_neighbors(15), labels)), abs=1e-12
    )


# ---------------------------------------------------------------- scib_benchmark


def test_scib_benchmark_missing_dependency(monkeypatch):
    import anndata as ad

    monkeypatch.setitem(sys.modules, "scib_metrics", None)
    monkeypatch.setitem(sys.modules, "scib_metrics.benchmark", None)
    adata = ad.AnnData(np.zeros((4, 2), dtype=np.float32))
    with pytest.raises(ImportError, match=r"mixvi\[bench\]"):
        mm.scib_benchmark(adata, ["X_emb"], "batch", "label")


@pytest.mark.slow
def test_scib_benchmark_runs_and_leaves_adata_untouched(rng):
    pytest.importorskip("scib_metrics")
    import anndata as ad
    import pandas as pd

    emb, batch, labels = _blobs(rng, n_per=50, offset_label=6.0)
    adata = ad.AnnData(
        rng.poisson(2.0, (emb.shape[0], 30)).astype(np.float32),
        obs=pd.DataFrame({"batch": batch, "cell_type": labels}),
    )
    adata.obsm["X_good"] = emb
    adata.obsm["X_bad"] = emb + 20.0 * (batch == "1")[:, None]
    df = mm.scib_benchmark(adata, ["X_good", "X_bad"], "batch", "cell_type")
    assert set(adata.obsm) == {"X_good", "X_bad"}  # no X_pca written back
    assert list(adata.obs.columns) == ["batch", "cell_type"]
    assert float(df.loc["X_good", "Batch correction"]) > float(df.loc["X_bad", "Batch correction"])
