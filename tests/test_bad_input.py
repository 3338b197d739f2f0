"""Bad AnnData input fails at the entry points, with a message naming the problem and the fix
(issue #5).

One table (``CASES``) drives the test: each row calls a public entry point --
``MixVI.setup_anndata``, ``MixVI(...)``, ``MixVI.load`` / ``load_query_data``, inference on
new data -- on one wrong input and asserts the error type and message; the MuData entry points
have their table in ``test_bad_input_mudata.py``. The checks themselves (``mixvi.data``) are
unit-tested in ``test_validation.py``; here we check that the models call them before anything
reaches torch.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from bad_inputs import (  # noqa: F401  (limited_memory: a fixture, used by name)
    FAST_TRAIN,
    N_CELLS,
    create,
    dense,
    huge_dense,
    latent_mixvi,
    limited_memory,
    load_mixvi,
    lognorm,
    mudata,
    nan_batch_mudata,
    poke,
    query_mixvi,
    query_mixvi_from_folder,
    raises_clearly,
    renamed,
    rna,
    set_obs,
    setup,
    setup_mu,
    with_layer,
    with_unknown,
)

import mixvi
from mixvi.data import DenseMatrixTooLargeError

# the dense case must fail the same way on a big machine: pretend 16 GB are available
pytestmark = pytest.mark.usefixtures("limited_memory")

# (call, error type, message regex); ids name the problem
CASES = [
    # -- counts --------------------------------------------------------------------------
    pytest.param(
        lambda: setup(with_layer(rna(), lognorm(rna()), layer=None), layer=None),
        ValueError,
        r"RNA matrix \(adata\.X.*non-integer.*log-normalised.*pass layer='counts'",
        id="setup_anndata-lognormalised-X-hint-counts-layer",
    ),
    pytest.param(
        lambda: setup(with_layer(rna(), -dense(rna()))),
        ValueError,
        r"adata\.layers\['counts'\].*negative value.*raw counts",
        id="setup_anndata-negative-counts",
    ),
    pytest.param(
        lambda: setup(poke(rna(), np.nan)),
        ValueError,
        r"contains 1 NaN value.*raw counts",
        id="setup_anndata-nan",
    ),
    pytest.param(
        lambda: setup(poke(rna(), np.inf)),
        ValueError,
        r"contains 1 infinite \(inf\) value",
        id="setup_anndata-inf",
    ),
    pytest.param(
        lambda: setup(poke(rna(), 2.5)),
        ValueError,
        r"1 non-integer value\(s\) \(e\.g\. 2\.5\).*"
        r"adata\.layers\['counts'\] = adata\.X\.copy\(\)",
        id="setup_anndata-non-integer",
    ),
    pytest.param(
        lambda: setup(huge_dense(), layer=None, batch_key=None),
        DenseMatrixTooLargeError,
        r"dense 1000000 x 10000 float32 matrix of 40 GB.*scipy\.sparse\.csr_matrix.*backed='r'",
        id="setup_anndata-dense-1e6x1e4-does-not-fit",
    ),
    # -- keys ----------------------------------------------------------------------------
    pytest.param(
        lambda: setup(rna(), layer="count"),
        KeyError,
        r"layer='count' is not in adata\.layers\. Did you mean 'counts'\? Available layers: "
        r"\['counts'\]",
        id="setup_anndata-misspelt-layer",
    ),
    pytest.param(
        lambda: setup(rna(), batch_key="Batch"),
        KeyError,
        r"batch_key='Batch' is not a column of adata\.obs\. Did you mean 'batch'\? "
        r"Available columns: \['batch', 'cell_type'\]",
        id="setup_anndata-misspelt-batch-key",
    ),
    pytest.param(
        lambda: setup(rna(), labels_key="celltype"),
        KeyError,
        r"labels_key='celltype'.*Did you mean 'cell_type'\?",
        id="setup_anndata-misspelt-labels-key",
    ),
    pytest.param(
        lambda: setup(rna(), categorical_covariate_keys=["batch", "donor"]),
        KeyError,
        r"categorical_covariate_keys\[1\]='donor' is not a column of adata\.obs",
        id="setup_anndata-missing-covariate-key",
    ),
    pytest.param(
        lambda: setup(with_unknown(rna(), ["T", "Unknown"] * 30), labels_key="ct"),
        ValueError,
        r"labels_key='ct'.*only 1 category \(\['T'\]\) besides the unlabelled category "
        r"'Unknown', but at least 2 are needed",
        id="setup_anndata-labels-one-category",
    ),
    pytest.param(
        lambda: setup(with_unknown(rna(), ["T", None, "B"] * 20), labels_key="ct"),
        ValueError,
        r"20 missing \(NaN\) value.*fillna\('Unknown'\)",
        id="setup_anndata-labels-with-nan",
    ),
    # -- inputs users hit ----------------------------------------------------------------
    pytest.param(
        lambda: setup(renamed(rna(), obs=lambda n: ["c0", "c0", "c1"] + n[3:])),
        ValueError,
        r"The RNA data has 1 duplicated cell name\(s\) \(\['c0'\]\).*"
        r"adata\.obs_names_make_unique\(\)",
        id="setup_anndata-duplicate-cell-names",
    ),
    pytest.param(
        lambda: setup(renamed(rna(), var=lambda n: ["g"] * 3 + n[3:])),
        ValueError,
        r"duplicated feature name\(s\) \(\['g'\]\).*adata\.var_names_make_unique\(\)",
        id="setup_anndata-duplicate-gene-names",
    ),
    pytest.param(
        lambda: setup(set_obs(rna(), "batch", ["a", None, "b"] * 20)),
        ValueError,
        r"batch_key='batch': adata\.obs\['batch'\] has 20 missing \(NaN\) value\(s\) out of 60"
        r".*fillna.*or drop those cells",
        id="setup_anndata-nan-in-batch",
    ),
    pytest.param(
        lambda: setup(rna()[:0].copy()),
        ValueError,
        r"The RNA data has no cells \(shape 0 x 20\)",
        id="setup_anndata-no-cells",
    ),
    pytest.param(
        lambda: setup(rna()[:, :0].copy()),
        ValueError,
        r"The RNA data has no features \(shape 60 x 0\)",
        id="setup_anndata-no-genes",
    ),
    pytest.param(
        lambda: setup_mu(mudata(rna_mod=renamed(rna(), var=lambda n: ["g"] * 2 + n[2:]))),
        ValueError,
        r"duplicated feature name.*var_names_make_unique",
        id="setup_mudata-duplicate-gene-names",
    ),
    pytest.param(
        lambda: setup_mu(nan_batch_mudata(), batch_key="batch"),
        ValueError,
        r"batch_key='batch'.*has 3 missing \(NaN\) value",
        id="setup_mudata-nan-in-batch",
    ),
    # -- degenerate arguments ------------------------------------------------------------
    *[
        pytest.param(
            lambda kw=kw: create(rna(), **kw), ValueError, match, id=f"MixVI-{name}"
        )
        for name, kw, match in [
            ("n_latent-0", {"n_latent": 0}, r"n_latent must be an integer >= 1, got 0"),
            ("n_hidden-negative", {"n_hidden": -3}, r"n_hidden must be an integer >= 1, got -3"),
            ("n_layers-float", {"n_layers": 1.5}, r"n_layers must be an integer >= 1, got 1\.5"),
            ("dropout-1", {"dropout_rate": 1.0}, r"dropout_rate must be a number in \[0, 1\), got 1\.0"),
            ("n_components-0", {"n_components": 0}, r"n_components must be at least 1, got 0"),
            ("prior-unknown", {"prior": "vamp"}, r"prior must be one of \('normal', 'gmm', 'hierarchical'\), got 'vamp'"),
            ("posterior-unknown", {"posterior": "flow"}, r"posterior must be one of \('gaussian', 'mixture'\)"),
            ("likelihood-unknown", {"gene_likelihood": "gaussian"}, r"gene_likelihood must be one of"),
            ("kl_estimator-unknown", {"kl_estimator": "exact"}, r"kl_estimator must be one of \('mc', 'analytic'\)"),
            ("n_kl_samples-0", {"n_kl_samples": 0}, r"n_kl_samples must be an integer >= 1, got 0"),
            ("batch_balance-negative", {"batch_balance_weight": -1.0}, r"batch_balance_weight must be a number in \[0, inf\)"),
        ]
    ],
    *[
        pytest.param(
            lambda kw=kw: create(rna(), n_latent=2, n_hidden=8, n_components=2).train(
                **{**FAST_TRAIN, **kw}
            ),
            ValueError, match, id=f"train-{name}",
        )
        for name, kw, match in [
            ("max_epochs-0", {"max_epochs": 0}, r"max_epochs must be an integer >= 1, got 0"),
            ("batch_size-1", {"max_epochs": 1, "batch_size": 1}, r"batch_size must be an integer >= 2, got 1"),
            ("train_size-0", {"max_epochs": 1, "train_size": 0.0}, r"train_size must be a number in \(0, 1\], got 0\.0"),
            ("validation_size-1", {"max_epochs": 1, "validation_size": 1.0}, r"validation_size must be a number in \[0, 1\)"),
            ("split-over-1", {"max_epochs": 1, "train_size": 0.8, "validation_size": 0.5}, r"train_size \+ validation_size must be <= 1"),
        ]
    ],
    pytest.param(
        lambda: (setup_mu(m := mudata()), mixvi.MultiMixVI(m, alignment_weight=-1.0)),
        ValueError,
        r"alignment_weight must be a number in \[0, inf\), got -1\.0",
        id="MultiMixVI-negative-alignment-weight",
    ),
    pytest.param(
        lambda: (setup_mu(m := mudata()), mixvi.MultiMixVI(m, batch_balance_weight=-2.0)),
        ValueError,
        r"batch_balance_weight must be a number in \[0, inf\), got -2\.0",
        id="MultiMixVI-negative-batch-balance-weight",
    ),
    pytest.param(
        lambda: (setup_mu(m := mudata()), mixvi.MultiMixVI(m, atac_likelihood="gaussian")),
        ValueError,
        r"atac_likelihood must be one of \('bernoulli', 'poisson'\)",
        id="MultiMixVI-unknown-atac-likelihood",
    ),
    # -- model creation ------------------------------------------------------------------
    pytest.param(
        lambda: create(rna(), n_components=100),
        ValueError,
        r"n_components=100 exceeds the number of cells \(60\).*n_components <= 60",
        id="MixVI-n_components-gt-cells",
    ),
    pytest.param(
        lambda: create(rna(), setup_kwargs={"labels_key": "cell_type"}, n_components=2),
        ValueError,
        r"3 known labels need at least as many mixture components; got n_components=2\. Raise n_components",
        id="MixVI-fewer-components-than-labels",
    ),
    # -- a trained model on other data ---------------------------------------------------
    pytest.param(
        lambda: load_mixvi(rna()[:, ::-1].copy()),
        ValueError,
        r"adata has the model's 20 genes but in a different order.*adata\[:, "
        r"reference_var_names\]",
        id="MixVI.load-genes-in-other-order",
    ),
    pytest.param(
        lambda: load_mixvi(rna()[:, 5:].copy()),
        ValueError,
        r"5 of the 20 genes the model was trained on are missing.*prepare_query_anndata",
        id="MixVI.load-fewer-genes",
    ),
    pytest.param(
        lambda: query_mixvi(rna(seed=3)[:, ::-1].copy()),
        ValueError,
        r"different order",
        id="load_query_data-genes-in-other-order",
    ),
    pytest.param(
        lambda: query_mixvi_from_folder(rna(seed=3)[:, 2:].copy()),
        ValueError,
        r"2 of the 20 genes the model was trained on are missing",
        id="load_query_data-folder-missing-genes",
    ),
    pytest.param(
        lambda: query_mixvi(with_layer(rna(seed=3), lognorm(rna(seed=3)))),
        ValueError,
        r"non-integer.*log-normalised",
        id="load_query_data-lognormalised-query",
    ),
    pytest.param(
        lambda: latent_mixvi(rna(seed=3)[:, ::-1].copy()),
        ValueError,
        r"genes but in a different order",
        id="get_latent_representation-genes-in-other-order",
    ),
    pytest.param(
        lambda: latent_mixvi(poke(rna(seed=3), np.nan)),
        ValueError,
        r"contains 1 NaN value",
        id="get_latent_representation-nan-counts",
    ),
    pytest.param(
        lambda: latent_mixvi(ad.AnnData(rna().layers["counts"], obs=rna().obs, var=rna().var)),
        KeyError,
        r"layer='counts' is not in adata\.layers.*Available layers: none",
        id="get_latent_representation-no-counts-layer",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_raises_clear_error(call, error, match):
    raises_clearly(call, error, match)


def test_errors_are_raised_before_registration():
    """A refused AnnData is left as it was: no scvi-tools keys were written."""
    adata = poke(rna(), np.nan)
    with pytest.raises(ValueError):
        setup(adata)
    assert not [k for k in adata.obs if k.startswith("_scvi")]
    assert not [k for k in adata.uns if k.startswith("_scvi")]


def test_empty_cells_and_genes_warn_with_counts_and_fix():
    c = dense(rna())
    c[[4, 9]] = 0
    c[:, 7] = 0
    adata = with_layer(rna(), c)
    with pytest.warns(
        UserWarning,
        match=r"2 of 60 cells have no RNA counts and 1 of 20 features are zero in every cell "
        r"\(adata\.layers\['counts'\]\).*mixvi\.data\.drop_empty\(adata, layer='counts'\)",
    ):
        setup(adata)
    kept = mixvi.data.drop_empty(adata, layer="counts")
    assert kept.shape == (58, 19)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mixvi.data.check_empty(kept, "counts")


def test_one_batch_is_allowed():
    """A single batch is valid data (no batch effect to remove), not an error."""
    adata = set_obs(rna(), "batch", ["only"] * N_CELLS)
    setup(adata)
    model = mixvi.MixVI(adata, n_latent=2, n_hidden=8, n_components=2)
    assert model.summary_stats.n_batch == 1
