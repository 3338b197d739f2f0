"""Small real single-cell datasets shipped with mixvi (no downloads).

See :func:`list_datasets` for a summary, and ``data/README.md`` for the sources.
"""

from ._loaders import (
    get_data_path,
    kang_pbmc_ifnb,
    list_datasets,
    pbmc_multiome_tiny,
    snareseq_mouse_cortex,
    snareseq_mouse_cortex_atac,
    snareseq_mouse_cortex_rna,
)

__all__ = [
    "get_data_path",
    "kang_pbmc_ifnb",
    "list_datasets",
    "pbmc_multiome_tiny",
    "snareseq_mouse_cortex",
    "snareseq_mouse_cortex_atac",
    "snareseq_mouse_cortex_rna",
]
