"""Save/load on top of scvi-tools': versions recorded, incompatible files and data refused."""

from __future__ import annotations

import os
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
        from scvi.model.base._save_load import _load_saved_files

        path = os.path.join(dir_path, f"{kwargs.get('prefix') or ''}model.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No saved model at {path}; pass the folder given to model.save(...)."
            )
        attr_dict, var_names, _, _ = _load_saved_files(
            dir_path, load_adata=False, prefix=kwargs.get("prefix"), map_location="cpu"
        )
        check_saved_model(cls, attr_dict)
        if adata is not None and var_names is not None:
            check_feature_names(var_names, adata)
        return super().load(dir_path, adata=adata, **kwargs)


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
