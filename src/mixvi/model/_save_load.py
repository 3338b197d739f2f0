"""Save/load on top of scvi-tools': versions recorded, incompatible files and data refused."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from anndata import AnnData


def _mixvi_version() -> str:
    from mixvi import __version__

    return __version__


class IncompatibleModelError(ValueError):
    """A saved model cannot be loaded by this class or this version of mixvi."""


class SafeSaveLoadMixin:
    """Adds version stamps and strict checks to scvi-tools' :meth:`save` / :meth:`load`.

    ``save`` writes the weights, the AnnData registry and the model arguments
    (scvi-tools' ``model.pt``) plus ``mixvi_version_`` and ``scvi_version_``
    attributes. ``load`` refuses, with a message saying what to do, a file saved by
    another model class or by an incompatible mixvi version, and data whose
    features differ from the training data (scvi-tools would only warn).
    """

    def _stamp_versions(self) -> None:
        import scvi

        self.mixvi_version_ = _mixvi_version()
        self.scvi_version_ = scvi.__version__
        # saved with the model: the number of mixture slots, which "auto" computed from the
        # training data's size and which a load on other data must rebuild
        prior = self.module.prior_layer.prior
        self.n_components_capacity_ = int(getattr(prior, "n_leaves", prior.n_components))

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs: Any):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Data to attach, set up like the training data (same features, same order).
            ``None`` loads the AnnData saved with ``save_anndata=True``.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ...).
        """
        from mixvi.model._base import auto_capacity

        attr_dict, var_names = read_saved_model(dir_path, prefix=kwargs.get("prefix"))
        check_saved_model(cls, attr_dict)
        if adata is not None and var_names is not None:
            check_feature_names(var_names, adata)
        with auto_capacity(attr_dict.get("n_components_capacity_")):
            return super().load(dir_path, adata=adata, **kwargs)

    @classmethod
    def load_query_data(cls, adata=None, reference_model=None, *args: Any, **kwargs: Any):
        """scArches-style query model: :meth:`scvi.model.base.ArchesMixin.load_query_data`
        with mixvi's checks.

        A reference given as a folder is checked like :meth:`load` (model class, mixvi
        version); the query must have the reference's features in the same order
        (scvi-tools only warns), unless ``inplace_subset_query_vars=True``.
        """
        from mixvi.model._base import auto_capacity

        parent = super()
        if not hasattr(parent, "load_query_data"):
            raise NotImplementedError(f"{cls.__name__} does not support load_query_data.")
        capacity = None
        if reference_model is not None:
            if isinstance(reference_model, (str, os.PathLike)):
                attr_dict, var_names = read_saved_model(str(reference_model))
                check_saved_model(cls, attr_dict)
                capacity = attr_dict.get("n_components_capacity_")
            else:
                var_names = reference_model.get_var_names()
                capacity = getattr(reference_model, "n_components_capacity_", None)
            if (adata is not None and var_names is not None
                    and not kwargs.get("inplace_subset_query_vars", False)):
                check_feature_names(var_names, adata)
        if isinstance(reference_model, os.PathLike):
            reference_model = str(reference_model)
        with auto_capacity(capacity):
            return parent.load_query_data(adata, reference_model, *args, **kwargs)

    def _validate_anndata(self, adata=None, copy_if_view: bool = True):
        """Before scvi-tools transfers the set-up to data this model has not seen, check the
        data has the model's features (same order) and holds raw counts, so that a wrong
        input fails here and not as NaN latents or a shape error inside torch."""
        if adata is not None and self.adata_manager is not None:
            if self.get_anndata_manager(adata) is None:
                check_new_data(self, adata)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)


def read_saved_model(dir_path: str, prefix: str | None = None) -> tuple[dict, Any]:
    """Read the attributes and feature names of a saved model, with a clear error.

    Returns
    -------
    ``(attr_dict, var_names)`` as stored by :meth:`save`.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``model.pt``.
    IncompatibleModelError
        If ``model.pt`` cannot be read (truncated, corrupt or not a model file).
    """
    import torch

    path = os.path.join(str(dir_path), f"{prefix or ''}model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No saved model at {path}; pass the folder given to model.save(...)."
        )
    try:
        # model.save() writes one torch file holding the attributes, features and weights
        saved = torch.load(path, map_location="cpu", weights_only=False)
        attr_dict, var_names = saved["attr_dict"], saved.get("var_names")
    except Exception as err:  # noqa: BLE001 - any read failure means an unusable file
        raise IncompatibleModelError(
            f"{path} could not be read as a saved model ({type(err).__name__}: {err}). The file "
            "is truncated, corrupt or not written by model.save(); save the model again."
        ) from err
    if not isinstance(attr_dict, dict):
        raise IncompatibleModelError(
            f"{path} is not a model saved by model.save() (no attribute dictionary)."
        )
    return attr_dict, var_names


def check_saved_model(cls: type, attr_dict: dict) -> None:
    """Refuse files from another model class or from an incompatible mixvi major version."""
    saved_cls = attr_dict.get("registry_", {}).get("model_name")
    if saved_cls is not None and saved_cls != cls.__name__:
        raise IncompatibleModelError(
            f"This folder holds a {saved_cls} model; load it with {saved_cls}.load(...), "
            f"not {cls.__name__}.load(...)."
        )
    saved = attr_dict.get("mixvi_version_")
    if saved is None:
        raise IncompatibleModelError(
            "This model was not saved by mixvi (no mixvi_version_ in the file); it cannot be "
            f"loaded with {cls.__name__}. Retrain it with mixvi."
        )
    if saved.split(".")[0] != _mixvi_version().split(".")[0]:
        raise IncompatibleModelError(
            f"This model was saved by mixvi {saved}, incompatible with the installed "
            f"mixvi {_mixvi_version()}; install mixvi=={saved} to load it."
        )
    saved_scvi = attr_dict.get("scvi_version_")
    if saved_scvi is not None:
        import scvi

        if saved_scvi.split(".")[:2] != scvi.__version__.split(".")[:2]:
            warnings.warn(
                f"This model was saved with scvi-tools {saved_scvi}; scvi-tools "
                f"{scvi.__version__} is installed. It loads, but its outputs may differ slightly; "
                f"install scvi-tools=={saved_scvi} to reproduce them exactly.",
                UserWarning,
                stacklevel=3,
            )


def check_feature_names(saved: np.ndarray | dict, adata) -> None:
    """Features of ``adata`` (each modality for MuData) must equal the saved ones, in order."""
    from mixvi.data import check_var_names

    if isinstance(saved, dict):
        for mod, names in saved.items():
            what = "peaks" if "atac" in str(mod).lower() else "genes"
            if hasattr(adata, "mod") and mod in adata.mod:
                check_var_names(list(names), adata.mod[mod], what=what)
        return
    if hasattr(adata, "mod"):  # MuData saved in the legacy flat format
        return
    check_var_names(list(saved), adata, what="genes")


def check_new_data(model, adata) -> None:
    """Check data a model has not seen: same features in the same order, raw counts in the
    registered layers (per modality).

    Parameters
    ----------
    model
        A trained model (its registry gives the features and layers).
    adata
        The new AnnData (or MuData, checked modality by modality).

    Raises
    ------
    KeyError
        If a registered modality or layer is missing.
    ValueError
        If features differ or are in another order, or the counts are not raw counts.
    """
    from mixvi.model._validation import validate_registered_data

    validate_registered_data(model.adata_manager, adata, reference_names=True, warn_empty=False)
