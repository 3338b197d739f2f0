"""Shared fixtures: tiny synthetic count data (fast) and the shipped real data."""

from __future__ import annotations

import logging
import warnings

import pytest
import scvi
from helpers import make_counts

warnings.filterwarnings("ignore", module="lightning")
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
logging.getLogger("lightning").setLevel(logging.ERROR)


@pytest.fixture
def counts_adata() -> ad.AnnData:
    """240 cells x 60 genes, 3 types, 2 batches."""
    scvi.settings.seed = 0
    return make_counts()


_KANG = None


@pytest.fixture
def kang():
    """The shipped Kang IFN-b PBMC data (a fresh copy per test)."""
    global _KANG
    if _KANG is None:
        import mixvi

        _KANG = mixvi.datasets.kang_pbmc_ifnb()
    return _KANG.copy()
