"""Checkpoints to resume an interrupted training, random generators included."""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scvi.train import SaveCheckpoint

def _rng_state() -> dict:
    """Generator states as tensors and plain Python values (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # other number of devices: keep the fresh state
            pass


class ResumeCheckpoint(SaveCheckpoint):
    """Lightning checkpoints to resume an interrupted training (``last.ckpt``).

    A plain :class:`~lightning.pytorch.callbacks.ModelCheckpoint` that scvi-tools' trainer
    accepts as its checkpoint callback (it subclasses :class:`scvi.train.SaveCheckpoint`
    only for that; none of that class's behaviour is kept). It writes
    ``<dirpath>/last.ckpt`` (weights, optimizer, epoch, loops, mixture state and random
    generators) every ``every_n_epochs`` epochs.

    Examples
    --------
    >>> from mixvi.train import ResumeCheckpoint
    >>> model.train(max_epochs=400, callbacks=[ResumeCheckpoint("ckpt")])  # interrupted
    >>> model = mixvi.MixVI(adata, ...)  # same data, arguments and seed
    >>> model.train(max_epochs=400, callbacks=[ResumeCheckpoint("ckpt")],
    ...             ckpt_path="ckpt/last.ckpt")

    Parameters
    ----------
    dirpath
        Folder for the checkpoints.
    every_n_epochs
        Save every this many epochs.
    **kwargs
        Passed to :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (``monitor`` and
        ``save_top_k`` to also keep the best checkpoints).
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, **kwargs):
        kwargs.setdefault("save_last", True)
        kwargs.setdefault("save_top_k", 0 if kwargs.get("monitor") is None else 1)
        ModelCheckpoint.__init__(
            self, dirpath=str(dirpath), every_n_epochs=every_n_epochs, **kwargs
        )
        self.load_best_on_end = False
        self.check_nan_gradients = False
        self.loss_is_nan = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:  # noqa: D102
        return None

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        ModelCheckpoint._remove_checkpoint(self, trainer, filepath)

    def _update_best_and_save(self, current, trainer, monitor_candidates) -> None:
        ModelCheckpoint._update_best_and_save(self, current, trainer, monitor_candidates)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        ModelCheckpoint.on_train_end(self, trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:  # noqa: D102
        ModelCheckpoint.on_train_batch_end(self, trainer, pl_module, *args, **kwargs)

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: D102
        ModelCheckpoint.on_exception(self, trainer, pl_module, exception)
