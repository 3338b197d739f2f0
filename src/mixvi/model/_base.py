"""Set-up shared by MixVI and MultiMixVI: prior arguments, label components, data checks."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from scvi import REGISTRY_KEYS

from mixvi.dataloaders import make_loader
from mixvi.model._validation import (
    check_choice,
    check_int,
    check_n_components,
    check_real,
    validate_registered_data,
)
from mixvi.module._prior_layer import POSTERIORS
from mixvi.priors import PRIORS

#: most components ``n_components="auto"`` may use (each needs cells to describe, so at most
#: one per 20 cells)
MAX_AUTO_COMPONENTS = 50
#: Leiden resolution of ``n_components="auto"`` (scanpy's default)
DEFAULT_RESOLUTION = 1.0


#: while a saved or reference model is rebuilt on other data (load, load_query_data), the
#: capacity of its "auto" mixture: the new model must have the same parameter shapes, not a
#: capacity computed from the new data's number of cells
_AUTO_CAPACITY: ContextVar[int | None] = ContextVar("mixvi_auto_capacity", default=None)


@contextmanager
def auto_capacity(capacity: int | None):
    """Within the block, ``n_components="auto"`` builds ``capacity`` components."""
    token = _AUTO_CAPACITY.set(None if capacity is None else int(capacity))
    try:
        yield
    finally:
        _AUTO_CAPACITY.reset(token)


def _components_text(prior_layer) -> str:
    """``n_components`` for the model summary: a number, or "auto" with its capacity."""
    prior = prior_layer.prior
    capacity = getattr(prior, "n_leaves", prior.n_components)  # a tree counts its leaves
    return f"'auto' (up to {capacity})" if prior_layer.resolution is not None else str(capacity)


class MixModelMixin:
    """Model-side set-up of the prior, one path for both models.

    The host model has an ``adata_manager`` (registered with a ``labels_key`` or not). It
    turns the user's prior arguments into the module's (``prior``, ``n_components``,
    ``n_label_components``, ``prior_kwargs``), records the label categories tied to
    components in ``label_categories_``, and checks the registered data.
    """

    _data_loader_cls = staticmethod(make_loader)

    def _check_registered_data(self) -> None:
        """The matrices the model was registered with (its layers, per modality) hold counts."""
        # setup already warned about all-zero cells or features
        validate_registered_data(self.adata_manager, self.adata, warn_empty=False)

    def _prior_setup(
        self,
        prior: str,
        n_components: int | str | None,
        posterior: str = "gaussian",
        use_label_prior: bool | None = None,
        learn_scales: bool | None = None,
        n_kl_samples: int = 1,
        kl_estimator: str = "mc",
        resolution: float = DEFAULT_RESOLUTION,
    ) -> dict:
        """Resolve the prior arguments of a model.

        Parameters
        ----------
        prior, posterior, kl_estimator
            Checked against their choices.
        n_components
            An integer: that many components, placed by k-means. ``"auto"``: the number is
            chosen from the data when the mixture is first fitted (Leiden communities at
            ``resolution``; the module holds up to :data:`MAX_AUTO_COMPONENTS`, at most one
            per 20 cells, plus the label components). ``None``: the number of known labels
            with a label prior, else ``"auto"``.
        resolution
            Leiden resolution for ``"auto"`` (higher: more, smaller clusters).
        use_label_prior
            ``None``: on when a ``labels_key`` was registered and the prior is a mixture.
        learn_scales
            ``None``: ``True`` for ``"gmm"``, ``False`` (scales fixed at 1) for
            ``"hierarchical"``.
        n_kl_samples
            Monte-Carlo samples of the mixture KL.

        Returns
        -------
        Keyword arguments for the module: ``prior``, ``n_components``,
        ``n_label_components``, ``prior_kwargs``, ``resolution``.
        """
        check_choice("prior", prior, PRIORS)
        check_choice("posterior", posterior, POSTERIORS)
        check_choice("kl_estimator", kl_estimator, ("mc", "analytic"))
        check_int("n_kl_samples", n_kl_samples)
        has_labels = self.registry_["setup_args"].get("labels_key") is not None
        if use_label_prior is None:
            use_label_prior = has_labels and prior != "normal"
        if use_label_prior and not has_labels:
            raise ValueError(
                f"use_label_prior=True needs labels: call {type(self).__name__}.setup_*(..., "
                "labels_key=..., unlabeled_category=...) first."
            )
        if use_label_prior and prior == "normal":
            raise ValueError("A label prior needs a mixture prior: use prior='gmm' or 'hierarchical'.")
        labels_state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        # scvi-tools keeps the unlabelled category last in the mapping
        categories = list(labels_state.categorical_mapping[:-1]) if use_label_prior else []
        n_label = len(categories)
        if n_components is None:
            n_components = n_label or "auto"
        auto = isinstance(n_components, str)
        if auto:
            check_choice("n_components", n_components, ("auto",))
            check_real("resolution", resolution, 0.0, low_open=True)
            room = min(MAX_AUTO_COMPONENTS, max(self.adata.n_obs // 20, 2))
            n_components = _AUTO_CAPACITY.get() or n_label + room
        else:
            check_n_components(n_components, self.adata.n_obs)
        if n_label and n_components < n_label:
            raise ValueError(
                f"{n_label} known labels need at least as many mixture components; got "
                f"n_components={n_components}. Raise n_components (or pass None)."
            )
        if learn_scales is None:
            learn_scales = prior != "hierarchical"
        prior_kwargs = {"n_kl_samples": n_kl_samples, "kl_estimator": kl_estimator}
        if prior != "normal":
            prior_kwargs["learn_scales"] = bool(learn_scales)
        self.label_categories_ = categories
        return {
            "prior": prior,
            "n_components": int(n_components),
            "n_label_components": n_label,
            "prior_kwargs": prior_kwargs,
            "resolution": float(resolution) if auto and prior != "normal" else None,
        }
