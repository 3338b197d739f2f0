"""Save / load (issue #5): what a saved model holds, files it refuses with the fix, and a load
in a new process that gives identical latents (the ``saved`` model: ``conftest.py``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scvi
import torch

import mixvi
from mixvi.model._save_load import IncompatibleModelError

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ save / load
def test_save_writes_weights_registry_arguments_and_versions(saved):
    model, _, root = saved
    stored = torch.load(root / "model" / "model.pt", weights_only=False, map_location="cpu")
    attrs = stored["attr_dict"]
    assert attrs["mixvi_version_"] == mixvi.__version__
    assert attrs["scvi_version_"] == scvi.__version__
    assert attrs["registry_"]["model_name"] == "MixVI"
    assert attrs["registry_"]["setup_args"]["layer"] == "counts"
    assert attrs["registry_"]["setup_args"]["batch_key"] == "batch"
    assert attrs["init_params_"]["non_kwargs"]["n_components"] == 3
    assert attrs["init_params_"]["non_kwargs"]["n_latent"] == 4
    state = stored["model_state_dict"]
    for name, value in model.module.state_dict().items():
        assert torch.equal(state[name], value.cpu()), name
    assert bool(state["prior_layer.prior_initialized"])
    assert list(stored["var_names"]) == list(model.adata.var_names)


def _tamper(root, dst, change):
    import shutil

    shutil.copytree(root / "model", dst)
    path = dst / "model.pt"
    stored = torch.load(path, weights_only=False, map_location="cpu")
    change(stored["attr_dict"])
    torch.save(stored, path)
    return dst


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a.__setitem__("mixvi_version_", "99.0.0"),
         r"saved by mixvi 99\.0\.0, incompatible with the installed mixvi "
         r".*install mixvi==99\.0\.0"),
        (lambda a: a.pop("mixvi_version_"), r"not saved by mixvi .*Retrain it with mixvi"),
        (lambda a: a["registry_"].__setitem__("model_name", "MultiMixVI"),
         r"holds a MultiMixVI model; load it with MultiMixVI\.load"),
    ],
    ids=["other-major-version", "no-version-stamp", "other-class"],
)
def test_load_refuses_incompatible_file(saved, tmp_path, change, match):
    _, adata, root = saved
    bad = _tamper(root, tmp_path / "bad", change)
    with pytest.raises(IncompatibleModelError, match=match):
        mixvi.MixVI.load(bad, adata=adata)


def test_load_refuses_corrupt_missing_and_scvi_files(saved, tmp_path):
    _, adata, root = saved
    import shutil

    shutil.copytree(root / "model", tmp_path / "cut")
    data = (tmp_path / "cut" / "model.pt").read_bytes()
    (tmp_path / "cut" / "model.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(IncompatibleModelError, match=r"could not be read.*save the model again"):
        mixvi.MixVI.load(tmp_path / "cut", adata=adata)
    with pytest.raises(FileNotFoundError, match=r"No saved model at .*model\.save"):
        mixvi.MixVI.load(tmp_path / "nowhere", adata=adata)
    other = adata.copy()
    scvi.model.SCVI.setup_anndata(other, layer="counts")
    scvi.model.SCVI(other, n_hidden=8, n_latent=2).save(tmp_path / "scvi", overwrite=True)
    with pytest.raises(IncompatibleModelError, match=r"holds a SCVI model; load it with SCVI"):
        mixvi.MixVI.load(tmp_path / "scvi", adata=adata)
    older = _tamper(
        root, tmp_path / "older_scvi", lambda a: a.__setitem__("scvi_version_", "0.9.1")
    )
    with pytest.warns(UserWarning, match=r"saved with scvi-tools 0\.9\.1"):
        mixvi.MixVI.load(older, adata=adata)


_LOAD_SCRIPT = """
import sys, numpy as np, torch, anndata as ad, mixvi
torch.set_num_threads({threads})
adata = ad.read_h5ad(sys.argv[2])
model = mixvi.MixVI.load(sys.argv[1], adata=adata)
np.save(sys.argv[3], model.get_latent_representation())
np.save(sys.argv[4], model.get_cluster_assignments().filter(like="prob_").to_numpy())
"""


def test_load_in_new_process_gives_identical_latents(saved, tmp_path):
    model, adata, root = saved
    script = tmp_path / "load.py"
    script.write_text(_LOAD_SCRIPT.format(threads=torch.get_num_threads()))
    z_path, p_path = tmp_path / "z.npy", tmp_path / "p.npy"
    proc = subprocess.run(
        [sys.executable, str(script), str(root / "model"), str(root / "data.h5ad"),
         str(z_path), str(p_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(z_path), model.get_latent_representation())
    probs = model.get_cluster_assignments().filter(like="prob_").to_numpy()
    np.testing.assert_array_equal(np.load(p_path), probs)
