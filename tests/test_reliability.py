"""Reliability (issue #5): no data loss, NaN stop, resume, reproducibility, query mapping,
streaming from sparse / backed data (save / load: ``test_save_load.py``).

Everything trains tiny synthetic data (200 cells x 50 genes, a few epochs) except the query
mapping test, which holds out one Kang sample (306 cells) from a 1,250-cell reference.
"""

from __future__ import annotations

import os
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch

import mixvi
from mixvi.data import assert_unchanged, snapshot
from mixvi.train import NonFiniteLossError, ResumeCheckpoint

from helpers import FAST_TRAIN, history, make_counts
from tiny_models import (
    QUIET,
    assert_same_state,
    model_state,
    setup_tiny_model,
    tiny_counts,
)

torch.set_num_threads(1)  # 2 shared cores: one thread is faster and deterministic


SCVI_KEYS = {"allowed_obs": ("_scvi_*",), "allowed_uns": ("_scvi_*",)}


# ------------------------------------------------------------------------------ reproducible
def test_settings_seed_is_scvi_seed():
    old = scvi.settings.seed
    try:
        mixvi.settings.seed = 123
        assert scvi.settings.seed == 123 and mixvi.settings.seed == 123
        scvi.settings.seed = 7
        assert mixvi.settings.seed == 7
        assert "seed=7" in repr(mixvi.settings)
    finally:
        scvi.settings.seed = old if old is not None else 0
    before = torch.are_deterministic_algorithms_enabled()
    try:
        mixvi.settings.deterministic = True
        assert torch.are_deterministic_algorithms_enabled() and mixvi.settings.deterministic
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    finally:
        torch.use_deterministic_algorithms(before)


def test_same_seed_gives_bit_identical_training():
    """Two trainings with mixvi.settings.seed: identical weights, mixture, history, latents."""
    runs = []
    for seed in (0, 0, 1):
        mixvi.settings.seed = seed
        adata = tiny_counts()
        model = setup_tiny_model(adata)
        model.train(max_epochs=3, prior_init_epoch=1, **QUIET)
        z = model.get_latent_representation()
        runs.append((model_state(model), z, history(model, "elbo_train")))
    (s0, z0, h0), (s1, z1, h1), (s2, z2, _) = runs
    assert_same_state(s0, s1)
    np.testing.assert_array_equal(z0, z1)
    np.testing.assert_array_equal(h0, h1)
    assert not np.array_equal(z0, z2)  # the seed matters


# ------------------------------------------------------------------------------ NaN stop
def _inject(model, at_call: int, corrupt):
    """Make the module's loss non-finite at its ``at_call``-th call; return the weights then."""
    original = model.module.loss
    seen = {"calls": 0, "state": None}

    def loss(*args, **kwargs):
        out = original(*args, **kwargs)
        seen["calls"] += 1
        if seen["calls"] == at_call:
            seen["state"] = model_state(model)  # the weights the bad step would change
            corrupt(out)
        return out

    model.module.loss = loss
    return seen, original


def _bad_reconstruction(out):
    key = next(iter(out.reconstruction_loss))
    out.reconstruction_loss[key] = out.reconstruction_loss[key] * float("inf")
    out.loss = out.loss * float("inf")


def _bad_kl(out):
    kl = out.kl_local["kl_divergence_z"].clone()
    kl[3] = float("nan")
    out.kl_local["kl_divergence_z"] = kl
    out.loss = out.loss + kl.mean()


@pytest.mark.parametrize(
    ("corrupt", "term"),
    [(_bad_reconstruction, "reconstruction_loss"), (_bad_kl, "kl_divergence_z")],
    ids=["reconstruction-inf", "kl-nan"],
)
def test_nonfinite_loss_stops_naming_term_and_keeps_last_weights(corrupt, term):
    scvi.settings.seed = 0
    adata = tiny_counts()
    model = setup_tiny_model(adata)
    seen, original = _inject(model, at_call=9, corrupt=corrupt)  # epoch 2 (4 steps/epoch)
    with pytest.raises(NonFiniteLossError) as err:
        model.train(max_epochs=5, prior_init_epoch=1, **QUIET)
    msg = str(err.value)
    assert f"the {term} term" in msg and "epoch 2" in msg, msg
    assert "weights of the last completed step" in msg
    assert "plan_kwargs={'lr': 1e-4}" in msg and "gradient_clip_val" in msg  # a suggestion
    assert_same_state(seen["state"], model_state(model))  # the bad step was not applied
    assert len(history(model, "elbo_train")) == 2  # the two completed epochs are kept
    assert not model.module.training  # ready for inference
    z = model.get_latent_representation()
    assert np.isfinite(z).all()
    if term == "kl_divergence_z":
        assert "in 1 of 64 cells" in msg
        return
    # the user can go on with the kept weights, e.g. at a lower learning rate
    model.module.loss = original
    model.train(max_epochs=1, plan_kwargs={"lr": 1e-4}, **QUIET)
    assert np.isfinite(model.get_latent_representation()).all()


def test_nonfinite_gradient_stops_before_the_step():
    scvi.settings.seed = 0
    adata = tiny_counts()
    model = setup_tiny_model(adata)
    param = dict(model.module.named_parameters())["decoder.px_decoder.fc_layers.Layer 0.0.weight"]
    calls = {"n": 0, "state": None}

    def hook(grad):
        calls["n"] += 1
        if calls["n"] == 6:
            calls["state"] = model_state(model)
            return grad * float("nan")
        return grad

    param.register_hook(hook)
    with pytest.raises(NonFiniteLossError, match=r"gradients of decoder\.px_decoder") as err:
        model.train(max_epochs=3, prior_init_epoch=1, **QUIET)
    assert "this step was not applied" in str(err.value)
    assert_same_state(calls["state"], model_state(model))


def test_every_train_call_trains_in_training_mode(saved, tmp_path):
    """Lightning >= 2.2 keeps the module's mode at fit start; after inference, load() or
    load_query_data() the module is in eval mode, and must not be trained so (dropout off)."""
    from lightning.pytorch.callbacks import Callback

    modes = []

    class Mode(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                modes.append(pl_module.module.training and pl_module.module.z_encoder.training)

    model, adata, root = saved
    loaded = mixvi.MixVI.load(root / "model", adata=adata.copy())
    assert not loaded.module.training
    loaded.train(max_epochs=1, callbacks=[Mode()], **QUIET)
    loaded.get_latent_representation()
    loaded.train(max_epochs=1, callbacks=[Mode()], **QUIET)
    assert modes == [True, True]


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("balance", [0.0, 2.0], ids=["plain", "batch-balance"])
def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, balance):
    """Stop after 2 of 4 epochs, resume from last.ckpt in a new model: bit-identical result
    (with the batch-balance penalty, its memory of recent minibatches travels in the
    checkpoint too)."""
    kw = {"prior_init_epoch": 1, "n_epochs_kl_warmup": 4, **FAST_TRAIN, "batch_size": 64}

    def fresh():
        scvi.settings.seed = 0
        return setup_tiny_model(tiny_counts(), batch_balance_weight=balance)

    full = fresh()
    full.train(max_epochs=4, callbacks=[ResumeCheckpoint(tmp_path / "full")], **kw)
    first = fresh()
    first.train(max_epochs=2, callbacks=[ResumeCheckpoint(tmp_path / "ck")], **kw)
    ckpt = tmp_path / "ck" / "last.ckpt"
    assert ckpt.exists()
    resumed = fresh()
    resumed.train(
        max_epochs=4, ckpt_path=str(ckpt), callbacks=[ResumeCheckpoint(tmp_path / "ck")], **kw
    )
    assert resumed.trainer.current_epoch == 4
    assert resumed.trainer.global_step == full.trainer.global_step
    assert resumed.module.prior_layer.initialized
    assert_same_state(model_state(full), model_state(resumed))
    assert torch.equal(resumed.module.batch_balance.mass, full.module.batch_balance.mass)
    np.testing.assert_array_equal(
        history(resumed, "elbo_train"), history(full, "elbo_train")[2:]
    )


# ------------------------------------------------------------------------------ no data loss
def _rich(adata: ad.AnnData) -> ad.AnnData:
    """Fill every slot a user may have: layers, obsm, varm, obsp, varp, uns, raw, var."""
    rng = np.random.default_rng(1)
    n, g = adata.shape
    adata.raw = adata.copy()
    adata.layers["lognorm"] = sp.csr_matrix(np.log1p(adata.X.toarray()))
    adata.obsm["X_pca"] = rng.normal(size=(n, 5)).astype(np.float32)
    adata.obsm["meta"] = pd.DataFrame({"a": np.arange(n)}, index=adata.obs_names)
    adata.varm["PCs"] = rng.normal(size=(g, 5))
    adata.obsp["connectivities"] = sp.random(n, n, density=0.02, format="csr", random_state=0)
    adata.varp["corr"] = np.eye(g)
    adata.uns["user"] = {"note": "keep", "values": np.arange(3), "nested": {"k": [1, 2]}}
    adata.var["highly_variable"] = rng.random(g) > 0.5
    adata.obs["score"] = rng.normal(size=n)
    adata.obs["label"] = pd.Categorical(rng.choice(["x", "y", "z"], n), categories=["z", "y", "x"])
    return adata


def test_user_anndata_unchanged_through_setup_train_save_load_write(tmp_path):
    scvi.settings.seed = 0
    adata = _rich(tiny_counts())
    before = snapshot(adata)
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    assert_unchanged(before, adata, **SCVI_KEYS)  # setup: scvi-tools' registry keys only
    after_setup = snapshot(adata)
    model = mixvi.MixVI(adata, n_latent=4, n_hidden=16, n_components=3)
    model.train(max_epochs=2, prior_init_epoch=1, **QUIET)
    model.get_latent_representation()
    model.get_cluster_assignments()
    model.get_normalized_expression(n_samples=1)
    model.save(tmp_path / "m", overwrite=True)
    loaded = mixvi.MixVI.load(tmp_path / "m", adata=adata)
    loaded.get_latent_representation()
    # train / inference / save / load: nothing (load re-registers: scvi-tools' keys only)
    assert_unchanged(after_setup, adata, **SCVI_KEYS)
    loaded.write_to_adata(adata)
    assert_unchanged(
        before,
        adata,
        allowed_obs=("_scvi_*", "mixvi_cluster", "mixvi_cluster_confidence"),
        allowed_obsm=("X_mixvi", "mixvi_cluster_probs"),
        allowed_uns=("_scvi_*",),
    )
    # and the file the user writes still holds the original data
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(
        back.layers["counts"].toarray(), adata.layers["counts"].toarray()
    )
    assert back.obs["label"].cat.categories.tolist() == ["z", "y", "x"]


def test_user_mudata_unchanged_through_setup_train_write():
    scvi.settings.seed = 0
    mdata = mixvi.datasets.pbmc_multiome_tiny()
    mdata = mdata[:300].copy()
    mdata["rna"].obsm["X_pca"] = np.zeros((mdata.n_obs, 3))
    mdata.uns["user"] = {"a": 1}
    before = snapshot(mdata)
    mixvi.MultiMixVI.setup_mudata(mdata, batch_key="batch")
    assert_unchanged(before, mdata, **SCVI_KEYS)
    after_setup = snapshot(mdata)
    model = mixvi.MultiMixVI(mdata, n_latent=4, n_hidden=16, n_components=3)
    model.train(max_epochs=1, **QUIET)
    model.get_latent_representation()
    model.predict_rna_from_atac()
    model.predict_atac_from_rna()
    assert_unchanged(after_setup, mdata)
    model.write_to_mudata(mdata, key_added="mm")
    assert_unchanged(
        before,
        mdata,
        allowed_obs=("_scvi_*", "mm_cluster", "mm_cluster_confidence"),
        allowed_obsm=("X_mm", "X_mm_rna", "X_mm_atac", "mm_cluster_probs"),
        allowed_uns=("_scvi_*",),
    )


# ------------------------------------------------------------------------------ query mapping
def test_query_mapping_kang_held_out_sample():
    """Reference on 3 Kang samples; the 4th (stim107, 306 cells) is mapped by load_query_data
    plus a short fine-tune. Measured: 15-NN label transfer 0.81 (scvi-tools' SCVI the same way,
    40 + 20 epochs: 0.83)."""
    from sklearn.neighbors import KNeighborsClassifier

    scvi.settings.seed = 0
    kang = mixvi.datasets.kang_pbmc_ifnb()
    held_out = (kang.obs["sample_id"] == "stim107").to_numpy()
    ref, query = kang[~held_out].copy(), kang[held_out].copy()
    mixvi.MixVI.setup_anndata(ref, layer="counts", batch_key="sample_id")
    model = mixvi.MixVI(ref, n_latent=10, n_hidden=64, n_components=5, encode_covariates=True)
    model.train(max_epochs=40, **{**QUIET, "batch_size": 128})
    ref_state = model_state(model)
    ref_latent = model.get_latent_representation()
    ref_prior = [p.detach().clone() for p in model.module.prior.parameters()]

    query_model = mixvi.MixVI.load_query_data(query, model)
    query_model.train(max_epochs=20, **{**QUIET, "batch_size": 128})
    assert query_model.module.n_batch == 4

    # the reference is not retrained: its model, its latents and its mixture are unchanged
    assert_same_state(ref_state, model_state(model))
    for before, after in zip(ref_prior, query_model.module.prior.parameters(), strict=True):
        torch.testing.assert_close(after.detach(), before)
    enc = "z_encoder.encoder.fc_layers.Layer 0.0.weight"
    n_genes = ref.n_vars
    torch.testing.assert_close(
        query_model.module.state_dict()[enc][:, :n_genes], ref_state[enc][:, :n_genes],
        atol=1e-5, rtol=0,
    )
    np.testing.assert_allclose(query_model.get_latent_representation(ref), ref_latent, atol=1e-3)

    # query cells land next to reference cells of their own type
    q_latent = query_model.get_latent_representation()
    knn = KNeighborsClassifier(15).fit(ref_latent, ref.obs["cell_type"].astype(str))
    accuracy = (knn.predict(q_latent) == query.obs["cell_type"].astype(str).to_numpy()).mean()
    assert accuracy > 0.7, accuracy  # 5 types, largest 28%; measured 0.81
    clusters = query_model.get_cluster_assignments(query)
    assert len(clusters) == query.n_obs and clusters["confidence"].between(0, 1).all()


# ------------------------------------------------------------------------------ scale
@pytest.fixture
def densify_log(monkeypatch):
    """Record the number of rows of every sparse matrix densified with toarray()."""
    from scipy.sparse._compressed import _cs_matrix

    rows: list[int] = []
    original = _cs_matrix.toarray

    def toarray(self, *args, **kwargs):
        rows.append(self.shape[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(_cs_matrix, "toarray", toarray)
    return rows


def test_training_and_inference_never_densify_a_large_matrix(densify_log, monkeypatch):
    """Above the dense-copy limit the counts stay CSR (sharing the AnnData's buffers) and
    minibatches are gathered from it: nothing densifies more than a minibatch of rows."""
    from mixvi.dataloaders import _store

    monkeypatch.setattr(_store, "DENSE_MAX_BYTES", 0)  # every matrix counts as large
    scvi.settings.seed = 0
    adata = make_counts(n_cells=300, n_genes=50)
    model = setup_tiny_model(adata)
    densify_log.clear()
    model.train(max_epochs=2, prior_init_epoch=1, **QUIET)
    model.get_latent_representation(batch_size=50)
    model.get_cluster_assignments(batch_size=50)
    model.get_elbo(batch_size=50)
    assert not densify_log or max(densify_log) <= 64, sorted(set(densify_log))
    store = _store.TensorStore(model.adata_manager)
    counts = adata.layers["counts"]
    assert "X" not in store.tensors and isinstance(store.sparse["X"], _store.CSRRows)
    assert store.sparse["X"].values.data_ptr() == counts.data.__array_interface__["data"][0]

    mdata = mixvi.datasets.pbmc_multiome_tiny()[:300].copy()
    mixvi.MultiMixVI.setup_mudata(mdata, batch_key="batch")
    multi = mixvi.MultiMixVI(mdata, n_latent=4, n_hidden=16, n_components=3)
    densify_log.clear()
    multi.train(max_epochs=1, **QUIET)
    multi.get_latent_representation(batch_size=50)
    multi.get_cluster_assignments(batch_size=50)
    multi.predict_rna_from_atac(batch_size=50)
    multi.predict_atac_from_rna(batch_size=50)
    assert not densify_log or max(densify_log) <= 64, sorted(set(densify_log))


def test_setup_checks_use_bounded_memory():
    """The setup checks on 2e7 stored counts (160 MB of CSR) allocate a bounded few tens of MB.

    (np.bincount over the int32 indices used to make an int64 copy: 8 bytes per count.)
    """
    import tracemalloc

    from mixvi.model._validation import validate_setup

    n_cells, n_genes, per_cell = 20_000, 2_000, 1_000
    rng = np.random.default_rng(0)
    indices = rng.integers(0, n_genes, n_cells * per_cell, dtype=np.int32)
    data = np.ones(n_cells * per_cell, dtype=np.float32)
    indptr = np.arange(0, n_cells * per_cell + 1, per_cell, dtype=np.int64)
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    adata = ad.AnnData(X=X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracemalloc.start()
        try:
            validate_setup(adata)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 80e6, f"setup checks allocated {peak / 1e6:.0f} MB for 160 MB of counts"


def test_backed_anndata_trains_and_infers(tmp_path, densify_log):
    """anndata.read_h5ad(path, backed="r") works: minibatches are read from disk."""
    scvi.settings.seed = 0
    memory = tiny_counts()
    memory.X = memory.layers.pop("counts")
    memory.write_h5ad(tmp_path / "d.h5ad")
    file_bytes = (tmp_path / "d.h5ad").read_bytes()
    backed = ad.read_h5ad(tmp_path / "d.h5ad", backed="r")
    try:
        assert backed.isbacked and not sp.issparse(backed.X)
        mixvi.MixVI.setup_anndata(backed, batch_key="batch")
        model = mixvi.MixVI(backed, n_latent=4, n_hidden=16, n_components=3)
        model.train(max_epochs=2, prior_init_epoch=1, **QUIET)
        z = model.get_latent_representation(batch_size=50)
        assert np.isfinite(z).all() and z.shape == (200, 4)
        model.write_to_adata(backed, batch_size=50)
        assert backed.obsm["X_mixvi"].shape == (200, 4)
        assert max(densify_log) <= 64
        # the same model on the same cells loaded in memory gives the same latents
        mixvi.MixVI.setup_anndata(memory, batch_key="batch")
        np.testing.assert_allclose(model.get_latent_representation(memory), z, atol=1e-6)
    finally:
        backed.file.close()
    assert (tmp_path / "d.h5ad").read_bytes() == file_bytes  # the file is never written
