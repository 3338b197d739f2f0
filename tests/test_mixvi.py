"""MixVI model: training, outputs, save/load, priors and posteriors, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import mixvi
from mixvi.data import assert_unchanged, snapshot

from helpers import FAST_TRAIN, history, make_counts

SCVI_KEYS = {"allowed_obs": ("_scvi_*",), "allowed_uns": ("_scvi_*",)}


def _trained(adata, epochs=8, **model_kwargs) -> mixvi.MixVI:
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, n_latent=4, n_hidden=32, n_components=3, **model_kwargs)
    model.train(max_epochs=epochs, prior_init_epoch=2, check_val_every_n_epoch=1, **FAST_TRAIN)
    return model


def test_training_lowers_loss_and_records_history(counts_adata):
    model = _trained(counts_adata, epochs=15)
    elbo = history(model, "elbo_train")
    assert np.isfinite(elbo).all()
    assert elbo[-1] < elbo[0]
    for key in ("reconstruction_loss_train", "kl_local_train", "elbo_validation",
                "mixture_entropy_train"):
        assert key in model.history, key
    entropy = history(model, "mixture_entropy_train")
    assert 0 < entropy[-1] <= np.log(3) + 1e-5
    assert model.module.prior_layer.initialized


def test_outputs_shapes_and_dtypes(counts_adata):
    model = _trained(counts_adata)
    n = counts_adata.n_obs
    latent = model.get_latent_representation()
    assert latent.shape == (n, 4) and latent.dtype == np.float32 and np.isfinite(latent).all()
    clusters = model.get_cluster_assignments()
    assert list(clusters.columns[:2]) == ["cluster", "confidence"]
    assert isinstance(clusters["cluster"].dtype, pd.CategoricalDtype)
    probs = clusters.filter(like="prob_").to_numpy()
    assert probs.shape == (n, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(clusters["confidence"], probs.max(1), rtol=1e-6)
    expr = model.get_normalized_expression(transform_batch="b1", n_samples=1)
    assert expr.shape == (n, counts_adata.n_vars)
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)  # scale sums to 1 per cell
    expr0 = model.get_normalized_expression(transform_batch="b0", n_samples=1)
    assert not np.allclose(expr0.to_numpy(), expr.to_numpy())  # batch enters the decoder
    elbo = model.get_elbo()
    assert np.isfinite(float(elbo))


def test_write_to_adata_changes_only_documented_keys(counts_adata):
    before = snapshot(counts_adata)
    model = _trained(counts_adata)
    model.write_to_adata(counts_adata, key_added="mv")
    assert counts_adata.obsm["X_mv"].shape == (counts_adata.n_obs, 4)
    assert isinstance(counts_adata.obs["mv_cluster"].dtype, pd.CategoricalDtype)
    assert counts_adata.obsm["mv_cluster_probs"].shape == (counts_adata.n_obs, 3)
    assert_unchanged(
        before,
        counts_adata,
        allowed_obs=("_scvi_*", "mv_cluster", "mv_cluster_confidence"),
        allowed_obsm=("X_mv", "mv_cluster_probs"),
        allowed_uns=("_scvi_*",),
    )


def test_save_load_round_trip_gives_identical_latents(counts_adata, tmp_path):
    model = _trained(counts_adata)
    latent = model.get_latent_representation()
    probs = model.get_cluster_assignments().filter(like="prob_").to_numpy()
    model.save(tmp_path / "m", overwrite=True)
    loaded = mixvi.MixVI.load(tmp_path / "m", adata=counts_adata)
    np.testing.assert_array_equal(loaded.get_latent_representation(), latent)
    np.testing.assert_array_equal(loaded.get_cluster_assignments().filter(like="prob_").to_numpy(), probs)
    assert loaded.module.prior_layer.initialized
    for (n1, p1), (n2, p2) in zip(model.module.prior.named_parameters(),
                                  loaded.module.prior.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize(
    ("kwargs", "n_probs"),
    [
        ({"prior": "normal"}, 1),
        ({"prior": "gmm", "posterior": "mixture"}, 3),
        ({"prior": "hierarchical"}, None),  # per level
        ({"prior": "gmm", "kl_estimator": "analytic", "gene_likelihood": "zinb"}, 3),
        ({"prior": "gmm", "n_kl_samples": 4, "gene_likelihood": "poisson"}, 3),
    ],
)
def test_prior_and_posterior_options_train(counts_adata, kwargs, n_probs):
    model = _trained(counts_adata, epochs=5, **kwargs)
    elbo = history(model, "elbo_train")
    assert np.isfinite(elbo).all()
    latent = model.get_latent_representation()
    assert latent.shape == (counts_adata.n_obs, 4) and np.isfinite(latent).all()
    clusters = model.get_cluster_assignments()
    if n_probs is not None:
        assert clusters.filter(like="prob_").shape[1] == n_probs


def test_hierarchical_writes_one_column_per_level(counts_adata):
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=32, n_components=4, prior="hierarchical")
    model.train(max_epochs=6, prior_init_epoch=2, **FAST_TRAIN)
    assert model.module.prior.n_components == 7
    model.write_to_adata(counts_adata)
    levels = model.cluster_levels
    assert levels and levels[0] == 1
    for level in levels:
        col = counts_adata.obs[f"mixvi_cluster_l{level}"]
        assert col.nunique() <= level + 1
    # a chosen subset of levels: only those columns; a level the tree lacks is refused before
    # anything is written
    chosen = counts_adata.copy()
    chosen.obs = chosen.obs[["batch", "cell_type"]].copy()
    model.write_to_adata(chosen, levels=[1], key_added="pick")
    assert [c for c in chosen.obs if c.startswith("pick_cluster_l")] == ["pick_cluster_l1"]
    np.testing.assert_array_equal(chosen.obs["pick_cluster_l1"].astype(str),
                                  counts_adata.obs["mixvi_cluster_l1"].astype(str))
    with pytest.raises(ValueError, match=f"levels=\\[{levels[-1] + 1}\\] cannot be written: this tree has levels 1..{levels[-1]}"):
        model.write_to_adata(chosen, levels=[levels[-1] + 1], key_added="bad")
    assert "X_bad" not in chosen.obsm
    probs_l1 = model.get_cluster_assignments(level=1).filter(like="prob_")
    assert probs_l1.shape[1] == 2
    # internal node means stay the average of their children after training
    prior = model.module.prior
    means = prior.node_means().detach()
    for j, (a, b) in enumerate(prior.tree_children.tolist()):
        torch.testing.assert_close(means[4 + j], 0.5 * (means[a] + means[b]))
    with pytest.raises(ValueError, match="level must be in"):
        model.get_cluster_assignments(level=99)


def test_mixture_posterior_gumbel_temperature_anneals(counts_adata):
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=32, n_components=3, posterior="mixture")
    model.train(max_epochs=6, gumbel_temperature=(2.0, 0.5), prior_init_epoch=1, **FAST_TRAIN)
    # annealed over max_epochs // 2 = 3 epochs: the last epoch runs at the end temperature
    assert float(model.module.gumbel_temperature) == pytest.approx(0.5, rel=1e-5)
    clusters = model.get_cluster_assignments()
    assert clusters.filter(like="prob_").shape[1] == 3


def test_label_prior_predicts_labels(counts_adata):
    adata = counts_adata
    labels = adata.obs["cell_type"].astype(str).to_numpy().copy()
    hidden = np.arange(adata.n_obs) % 4 == 0
    labels[hidden] = "Unknown"
    adata.obs["partial"] = pd.Categorical(labels)
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="partial",
                              unlabeled_category="Unknown")
    model = mixvi.MixVI(adata, n_latent=4, n_hidden=32)
    assert model.module.prior.n_components == 3
    assert sorted(model.component_names()) == ["t0", "t1", "t2"]
    model.train(max_epochs=30, prior_init_epoch=1, **FAST_TRAIN)
    pred = model.predict()
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    assert (pred[hidden] == truth[hidden]).mean() > 0.8
    soft = model.predict(soft=True)
    assert sorted(soft.columns) == ["t0", "t1", "t2"]
    model.write_to_adata(adata)
    assert set(adata.obs["mixvi_prediction"].cat.categories) == {"t0", "t1", "t2"}


def test_predict_without_labels_raises(counts_adata):
    model = _trained(counts_adata, epochs=1)
    with pytest.raises(ValueError, match="needs a label prior"):
        model.predict()


def test_load_query_data_maps_new_batch(tmp_path):
    scvi.settings.seed = 0
    full = make_counts(n_cells=300, n_batches=3)
    ref = full[full.obs["batch"] != "b2"].copy()
    query = full[full.obs["batch"] == "b2"].copy()
    mixvi.MixVI.setup_anndata(ref, layer="counts", batch_key="batch")
    model = mixvi.MixVI(ref, n_latent=4, n_hidden=32, n_components=3, encode_covariates=True)
    model.train(max_epochs=10, prior_init_epoch=2, **FAST_TRAIN)
    prior_means = model.module.prior.means.detach().clone()
    ref_latent = model.get_latent_representation()
    query_model = mixvi.MixVI.load_query_data(query, model)
    query_model.train(max_epochs=5, **FAST_TRAIN)
    assert query_model.module.n_batch == 3
    q_latent = query_model.get_latent_representation()
    assert q_latent.shape == (query.n_obs, 4) and np.isfinite(q_latent).all()
    # the reference mixture is frozen: query cells are placed onto it, not the reverse
    torch.testing.assert_close(query_model.module.prior.means.detach(), prior_means)
    ref_again = query_model.get_latent_representation(ref)
    np.testing.assert_allclose(ref_again, ref_latent, atol=1e-4)


@pytest.mark.parametrize("prior", ["gmm", "hierarchical"])
def test_auto_mixture_loads_and_maps_queries_of_another_size(tmp_path, prior):
    """n_components="auto" sizes the mixture from the training data (one slot per 20
    cells); a load on fewer cells and a query model must rebuild the same slots."""
    scvi.settings.seed = 0
    full = make_counts(n_cells=600, n_batches=3)
    ref = full[full.obs["batch"] != "b2"].copy()
    query = full[full.obs["batch"] == "b2"].copy()
    mixvi.MixVI.setup_anndata(ref, layer="counts", batch_key="batch")
    model = mixvi.MixVI(ref, n_latent=4, n_hidden=32, prior=prior, encode_covariates=True)
    slots = model.module.prior.n_components
    assert ref.n_obs // 20 > query.n_obs // 20  # the query alone would give fewer slots
    model.train(max_epochs=12, **FAST_TRAIN)
    latent = model.get_latent_representation(ref[:100])
    model.save(tmp_path / "ref")
    few = ref[:100].copy()
    loaded = mixvi.MixVI.load(tmp_path / "ref", adata=few)
    assert loaded.module.prior.n_components == slots
    np.testing.assert_allclose(loaded.get_latent_representation(), latent, atol=1e-5)
    for reference in (model, tmp_path / "ref"):
        query_model = mixvi.MixVI.load_query_data(query.copy(), reference)
        assert query_model.module.prior.n_components == slots
        query_model.train(max_epochs=2, **FAST_TRAIN)
        # the reference's fitted mixture, frozen, with its switched-off slots
        torch.testing.assert_close(query_model.module.prior.state_dict(), model.module.prior.state_dict())
        assert torch.equal(query_model.module.prior.active, model.module.prior.active)
    if prior == "hierarchical":  # the tree plot spans the active leaves
        import matplotlib

        matplotlib.use("Agg")
        ax = mixvi.pl.tree(model, show=False)
        n_leaves = int(model.module.prior.active[: model.module.prior.n_leaves].sum())
        assert len(ax.get_yticklabels()) == n_leaves < model.module.prior.n_leaves


def test_label_prior_reference_predicts_labels_of_an_unlabelled_query():
    scvi.settings.seed = 0
    full = make_counts(n_cells=400, n_batches=3)
    ref = full[full.obs["batch"] != "b2"].copy()
    query = full[full.obs["batch"] == "b2"].copy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    query.obs["cell_type"] = pd.Categorical(["Unknown"] * query.n_obs)  # no label known
    mixvi.MixVI.setup_anndata(ref, layer="counts", batch_key="batch", labels_key="cell_type")
    model = mixvi.MixVI(ref, n_latent=4, n_hidden=32, encode_covariates=True)
    model.train(max_epochs=20, **FAST_TRAIN)
    query_model = mixvi.MixVI.load_query_data(query, model)
    query_model.train(max_epochs=5, **FAST_TRAIN)
    accuracy = (query_model.predict() == truth).mean()
    majority = pd.Series(truth).value_counts(normalize=True).iloc[0]
    assert accuracy > majority + 0.3, (accuracy, majority)


def test_model_creation_errors(counts_adata):
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    with pytest.raises(ValueError, match="n_components"):
        mixvi.MixVI(counts_adata, n_components=10_000)
    with pytest.raises(ValueError, match="gene_likelihood"):
        mixvi.MixVI(counts_adata, gene_likelihood="gaussian")
    with pytest.raises(ValueError, match="needs a mixture prior"):
        mixvi.MixVI(counts_adata, prior="normal", posterior="mixture")
    with pytest.raises(ValueError, match="prior must be one of"):
        mixvi.MixVI(counts_adata, prior="vamp")
    with pytest.raises(ValueError, match="needs labels"):
        mixvi.MixVI(counts_adata, use_label_prior=True)


@pytest.mark.parametrize(
    ("corrupt", "error", "match"),
    [
        (lambda a: a.layers.__setitem__("counts", a.layers["counts"] * 0.5), ValueError, "integer"),
        (lambda a: a.layers.__setitem__("counts", a.layers["counts"] * -1.0), ValueError, "negative"),
        (lambda a: a.layers["counts"].data.__setitem__(0, np.nan), ValueError, "NaN"),
    ],
)
def test_setup_rejects_bad_counts(counts_adata, corrupt, error, match):
    corrupt(counts_adata)
    with pytest.raises(error, match=match):
        mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")


def test_setup_rejects_misspelt_key_with_suggestion(counts_adata):
    with pytest.raises(KeyError, match="batch"):
        mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="btach")
    with pytest.raises(KeyError, match="counts"):
        mixvi.MixVI.setup_anndata(counts_adata, layer="count", batch_key="batch")


def test_load_on_data_with_other_genes_raises(counts_adata, tmp_path):
    model = _trained(counts_adata, epochs=1)
    model.save(tmp_path / "m", overwrite=True)
    other = counts_adata[:, ::-1].copy()  # same genes, another order
    with pytest.raises(ValueError, match="genes"):
        mixvi.MixVI.load(tmp_path / "m", adata=other)
    fewer = counts_adata[:, :50].copy()
    with pytest.raises(ValueError, match="genes"):
        mixvi.MixVI.load(tmp_path / "m", adata=fewer)


def test_kang_short_training_clusters_and_mixes_batches(kang):
    """Real data: mixture clusters agree with cell types and batches mix better than PCA."""
    import scanpy as sc

    from mixvi.metrics import cluster_agreement, integration_scores

    scvi.settings.seed = 0
    mixvi.MixVI.setup_anndata(kang, layer="counts", batch_key="batch")
    model = mixvi.MixVI(kang, n_components=8)
    model.train(max_epochs=60, **FAST_TRAIN)
    model.write_to_adata(kang)
    truth = kang.obs["cell_type"].astype(str).to_numpy()
    agreement = cluster_agreement(kang.obs["mixvi_cluster"].astype(str).to_numpy(), truth)
    pca = kang.copy()
    sc.pp.normalize_total(pca, target_sum=1e4)
    sc.pp.log1p(pca)
    sc.pp.pca(pca, n_comps=16, random_state=0)
    # scib-metrics' Benchmarker numbers (un-scaled); the unintegrated PCA is both the
    # PCR-comparison reference and the embedding MixVI must beat.
    kang.obsm["X_pca"] = pca.obsm["X_pca"]
    # iLISI, graph connectivity, PCR comparison (the batch metrics whose code compiles in
    # seconds); the full default sets run in the slow metrics tests
    from scib_metrics.benchmark import BatchCorrection, BioConservation

    sets = {
        "bio_conservation_metrics": BioConservation(
            isolated_labels=False, nmi_ari_cluster_labels_kmeans=False),
        "batch_correction_metrics": BatchCorrection(bras=False, kbet_per_label=False),
    }
    mixed = integration_scores(kang, "X_mixvi", batch_key="batch", label_key="cell_type", **sets)
    unintegrated = integration_scores(kang, "X_pca", batch_key="batch", label_key="cell_type",
                                      **sets)
    # floors measured on this machine (see README); well above chance (ARI 0)
    assert agreement["ari"] > 0.35, agreement
    assert agreement["nmi"] > 0.5, agreement
    assert mixed["Batch correction"] > unintegrated["Batch correction"] + 0.1, (
        mixed, unintegrated
    )


@pytest.mark.parametrize("threshold, batch_size, plan_kwargs, expected_batch, expected_lr", [
    (100, None, None, 512, 2e-3),          # "large" data: batch 512, sqrt-scaled lr
    (10_000, None, None, 128, 1e-3),       # small data: scvi-tools' setting
    (100, 64, None, 64, 1e-3),             # an explicit batch size keeps the plan's lr
    (100, None, {"lr": 5e-4}, 512, 5e-4),  # an explicit lr wins over the scaling
])
def test_default_batch_size_grows_with_the_data(
    counts_adata, monkeypatch, threshold, batch_size, plan_kwargs, expected_batch, expected_lr
):
    import mixvi.model._training as training

    monkeypatch.setattr(training, "LARGE_DATA_CELLS", threshold)
    mixvi.MixVI.setup_anndata(counts_adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(counts_adata, n_latent=4, n_hidden=32, n_components=3)
    epochs = 2
    model.train(max_epochs=epochs, prior_init_epoch=1, batch_size=batch_size,
                plan_kwargs=plan_kwargs, **FAST_TRAIN)
    n_train = len(model.train_indices)
    # optimiser steps = epochs x minibatches per epoch, counted here from the split
    assert model.trainer.global_step == epochs * int(np.ceil(n_train / expected_batch))
    # the networks' group and the prior's (at the default factor 10)
    lrs = [group["lr"] for group in model.trainer.optimizers[0].param_groups]
    assert lrs == pytest.approx([expected_lr, 10 * expected_lr])
