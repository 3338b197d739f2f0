"""Sphinx directive ``.. mixvi-cli-help:: [COMMAND]``: the ``mixvi`` help text, from the parser.

The page shows what ``mixvi --help`` / ``mixvi COMMAND --help`` print, always in step with
:func:`mixvi.cli.build_parser` (nothing is copied by hand).
"""

from __future__ import annotations

import os


def cli_help(command: str | None = None, width: int = 90) -> str:
    """Help text of ``mixvi`` (``command=None``) or of one sub-command, ``width`` columns."""
    import argparse

    from mixvi.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        parser = build_parser()
        if command is not None:
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = sub.choices[command]
        return parser.format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def _directive():
    """The directive class; docutils is imported here so :func:`cli_help` works without it."""
    from docutils import nodes
    from docutils.parsers.rst import Directive

    class CliHelp(Directive):
        """Insert the help text of ``mixvi`` or of ``mixvi COMMAND`` as a literal block."""

        optional_arguments = 1
        has_content = False

        def run(self) -> list[nodes.Node]:
            command = self.arguments[0] if self.arguments else None
            text = cli_help(command)
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            return [block]

    return CliHelp


def setup(app):
    app.add_directive("mixvi-cli-help", _directive())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
