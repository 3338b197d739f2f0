"""Bad MuData input fails at MultiMixVI's entry points, with a message naming the problem and
the fix (issue #5): ``MultiMixVI.setup_mudata`` / ``MultiMixVI(...)`` / ``MultiMixVI.load`` and
inference on new data, one wrong input per row of ``CASES`` (the AnnData table is in
``test_bad_input.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from bad_inputs import (
    MULTI_SAVE_LOAD,
    atac_with,
    latent_multi,
    load_multi,
    mudata,
    poke,
    raises_clearly,
    renamed_atac,
    reordered_mudata,
    reverse_vars,
    rna,
    setup_mu,
    with_unknown,
)

import mixvi

# (call, error type, message regex); ids name the problem
CASES = [
    pytest.param(
        lambda: setup_mu(rna()),
        TypeError,
        r"Expected a MuData object, got AnnData.*mixvi\.MixVI",
        id="setup_mudata-not-a-mudata",
    ),
    pytest.param(
        lambda: setup_mu(mudata(names=("rna", "ATAC_peaks"))),
        KeyError,
        r"no modality 'atac'.*Available modalities \(mdata\.mod\): \['rna', 'ATAC_peaks'\].*"
        r"modalities=",
        id="setup_mudata-missing-modality",
    ),
    pytest.param(
        lambda: setup_mu(mudata(), modalities={"rna": "rna", "atac": "atak"}),
        KeyError,
        r"no modality 'atak'.*Did you mean 'atac'\?",
        id="setup_mudata-misspelt-modality",
    ),
    pytest.param(
        lambda: setup_mu(
            mudata(atac_mod=renamed_atac(lambda n: n[:50] + [f"x{i}" for i in range(10)]))
        ),
        ValueError,
        r"different cells: 10 of 60 rna cells are missing from atac.*50 are shared",
        id="setup_mudata-cells-differ",
    ),
    pytest.param(
        lambda: setup_mu(reordered_mudata()),
        ValueError,
        r"same 60 cells but in a different order.*atac = atac\[rna\.obs_names\]",
        id="setup_mudata-cells-in-other-order",
    ),
    pytest.param(
        lambda: setup_mu(atac_with(lambda a: poke(a, 0.5))),
        ValueError,
        r"ATAC matrix \(adata\.layers\['counts'\].*non-integer",
        id="setup_mudata-non-integer-atac",
    ),
    pytest.param(
        lambda: setup_mu(mudata(rna_mod=poke(rna(), np.nan))),
        ValueError,
        r"RNA matrix.*1 NaN",
        id="setup_mudata-nan-rna",
    ),
    pytest.param(
        lambda: setup_mu(atac_with(lambda a: a.layers.pop("counts"))),
        KeyError,
        r"layer='counts' is not in adata\.layers.*Available layers: none",
        id="setup_mudata-missing-atac-layer",
    ),
    pytest.param(
        lambda: setup_mu(mudata(), batch_key="Batch"),
        KeyError,
        r"batch_key='Batch' is not a column.*Did you mean 'batch'\?",
        id="setup_mudata-misspelt-batch-key",
    ),
    pytest.param(
        lambda: setup_mu(mudata(rna_mod=with_unknown(rna(), ["T", "Unknown"] * 30)),
                         labels_key="ct"),
        ValueError,
        r"labels_key='ct'.*only 1 category.*at least 2",
        id="setup_mudata-labels-one-category",
    ),
    pytest.param(
        lambda: (setup_mu(m := mudata()), mixvi.MultiMixVI(m, n_components=61)),
        ValueError,
        r"n_components=61 exceeds the number of cells \(60\)",
        id="MultiMixVI-n_components-gt-cells",
    ),
    pytest.param(
        lambda: load_multi(atac_with(lambda a: reverse_vars(a))),
        ValueError,
        r"peaks but in a different order",
        id="MultiMixVI.load-peaks-in-other-order",
        marks=MULTI_SAVE_LOAD,
    ),
    pytest.param(
        lambda: latent_multi(atac_with(lambda a: reverse_vars(a))),
        ValueError,
        r"peaks but in a different order",
        id="MultiMixVI-latent-peaks-in-other-order",
        marks=MULTI_SAVE_LOAD,
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_mudata_raises_clear_error(call, error, match):
    raises_clearly(call, error, match)
