"""Checks of the command's input: a file that exists and has the right format.

A problem is a :class:`CommandError`, printed by :func:`mixvi.cli.main` as one
``mixvi: error: ...`` line (exit code 2).
"""

from __future__ import annotations

import difflib
from pathlib import Path


class CommandError(Exception):
    """A problem with the command's input (a file, a key); printed as one error line."""


def check_input_file(path: str, suffix: str, other: dict[str, str]) -> Path:
    """The input path, or a :class:`CommandError` saying what is wrong and what exists."""
    p = Path(path)
    if not p.exists():
        folder = p.parent
        if not folder.is_dir():
            raise CommandError(f"input file {path!r} does not exist (nor does the folder {str(folder)!r}).")
        names = sorted(q.name for q in folder.iterdir() if q.suffix in (suffix, *other))
        close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
        hint = (f" Did you mean {str(folder / close[0])!r}?" if close else
                f" Files there: {', '.join(names[:10])}." if names else
                f" There are no {suffix} files in {str(folder.resolve())!r}.")
        raise CommandError(f"input file {path!r} does not exist.{hint}")
    if p.is_dir():
        raise CommandError(f"{path!r} is a folder, not a {suffix} file.")
    if p.suffix in other:
        raise CommandError(f"{path!r} is a {p.suffix} file; use '{other[p.suffix]}' for it.")
    return p
