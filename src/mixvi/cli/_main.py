"""Entry point of the ``mixvi`` command: parse, run the command, turn errors into exit codes."""

from __future__ import annotations

import sys

from ._inputs import CommandError
from ._logging import configure_logging, error_line, logger
from ._parser import build_parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixvi`` command; returns the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    ``0`` on success, ``2`` for bad input (one ``mixvi: error: ...`` line on stderr),
    ``1`` when training failed or an output could not be written, ``130`` when interrupted.
    """
    args = build_parser().parse_args(argv)
    with configure_logging(quiet=args.quiet, verbose=args.verbose):
        try:
            return args.func(args)
        except KeyboardInterrupt:
            print("mixvi: interrupted", file=sys.stderr)
            return 130
        except (CommandError, ValueError, KeyError, FileNotFoundError) as err:
            if args.verbose:
                logger.exception("traceback")
            print(error_line(err), file=sys.stderr)
            return 2
        except (FloatingPointError, OSError) as err:  # NonFiniteLossError; unwritable output
            if args.verbose:
                logger.exception("traceback")
            print(error_line(err), file=sys.stderr)
            return 1
