"""Input validation for mixvi models.

The models call these checks at ``setup_anndata`` / ``setup_mudata``, at model
creation and at ``load``, so that a wrong input fails early with a message that
names the problem and the fix.  None of them densifies a sparse matrix; dense and
backed (on-disk) matrices are scanned in row chunks. :func:`snapshot` /
:func:`assert_unchanged` are helpers for tests that check the user's data is never
changed beyond documented keys.
"""

from ._counts import check_empty, drop_empty, nonzero_counts, validate_counts
from ._keys import (
    check_mudata_modalities,
    check_n_categories,
    check_n_components,
    check_not_empty,
    check_obs_key,
    check_same_cells,
    check_unique_names,
    check_var_names,
)
from ._matrix import DenseMatrixTooLargeError, check_dense_size, check_layer, get_matrix
from ._messages import ValidationKeyError
from ._snapshot import assert_unchanged, snapshot

__all__ = [
    "DenseMatrixTooLargeError",
    "ValidationKeyError",
    "assert_unchanged",
    "check_dense_size",
    "check_empty",
    "check_layer",
    "check_mudata_modalities",
    "check_n_categories",
    "check_n_components",
    "check_not_empty",
    "check_obs_key",
    "check_same_cells",
    "check_unique_names",
    "check_var_names",
    "drop_empty",
    "get_matrix",
    "nonzero_counts",
    "snapshot",
    "validate_counts",
]
