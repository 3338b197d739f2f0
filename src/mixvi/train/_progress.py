"""Training progress that shows anywhere: a progress bar on a terminal, log lines elsewhere.

On a terminal (or in a Jupyter notebook) Lightning's progress bar shows the epochs. In a
cluster job's log, where stderr is a file, a progress bar writes one unreadable line of
carriage returns; there :class:`TrainingLog` writes one line every few epochs through the
``mixvi`` logger instead, with the loss terms, the validation loss, how many mixture
components are in use, the time per epoch and the time left. At the end of training it
warns when the loss was still falling fast (train longer).
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import Callback

logger = logging.getLogger("mixvi")

#: Relative fall of the training loss (-ELBO) over the last tenth of the epochs above which
#: training is called unfinished (see :class:`TrainingLog`).
CONVERGENCE_THRESHOLD = 0.01

# (callback_metrics key, label) in the order they are printed
_TRAIN_TERMS = (
    ("reconstruction_loss_train", "reconstruction"),
    ("kl_local_train", "kl"),
    ("kl_global_train", "kl_global"),
)
_EXTRA_TERMS = (
    ("alignment_symkl_train", "alignment"),
    ("batch_mi_train", "batch MI"),
    ("classification_loss_train", "classification"),
)


class TrainingWarning(UserWarning):
    """Warning about how a training went (e.g. stopped while the loss was still falling)."""


def progress_bar_default() -> bool:
    """Whether to show a progress bar when the user did not say: on a terminal or in Jupyter.

    ``sys.stderr.isatty()`` is ``False`` in a Jupyter kernel although its progress bars
    render well there, so a running IPython kernel also counts.
    """
    stream = sys.stderr
    try:
        if stream is not None and stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed or unusual streams
        return False
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def default_log_interval(max_epochs: int | None) -> int:
    """Epochs between two log lines: about 25 lines per training, at least every epoch.

    ``max(1, round(max_epochs / 25))``: 400 epochs log every 16 (26 lines with the first),
    200 every 8, 10 every epoch.
    """
    if not max_epochs or max_epochs < 1:
        return 1
    return max(1, round(max_epochs / 25))


def _format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _format_value(value: float) -> str:
    """4 significant digits, no scientific notation for everyday losses."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def _scalar(metrics: dict, key: str) -> float | None:
    """``metrics[key]`` as a float; ``None`` when absent or not finite (not yet computed)."""
    value = metrics.get(key)
    if value is None:
        return None
    try:
        value = float(value.detach().cpu().item() if hasattr(value, "detach") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def relative_improvement(losses: Sequence[float], window: float = 0.1) -> float:
    """Relative fall of a loss over the last ``window`` fraction of the epochs.

    The slope of a least-squares line through the last ``max(2, ceil(window * n))``
    epoch losses, times the number of epochs it spans, divided by the absolute mean loss
    there: ``0.02`` means the loss fell by 2 % over that stretch. A line is less noisy
    than the difference of two epochs.

    Parameters
    ----------
    losses
        One loss (e.g. ``elbo_train``, a negative ELBO) per epoch, in order.
    window
        Fraction of the epochs to look at (at least the last two).

    Returns
    -------
    The relative fall (positive when the loss is falling), or ``nan`` with fewer than two
    finite values.
    """
    values = np.asarray([v for v in losses if v is not None], dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 2:
        return float("nan")
    m = min(n, max(2, math.ceil(window * n)))
    tail = values[-m:]
    x = np.arange(m, dtype=float)
    slope = np.polyfit(x, tail, 1)[0]
    scale = max(abs(float(tail.mean())), 1e-12)
    return float(-slope * (m - 1) / scale)


class TrainingLog(Callback):
    """Log lines of a training, for logs that are not a terminal; a warning if unfinished.

    Every ``every_n_epochs`` epochs (and at the first and last epoch) one line goes to the
    ``mixvi`` logger at level INFO::

        epoch 16/400: -elbo 1063 (reconstruction 1041, kl 21.7) | validation -elbo 1079 |
        components in use 7.4 of 8 | 0.52 s/epoch, 3m12s left

    with the terms the model logs (``elbo_train``, ``reconstruction_loss_train``,
    ``kl_local_train``, ``elbo_validation``, MultiMixVI's ``alignment_symkl_train``, ...),
    the number of mixture components in use, ``exp`` of the entropy of the mixture weights
    (``mixture_entropy_train``; K when all are used equally), and the time left at the
    recent speed (an upper bound with early stopping).

    The lines are written only when no progress bar is shown (``log_lines=None``): mixvi
    turns the progress bar off when stderr is not a terminal. If logging was not configured
    at all (no handler on the ``mixvi`` logger or the root logger), a handler writing to
    stderr is added for the duration of the training, so the lines show in a plain script
    too; configured logging is left as it is.

    At the end of training, if the training loss fell by more than
    ``convergence_threshold`` (relative) over the last ``convergence_window`` of the
    epochs -- fitted by a line, see :func:`relative_improvement` -- a
    :class:`TrainingWarning` (a :class:`UserWarning`) says to raise ``max_epochs``; it is
    logged too. The default 1 % per tenth of training is a loss still falling by about 10 %
    over a run as long again, far from a plateau; a run stopped by early stopping is not
    warned about.

    Parameters
    ----------
    every_n_epochs
        Epochs between two lines; ``None`` chooses :func:`default_log_interval` (about 25
        lines per training).
    max_seconds_between_lines
        Also write a line when this many seconds passed since the last one (slow epochs);
        ``None`` switches it off.
    log_lines
        ``True``: always write lines, ``False``: never, ``None``: only without a progress bar.
    warn_unconverged
        Warn at the end when the loss was still falling fast.
    convergence_window, convergence_threshold
        Fraction of the epochs at the end that are looked at, and the relative fall of the
        loss over them above which training is unfinished.
    loss_key
        Metric judged for convergence.

    Examples
    --------
    >>> from mixvi.train import TrainingLog
    >>> model.train(max_epochs=400, callbacks=[TrainingLog(every_n_epochs=10)])
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        *,
        max_seconds_between_lines: float | None = 300.0,
        log_lines: bool | None = None,
        warn_unconverged: bool = True,
        convergence_window: float = 0.1,
        convergence_threshold: float = CONVERGENCE_THRESHOLD,
        loss_key: str = "elbo_train",
    ):
        super().__init__()
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool) or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs must be a positive integer or None, got {every_n_epochs!r}.")
        if not 0.0 < convergence_window <= 1.0:
            raise ValueError(f"convergence_window must be in (0, 1], got {convergence_window}.")
        self.every_n_epochs = every_n_epochs
        self.max_seconds_between_lines = max_seconds_between_lines
        self.log_lines = log_lines
        self.warn_unconverged = warn_unconverged
        self.convergence_window = convergence_window
        self.convergence_threshold = convergence_threshold
        self.loss_key = loss_key
        self.losses: list[float] = []
        self.lines: list[str] = []
        self._handler: logging.Handler | None = None
        self._old_level = logging.NOTSET
        self._active = False
        self._show = False
        self._first_epoch = 0
        self._pending: tuple[int, float] | None = None

    # -- helpers -----------------------------------------------------------------------------
    def _interval(self, trainer) -> int:
        return self.every_n_epochs or default_log_interval(trainer.max_epochs)

    def _attach_handler(self) -> None:
        """A stderr handler at INFO when logging is not configured at all."""
        if logger.hasHandlers():
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s mixvi: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        self._handler, self._old_level = handler, logger.level
        # a level the user set on the "mixvi" logger is kept (setLevel(ERROR) silences it)
        if logger.level == logging.NOTSET and logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)

    def _detach_handler(self) -> None:
        if self._handler is not None:
            logger.removeHandler(self._handler)
            logger.setLevel(self._old_level)
            self._handler = None

    def format_line(
        self, trainer, pl_module, seconds_per_epoch: float | None = None,
        epoch: int | None = None,
    ) -> str:
        """The log line of a finished epoch (0-based ``epoch``, default the current one) from
        ``trainer.callback_metrics``; see the class docstring."""
        metrics = dict(trainer.callback_metrics)
        epoch = (trainer.current_epoch if epoch is None else epoch) + 1
        parts = [f"epoch {epoch}/{trainer.max_epochs}:"]
        elbo = _scalar(metrics, "elbo_train")
        terms = [
            f"{label} {_format_value(v)}"
            for key, label in _TRAIN_TERMS
            if (v := _scalar(metrics, key)) is not None and not (key == "kl_global_train" and v == 0)
        ]
        if elbo is not None:
            parts.append(f"-elbo {_format_value(elbo)}" + (f" ({', '.join(terms)})" if terms else ""))
        elif (loss := _scalar(metrics, "train_loss")) is not None:
            parts.append(f"loss {_format_value(loss)}")
        extras = [
            f"{label} {_format_value(v)}" for key, label in _EXTRA_TERMS
            if (v := _scalar(metrics, key)) is not None
        ]
        text = " ".join(parts) + (", " + ", ".join(extras) if extras else "")
        sections = [text]
        val = _scalar(metrics, "elbo_validation")
        if val is not None:
            sections.append(f"validation -elbo {_format_value(val)}")
        elif (val := _scalar(metrics, "validation_loss")) is not None:
            sections.append(f"validation loss {_format_value(val)}")
        entropy = _scalar(metrics, "mixture_entropy_train")
        if entropy is not None:
            prior = getattr(getattr(pl_module, "module", None), "prior", None)
            k = getattr(prior, "n_components", None)
            used = f"components in use {math.exp(entropy):.1f}" + (f" of {k}" if k else "")
            layer = getattr(getattr(pl_module, "module", None), "prior_layer", None)
            if layer is not None and not getattr(layer, "initialized", True):
                used += " (mixture not fitted yet)"
            sections.append(used)
        if seconds_per_epoch is not None:
            left = (trainer.max_epochs - epoch) * seconds_per_epoch
            sections.append(
                f"{seconds_per_epoch:.2f} s/epoch, {_format_seconds(left)} left"
                if epoch < trainer.max_epochs else f"{seconds_per_epoch:.2f} s/epoch"
            )
        return " | ".join(sections)

    # -- Lightning hooks ---------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self.losses, self.lines = [], []
        self._active = bool(getattr(trainer, "is_global_zero", True))
        show = self.log_lines
        if show is None:
            show = trainer.progress_bar_callback is None
        self._show = bool(show) and self._active
        if self._active:
            self._attach_handler()
        now = time.perf_counter()
        self._start = self._last_time = self._last_line_time = now
        self._last_epoch = trainer.current_epoch - 1
        self._first_epoch = trainer.current_epoch
        self._pending = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # The epoch's metrics are complete only after the module's own epoch-end hook, which
        # runs after this one: the line is written at the next epoch's start (or train end).
        if self._active and not trainer.sanity_checking:
            self._pending = (trainer.current_epoch, time.perf_counter())

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer, pl_module) -> None:
        """Record the finished epoch's loss and write its line when one is due."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None:
            return
        epoch, now = pending
        loss = _scalar(dict(trainer.callback_metrics), self.loss_key)
        self.losses.append(float("nan") if loss is None else loss)  # nan: not logged
        if not self._show:
            return
        last = epoch + 1 >= trainer.max_epochs or trainer.should_stop
        due = (
            epoch == self._first_epoch
            or (epoch + 1) % self._interval(trainer) == 0
            or last
            or (
                self.max_seconds_between_lines is not None
                and now - self._last_line_time >= self.max_seconds_between_lines
            )
        )
        if not due:
            return
        seconds = (now - self._last_time) / max(epoch - self._last_epoch, 1)
        line = self.format_line(trainer, pl_module, seconds, epoch)
        self.lines.append(line)
        logger.info(line)
        self._last_time = self._last_line_time = now
        self._last_epoch = epoch

    def on_train_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        try:
            self._flush(trainer, pl_module)
            n = len(self.losses)
            elapsed = time.perf_counter() - self._start
            if self._show and n:
                logger.info(
                    "trained %d epochs in %s (%.2f s/epoch)", n, _format_seconds(elapsed),
                    elapsed / n,
                )
            if self.warn_unconverged:
                self.check_convergence(trainer)
        finally:
            self._detach_handler()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._detach_handler()

    # -- convergence -------------------------------------------------------------------------
    def check_convergence(self, trainer: Any = None) -> float:
        """Warn if the loss still fell fast at the end; returns the relative fall.

        Nothing is said when early stopping ended the training before ``max_epochs``, or
        with fewer than two epochs.
        """
        rel = relative_improvement(self.losses, self.convergence_window)
        stopped_early = (
            trainer is not None
            and getattr(trainer, "should_stop", False)
            and len(self.losses) + self._first_epoch < (trainer.max_epochs or 0)
        )
        if stopped_early or not math.isfinite(rel) or rel <= self.convergence_threshold:
            return rel
        n = len(self.losses)
        m = min(n, max(2, math.ceil(self.convergence_window * n)))
        total = n + self._first_epoch
        message = (
            f"Training ended while the loss was still falling: {self.loss_key} fell by "
            f"{100 * rel:.1f}% over the last {m} of {total} epochs (more than "
            f"{100 * self.convergence_threshold:.0f}%). The model is probably not converged: "
            f"train longer, e.g. model.train(max_epochs={2 * total}) (mixvi fit "
            f"--max-epochs {2 * total}), and check mixvi.pl.training_curves(model)."
        )
        logger.warning(message)
        warnings.warn(message, TrainingWarning, stacklevel=2)
        return rel


def with_training_log(trainer_kwargs: dict) -> dict:
    """Trainer arguments with a :class:`TrainingLog` and the progress bar default.

    The user's ``callbacks`` are kept (in a new list: scvi-tools' trainer appends to the
    list it is given); a :class:`TrainingLog` is added unless one is there already.
    ``enable_progress_bar`` defaults to :func:`progress_bar_default` unless it was passed.

    Parameters
    ----------
    trainer_kwargs
        The ``**trainer_kwargs`` of ``model.train``; not modified.

    Returns
    -------
    A new dict of trainer arguments.
    """
    kwargs = dict(trainer_kwargs)
    callbacks = list(kwargs.get("callbacks") or [])
    if not any(isinstance(c, TrainingLog) for c in callbacks):
        callbacks.append(TrainingLog())
    kwargs["callbacks"] = callbacks
    if kwargs.get("enable_progress_bar") is None:
        kwargs["enable_progress_bar"] = progress_bar_default()
    return kwargs


__all__ = [
    "CONVERGENCE_THRESHOLD",
    "TrainingLog",
    "TrainingWarning",
    "default_log_interval",
    "progress_bar_default",
    "relative_improvement",
    "with_training_log",
]
