"""Shared fixtures: tiny synthetic count data (fast) and the shipped real data."""

from __future__ import annotations

import logging
import warnings

import pytest
import scvi
from helpers import lognormalize, make_counts
from tiny_models import trained_and_saved

warnings.filterwarnings("ignore", module="lightning")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning").setLevel(logging.ERROR)


@pytest.fixture
def counts_adata():
    """240 cells x 60 genes, 3 types, 2 batches; scanpy layout (counts in the layer,
    log-normalised ``.X``)."""
    scvi.settings.seed = 0
    return make_counts()


@pytest.fixture(params=["scanpy", "counts"])
def any_layout_adata(request):
    """The small data in both layouts: log-normalised ``.X`` and ``.X`` = counts."""
    scvi.settings.seed = 0
    return make_counts(layout=request.param)


_KANG = None


@pytest.fixture
def kang():
    """The shipped Kang IFN-b PBMC data in the scanpy layout: raw counts in
    ``layers["counts"]``, log-normalised ``.X`` (a fresh copy per test)."""
    global _KANG
    if _KANG is None:
        import mixvi

        _KANG = lognormalize(mixvi.datasets.kang_pbmc_ifnb())
    return _KANG.copy()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(Per test module) a tiny model trained 3 epochs, saved, with its data written to h5ad."""
    return trained_and_saved(tmp_path_factory)
