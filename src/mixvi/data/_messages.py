"""Error-message helpers shared by the input checks: previews, suggestions, locations."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

class ValidationKeyError(KeyError):
    """A :class:`KeyError` whose message prints without the extra quotes of ``KeyError``.

    ``str(KeyError("a\\nb"))`` shows the ``repr`` of the message; this subclass
    shows the message itself, so the hint in it stays readable.
    """

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


def _where(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _preview(items: Iterable[Any], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:n])
    if len(items) > n:
        shown += f", ... ({len(items)} in all)"
    return f"[{shown}]"


def _suggest(key: str, options: Sequence[str]) -> str | None:
    """Closest match of ``key`` among ``options`` (case-insensitive first), or None."""
    options = [str(o) for o in options]
    lower = {o.lower(): o for o in options}
    if str(key).lower() in lower:
        return lower[str(key).lower()]
    close = difflib.get_close_matches(str(key), options, n=1, cutoff=0.6)
    if close:
        return close[0]
    close = difflib.get_close_matches(str(key).lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def _eg(items: Sequence[Any]) -> str:
    return f" (e.g. {_preview(items, 3)})" if len(items) else ""


def _did_you_mean(key: str, options: Sequence[str]) -> str:
    best = _suggest(key, options)
    return f" Did you mean {best!r}?" if best is not None else ""
