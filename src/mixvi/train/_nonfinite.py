"""Non-finite losses: the error raised and the message that names the bad term."""

from __future__ import annotations

import torch

class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss term becomes NaN or infinite."""


_SUGGESTIONS = {
    "reconstruction": (
        "check the counts for extreme values or cells with huge library sizes, or try "
        "gene_likelihood='nb' if another likelihood was chosen"
    ),
    "kl": (
        "lower the learning rate of the mixture (plan_kwargs={'prior_lr_factor': 1.0}) or "
        "start from fewer components (n_components=)"
    ),
}
_GENERIC_SUGGESTION = (
    "Try a lower learning rate (plan_kwargs={'lr': 1e-4}) or clip gradients with "
    "model.train(..., gradient_clip_val=1.0)"
)


def _loss_terms(loss_output) -> dict[str, torch.Tensor]:
    """Every named term of a LossOutput: reconstruction and KL terms, then the total."""
    terms: dict[str, torch.Tensor] = {}
    rec = loss_output.reconstruction_loss
    if isinstance(rec, dict):
        for k, v in rec.items():
            terms[k if k == "reconstruction_loss" else f"reconstruction_loss[{k!r}]"] = v
    elif rec is not None:
        terms["reconstruction_loss"] = rec
    for k, v in (loss_output.kl_local or {}).items():
        terms[k] = v
    kl_global = loss_output.kl_global
    for k, v in (kl_global.items() if isinstance(kl_global, dict) else ()):
        terms[k] = v
    terms["loss"] = loss_output.loss
    return terms


def describe_nonfinite_loss(loss_output, where: str) -> str | None:
    """Message naming the non-finite loss terms of ``loss_output``, or ``None`` if all are finite.

    Parameters
    ----------
    loss_output
        A :class:`~scvi.module.base.LossOutput`.
    where
        Where in training this happened (e.g. ``"epoch 3, step 12"``).
    """
    bad = []
    for name, value in _loss_terms(loss_output).items():
        if not torch.is_tensor(value):
            continue
        value = value.detach()
        finite = torch.isfinite(value)
        if bool(finite.all()):
            continue
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
        cells = f" in {n_bad} of {value.numel()} cells" if value.numel() > 1 else ""
        bad.append((name, kind, cells))
    if not bad:
        return None
    named = [n for n, _, _ in bad if n != "loss"] or ["loss"]
    first = named[0]
    what = "; ".join(f"{n} is {k}{c}" for n, k, c in bad)
    hints = [
        _SUGGESTIONS[key] for key in ("reconstruction", "kl")
        if any(n.startswith(key) for n in named)
    ]
    advice = _GENERIC_SUGGESTION + ("; or " + "; or ".join(hints) if hints else "") + "."
    return (
        f"Training stopped at {where}: the {first} term of the loss became non-finite ({what}). "
        "The model keeps the weights of the last completed step (this step was not applied), "
        f"and model.history holds the completed epochs. {advice}"
    )


def check_finite_loss(loss_output, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the non-finite loss term(s).

    Parameters
    ----------
    loss_output
        A :class:`~scvi.module.base.LossOutput`.
    where
        Where in training this happened (e.g. ``"epoch 3, step 12"``).
    """
    message = describe_nonfinite_loss(loss_output, where)
    if message is not None:
        raise NonFiniteLossError(message)
