"""Where the command's messages go: the ``mixvi`` logger on stderr, warnings, error lines.

Results go to stdout (see :mod:`mixvi.cli._summary`); everything else -- progress,
warnings, errors -- goes to stderr through the ``mixvi`` logger, configured only while a
command runs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from typing import ClassVar

logger = logging.getLogger("mixvi")

# loggers whose messages only --verbose shows
_CHATTER = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi",
            "jax", "absl", "py.warnings")


class _LogFormatter(logging.Formatter):
    _PREFIX: ClassVar[dict[int, str]] = {logging.DEBUG: "debug: ", logging.WARNING: "warning: ", logging.ERROR: "error: ",
               logging.CRITICAL: "error: "}

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} mixvi: {self._PREFIX.get(record.levelno, '')}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logger.warning("%s", message)


@contextlib.contextmanager
def configure_logging(quiet: bool = False, verbose: bool = False):
    """Log the ``mixvi`` logger to stderr while the command runs (then restore everything).

    Default: INFO lines; warnings raised in mixvi's code become ``warning:`` lines, other
    libraries' warnings and Lightning's / scvi-tools' messages are hidden. ``quiet``:
    warnings and errors only. ``verbose``: DEBUG, and everything else is shown as usual.
    """
    root = logging.getLogger("mixvi")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    old = {name: logging.getLogger(name).level for name in ("mixvi", *_CHATTER)}
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for name in _CHATTER:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if not verbose:
                # imported here: mixvi.train loads torch and Lightning (seconds), which
                # `mixvi --help` does not need
                from mixvi.train._progress import TrainingWarning

                warnings.simplefilter("ignore")
                warnings.filterwarnings("default", category=UserWarning, module=r"mixvi(\.|$)")
                warnings.filterwarnings("ignore", category=TrainingWarning)  # logged already
                warnings.showwarning = _log_warning
            yield
    finally:
        root.removeHandler(handler)
        for name, level in old.items():
            logging.getLogger(name).setLevel(level)


def error_line(err: BaseException) -> str:
    """``mixvi: error: <message>`` on one line (a KeyError's message without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return "mixvi: error: " + " ".join(str(text).split())
