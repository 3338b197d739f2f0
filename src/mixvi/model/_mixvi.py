"""MixVI: the user-facing single-modality model (scvi-tools model class over MixVAE)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LabelsWithUnlabeledObsField,
    LayerField,
    NumericalJointObsField,
)
from scvi.model.base import (
    ArchesMixin,
    BaseModelClass,
    RNASeqMixin,
    VAEMixin,
)

from mixvi.model._base import MixModelMixin, _components_text
from mixvi.model._clusters import ClusterMixin
from mixvi.model._save_load import SafeSaveLoadMixin
from mixvi.model._training import (
    SMALL_BATCH_SIZE,
    MixTrainingMixin,
    default_batch_size,
    default_max_epochs,
    default_plan,
    scaled_lr,
)
from mixvi.model._validation import check_choice, check_network_args, check_real, validate_setup
from mixvi.module import MixVAE
from mixvi.priors import PriorName
from mixvi.train import MixTrainingPlan

logger = logging.getLogger(__name__)


class MixVI(
    SafeSaveLoadMixin,
    MixModelMixin,
    ClusterMixin,
    RNASeqMixin,
    VAEMixin,
    ArchesMixin,
    MixTrainingMixin,
    BaseModelClass,
):
    """scRNA-seq VAE with a trainable Gaussian-mixture prior.

    The latent space carries a mixture ``p(z) = sum_k pi_k N(m_k, diag s_k^2)`` whose
    weights, means and scales are trained with the encoder and decoder. The batch
    enters the decoder (scVI-style), so the latent need not encode it, and the
    mixture's mode-seeking pull places cells of one type from different batches on
    one component. The components are the clusters: no Leiden step is needed.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Latent dimensionality.
    n_components
        ``"auto"`` (default without a label prior): the number of mixture components, i.e.
        of clusters, is read from the data when the mixture is first fitted -- Leiden
        communities of the latent at ``resolution`` -- and components left with fewer than
        5 cells are switched off during training (the chosen number is in
        ``model.history["n_components_active_train"]`` and :meth:`mixture_summary`). An
        integer fixes it (tree leaves for ``prior="hierarchical"``). With a label prior the
        default is the number of known labels.
    resolution
        Leiden's resolution for ``n_components="auto"``: higher gives more, smaller clusters
        (the knob scanpy users know from ``sc.tl.leiden``).
    prior
        ``"gmm"`` (default), ``"normal"`` (scVI's N(0, I), closed-form KL) or
        ``"hierarchical"`` (components on a binary tree, see
        :class:`~mixvi.priors.HierarchicalGaussianMixturePrior`).
    posterior
        ``"gaussian"`` (default) or ``"mixture"`` (Gumbel-softmax mixture posterior;
        clusters then come from q(c|x)).
    gene_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    n_hidden, n_layers, dropout_rate, dispersion
        Network and dispersion options, as in :class:`scvi.model.SCVI`.
    use_label_prior
        Tie components to the categories of the registered ``labels_key``
        (semi-supervised). Defaults to ``True`` when a ``labels_key`` was registered.
    n_kl_samples
        Monte-Carlo samples for ``E_q[log p(z)]`` in the mixture KL.
    kl_estimator
        ``"mc"`` (default) or ``"analytic"`` (deterministic Jensen bound, see
        :class:`~mixvi.priors.MixturePrior`).
    learn_scales
        Train the component scales (default ``True`` for ``"gmm"``, ``False`` -- fixed at
        1 -- for ``"hierarchical"``).
    pretrain_normal
        Use the N(0, I) KL until the mixture is initialised on the data (see
        :meth:`train`'s ``prior_init_epoch``).
    batch_balance_weight
        Weight of the mutual information between mixture component and batch, estimated on
        each minibatch pooled with recent ones (:class:`~mixvi.module.BatchBalancePenalty`):
        asks each component to hold the batches in the data's proportions, so one cell type
        from two batches shares a component. ``0`` (default) switches it off.
    **module_kwargs
        Passed to :class:`~mixvi.module.MixVAE` and :class:`scvi.module.VAE`
        (e.g. ``encode_covariates``, ``use_batch_norm``, ``classification_weight``).

    Examples
    --------
    >>> import mixvi, scanpy as sc
    >>> adata = mixvi.datasets.kang_pbmc_ifnb()
    >>> mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
    >>> model = mixvi.MixVI(adata)                # n_components="auto"
    >>> model.train(max_epochs=200)
    >>> model.write_to_adata(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_mixvi"); sc.tl.umap(adata)
    >>> sc.pl.umap(adata, color=["mixvi_cluster", "batch", "cell_type"])
    """

    _module_cls = MixVAE
    _training_plan_cls = MixTrainingPlan
    _LATENT_QZM_KEY = "mixvi_latent_qzm"
    _LATENT_QZV_KEY = "mixvi_latent_qzv"

    def __init__(
        self,
        adata: AnnData | None = None,
        n_latent: int = 16,
        n_components: int | Literal["auto"] | None = None,
        resolution: float = 1.0,
        prior: PriorName = "gmm",
        posterior: Literal["gaussian", "mixture"] = "gaussian",
        gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb",
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-label", "gene-cell"] = "gene",
        use_label_prior: bool | None = None,
        n_kl_samples: int = 1,
        kl_estimator: Literal["mc", "analytic"] = "mc",
        learn_scales: bool | None = None,
        pretrain_normal: bool = True,
        batch_balance_weight: float = 0.0,
        **module_kwargs,
    ):
        super().__init__(adata)
        check_choice("gene_likelihood", gene_likelihood, ("nb", "zinb", "poisson"))
        check_network_args(n_latent, n_hidden, n_layers, dropout_rate)
        check_real("batch_balance_weight", batch_balance_weight, 0.0)
        self._check_registered_data()
        prior_args = self._prior_setup(
            prior, n_components, posterior, use_label_prior, learn_scales, n_kl_samples,
            kl_estimator, resolution,
        )
        n_cats_per_cov = (
            self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).n_cats_per_key
            if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry
            else None
        )
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_batch=self.summary_stats.n_batch,
            n_labels=self.summary_stats.n_labels,
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            n_cats_per_cov=n_cats_per_cov,
            n_latent=n_latent,
            posterior=posterior,
            pretrain_normal=pretrain_normal,
            batch_balance_weight=batch_balance_weight,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            **prior_args,
            **module_kwargs,
        )
        n_label_components = prior_args["n_label_components"]
        self._model_summary_string = (
            f"MixVI model: prior={prior!r}, posterior={posterior!r}, "
            f"n_components={_components_text(self.module.prior_layer)}, "
            f"n_latent={n_latent}, "
            f"gene_likelihood={gene_likelihood!r}, label prior: "
            f"{n_label_components or 'off'}."
        )
        self._stamp_versions()
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        unlabeled_category: str = "Unknown",
        categorical_covariate_keys: Sequence[str] | None = None,
        continuous_covariate_keys: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData with MixVI, after checking it.

        Raises a clear error, before any training, for non-integer, negative or
        non-finite counts, a missing layer or ``.obs`` key (with the closest match),
        and warns about all-zero cells or genes. Besides scvi-tools' own registry keys
        (``adata.uns["_scvi_uuid"]``, ``adata.uns["_scvi_manager_uuid"]``,
        ``adata.obs["_scvi_batch"]``, ``adata.obs["_scvi_labels"]``) nothing is written.

        Parameters
        ----------
        adata
            AnnData with raw counts (cells x genes), in ``.X`` or ``layer``.
        layer
            Layer holding the raw counts; ``None`` uses ``.X``.
        batch_key
            ``.obs`` column with the batch of each cell; it enters the decoder.
        labels_key
            ``.obs`` column with known cell types, for the semi-supervised label prior.
        unlabeled_category
            Value of ``labels_key`` marking cells whose label is unknown.
        categorical_covariate_keys, continuous_covariate_keys
            Extra ``.obs`` covariates injected like the batch.
        """
        validate_setup(
            adata,
            layer=layer,
            batch_key=batch_key,
            labels_key=labels_key,
            unlabeled_category=unlabeled_category,
            # a query set up from a reference's registry (load_query_data) may be unlabelled
            min_label_categories=0 if kwargs.get("source_registry") is not None else 2,
            other_obs_keys={
                **{f"categorical_covariate_keys[{i}]": k
                   for i, k in enumerate(categorical_covariate_keys or [])},
                **{f"continuous_covariate_keys[{i}]": k
                   for i, k in enumerate(continuous_covariate_keys or [])},
            },
        )
        setup_method_args = cls._get_setup_method_args(**locals())
        labels_field = (
            LabelsWithUnlabeledObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category)
            if labels_key is not None
            else CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        )
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            labels_field,
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        train_size: float | None = None,
        validation_size: float | None = None,
        batch_size: int | None = None,
        early_stopping: bool = False,
        n_epochs_kl_warmup: int | None = None,
        prior_init_epoch: int | None = None,
        gumbel_temperature: tuple[float, float] = (1.0, 0.3),
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train the model with PyTorch Lightning (scvi-tools' trainer).

        Parameters
        ----------
        max_epochs
            Epochs; defaults to scvi-tools' heuristic ``min(round(20000 / n_cells * 400), 400)``.
        accelerator, devices
            Lightning hardware options (``"cpu"``, ``"gpu"``, ``devices=4``; add
            ``strategy="ddp"`` for several devices).
        train_size, validation_size
            Train/validation split (validation metrics appear in :attr:`history`).
        batch_size
            Minibatch size. ``None``: 128 below 20,000 cells, 512 from 20,000 on, with the
            learning rate scaled to ``1e-3 * sqrt(batch_size / 128)`` (2e-3) unless
            ``plan_kwargs`` sets ``lr`` (measured in ``benchmarks/scaling``). A number is
            used as given, with the plan's learning rate (1e-3 unless set).
        early_stopping
            Stop when the validation ELBO stops improving (``early_stopping_patience``
            etc. go in ``trainer_kwargs``) and restore the best epoch's weights; the best
            epoch comes no earlier than one warm-up after the mixture's fit
            (``prior_init_epoch + n_epochs_kl_warmup``).
        n_epochs_kl_warmup
            Epochs over which the KL weight rises linearly from 0 to 1; defaults to a
            quarter of ``max_epochs``.
        prior_init_epoch
            Epoch at whose start the mixture is first fitted to the encoder's posteriors
            (k-means, or Leiden with ``n_components="auto"``); defaults to the end of the
            KL warm-up. EM refits follow every tenth of training and at its end
            (``plan_kwargs={"refit_every": ..., "final_refit": ...}``).
        gumbel_temperature
            ``(start, end)`` Gumbel-softmax temperatures for ``posterior="mixture"``,
            annealed over the first half of training.
        plan_kwargs
            Passed to :class:`~mixvi.train.MixTrainingPlan` (``lr``, ``weight_decay``, ...).
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` / Lightning (``strategy``,
            ``gradient_clip_val``, ``early_stopping_patience``, ``enable_progress_bar``,
            ``callbacks``, ``ckpt_path``, ...).

        Notes
        -----
        A NaN or infinite loss term (or gradient) stops training with
        :class:`~mixvi.train.NonFiniteLossError` naming the term; the model keeps the
        weights of the last completed step and ``history`` the completed epochs.

        Resume: train with ``callbacks=[lightning.pytorch.callbacks.ModelCheckpoint(dirpath=d,
        save_last=True)]``, then build the same model (same data, arguments and seed) and call
        ``train(max_epochs=N, ckpt_path=d + "/last.ckpt")``. Weights, optimizer, epoch and
        random generators are restored, so the resumed run matches an uninterrupted one.

        Several devices: ``train(accelerator="gpu", devices=4, strategy="ddp")`` (a script,
        not a notebook; ``num_nodes=`` for several machines). Each process sees a share of the
        cells; the mixture is initialised on rank 0 and broadcast.
        """
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        plan = default_plan(
            max_epochs, n_epochs_kl_warmup, prior_init_epoch, self.adata.n_obs, early_stopping
        )
        plan["gumbel_temperature"] = gumbel_temperature
        chosen_batch = batch_size is None
        if chosen_batch:
            batch_size = default_batch_size(self.adata.n_obs)
            plan["lr"] = scaled_lr(batch_size)  # 1e-3 at 128: the plan's own default
        plan.update(plan_kwargs or {})
        if chosen_batch and batch_size != SMALL_BATCH_SIZE:
            logger.info(
                "%d cells: training with batch_size=%d and lr=%.0e (pass batch_size=128 for "
                "scvi-tools' setting).", self.adata.n_obs, batch_size, plan["lr"],
            )
        return self._train_with_plan(
            plan,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            early_stopping=early_stopping,
            **trainer_kwargs,
        )
