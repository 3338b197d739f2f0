"""Loaders for the small real datasets shipped with mixvi (no downloads).

The files live in the repository's ``data/`` folder and are copied into the
wheel as ``mixvi/_data/`` (see ``pyproject.toml``). Every loader reads the file
again, so each call returns a fresh object that the caller may modify freely.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import pandas as pd

__all__ = [
    "get_data_path",
    "kang_pbmc_ifnb",
    "list_datasets",
    "pbmc_multiome_tiny",
    "snareseq_mouse_cortex",
    "snareseq_mouse_cortex_atac",
    "snareseq_mouse_cortex_rna",
]

ENV_VAR = "MIXVI_DATA_DIR"


def _search_dirs() -> list[tuple[str, Path]]:
    """Folders searched for the data files, in order, with a description of each."""
    dirs: list[tuple[str, Path]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append((f"${ENV_VAR}", Path(env).expanduser()))
    here = Path(__file__).resolve()
    dirs.append(("package data (mixvi/_data, installed wheels)", here.parents[1] / "_data"))
    if len(here.parents) > 3:
        dirs.append(("repository data/ folder (editable installs)", here.parents[3] / "data"))
    return dirs


def get_data_path(filename: str) -> Path:
    """Path of a shipped data file.

    Looked up, in order, in ``$MIXVI_DATA_DIR``, the package folder ``mixvi/_data/``
    (where the wheel ships the files) and the repository's ``data/`` folder.

    Parameters
    ----------
    filename
        File name, e.g. ``"kang_pbmc_ifnb.h5ad"``.

    Returns
    -------
    The first existing path.

    Raises
    ------
    FileNotFoundError
        If the file is in none of these places; the message lists every place
        looked and how to fix it.
    """
    looked = []
    for what, folder in _search_dirs():
        path = folder / filename
        if path.is_file():
            return path
        looked.append(f"  - {path}  ({what})")
    env_note = "" if os.environ.get(ENV_VAR) else f" (${ENV_VAR} is not set)"
    raise FileNotFoundError(
        f"mixvi dataset file {filename!r} was not found. Looked in:\n"
        + "\n".join(looked)
        + f"\nmixvi never downloads data. Fix: set the environment variable {ENV_VAR} to a "
        f"folder holding {filename!r}{env_note}, e.g. the data/ folder of a mixvi git "
        "checkout (export MIXVI_DATA_DIR=/path/to/mixvi/data), or reinstall mixvi from a "
        "wheel, which ships the files in mixvi/_data/."
    )


def _read_h5mu(path: Path):
    import mudata as md

    # Read the global obs/var exactly as stored, instead of letting MuData.update()
    # pull prefixed copies ("rna:batch", ...) of every modality column into them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with md.set_options(pull_on_update=False):
                return md.read_h5mu(path)
        except (ValueError, TypeError, KeyError):  # option unknown in another mudata version
            return md.read_h5mu(path)


def _read_h5ad(path: Path) -> ad.AnnData:
    return ad.read_h5ad(path)


# --------------------------------------------------------------------------- loaders


def kang_pbmc_ifnb() -> ad.AnnData:
    """Kang et al. (2018) PBMCs, control vs interferon-beta stimulated (scRNA-seq).

    1,556 cells x 1,267 genes, raw UMI counts (median 1,127 per cell). Two batches,
    ``ctrl`` (750 cells) and ``stim`` (806): the classic "ifnb" integration case, as
    IFN-beta shifts every cell type.

    Returns
    -------
    AnnData with

    * ``.X``: raw counts, float32 CSR holding integer values; the same matrix in
      ``.layers["counts"]``;
    * ``.obs``: ``cell_type`` (5 PBMC types: B cells, CD14+ Monocytes, CD4 T cells,
      CD8 T cells, FCGR3A+ Monocytes), ``condition`` (``ctrl`` / ``stim``), ``sample_id``
      (ctrl101, ctrl107, stim101, stim107), ``donor`` (101, 107), ``batch`` (= ``condition``);
    * ``.var``: ``gene_symbol`` (also the var names), ``gene_id`` (Ensembl).

    Notes
    -----
    Source: the ``example_sce`` object of the Bioconductor package muscat (GitHub
    ``HelenaLC/muscat``, GPL-3, commit ``017b290b``, ``data/example_sce.rda``), itself a
    subset of GEO GSE96583 (10x Genomics): multiplets and unassigned cells removed, 5
    of 8 clusters, at most 100 cells per cluster x sample, 2 donors x 2 conditions.

    Citation: Kang, H. M. et al. Multiplexed droplet single-cell RNA-sequencing using
    natural genetic variation. *Nat Biotechnol* 36, 89-94 (2018).
    """
    return _read_h5ad(get_data_path("kang_pbmc_ifnb.h5ad"))


def snareseq_mouse_cortex():
    """SNARE-seq of adult mouse cerebral cortex: paired RNA + ATAC of the same cells.

    10,309 cells; modality ``rna`` with 1,677 genes (UMI counts, median 247 per cell)
    and modality ``atac`` with 25,734 peaks (fragment counts, median 83 per cell, max
    entry 5). Both modalities hold the same cells in the same order. Shallow data, as
    SNARE-seq is; the main test case for RNA <-> ATAC alignment and translation.

    Returns
    -------
    MuData with modalities ``rna`` and ``atac``; in each, ``.X`` holds the raw counts
    (float32 CSR with integer values) and ``.layers["counts"]`` the same matrix.

    * ``.obs`` (global and per modality): ``cell_type`` (23 clusters of Chen et al.
      2019, e.g. ``E2Rasgrf2``, ``E3Rorb``, ``InP``, ``OliM``; ``Mis`` is a
      "miscellaneous" cluster of 1,119 cells, consider excluding it from label-based
      metrics), ``cell_type_coarse`` (15 harmonised labels of scMoMaT), ``batch`` (12
      SNARE-seq sub-libraries ``09A``..``09L``, 785-916 cells each, a mild technical
      batch effect);
    * ``rna`` var names: gene symbols; ``atac`` var names: peaks ``chrN:start-end``
      (mm10) with ``.var`` columns ``chrom``, ``start``, ``end`` and ``linked_gene``
      (every peak is linked to one of the 1,677 genes).

    Notes
    -----
    Source: GitHub ``PeterZZQ/scMoMaT`` (MIT), commit ``dbd954de``,
    ``data/real/MOp_5batches/`` batch 1 (``GxC1.npz``, ``RxC1.npz``, ``GxR.npz``,
    ``genes.txt``, ``regions.txt``, ``meta_c1.csv``); original data GEO GSE126074
    (AdBrainCortex). Features are scMoMaT's selection; no cells or features dropped.

    Citation: Chen, S., Lake, B. B. & Zhang, K. High-throughput sequencing of the
    transcriptome and chromatin accessibility in the same cell. *Nat Biotechnol* 37,
    1452-1457 (2019).
    """
    return _read_h5mu(get_data_path("snareseq_mouse_cortex.h5mu"))


def _snareseq_modality(mod: str) -> ad.AnnData:
    import mudata as md

    path = get_data_path("snareseq_mouse_cortex.h5mu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adata = md.read_h5ad(path, mod)
    # obs copied from the MuData's global obs (same cells, same order).
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as f:
        gobs = read_elem(f["obs"])
    gobs = gobs.reindex(adata.obs_names)
    obs = adata.obs.copy()
    for col in gobs.columns:
        obs[col] = gobs[col]
    adata.obs = obs
    return adata


def snareseq_mouse_cortex_rna() -> ad.AnnData:
    """The RNA half of :func:`snareseq_mouse_cortex` as its own AnnData.

    10,309 cells x 1,677 genes (SNARE-seq mouse cortex RNA, UMI counts, median 247 per
    cell, max entry 525). ``.X`` and ``.layers["counts"]`` hold the raw counts
    (float32 CSR with integer values). ``.obs`` is copied from the MuData:
    ``cell_type`` (23 clusters), ``cell_type_coarse`` (15), ``batch`` (12
    sub-libraries ``09A``..``09L``). Var names are gene symbols.

    Source and citation as :func:`snareseq_mouse_cortex` (scMoMaT, commit ``dbd954de``;
    Chen, Lake & Zhang, *Nat Biotechnol* 37:1452, 2019; GEO GSE126074).
    """
    return _snareseq_modality("rna")


def snareseq_mouse_cortex_atac() -> ad.AnnData:
    """The ATAC half of :func:`snareseq_mouse_cortex` as its own AnnData.

    10,309 cells x 25,734 peaks (fragment counts, median 83 per cell, max entry 5,
    0.38 % non-zero). ``.X`` and ``.layers["counts"]`` hold the raw counts (float32 CSR
    with integer values). ``.obs`` is copied from the MuData: ``cell_type``,
    ``cell_type_coarse``, ``batch``. Var names are peaks ``chrN:start-end`` (mm10);
    ``.var`` has ``chrom``, ``start``, ``end``, ``linked_gene``.

    Source and citation as :func:`snareseq_mouse_cortex`.
    """
    return _snareseq_modality("atac")


def pbmc_multiome_tiny():
    """A tiny real 10x Multiome PBMC object (RNA + ATAC) for fast smoke tests.

    1,000 cells; modality ``rna`` with 45 immune marker genes, modality ``atac`` with
    the 174 peaks within 5 kb of them. Raw counts in ``.X`` and ``.layers["counts"]``
    of each modality (float32 CSR with integer values). ``.obs``: ``batch`` (a single
    batch); no cell-type labels. ``.var``: ``gene_ids``, ``feature_types``, ``interval``.
    Too small for any biological conclusion: use only for smoke tests.

    Notes
    -----
    Source: GitHub ``scverse/muon`` (BSD-3), commit ``4fef6999``,
    ``tests/data/atac/test_rna_atac.h5mu`` (made by muon's
    ``tests/create_test_dataset.py`` from the 10x Genomics Multiome run ``PBMC_rep1``:
    the first 1,000 QC-passing cells).

    Citation: Bredikhin, D., Kats, I. & Stegle, O. MUON: multimodal omics analysis
    framework. *Genome Biol* 23, 42 (2022); data by 10x Genomics.
    """
    return _read_h5mu(get_data_path("pbmc_multiome_tiny.h5mu"))


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str
    n_cells: int
    features: str
    modalities: str
    batch_key: str
    labels_key: str | None
    file: str
    description: str


_CATALOGUE: tuple[_Entry, ...] = (
    _Entry(
        "kang_pbmc_ifnb", "AnnData", 1556, "1267 genes", "rna", "batch", "cell_type",
        "kang_pbmc_ifnb.h5ad",
        "Kang 2018 PBMC ctrl vs IFN-beta (2 batches, 5 cell types); muscat example_sce",
    ),
    _Entry(
        "snareseq_mouse_cortex", "MuData", 10309, "1677 genes + 25734 peaks", "rna, atac",
        "batch", "cell_type", "snareseq_mouse_cortex.h5mu",
        "SNARE-seq adult mouse cortex, paired RNA+ATAC (12 sub-libraries, 23 types); "
        "Chen 2019 via scMoMaT",
    ),
    _Entry(
        "snareseq_mouse_cortex_rna", "AnnData", 10309, "1677 genes", "rna", "batch",
        "cell_type", "snareseq_mouse_cortex.h5mu", "RNA modality of snareseq_mouse_cortex",
    ),
    _Entry(
        "snareseq_mouse_cortex_atac", "AnnData", 10309, "25734 peaks", "atac", "batch",
        "cell_type", "snareseq_mouse_cortex.h5mu", "ATAC modality of snareseq_mouse_cortex",
    ),
    _Entry(
        "pbmc_multiome_tiny", "MuData", 1000, "45 genes + 174 peaks", "rna, atac", "batch",
        None, "pbmc_multiome_tiny.h5mu",
        "tiny 10x Multiome PBMC (1 batch, no labels), smoke tests only; muon test data",
    ),
)


def list_datasets() -> pd.DataFrame:
    """Describe the shipped datasets.

    Returns
    -------
    DataFrame indexed by loader name (``mixvi.datasets.<name>()``) with columns
    ``type`` (AnnData / MuData), ``n_cells``, ``features``, ``modalities``,
    ``batch_key``, ``labels_key``, ``file``, ``available`` (whether the file was
    found) and ``description``.
    """
    rows = []
    for e in _CATALOGUE:
        try:
            get_data_path(e.file)
            available = True
        except FileNotFoundError:
            available = False
        rows.append(
            {
                "name": e.name,
                "type": e.kind,
                "n_cells": e.n_cells,
                "features": e.features,
                "modalities": e.modalities,
                "batch_key": e.batch_key,
                "labels_key": e.labels_key,
                "file": e.file,
                "available": available,
                "description": e.description,
            }
        )
    return pd.DataFrame(rows).set_index("name")
