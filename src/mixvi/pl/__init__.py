"""Plotting for mixvi models, in scanpy's style.

Every function draws with matplotlib (headless ``Agg`` works), takes ``ax=`` to draw
into existing Axes, ``save=`` to write the figure to a file and ``show=`` (``None``
follows :attr:`scanpy.settings.autoshow`); with ``show=False`` it returns the Axes it drew
(a list for several panels).

:func:`embedding`
    Cells on a UMAP, one panel per ``.obs`` column; clusters, batches and cell types each
    have their own palette, legends sit beside the panels.
:func:`training_curves`
    ELBO terms per epoch (train and validation) and mixture-component usage.
:func:`mixture`
    The mixture on an embedding: cells coloured by cluster, one marker per component.
:func:`cluster_confusion`
    Mixture clusters against reference labels, as an annotated heatmap.
:func:`marker_genes`
    Dot plot of the top marker genes of every cluster.
:func:`tree`
    The learned tree of ``prior="hierarchical"`` as a dendrogram with marker genes.
:func:`translation`
    Translation against the mean-profile floor: per-gene r, per-cell r and AUROC, markers.
:func:`palette`, :func:`palette_kind`
    The colours of each kind of panel (cluster, batch, label), e.g. for ``sc.pl.umap``.
"""

from ._confusion import cluster_confusion
from ._embedding import embedding
from ._markers import marker_genes, rank_marker_genes
from ._mixture import mixture
from ._training import training_curves
from ._translation import translation
from ._tree import tree
from ._utils import palette, palette_kind

__all__ = [
    "cluster_confusion",
    "embedding",
    "marker_genes",
    "mixture",
    "palette",
    "palette_kind",
    "rank_marker_genes",
    "training_curves",
    "translation",
    "tree",
]
