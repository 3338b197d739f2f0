"""Input validation for mixvi models.

The models call these checks at ``setup_anndata`` / ``setup_mudata``, at model
creation and at ``load``, so that a wrong input fails early with a message that
names the problem and the fix.  :func:`snapshot` / :func:`assert_unchanged` are
helpers for tests that check the user's data is never changed beyond documented keys.
"""

from ._snapshot import assert_unchanged, snapshot
from ._validate import (
    DenseMatrixTooLargeError,
    ValidationKeyError,
    check_dense_size,
    check_empty,
    check_layer,
    check_mudata_modalities,
    check_n_categories,
    check_n_components,
    check_obs_key,
    check_same_cells,
    check_var_names,
    drop_empty,
    get_matrix,
    nonzero_counts,
    validate_counts,
)

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
    "check_obs_key",
    "check_same_cells",
    "check_var_names",
    "drop_empty",
    "get_matrix",
    "nonzero_counts",
    "snapshot",
    "validate_counts",
]
