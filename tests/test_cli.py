"""The ``mixvi`` command line: help text, errors, logging, fit and fit-multi end to end.

Trainings are 2 epochs on 240 cells (fit) or the 1,000-cell tiny multiome (fit-multi).
"""

from __future__ import annotations

import argparse
import logging
import re

import anndata as ad
import numpy as np
import pytest
import torch
from helpers import make_counts

import mixvi
from mixvi import cli

torch.set_num_threads(1)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_every_option_has_help_and_shows_its_default():
    parser = cli.build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"demo", "fit", "fit-multi"}
    for name, sub in subs.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            if not action.option_strings or action.required:
                continue  # positionals and required options have no default
            if action.default is None or action.default is False:
                # "the model's default", "no batch", a flag: the help says it in words
                assert "default" in action.help or action.nargs == 0, (name, action.dest)
            else:
                shown = sub._get_formatter()._get_help_string(action) % {"default": action.default}
                assert f"(default: {action.default})" in shown, (name, action.dest)
        assert "``" not in text and ":class:" not in text and ":meth:" not in text


def test_top_level_help_is_plain_text_and_lists_commands(capsys):
    out = _help(capsys, ["--help"])
    assert "``" not in out and ":func:" not in out
    for command in ("demo", "fit", "fit-multi"):
        assert re.search(rf"^\s+{command}\b", out, re.MULTILINE), command
    assert "mixvi fit-multi in.h5mu" in out  # the examples keep their line breaks
    fit_help = _help(capsys, ["fit", "--help"])
    assert "--max-epochs N" in fit_help and "(default: mixvi)" in fit_help
    assert "(default: 0)" in fit_help  # --seed: a default of 0 is shown, too
    multi = _help(capsys, ["fit-multi", "--help"])
    assert "(default: counts)" in multi and "--translate" in multi


def test_version(capsys):
    out = _help(capsys, ["--version"])
    assert out.strip() == f"mixvi {mixvi.__version__}"


@pytest.fixture
def h5ad(tmp_path):
    path = tmp_path / "in.h5ad"
    make_counts().write_h5ad(path)
    return path


@pytest.fixture
def h5mu(tmp_path):
    import warnings

    path = tmp_path / "in.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixvi.datasets.pbmc_multiome_tiny().write_h5mu(path)
    return path


def _error(capsys, argv: list[str]) -> str:
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.splitlines() if line.startswith("mixvi: error:")]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_missing_file_suggests_the_closest(capsys, h5ad, tmp_path):
    line = _error(capsys, ["fit", str(tmp_path / "in.h5"), "--out", str(tmp_path / "o.h5ad")])
    assert "does not exist" in line and f"Did you mean '{h5ad}'" in line
    line = _error(capsys, ["fit", str(tmp_path / "nope" / "x.h5ad"), "--out", "o.h5ad"])
    assert "nor does the folder" in line


def test_wrong_format_points_to_the_other_command(capsys, h5mu, tmp_path):
    line = _error(capsys, ["fit", str(h5mu), "--out", str(tmp_path / "o.h5ad")])
    assert "use 'mixvi fit-multi'" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--layer", "count"], r"layer='count'.*Did you mean 'counts'.*\['counts'\]"),
        (["--layer", "counts", "--batch-key", "batches"],
         r"batch_key='batches'.*Did you mean 'batch'.*\['batch', 'cell_type'\]"),
        (["--layer", "counts", "--labels-key", "celltype"], r"labels_key='celltype'.*'cell_type'"),
        ([], r"non-integer.*layer='counts'"),  # .X is log-normalised in the scanpy layout
    ],
)
def test_missing_keys_are_one_clean_line(capsys, h5ad, tmp_path, args, expected):
    out = tmp_path / "o.h5ad"
    line = _error(capsys, ["fit", str(h5ad), "--out", str(out), "--max-epochs", "1", *args])
    assert re.search(expected, line), line
    assert not out.exists()  # failed before training and writing


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--rna-mod", "RNA"], r"no modality 'RNA'.*\['rna', 'atac'\]"),
        (["--atac-layer", "raw"], r"layer='raw'.*\['counts'\]"),
        (["--labels-key", "celltype"], r"--labels-key 'celltype' is not a column.*available"),
        (["--batch-key", "bach"], r"'bach'.*Did you mean 'batch'"),
    ],
)
def test_fit_multi_missing_keys(capsys, h5mu, tmp_path, args, expected):
    line = _error(capsys, ["fit-multi", str(h5mu), "--out", str(tmp_path / "o.h5mu"), *args])
    assert re.search(expected, line), line


@pytest.mark.parametrize("command, suffix", [("fit", "h5ad"), ("fit-multi", "h5mu")])
def test_bad_smoothing_fails_before_training(capsys, h5ad, h5mu, tmp_path, command, suffix):
    data = h5ad if suffix == "h5ad" else h5mu
    extra = ["--layer", "counts"] if suffix == "h5ad" else []
    out = tmp_path / f"o.{suffix}"
    line = _error(capsys, [command, str(data), "--out", str(out), *extra, "--smoothing", "1"])
    assert "--smoothing must be in [0, 1)" in line, line
    assert not out.exists()


def test_fit_writes_results_summary_and_restores_logging(capsys, h5ad, tmp_path, monkeypatch):
    monkeypatch.setattr("mixvi.train._progress.progress_bar_default", lambda: False)  # no TTY
    mixvi_logger = logging.getLogger("mixvi")
    before = (list(mixvi_logger.handlers), mixvi_logger.level,
              logging.getLogger("lightning.pytorch").level)
    out, png = tmp_path / "res" / "o.h5ad", tmp_path / "umap.png"
    code = cli.main(["fit", str(h5ad), "--layer", "counts", "--batch-key", "batch",
                     "--labels-key", "cell_type", "--n-components", "3", "--max-epochs", "2",
                     "--out", str(out), "--umap-png", str(png), "--model-dir", str(tmp_path / "m")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (list(mixvi_logger.handlers), mixvi_logger.level,
            logging.getLogger("lightning.pytorch").level) == before
    # stdout: the summary, with where things went and the metrics
    assert re.search(r"^mixvi fit: done in .* \(2 epochs, [0-9.]+ s/epoch\)$", captured.out, re.MULTILINE)
    assert re.search(rf"^\s+results\s+{re.escape(str(out))}\s", captured.out, re.MULTILINE)
    assert str(png) in captured.out and str(tmp_path / "m") in captured.out
    assert re.search(r"^cluster_ari\s+-?[0-9.]+$", captured.out, re.MULTILINE)
    assert re.search(r"^batch_predictability\s+[0-9.]+$", captured.out, re.MULTILINE)
    # stderr: the training log (no terminal here), no Lightning chatter
    assert "mixvi: epoch 1/2: -elbo" in captured.err and "mixvi: epoch 2/2" in captured.err
    assert "GPU available" not in captured.err and "LeafSpec" not in captured.err
    assert "warning: Training ended while the loss was still falling" in captured.err
    assert captured.err.count("Training ended while") == 1  # logged once, not also printed
    result = ad.read_h5ad(out)
    assert result.obsm["X_mixvi"].shape == (240, 16) and "mixvi_cluster" in result.obs
    assert png.stat().st_size > 10_000 and (tmp_path / "m" / "model.pt").exists()


def test_quiet_shows_only_warnings_and_the_summary(capsys, h5ad, tmp_path):
    code = cli.main(["fit", str(h5ad), "--layer", "counts", "--n-components", "3",
                     "--max-epochs", "2", "--out", str(tmp_path / "o.h5ad"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    assert "mixvi fit: done in" in captured.out
    assert "epoch 1/2" not in captured.err and "reading" not in captured.err
    assert "warning: Training ended while" in captured.err


def test_fit_multi_translates_into_layers(capsys, h5mu, tmp_path):
    import mudata as md

    out = tmp_path / "o.h5mu"
    code = cli.main(["fit-multi", str(h5mu), "--n-components", "4", "--max-epochs", "2",
                     "--translate", "--out", str(out), "--key-added", "mm"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mixvi fit-multi: done in" in captured.out
    assert "rna.layers['mm_from_atac']" in captured.out
    assert re.search(r"^foscttm_train_cells\s+0\.\d+$", captured.out, re.MULTILINE)
    mdata = md.read_h5mu(out)
    rna, atac = mdata["rna"], mdata["atac"]
    assert mdata.obsm["X_mm"].shape == (1000, 16) and "mm_cluster" in mdata.obs
    assert "X_mm_rna" in rna.obsm and "X_mm_atac" in atac.obsm
    expr = np.asarray(rna.layers["mm_from_atac"])
    assert expr.shape == rna.shape
    np.testing.assert_allclose(expr.sum(1), 1e4, rtol=1e-3)  # normalised to 10,000 per cell
    p_open = np.asarray(atac.layers["mm_from_rna"])
    assert p_open.shape == atac.shape and p_open.min() >= 0 and p_open.max() <= 1
    np.testing.assert_array_equal(np.asarray(rna.layers["counts"].sum()),
                                  np.asarray(md.read_h5mu(h5mu)["rna"].layers["counts"].sum()))

    out2 = tmp_path / "o2.h5mu"
    assert cli.main(["fit-multi", str(h5mu), "--n-components", "4", "--max-epochs", "1",
                     "--translate", "rna", "--out", str(out2), "-q"]) == 0
    mdata = md.read_h5mu(out2)
    assert "multimixvi_from_atac" in mdata["rna"].layers
    assert "multimixvi_from_rna" not in mdata["atac"].layers


def test_batch_mixing_warning(caplog):
    caplog.set_level(logging.INFO, logger="mixvi")
    rng = np.random.default_rng(0)
    batch = np.repeat(["b0", "b1"], 200)
    apart = rng.normal(size=(400, 4)) + (batch == "b1")[:, None] * 10.0
    assert cli.check_batch_mixing(apart, batch, max_epochs=20) > cli.BATCH_MIXING_THRESHOLD
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not mixed" in warned[0] and "--max-epochs 40" in warned[0]
    caplog.clear()
    mixed = rng.normal(size=(400, 4))
    assert cli.check_batch_mixing(mixed, batch, max_epochs=20) < 0.7
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert cli.check_batch_mixing(mixed, ["b0"] * 400, max_epochs=20) is None


def test_n_components_argument():
    assert cli.n_components_arg("7") == 7 and cli.n_components_arg("auto") == "auto"
    for bad in ("0", "-2", "x", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.n_components_arg(bad)


def test_early_stopping_and_resolution_options_reach_training():
    from mixvi.cli import build_parser
    from mixvi.cli._fit import _train_kwargs

    parser = build_parser()
    off = parser.parse_args(["fit-multi", "x.h5mu", "--out", "o.h5mu", "--no-early-stopping", "--resolution", "2",
                             "--batch-balance-weight", "3"])
    assert off.early_stopping is False and off.resolution == 2.0 and off.batch_balance_weight == 3.0
    assert _train_kwargs(None, off.early_stopping, None, None)["early_stopping"] is False
    default = parser.parse_args(["fit", "x.h5ad", "--out", "o.h5ad"])
    assert default.early_stopping is None and default.resolution is None
    assert "early_stopping" not in _train_kwargs(None, default.early_stopping, None, None)
    on = parser.parse_args(["fit", "x.h5ad", "--out", "o.h5ad", "--early-stopping"])
    assert _train_kwargs(None, on.early_stopping, None, None)["early_stopping"] is True
