"""Checks run at setup, model creation and on new data, so bad input fails early and clearly.

The count checks always read the matrix the model was *registered* with (``layer=``, per
modality), never ``.X`` by default: with the scanpy layout (raw counts in
``layers["counts"]``, log-normalised ``.X``) only the layer holds counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anndata import AnnData

from mixvi.data import (
    check_dense_size,
    check_empty,
    check_layer,
    check_mudata_modalities,
    check_n_categories,
    check_n_components,
    check_not_empty,
    check_obs_key,
    check_unique_names,
    check_var_names,
    validate_counts,
)
from mixvi.data._args import check_choice, check_int, check_real


# -- arguments -------------------------------------------------------------------------------
def check_network_args(n_latent: Any, n_hidden: Any, n_layers: Any, dropout_rate: Any) -> None:
    """The network arguments both models share."""
    check_int("n_latent", n_latent)
    check_int("n_hidden", n_hidden)
    check_int("n_layers", n_layers)
    check_real("dropout_rate", dropout_rate, 0.0, 1.0, high_open=True)


def check_train_args(
    max_epochs: Any,
    batch_size: Any,
    train_size: Any,
    validation_size: Any,
    n_obs: int,
) -> None:
    """Training arguments: positive epochs and minibatches, a split that leaves cells."""
    check_int("max_epochs", max_epochs)
    check_int("batch_size", batch_size, minimum=2)
    check_real("train_size", train_size, 0.0, 1.0, low_open=True, allow_none=True)
    check_real("validation_size", validation_size, 0.0, 1.0, high_open=True, allow_none=True)
    if train_size is not None and validation_size is not None and train_size + validation_size > 1:
        raise ValueError(
            f"train_size + validation_size must be <= 1, got {train_size} + {validation_size}."
        )
    n_train = n_obs if train_size is None else int(round(n_obs * train_size))
    if n_train < 2:
        raise ValueError(
            f"Training needs at least 2 cells, but {n_obs} cells with train_size={train_size} "
            "leave fewer; use more cells or a larger train_size."
        )


# -- data ------------------------------------------------------------------------------------
def count_fields(adata_manager) -> list[tuple[str | None, str | None, list[str]]]:
    """``(modality, layer, feature names)`` of every registered count matrix."""
    out = []
    for field in adata_manager.fields:
        if getattr(field, "attr_name", None) not in ("X", "layers") or getattr(
            field, "is_empty", False
        ):
            continue
        state = adata_manager.get_state_registry(field.registry_key)
        names = state.get("column_names") if hasattr(state, "get") else None
        if names is None:
            continue
        layer = field.attr_key if field.attr_name == "layers" else None
        out.append((getattr(field, "mod_key", None), layer, list(names)))
    return out


def _modality_label(mod: str | None) -> str:
    return "RNA" if mod is None else str(mod).upper()


def validate_matrix(
    adata: AnnData, layer: str | None, modality: str = "RNA", warn_empty: bool = True
) -> None:
    """One count matrix: not empty, unique names, fits in memory, raw counts, empty rows."""
    check_not_empty(adata, modality=modality)
    check_unique_names(adata, modality=modality)
    check_layer(adata, layer)
    check_dense_size(adata, layer)
    validate_counts(adata, layer, modality=modality)
    if warn_empty:
        check_empty(adata, layer, modality=modality)


def validate_registered_data(
    adata_manager, adata: Any, reference_names: bool = False, warn_empty: bool = True
) -> None:
    """Check every count matrix registered in ``adata_manager`` on ``adata``.

    Parameters
    ----------
    adata_manager
        The model's :class:`~scvi.data.AnnDataManager` (gives the layers and features).
    adata
        AnnData or MuData to check: the training data at model creation, or new data.
    reference_names
        Also require the registered features, in the same order (new data).
    warn_empty
        Warn about all-zero cells or features.
    """
    for mod, layer, names in count_fields(adata_manager):
        if mod is not None:
            check_mudata_modalities(adata, {mod: mod})
            target = adata.mod[mod]
        elif hasattr(adata, "mod"):
            continue
        else:
            target = adata
        if reference_names:
            check_var_names(names, target, what="peaks" if "atac" in str(mod).lower() else "genes")
        validate_matrix(target, layer, _modality_label(mod), warn_empty=warn_empty)


def validate_setup(
    adata: AnnData,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    unlabeled_category: str | None = None,
    other_obs_keys: Mapping[str, str | None] | None = None,
    modality: str = "RNA",
    check_counts: bool = True,
    min_label_categories: int = 2,
) -> None:
    """Validate an AnnData before registering it.

    Parameters
    ----------
    adata
        The user's AnnData (never modified).
    layer
        Layer with the raw counts (``None`` = ``.X``).
    batch_key
        Batch column: must exist and have no missing values.
    labels_key, unlabeled_category
        A label column must have at least two known categories besides the
        unlabelled one, and no missing values.
    other_obs_keys
        ``{argument name: .obs column}`` that must exist; ``None`` columns are skipped.
    modality
        Name used in messages (``"RNA"``, ``"ATAC"``).
    check_counts
        Check the matrix (see :func:`validate_matrix`).
    min_label_categories
        Known label categories required; ``0`` for a query mapped onto a reference
        (scArches), whose cells may all be unlabelled.
    """
    if check_counts:
        validate_matrix(adata, layer, modality)
    if batch_key is not None:
        check_n_categories(adata, batch_key, role="batch_key", min_categories=1)
    if labels_key is not None:
        check_n_categories(
            adata, labels_key, role="labels_key", min_categories=min_label_categories,
            unlabeled_category=unlabeled_category,
        )
    for role, key in (other_obs_keys or {}).items():
        check_obs_key(adata, key, role=role)


__all__ = [
    "check_choice",
    "check_int",
    "check_n_components",
    "check_network_args",
    "check_real",
    "check_train_args",
    "count_fields",
    "validate_matrix",
    "validate_registered_data",
    "validate_setup",
]
