"""Plotting for mixvi models, in scanpy's style.

Every function draws with matplotlib (headless ``Agg`` works), takes ``ax=`` to draw
into an existing Axes, ``save=`` to write the figure to a file and ``show=`` (``None``
follows :attr:`scanpy.settings.autoshow`); with ``show=False`` it returns what it drew.

:func:`training_curves`
    ELBO terms per epoch (train and validation) and mixture-component usage.
:func:`mixture`
    The mixture on an embedding: cells coloured by cluster, one marker per component.
:func:`cluster_confusion`
    Mixture clusters against reference labels, as an annotated heatmap.
:func:`tree`
    The learned tree of ``prior="hierarchical"`` as a dendrogram with marker genes.
"""

from ._confusion import cluster_confusion
from ._mixture import mixture
from ._training import training_curves
from ._tree import tree

__all__ = ["cluster_confusion", "mixture", "training_curves", "tree"]
