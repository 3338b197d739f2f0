"""Checks of keys, categories, names and modalities before a model registers the data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ._messages import ValidationKeyError, _did_you_mean, _eg, _preview, _suggest

def check_obs_key(adata: AnnData, key: str | None, role: str = "batch_key") -> None:
    """Check that ``key`` is a column of ``adata.obs``.

    Parameters
    ----------
    adata
        The AnnData (or MuData) object.
    key
        Column name; ``None`` passes (the argument is optional).
    role
        Name of the argument the key was passed as (``"batch_key"``, ``"labels_key"``,
        ...), used in the message.

    Raises
    ------
    KeyError
        If the column does not exist; the message lists the available columns and
        suggests the closest one ("Did you mean 'batch'?").
    """
    if key is None:
        return
    columns = [str(c) for c in adata.obs.columns]
    if key in adata.obs.columns:
        return
    hint = _did_you_mean(key, columns)
    raise ValidationKeyError(
        f"{role}={key!r} is not a column of adata.obs.{hint} Available columns: "
        f"{_preview(columns, 30) if columns else 'none'}. Pass {role}=<one of these> "
        f"(or {role}=None), or add the column to adata.obs first."
    )


def check_n_categories(
    adata: AnnData,
    key: str,
    role: str = "labels_key",
    min_categories: int = 2,
    *,
    unlabeled_category: str | None = None,
    allow_nan: bool = False,
) -> int:
    """Check that ``adata.obs[key]`` has no missing values and enough categories.

    Parameters
    ----------
    adata
        The AnnData (or MuData) object.
    key
        Column of ``adata.obs``.
    role
        Argument name the key was passed as, used in the message.
    min_categories
        Fewest distinct (observed) values needed.
    unlabeled_category
        A value that marks unlabelled cells (semi-supervised label prior); it is not
        counted as a category.
    allow_nan
        Accept missing values (they are not counted as a category).

    Returns
    -------
    The number of distinct observed values (excluding ``unlabeled_category``).

    Raises
    ------
    KeyError
        If ``key`` is not a column of ``adata.obs``.
    ValueError
        If the column holds NaN values (unless ``allow_nan``) or has fewer than
        ``min_categories`` distinct values.
    """
    check_obs_key(adata, key, role)
    col = adata.obs[key]
    n_nan = int(col.isna().sum())
    if n_nan and not allow_nan:
        fill = unlabeled_category if unlabeled_category is not None else "unknown"
        raise ValueError(
            f"{role}={key!r}: adata.obs[{key!r}] has {n_nan} missing (NaN) value(s) out of "
            f"{len(col)}. Fill them with an explicit category, e.g. "
            f"adata.obs[{key!r}] = adata.obs[{key!r}].astype(object).fillna({fill!r})"
            f".astype('category'), or drop those cells with "
            f"adata = adata[adata.obs[{key!r}].notna()].copy()."
        )
    values = pd.unique(col.dropna().astype(object))
    if unlabeled_category is not None:
        values = [v for v in values if v != unlabeled_category]
    n = len(values)
    if n < min_categories:
        found = f"only {n} categor{'y' if n == 1 else 'ies'}"
        if n:
            found += f" ({_preview(values)})"
        extra = ""
        if unlabeled_category is not None:
            extra = f" besides the unlabelled category {unlabeled_category!r}"
        noun = {"batch_key": "batch", "labels_key": "label"}.get(role, "category")
        raise ValueError(
            f"{role}={key!r}: adata.obs[{key!r}] has {found}{extra}, but at least "
            f"{min_categories} are needed. Pick another column, or pass {role}=None if the "
            f"data has a single {noun}."
        )
    return n


def check_same_cells(a: AnnData, b: AnnData, names: tuple[str, str] = ("rna", "atac")) -> None:
    """Check that two modalities hold the same cells in the same order.

    Parameters
    ----------
    a, b
        The two AnnData objects (e.g. ``mdata["rna"]`` and ``mdata["atac"]``).
    names
        Names of the two modalities, used in the message.

    Raises
    ------
    ValueError
        If obs names are duplicated, if the cells differ (the message says how many
        are missing on each side), or if they are the same cells in another order
        (the message suggests ``b = b[a.obs_names]``).
    """
    na, nb = names
    for obj, name in ((a, na), (b, nb)):
        if not obj.obs_names.is_unique:
            dup = obj.obs_names[obj.obs_names.duplicated()].unique()
            raise ValueError(
                f"{name} has {len(dup)} duplicated cell name(s) ({_preview(dup)}); cells are "
                f"matched across modalities by name. Make them unique with "
                f"{name}.obs_names_make_unique() (in both modalities, consistently)."
            )
    ia, ib = a.obs_names, b.obs_names
    if ia.equals(ib):
        return
    only_a = ia.difference(ib, sort=False)
    only_b = ib.difference(ia, sort=False)
    if len(only_a) or len(only_b):
        n_common = len(ia) - len(only_a)
        raise ValueError(
            f"The modalities hold different cells: {len(only_a)} of {len(ia)} {na} cells are "
            f"missing from {nb}{_eg(only_a)}, and {len(only_b)} of {len(ib)} "
            f"{nb} cells are missing from {na}{_eg(only_b)}; {n_common} are "
            f"shared. Keep the shared cells in the same order with "
            f"common = {na}.obs_names.intersection({nb}.obs_names); {na} = {na}[common]; "
            f"{nb} = {nb}[common] (or mudata.MuData.intersect_obs())."
        )
    n_moved = int((ia != ib).sum())
    raise ValueError(
        f"{na} and {nb} hold the same {len(ia)} cells but in a different order "
        f"({n_moved} positions differ). Reorder {nb} to match {na} with "
        f"{nb} = {nb}[{na}.obs_names].copy()."
    )


def check_mudata_modalities(mdata: Any, modalities: Mapping[str, str | None]) -> None:
    """Check that a MuData holds the named modalities.

    Parameters
    ----------
    mdata
        The MuData object.
    modalities
        Maps the role of each modality to its name in ``mdata.mod``, e.g.
        ``{"rna": "rna", "atac": "atac"}`` or ``{"rna_layer": "rna", "batch_key": "rna"}``.
        ``None`` values are skipped.

    Raises
    ------
    TypeError
        If ``mdata`` is not a MuData (no ``.mod``).
    KeyError
        If a named modality is missing; the message lists ``mdata.mod`` keys, the
        closest match, and how to pass other names.
    """
    if not hasattr(mdata, "mod"):
        raise TypeError(
            f"Expected a MuData object, got {type(mdata).__name__}. Build one with "
            "mudata.MuData({'rna': rna_adata, 'atac': atac_adata}), or use a single-modality "
            "model (mixvi.MixVI) for an AnnData."
        )
    available = list(mdata.mod.keys())
    missing = {
        role: name
        for role, name in modalities.items()
        if name is not None and name not in mdata.mod
    }
    if not missing:
        return
    lines = []
    for role, name in missing.items():
        lines.append(f"{role} -> {name!r}{_did_you_mean(name, available)}")
    example = {
        role: (_suggest(name, available) or "<name>") if role in missing else name
        for role, name in modalities.items()
    }
    rebuild = ", ".join(
        f"{n!r}: mdata[{(_suggest(n, available) or '<name>')!r}]" for n in missing.values()
    )
    raise ValidationKeyError(
        f"The MuData has no modality {', '.join(repr(n) for n in missing.values())} "
        f"({'; '.join(lines)}). Available modalities (mdata.mod): {_preview(available, 20)}. "
        f"Pass the names of your modalities, e.g. modalities={example!r}, or rebuild the "
        "MuData with the expected names, e.g. mudata.MuData({"
        + rebuild
        + ", ...})."
    )


def check_var_names(
    reference: pd.Index | Sequence[str],
    adata: AnnData,
    *,
    what: str = "genes",
) -> None:
    """Check that ``adata`` has the same features, in the same order, as ``reference``.

    Used when a trained model is loaded onto new data.

    Parameters
    ----------
    reference
        The feature names the model was trained on.
    adata
        The new data.
    what
        What the features are (``"genes"``, ``"peaks"``), used in the message.

    Raises
    ------
    ValueError
        If the features differ (the message says how many are missing / extra) or
        are in another order (the message shows how to reorder).
    """
    ref = pd.Index(reference)
    new = adata.var_names
    if ref.equals(new):
        return
    if not new.is_unique:
        dup = new[new.duplicated()].unique()
        raise ValueError(
            f"adata has {len(dup)} duplicated {what} name(s) ({_preview(dup)}); {what} are "
            "matched to the model by name. Make them unique with adata.var_names_make_unique() "
            "(as was done for the training data)."
        )
    missing = ref.difference(new, sort=False)
    extra = new.difference(ref, sort=False)
    if len(missing) or len(extra):
        msg = (
            f"adata does not have the model's {what}: {len(missing)} of the {len(ref)} {what} the "
            f"model was trained on are missing{_eg(missing)} and adata has "
            f"{len(extra)} extra {what}{_eg(extra)}."
        )
        if len(missing) == 0:
            msg += (
                " Subset and order adata like the training data with "
                "adata = adata[:, reference_var_names].copy() (reference_var_names = the "
                "model's var_names, e.g. model.adata.var_names)."
            )
        else:
            msg += (
                f" Add the missing {what} as all-zero columns and order them like the training "
                f"data (scvi-tools' prepare_query_anndata(adata, model) does this), then subset "
                f"with adata = adata[:, reference_var_names].copy()."
            )
        raise ValueError(msg)
    n_moved = int((ref != new).sum())
    raise ValueError(
        f"adata has the model's {len(ref)} {what} but in a different order ({n_moved} positions "
        f"differ). Reorder with adata = adata[:, reference_var_names].copy() "
        f"(reference_var_names = the model's var_names, e.g. model.adata.var_names)."
    )


def check_n_components(n_components: int, n_cells: int) -> None:
    """Check the number of mixture components against the number of cells.

    Parameters
    ----------
    n_components
        Number of mixture components of the prior.
    n_cells
        Number of cells in the data.

    Raises
    ------
    ValueError
        If ``n_components`` is not a positive integer or exceeds ``n_cells``.
    """
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise ValueError(
            f"n_components must be a positive integer, got {n_components!r} "
            f"({type(n_components).__name__})."
        )
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}.")
    if n_components > n_cells:
        raise ValueError(
            f"n_components={n_components} exceeds the number of cells ({n_cells}); each "
            f"mixture component needs cells to describe. Use n_components <= {n_cells}, "
            "e.g. about the number of cell types you expect (10-30 for most data)."
        )


def check_not_empty(adata: AnnData, modality: str = "RNA") -> None:
    """Refuse data without cells or without features.

    Parameters
    ----------
    adata
        The AnnData object.
    modality
        Name used in the message.

    Raises
    ------
    ValueError
        If ``adata`` has 0 cells or 0 features (e.g. after a filter that removed all).
    """
    n_obs, n_vars = adata.n_obs, adata.n_vars
    if n_obs == 0 or n_vars == 0:
        what = "cells" if n_obs == 0 else "features"
        raise ValueError(
            f"The {modality} data has no {what} (shape {n_obs} x {n_vars}). Check the filters "
            "applied before (e.g. sc.pp.filter_cells / filter_genes thresholds, or a subset "
            "that matched nothing)."
        )


def check_unique_names(adata: AnnData, modality: str = "RNA") -> None:
    """Refuse duplicated cell or feature names.

    Cells and features are matched by name (new data, translation, MuData modalities,
    ``write_to_adata``), so duplicates would silently mix two cells or two genes.

    Parameters
    ----------
    adata
        The AnnData object.
    modality
        Name used in the message.

    Raises
    ------
    ValueError
        Naming how many names are duplicated, a few examples and the fix
        (``obs_names_make_unique`` / ``var_names_make_unique``).
    """
    for axis, names, fix in (
        ("cell", adata.obs_names, "adata.obs_names_make_unique()"),
        ("feature", adata.var_names, "adata.var_names_make_unique()"),
    ):
        if names.is_unique:
            continue
        dup = names[names.duplicated()].unique()
        raise ValueError(
            f"The {modality} data has {len(dup)} duplicated {axis} name(s) ({_preview(dup)}); "
            f"mixvi matches {axis}s by name. Make them unique first with {fix}."
        )
