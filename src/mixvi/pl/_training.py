"""Training curves from scvi-tools' ``model.history``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

if TYPE_CHECKING:
    from mixvi.model import MixVI

from ._utils import save_or_show

_TITLES = {
    "elbo": "ELBO (negative, per cell)",
    "reconstruction_loss": "reconstruction loss",
    "kl_local": "KL(q(z|x) || p(z))",
    "kl_global": "global KL",
    "train_loss": "training loss",
    "validation_loss": "validation loss",
    "kl_weight": "KL weight",
}


def _history(model_or_history: Any) -> dict[str, pd.DataFrame]:
    if isinstance(model_or_history, Mapping):
        history = model_or_history
    else:
        history = getattr(model_or_history, "history", None)
        if history is None:
            raise TypeError(
                "training_curves needs a trained scvi-tools model or its `history` dict, got "
                f"{type(model_or_history).__name__}."
            )
    history = {k: v for k, v in history.items() if v is not None and len(v)}
    if not history:
        raise ValueError("The training history is empty: train the model first.")
    return history


def _series(frame: pd.DataFrame) -> pd.Series:
    """First column of a history frame as a float series indexed by epoch."""
    s = frame.iloc[:, 0] if isinstance(frame, pd.DataFrame) else pd.Series(frame)
    s = pd.to_numeric(s, errors="coerce")
    return s[np.isfinite(s.to_numpy(dtype=float))]


def _n_components(model_or_history: Any, n_components: int | None) -> int | None:
    if n_components is not None:
        return int(n_components)
    prior = getattr(getattr(model_or_history, "module", None), "prior", None)
    # the components in use: with n_components="auto" most of the capacity is switched off
    return getattr(prior, "n_active", getattr(prior, "n_components", None))


def training_curves(
    model_or_history: MixVI | Mapping[str, pd.DataFrame],
    keys: Sequence[str] = ("elbo", "reconstruction_loss", "kl_local"),
    *,
    mixture_entropy: bool | None = None,
    n_components: int | None = None,
    skip_epochs: int = 0,
    logy: bool = False,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    panel_size: tuple[float, float] = (3.6, 3.0),
) -> list[Axes] | None:
    """Loss terms per epoch, train and validation, one panel per term.

    Reads scvi-tools' ``model.history`` (a dict of one-column DataFrames indexed by
    epoch: ``elbo_train``, ``elbo_validation``, ``reconstruction_loss_train``,
    ``kl_local_train``, ``mixture_entropy_train``, ...). For every key the
    ``<key>_train`` and ``<key>_validation`` series that exist are drawn; validation may
    be logged every few epochs only (``check_val_every_n_epoch``), so it is drawn with
    markers. A key that names a history entry itself (e.g. ``"kl_weight"``) is drawn as is.

    Parameters
    ----------
    model_or_history
        A trained model (anything with a ``history`` dict) or the dict itself.
    keys
        Loss terms to draw, without the ``_train`` / ``_validation`` suffix. Keys absent
        from the history are skipped; a :class:`ValueError` is raised if none exist.
    mixture_entropy
        Add a panel with ``mixture_entropy_train``, the entropy of the mixture weights
        (component usage), against its maximum ``log K``: a curve falling far below
        ``log K`` means the mixture collapsed onto few components. ``None`` (default)
        adds it when the history has it.
    n_components
        ``K`` for the ``log K`` line; taken from ``model.module.prior`` when a model is given.
    skip_epochs
        Leave out the first epochs (their large losses flatten the rest of the curve).
    logy
        Logarithmic y axes for the loss panels.
    ax
        Axes to draw into, one per panel (in the order: keys, then the entropy panel).
    show
        Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
    save
        File to write the figure to (``.png`` added when there is no suffix).
    panel_size
        Width and height of one panel in inches, for a new figure.

    Returns
    -------
    The list of :class:`~matplotlib.axes.Axes`, one per panel (keys, then the entropy
    panel; ``axes[0].figure`` is the figure), when ``show`` is ``False``, else ``None``.

    Examples
    --------
    >>> model.train(max_epochs=200, check_val_every_n_epoch=5)
    >>> mixvi.pl.training_curves(model)
    """
    history = _history(model_or_history)
    panels: list[tuple[str, list[tuple[str, pd.Series]]]] = []
    for key in keys:
        lines = []
        if key in history:
            lines.append((key, _series(history[key])))
        for split in ("train", "validation"):
            name = f"{key}_{split}"
            if name in history:
                lines.append((split, _series(history[name])))
        if lines:
            panels.append((key, lines))
    if mixture_entropy is None:
        mixture_entropy = "mixture_entropy_train" in history
    if mixture_entropy:
        if "mixture_entropy_train" not in history:
            raise ValueError(
                "mixture_entropy=True but the history has no 'mixture_entropy_train' "
                "(prior='normal' logs none)."
            )
        panels.append(("mixture_entropy", [("train", _series(history["mixture_entropy_train"]))]))
    if not panels:
        raise ValueError(
            f"None of the keys {list(keys)} is in the history; available: {sorted(history)}."
        )

    owns_figure = ax is None
    if owns_figure:
        n = len(panels)
        fig, axes = plt.subplots(
            1, n, figsize=(panel_size[0] * n, panel_size[1]), squeeze=False, layout="constrained"
        )
        axes = list(axes[0])
    else:
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(panels):
            raise ValueError(f"Got {len(axes)} Axes for {len(panels)} panels.")
        fig = axes[0].figure

    K = _n_components(model_or_history, n_components)
    for axis, (key, lines) in zip(axes, panels):
        for label, s in lines:
            s = s[s.index >= skip_epochs]
            if label == "validation":
                axis.plot(s.index, s.to_numpy(), "o-", ms=3, lw=1, label=label, color="C1")
            else:
                axis.plot(s.index, s.to_numpy(), "-", lw=1.5, label=label, color="C0")
        if key == "mixture_entropy":
            axis.set_title("mixture weight entropy")
            axis.set_ylabel("nats")
            if K:
                axis.axhline(np.log(K), ls="--", color="grey", lw=1, label=f"log K (K={K})")
                axis.set_ylim(bottom=0)
        else:
            axis.set_title(_TITLES.get(key, key.replace("_", " ")))
            if logy:
                axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.legend(frameon=False, fontsize="small")
        axis.grid(alpha=0.3)
    shown = save_or_show(fig, save, show, owns_figure=owns_figure)
    return None if shown else list(axes)
