"""The ``mixvi`` command: ``mixvi demo``, ``mixvi fit`` and ``mixvi fit-multi``.

Results go to stdout (a summary: files written, metrics, time taken); progress, warnings
and errors go to stderr through the ``mixvi`` logger. A bad input (a missing file, layer,
``.obs`` column or modality) ends with one ``mixvi: error: ...`` line and exit code 2.

Modules: ``_main`` (:func:`main`), ``_parser`` (:func:`build_parser`, the help text),
``_logging`` (stderr, warnings, error lines), ``_inputs`` (input checks), ``_summary``
(stdout), ``_fit`` (``demo`` and ``fit``) and ``_multi`` (``fit-multi``). Importing them is
fast: torch and scvi-tools load inside the commands, so ``mixvi --help`` takes about a second.
"""

from ._fit import BATCH_MIXING_THRESHOLD, DEMO_N_COMPONENTS, check_batch_mixing, fit
from ._inputs import CommandError, check_input_file
from ._logging import configure_logging, error_line, logger
from ._main import main
from ._multi import fit_multi
from ._parser import DESCRIPTION, EPILOG, HelpFormatter, build_parser, n_components_arg
from ._summary import format_seconds, print_summary

__all__ = [
    "BATCH_MIXING_THRESHOLD",
    "DEMO_N_COMPONENTS",
    "DESCRIPTION",
    "EPILOG",
    "CommandError",
    "HelpFormatter",
    "build_parser",
    "check_batch_mixing",
    "check_input_file",
    "configure_logging",
    "error_line",
    "fit",
    "fit_multi",
    "format_seconds",
    "logger",
    "main",
    "n_components_arg",
    "print_summary",
]
