"""The ``mixvi`` argument parser: sub-commands, options, help text and its formatting."""

from __future__ import annotations

import argparse

from ._fit import DEMO_N_COMPONENTS, _cmd_demo, _cmd_fit
from ._multi import _cmd_fit_multi


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option whose help does not say it already.

    Options whose default is ``None`` (the model's default) or ``False`` (a flag) say
    what happens by default in their own help text.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text or not action.option_strings
            or action.default is None or action.default is False
            or action.default == argparse.SUPPRESS
        ):
            return text
        return text + " (default: %(default)s)"


class _RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The top-level help: description and examples kept as written."""


def n_components_arg(value: str) -> int | str:
    """``--n-components``: a positive integer, or ``auto`` passed on to the model."""
    if value == "auto":
        return value
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}")
    return k


DESCRIPTION = """\
mixvi: single-cell integration with a trainable Gaussian-mixture prior.

MixVI embeds scRNA-seq counts, removes batch effects and clusters the cells (the mixture
components are the clusters). MultiMixVI does the same for paired or mosaic RNA + ATAC
and translates one modality into the other. Results go to stdout, progress to stderr.
"""


EPILOG = """\
examples:
  mixvi demo --out mixvi_demo_out
  mixvi fit in.h5ad --layer counts --batch-key batch --out out.h5ad --umap-png umap.png
  mixvi fit-multi in.h5mu --batch-key batch --translate --out out.h5mu

Run 'mixvi COMMAND --help' for the options of a command.
"""


def _add_common(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    g = p.add_argument_group("output and logging")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="print only warnings, errors and the final summary")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also show debug messages, Lightning's and scvi-tools' messages, "
                        "all warnings and the traceback of an error")
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N",
                       help="random seed (scvi.settings.seed)")


def _add_training(p: argparse.ArgumentParser, multi: bool) -> None:
    g = p.add_argument_group("model and training")
    g.add_argument("--prior", default=None, choices=["gmm", "normal", "hierarchical"],
                   help="latent prior (default: the model's, 'gmm')")
    g.add_argument("--n-components", type=n_components_arg, default=None, metavar="K",
                   help="mixture components = clusters: a number, or 'auto' to find it from "
                        "the data (default: the model's, 'auto')")
    g.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="training epochs (default: the model's, about 400 for up to 20k "
                        "cells, fewer above)")
    g.add_argument("--resolution", type=float, default=None, metavar="R",
                   help="with --n-components auto: higher finds more, smaller clusters "
                        "(default: the model's, 1.0)")
    g.add_argument("--smoothing", type=float, default=None, metavar="W",
                   help="weight in [0, 1) of a cell's 15 nearest cells in the latent against "
                        "its own cluster probabilities; 0 = each cell alone (default: the "
                        "model's, 0.8)")
    g.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=None,
                   help="stop when the validation loss stops improving, keeping the best "
                        "epoch (default: the model's: "
                        + ("on" if multi else "off") + ")")
    g.add_argument("--batch-balance-weight", type=float, default=None, metavar="W",
                   help="weight of the penalty that asks every mixture component to hold "
                        "the batches in the data's proportions (default: the model's, 0 = off)")
    g.add_argument("--accelerator", default=None, metavar="NAME",
                   help="Lightning accelerator: cpu, gpu, auto (default: the model's, auto)")
    g.add_argument("--model-dir", default=None, metavar="DIR",
                   help="also save the trained model here (default: not saved)")
    g.add_argument("--umap-png", default=None, metavar="PATH",
                   help="draw a UMAP of the embedding coloured by cluster, batch and labels "
                        "(default: none)")


def build_parser() -> argparse.ArgumentParser:
    """The ``mixvi`` argument parser (sub-commands ``demo``, ``fit`` and ``fit-multi``)."""
    import mixvi

    parser = argparse.ArgumentParser(
        prog="mixvi", description=DESCRIPTION, epilog=EPILOG, formatter_class=_RawHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"mixvi {mixvi.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo", formatter_class=HelpFormatter,
        help="train MixVI on the shipped Kang IFN-b PBMC data and score it",
        description="Train MixVI on the shipped Kang IFN-b PBMC data (1,556 cells, ctrl/stim "
                    "batches, 5 cell types) and write the fitted data, a UMAP, the model and "
                    "the metrics to one folder. About 5 minutes on 2 CPU cores.",
    )
    demo.add_argument("--out", default="mixvi_demo_out", metavar="DIR", help="output folder")
    demo.add_argument("--max-epochs", type=int, default=None, metavar="N",
                      help="training epochs (default: the model's, 400 for these 1,556 cells)")
    demo.add_argument("--n-components", type=n_components_arg, default=DEMO_N_COMPONENTS,
                      metavar="K", help="mixture components = clusters, or 'auto'")
    _add_common(demo)
    demo.set_defaults(func=_cmd_demo)

    f = sub.add_parser(
        "fit", formatter_class=HelpFormatter,
        help="train MixVI on an .h5ad (scRNA counts) and write embedding and clusters",
        description="Train MixVI on the raw counts of an .h5ad file and write a copy with the "
                    "embedding (.obsm['X_<key>']) and the mixture clusters (.obs['<key>_cluster'], "
                    "their confidence and probabilities). The input file is not changed.",
    )
    f.add_argument("input", metavar="IN.h5ad", help="input AnnData with raw counts")
    f.add_argument("--out", required=True, metavar="OUT.h5ad", help="output .h5ad (required)")
    g = f.add_argument_group("data")
    g.add_argument("--layer", default=None, metavar="NAME",
                   help="layer with the raw counts (default: .X)")
    g.add_argument("--batch-key", default=None, metavar="COLUMN",
                   help=".obs column with the batch (default: no batch)")
    g.add_argument("--labels-key", default=None, metavar="COLUMN",
                   help=".obs column with cell types, only used to score the clusters "
                        "(default: no scores)")
    g.add_argument("--key-added", default="mixvi", metavar="PREFIX",
                   help="prefix of the keys written")
    _add_training(f, multi=False)
    _add_common(f)
    f.set_defaults(func=_cmd_fit)

    m = sub.add_parser(
        "fit-multi", formatter_class=HelpFormatter,
        help="train MultiMixVI on an .h5mu (RNA + ATAC) and write embeddings, clusters, "
             "translations",
        description="Train MultiMixVI on the RNA and ATAC counts of a MuData (.h5mu) and "
                    "write a copy with the joint and per-modality embeddings and the mixture "
                    "clusters (MultiMixVI.write_to_mudata) and, with --translate, the "
                    "translated matrices as layers of the modalities: "
                    "<rna>.layers['<key>_from_atac'] (expression predicted from ATAC, "
                    "normalised to 10,000 per cell; log1p it to compare with a "
                    "log-normalised .X) and <atac>.layers['<key>_from_rna'] (probability "
                    "that each peak is open, predicted from RNA). Translated matrices are "
                    "dense: cells x features x 4 bytes each.",
    )
    m.add_argument("input", metavar="IN.h5mu", help="input MuData with RNA and ATAC counts")
    m.add_argument("--out", required=True, metavar="OUT.h5mu", help="output .h5mu (required)")
    g = m.add_argument_group("data")
    g.add_argument("--rna-mod", default="rna", metavar="NAME", help="RNA modality in mdata.mod")
    g.add_argument("--atac-mod", default="atac", metavar="NAME", help="ATAC modality in mdata.mod")
    g.add_argument("--rna-layer", default="counts", metavar="NAME",
                   help="layer of the RNA modality with raw counts ('X' for .X)")
    g.add_argument("--atac-layer", default="counts", metavar="NAME",
                   help="layer of the ATAC modality with raw counts ('X' for .X)")
    g.add_argument("--batch-key", default=None, metavar="COLUMN",
                   help="batch column of mdata.obs or of the RNA modality's .obs "
                        "(default: no batch)")
    g.add_argument("--labels-key", default=None, metavar="COLUMN",
                   help="cell-type column, only used to score the clusters (default: no scores)")
    g.add_argument("--key-added", default="multimixvi", metavar="PREFIX",
                   help="prefix of the keys written")
    g.add_argument("--translate", nargs="?", const="both", default=None,
                   choices=["both", "rna", "atac"],
                   help="also write translations: 'rna' = expression from ATAC, 'atac' = "
                        "accessibility from RNA, 'both' (the value when given alone) "
                        "(default: none)")
    _add_training(m, multi=True)
    _add_common(m)
    m.set_defaults(func=_cmd_fit_multi)
    return parser
