"""mixvi.pl: training curves, embeddings, the mixture on a UMAP, cluster confusion, marker
genes, the tree and palettes. Every function returns its Axes, draws into given Axes and
writes a file with ``save=``.

One tiny synthetic dataset (300 cells x 50 genes, Poisson counts, 3 types, 2 batches),
one GMM and one hierarchical model of 3 components, each trained 4 epochs.
"""

from __future__ import annotations

import logging
import warnings

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scvi  # noqa: E402

import mixvi  # noqa: E402
from mixvi.data import assert_unchanged, snapshot  # noqa: E402

warnings.filterwarnings("ignore", module="lightning")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

TRAIN = {
    "max_epochs": 4,
    "train_size": 0.8,
    "check_val_every_n_epoch": 2,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
}
RESULT_KEYS = ("mixvi_cluster", "mixvi_cluster_confidence", "mixvi_cluster_probs", "X_mixvi")


def _synthetic(seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    n_cells, n_genes = 300, 50
    types = rng.integers(0, 3, n_cells)
    batches = rng.integers(0, 2, n_cells)
    rates = rng.gamma(0.8, 1.0, (3, n_genes)) * 4
    counts = rng.poisson(rates[types] * np.exp(rng.normal(0, 0.3, (2, n_genes)))[batches])
    counts[:, 0] += 1
    X = sp.csr_matrix(counts.astype(np.float32))
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(
            {
                "batch": pd.Categorical([f"b{b}" for b in batches]),
                "cell_type": pd.Categorical([f"t{t}" for t in types]),
            },
            index=[f"cell{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(
            {"symbol": [f"SYM{j}" for j in range(n_genes)]},
            index=[f"gene{j}" for j in range(n_genes)],
        ),
    )
    adata.layers["counts"] = X.copy()
    return adata


@pytest.fixture(scope="module")
def gmm():
    """(model, adata) with clusters written and a UMAP of the latent."""
    import scanpy as sc

    scvi.settings.seed = 0
    adata = _synthetic()
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, n_latent=4, n_components=3)
    # long enough for the latent to hold the three types (after 4 epochs it does not yet)
    model.train(**{**TRAIN, "max_epochs": 30})
    model.write_to_adata(adata)
    sc.pp.neighbors(adata, use_rep="X_mixvi", n_neighbors=10)
    sc.tl.umap(adata)
    return model, adata


@pytest.fixture(scope="module")
def hierarchical():
    scvi.settings.seed = 0
    adata = _synthetic()
    mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    model = mixvi.MixVI(adata, n_latent=4, n_components=3, prior="hierarchical")
    model.train(**TRAIN)
    return model, adata


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# -- training_curves ------------------------------------------------------------------------
def test_training_curves_panels_and_lines(gmm):
    model, _ = gmm
    axes = mixvi.pl.training_curves(model, show=False)
    # elbo, reconstruction_loss, kl_local + the mixture-entropy panel, in one figure
    assert len(axes) == 4 and all(isinstance(a, matplotlib.axes.Axes) for a in axes)
    assert axes[0].figure.axes == axes
    for axis in axes[:3]:
        labels = [line.get_label() for line in axis.get_lines()]
        assert labels == ["train", "validation"]
        train, val = axis.get_lines()
        np.testing.assert_array_equal(train.get_xdata(), np.arange(30))
        # validation every 2 epochs: only the epochs that were logged
        np.testing.assert_array_equal(val.get_xdata(), np.arange(1, 30, 2))
    entropy = axes[3]
    assert entropy.get_title() == "mixture weight entropy"
    log_k = [line for line in entropy.get_lines() if line.get_label().startswith("log K")]
    assert len(log_k) == 1 and np.allclose(log_k[0].get_ydata(), np.log(3))
    h = model.history["mixture_entropy_train"].to_numpy().ravel().astype(float)
    np.testing.assert_allclose(entropy.get_lines()[0].get_ydata(), h)


def test_training_curves_from_history_dict_and_errors(gmm, tmp_path):
    model, _ = gmm
    history = dict(model.history)
    axes = mixvi.pl.training_curves(history, keys=("elbo", "not_a_term"), mixture_entropy=False,
                                    show=False)
    assert len(axes) == 1  # the missing key is skipped
    with pytest.raises(ValueError, match="None of the keys"):
        mixvi.pl.training_curves(history, keys=("nope",), mixture_entropy=False, show=False)
    with pytest.raises(ValueError, match="empty"):
        mixvi.pl.training_curves({}, show=False)
    with pytest.raises(ValueError, match="Axes"):
        _, ax = plt.subplots()
        mixvi.pl.training_curves(model, ax=ax, show=False)  # 4 panels, 1 Axes
    path = tmp_path / "curves.png"
    assert mixvi.pl.training_curves(model, show=True, save=path) is None
    assert path.stat().st_size > 1000


# -- mixture --------------------------------------------------------------------------------
def test_mixture_markers_labels_and_unchanged(gmm, tmp_path):
    model, adata = gmm
    before = snapshot(adata)
    path = tmp_path / "sub" / "mixture"  # no suffix: .png is added, folder is created
    ax = mixvi.pl.mixture(adata, model, show=False, save=path)
    assert (tmp_path / "sub" / "mixture.png").stat().st_size > 1000
    used = sorted(adata.obs["mixvi_cluster"].astype(str).unique())
    assert sorted(_texts(ax)) == used  # one label per used component
    # one scatter of cells + one marker per used component
    assert len(ax.collections) == 1 + len(used)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 3 and all("π=" in t for t in legend)
    assert f"{len(used)} of 3 components" in ax.get_title()
    assert_unchanged(before, adata)


def test_mixture_lists_empty_components(gmm):
    model, adata = gmm
    view = adata.copy()
    view.obs["mixvi_cluster"] = pd.Categorical(["0"] * view.n_obs)
    ax = mixvi.pl.mixture(view, size_by="count", show=False)
    assert "no cells: 1, 2" in ax.get_title()
    assert _texts(ax) == ["0"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"0 (n={view.n_obs})", "1 (no cells)", "2 (no cells)"]
    assert "cell count" in ax.get_legend().get_title().get_text()
    with pytest.raises(KeyError, match="X_tsne"):
        mixvi.pl.mixture(view, basis="tsne", show=False)
    with pytest.raises(ValueError, match="size_by='weight'"):
        mixvi.pl.mixture(view, size_by="weight", show=False)


def test_mixture_draws_into_given_axes(gmm, tmp_path):
    model, adata = gmm
    fig, (left, right) = plt.subplots(1, 2)
    out = mixvi.pl.mixture(adata, model, ax=right, legend=False, show=False)
    assert out is right and len(left.collections) == 0 and len(right.collections) > 1
    # saving through a caller's Axes writes the whole figure and leaves it open
    mixvi.pl.cluster_confusion(adata, ax=left, show=True, save=tmp_path / "both.png")
    assert plt.fignum_exists(fig.number)
    assert (tmp_path / "both.png").stat().st_size > 1000


# -- cluster_confusion ----------------------------------------------------------------------
def _toy_labels() -> ad.AnnData:
    clusters = ["c2"] * 8 + ["c0"] * 2 + ["c1"] * 6 + ["c3"] * 4
    labels = ["A"] * 8 + ["B"] * 2 + ["B"] * 6 + ["A"] * 3 + ["B"]
    obs = pd.DataFrame({"cl": pd.Categorical(clusters), "ct": pd.Categorical(labels)},
                       index=[f"c{i}" for i in range(len(clusters))])
    return ad.AnnData(obs=obs)


def test_cluster_confusion_orders_diagonal_and_normalises():
    adata = _toy_labels()
    before = snapshot(adata)
    ax = mixvi.pl.cluster_confusion(adata, "cl", "ct", normalize="cluster", show=False)
    table = ax.confusion_table
    # Hungarian: c2 <-> A and c1 <-> B are matched; c3 (mostly A) follows c2, c0 follows c1
    assert list(table.index) == ["c2", "c3", "c1", "c0"]
    assert list(table.columns) == ["A", "B"]
    np.testing.assert_allclose(table.sum(1), 1.0)
    assert table.loc["c3", "A"] == pytest.approx(0.75)
    assert "0.75" in _texts(ax) and "1.00" in _texts(ax)
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "c2 (n=8)"

    ax = mixvi.pl.cluster_confusion(adata, "cl", "ct", normalize="label", show=False)
    np.testing.assert_allclose(ax.confusion_table.sum(0), 1.0)
    ax = mixvi.pl.cluster_confusion(adata, "cl", "ct", normalize=None, show=False)
    expected = pd.crosstab(adata.obs["cl"], adata.obs["ct"]).loc[list(ax.confusion_table.index)]
    np.testing.assert_array_equal(ax.confusion_table.to_numpy(), expected.to_numpy())
    assert "8" in _texts(ax) and "0" not in _texts(ax)  # zero cells are left blank
    assert_unchanged(before, adata)

    with pytest.raises(ValueError, match="normalize"):
        mixvi.pl.cluster_confusion(adata, "cl", "ct", normalize="rows", show=False)
    with pytest.raises(KeyError, match="cell_type"):
        mixvi.pl.cluster_confusion(adata, "cl", show=False)


def test_cluster_confusion_on_model_output(gmm, tmp_path):
    _, adata = gmm
    path = tmp_path / "confusion.pdf"
    ax = mixvi.pl.cluster_confusion(adata, show=False, save=path)
    assert path.stat().st_size > 1000
    table = ax.confusion_table
    assert table.shape[1] == 3
    assert set(table.index) == set(adata.obs["mixvi_cluster"].astype(str))


# -- tree -----------------------------------------------------------------------------------
def test_tree_rejects_non_hierarchical_prior(gmm):
    model, _ = gmm
    with pytest.raises(ValueError, match="prior='hierarchical'"):
        mixvi.pl.tree(model, show=False)


def test_tree_dendrogram_counts_markers_and_unchanged(hierarchical, tmp_path):
    model, adata = hierarchical
    before = snapshot(adata)
    path = tmp_path / "tree.png"
    ax = mixvi.pl.tree(model, n_genes=2, gene_symbols="symbol", show=False, save=path)
    assert path.stat().st_size > 1000
    assert_unchanged(before, adata)  # markers come from a log-normalised copy
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == model.module.prior.n_leaves == 3
    counts = [int(t.split("n=")[1].split()[0]) for t in ticks]
    assert sum(counts) == adata.n_obs
    assignments = model.get_cluster_assignments()["cluster"].astype(str).value_counts()
    for t in ticks:
        name = t.split()[0]
        assert int(t.split("n=")[1].split()[0]) == assignments.get(name, 0)
        if assignments.get(name, 0) >= 2 and (assignments >= 2).sum() >= 2:
            assert "SYM" in t  # marker genes of a leaf with cells, by their symbol
    # internal nodes: L - 1 of them, labelled with their cells; the root holds all
    internal = _texts(ax)
    assert len(internal) == 2 and f"(n={adata.n_obs})" in " ".join(internal)
    # U-shapes: 3 line segments per merge; every merge at its own, increasing height
    assert len(ax.get_lines()) == 3 * 2
    merge_x = [line.get_xdata()[0] for line in ax.get_lines()[2::3]]
    assert merge_x[1] > merge_x[0] > 0


def test_tree_depth_heights_and_cluster_key(hierarchical):
    model, adata = hierarchical
    view = adata.copy()
    leaves = model.component_names()[: model.module.prior.n_leaves]
    view.obs["leaf"] = pd.Categorical([leaves[0]] * view.n_obs)
    ax = mixvi.pl.tree(model, view, cluster_key="leaf", n_genes=0, height="depth", show=False)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert any(t == f"{leaves[0]}  n={view.n_obs}" for t in ticks)  # no genes with n_genes=0
    root_x = max(max(line.get_xdata()) for line in ax.get_lines())
    assert root_x == model.module.prior.depths.max()  # the deepest leaf's merges to the root


def test_training_curves_into_given_axes(gmm):
    model, _ = gmm
    fig, grid = plt.subplots(2, 2)
    given = list(grid.flat)
    out = mixvi.pl.training_curves(model, ax=given, show=False)
    assert out == given and all(len(a.get_lines()) >= 1 for a in given)
    assert plt.fignum_exists(fig.number)


# -- palettes and embedding -----------------------------------------------------------------
def test_palettes_differ_by_kind_and_do_not_repeat():
    kinds = ("cluster", "batch", "label")
    firsts = {k: mixvi.pl.palette(k, 3) for k in kinds}
    # no colour is shared between the first three of any two kinds
    for a in kinds:
        for b in kinds:
            if a != b:
                assert not set(firsts[a]) & set(firsts[b]), (a, b)
    for k in kinds:
        assert len(set(mixvi.pl.palette(k, 100))) == 100
    assert mixvi.pl.palette("cluster", 0) == []
    with pytest.raises(ValueError, match="kind"):
        mixvi.pl.palette("celltype", 3)
    assert mixvi.pl.palette_kind("mixvi_cluster") == "cluster"
    assert mixvi.pl.palette_kind("leiden") == "cluster"
    assert mixvi.pl.palette_kind("sample_id") == "batch"
    assert mixvi.pl.palette_kind("condition", batch_key="condition") == "batch"
    assert mixvi.pl.palette_kind("cell_type") == "label"


def _cielab(hex_color: str) -> np.ndarray:
    """sRGB (D65) to CIELAB, written out here independently of the plotting code."""
    rgb = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ lin / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_cell_type_colours_do_not_look_like_cluster_colours():
    # The demo UMAP drew cluster 0 and CD14+ monocytes both blue (Set1's blue is 3.8 CIELAB
    # units from tab10's): side by side they read as a match. Visibly different: > 20 units.
    clusters = [_cielab(c) for c in mixvi.pl.palette("cluster", 10)]
    labels = [_cielab(c) for c in mixvi.pl.palette("label", 8)]
    to_clusters = min(np.linalg.norm(a - b) for a in labels for b in clusters)
    among = min(np.linalg.norm(a - b) for i, a in enumerate(labels) for b in labels[i + 1:])
    assert to_clusters > 20 and among > 20, (to_clusters, among)
    assert np.linalg.norm(_cielab("#377eb8") - _cielab("#1f77b4")) < 5  # the test sees that case
    # a panel of five cell types: five different hues (the demo drew three greens)
    hue = [np.degrees(np.arctan2(lab[2], lab[1])) % 360 for lab in labels[:5]]
    gaps = [min(abs(a - b), 360 - abs(a - b)) for i, a in enumerate(hue) for b in hue[i + 1:]]
    assert min(gaps) > 30, gaps


def _colors(ax) -> set[tuple]:
    return {tuple(np.round(c, 4)) for c in ax.collections[0].get_facecolors()}


def test_embedding_panels_have_their_own_palettes(gmm, tmp_path):
    _, adata = gmm
    before = snapshot(adata)
    keys = ["mixvi_cluster", "batch", "cell_type"]
    path = tmp_path / "umap.png"
    axes = mixvi.pl.embedding(adata, keys, show=False, save=path)
    assert path.stat().st_size > 10_000
    assert [a.get_title() for a in axes] == keys
    for ax, kind in zip(axes, ("cluster", "batch", "label")):
        cats = adata.obs[ax.get_title()].cat.categories
        expected = dict(zip(map(str, cats), mixvi.pl.palette(kind, len(cats))))
        assert ax.mixvi_palette == expected
        drawn = {tuple(np.round(matplotlib.colors.to_rgba(c), 4)) for c in expected.values()}
        assert _colors(ax) == drawn  # the dots carry exactly these colours
    # the first cluster, the first batch and the first cell type look different
    firsts = [next(iter(ax.mixvi_palette.values())) for ax in axes]
    assert len(set(firsts)) == 3
    assert_unchanged(before, adata)  # no uns["<key>_colors"] written


def test_embedding_legend_outside_and_in_columns(gmm):
    _, adata = gmm
    view = adata.copy()
    view.obs["many"] = pd.Categorical([f"type{i % 40:02d}" for i in range(view.n_obs)])
    ax = mixvi.pl.embedding(view, "many", show=False)
    assert isinstance(ax, matplotlib.axes.Axes)  # one column -> one Axes
    legend = ax.get_legend()
    assert len(legend.get_texts()) == 40 and legend._ncols == 3
    ax.figure.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside, not over
    few = mixvi.pl.embedding(view, "batch", show=False).get_legend()
    assert few._ncols == 1


def test_embedding_into_given_axes_numeric_and_errors(gmm):
    _, adata = gmm
    fig, (left, right) = plt.subplots(1, 2)
    out = mixvi.pl.embedding(adata, ["mixvi_cluster_confidence", "batch"], ax=[left, right],
                             palettes={"batch": ["black", "red"]}, show=False)
    assert out == [left, right] and left.mixvi_palette is None
    assert len(fig.axes) == 3  # plus the colour bar of the numeric panel
    assert right.mixvi_palette == {"b0": "black", "b1": "red"}
    with pytest.raises(KeyError, match="available"):
        mixvi.pl.embedding(adata, "celltype", show=False)
    with pytest.raises(KeyError, match="X_tsne"):
        mixvi.pl.embedding(adata, "batch", basis="tsne", show=False)
    with pytest.raises(ValueError, match="Axes"):
        mixvi.pl.embedding(adata, ["batch", "cell_type"], ax=left, show=False)


def test_mixture_legend_columns_for_many_components(gmm):
    _, adata = gmm
    view = adata.copy()
    view.obs["mixvi_cluster"] = pd.Categorical([str(i % 20) for i in range(view.n_obs)])
    ax = mixvi.pl.mixture(view, probs_key=None, show=False)
    assert len(ax.get_legend().get_texts()) == 20 and ax.get_legend()._ncols == 2


# -- marker genes ---------------------------------------------------------------------------
def test_marker_genes_dot_plot(gmm, tmp_path):
    model, adata = gmm
    before = snapshot(adata)
    path = tmp_path / "markers.png"
    ax = mixvi.pl.marker_genes(adata, n_genes=2, model=model, gene_symbols="symbol",
                               show=False, save=path)
    assert path.stat().st_size > 5_000
    assert_unchanged(before, adata)
    sizes = adata.obs["mixvi_cluster"].astype(str).value_counts()
    assert set(ax.marker_genes) == set(sizes.index[sizes >= 2])
    assert all(len(g) <= 2 and all(x.startswith("SYM") for x in g) for g in ax.marker_genes.values())
    table, frac = ax.marker_table, ax.marker_fraction
    assert list(table.columns) == [t.get_text() for t in ax.get_xticklabels()]
    # one value by hand: mean log-normalised expression and detection rate
    cluster, symbol = table.index[0], table.columns[0]
    gene = adata.var_names[adata.var["symbol"] == symbol][0]
    counts = adata.layers["counts"].toarray()
    rows = (adata.obs["mixvi_cluster"].astype(str) == cluster).to_numpy()
    norm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)[rows, adata.var_names.get_loc(gene)]
    assert table.iloc[0, 0] == pytest.approx(norm.mean(), rel=1e-4)
    assert frac.iloc[0, 0] == pytest.approx((counts[rows, adata.var_names.get_loc(gene)] > 0).mean())
    # one dot per cluster and gene
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == table.size


def test_marker_genes_into_given_axes_and_errors(gmm):
    model, adata = gmm
    _, ax = plt.subplots()
    assert mixvi.pl.marker_genes(adata, n_genes=1, model=model, ax=ax, show=False) is ax
    assert len(ax.collections) == 1
    with pytest.raises(KeyError, match="write_to_adata"):
        mixvi.pl.marker_genes(adata, "nope", show=False)
    one = adata.copy()
    one.obs["mixvi_cluster"] = pd.Categorical(["0"] * one.n_obs)
    with pytest.raises(ValueError, match="two clusters"):
        mixvi.pl.marker_genes(one, model=model, show=False)


def test_tree_into_given_axes(hierarchical):
    model, _ = hierarchical
    _, (left, right) = plt.subplots(1, 2)
    assert mixvi.pl.tree(model, n_genes=0, ax=right, show=False) is right
    assert len(right.get_lines()) == 3 * 2 and len(left.get_lines()) == 0


def test_every_pl_function_takes_ax_show_save():
    import inspect

    plotters = [n for n in mixvi.pl.__all__ if n not in ("palette", "palette_kind", "rank_marker_genes")]
    assert set(plotters) == {"cluster_confusion", "embedding", "marker_genes", "mixture",
                             "training_curves", "translation", "tree"}
    for name in plotters:
        params = inspect.signature(getattr(mixvi.pl, name)).parameters
        assert {"ax", "show", "save"} <= set(params), name


def test_translation_panels_floor_lines_and_markers(tmp_path):
    """Per-gene r histogram with the floor at 0, per-cell r and AUROC beside the floor's,
    marker genes observed / predicted on the embedding."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n, g, p = 120, 30, 50
    truth = rng.gamma(1.0, 1.0, (n, g))
    observed = sp.csr_matrix(rng.poisson(truth * 5).astype(np.float32))
    predicted = truth + 0.1  # a good prediction
    floor = np.broadcast_to(truth.mean(0), (n, g))
    acc = rng.random((n, p))
    peaks = sp.csr_matrix((rng.random((n, p)) < acc * 0.5).astype(np.float32))
    adata = ad.AnnData(observed, var=pd.DataFrame(index=[f"g{i}" for i in range(g)]))
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    axes = mixvi.pl.translation(predicted, observed, floor, acc, peaks,
                                np.broadcast_to(acc.mean(0), (n, p)), adata=adata,
                                genes=["g1", "g2", "g3"], show=False, save=tmp_path / "t.png")
    assert (tmp_path / "t.png").exists()
    assert len(axes) == 3 + 6
    top = [round(a.get_position().y1, 3) for a in axes]  # figure rows, top to bottom
    rows = [sorted(set(top), reverse=True).index(t) for t in top]
    assert rows == [0, 0, 0, 1, 1, 1, 1, 2, 2]  # summary row; each gene's pair on one row
    assert any(abs(line.get_xdata()[0]) < 1e-12 for line in axes[0].get_lines())  # floor at 0
    legend = [t.get_text() for t in axes[1].get_legend().get_texts()]
    assert any("mean profile" in t for t in legend) and any("model" in t for t in legend)
    assert axes[3].get_title() == "g1: observed" and axes[4].get_title() == "g1: predicted from ATAC"
    with pytest.raises(KeyError, match="nope"):
        mixvi.pl.translation(predicted, observed, adata=adata, genes=["nope"], show=False)
