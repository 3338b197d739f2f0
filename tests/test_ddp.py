"""Multi-process training (issue #5): Lightning's DDP strategy, run on CPU with 2 processes.

``strategy="ddp"`` starts the other ranks by running the *script* again, so it cannot run
inside pytest's process; each test writes a small script and runs it with ``python``, exactly
as a user runs ``model.train(accelerator="gpu", devices=4, strategy="ddp")``. Rank 0 writes
what each check needs to JSON / .npy files; the test reads them. About 20 s per test on 2
shared cores (process start-up and imports dominate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent

_HEADER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
import numpy as np, torch, scvi, mixvi
from helpers import make_counts

torch.set_num_threads(1)
out = sys.argv[1]
rank = int(os.environ.get("LOCAL_RANK", 0))
scvi.settings.seed = 0
DDP = dict(accelerator="cpu", devices=2, strategy="ddp", train_size=1.0, batch_size=64,
           enable_progress_bar=False, enable_model_summary=False)


def flat(params):
    return torch.cat([p.detach().flatten().cpu() for p in params]).numpy()
"""

_MIXVI = """
adata = make_counts(n_cells=256, n_genes=40)
mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
model = mixvi.MixVI(adata, n_latent=4, n_hidden=16, n_components=3)
model.train(max_epochs=3, prior_init_epoch=1, **DDP)
trainer = model.trainer
np.save(f"{out}/params_rank{rank}.npy", flat(model.module.parameters()))
np.save(f"{out}/prior_rank{rank}.npy", flat(model.module.prior.parameters()))
info = dict(rank=rank, world_size=trainer.world_size, strategy=type(trainer.strategy).__name__,
            global_step=trainer.global_step, batches_per_epoch=trainer.num_training_batches,
            prior_initialized=model.module.prior_layer.initialized,
            history=sorted(model.history), is_trained=model.is_trained_)
json.dump(info, open(f"{out}/info_rank{rank}.json", "w"))
if rank == 0:
    model.save(f"{out}/model", overwrite=True)
"""

_MULTIMIXVI = """
mdata = mixvi.datasets.pbmc_multiome_tiny()[:256].copy()
mixvi.MultiMixVI.setup_mudata(mdata, batch_key="batch")
model = mixvi.MultiMixVI(mdata, n_latent=4, n_hidden=16, n_components=3)
model.train(max_epochs=2, **DDP)
trainer = model.trainer
np.save(f"{out}/params_rank{rank}.npy", flat(model.module.parameters()))
info = dict(rank=rank, world_size=trainer.world_size, global_step=trainer.global_step,
            prior_initialized=model.module.prior_layer.initialized)
json.dump(info, open(f"{out}/info_rank{rank}.json", "w"))
"""

_NAN = """
from lightning.pytorch.callbacks import Callback
from mixvi.train import NonFiniteLossError

adata = make_counts(n_cells=256, n_genes=40)
mixvi.MixVI.setup_anndata(adata, layer="counts", batch_key="batch")
model = mixvi.MixVI(adata, n_latent=4, n_hidden=16, n_components=3)
if rank == 1:  # only the second process sees a bad loss, at its 5th step (epoch 2)
    original, calls = model.module.loss, [0]

    def loss(*args, **kwargs):
        out_ = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 5:
            out_.loss = out_.loss * float("inf")
            key = next(iter(out_.reconstruction_loss))
            out_.reconstruction_loss[key] = out_.reconstruction_loss[key] * float("inf")
        return out_

    model.module.loss = loss


class KeepState(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.state = flat(pl_module.module.parameters())


keep = KeepState()
t0 = time.time()
try:
    model.train(max_epochs=4, prior_init_epoch=1, callbacks=[keep], **DDP)
    result = dict(raised=False)
except NonFiniteLossError as err:
    result = dict(raised=True, message=str(err),
                  kept=bool(np.array_equal(keep.state, flat(model.module.parameters()))))
result["seconds"] = time.time() - t0
json.dump(result, open(f"{out}/nan_rank{rank}.json", "w"))
"""


def _run(tmp_path: Path, body: str, timeout: int = 240) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_train.py"
    script.write_text(_HEADER.format(tests=str(TESTS)) + textwrap.dedent(body))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, str(script), str(out)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=timeout,
    )


def test_mixvi_ddp_two_cpu_processes(tmp_path):
    """model.train(accelerator="cpu", devices=2, strategy="ddp") trains one model on 2 ranks."""
    proc = _run(tmp_path, _MIXVI)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    infos = [json.loads((out / f"info_rank{r}.json").read_text()) for r in (0, 1)]
    for info in infos:
        assert info["world_size"] == 2 and info["strategy"] == "DDPStrategy"
        # each rank sees half of the 256 cells: 2 minibatches of 64 per epoch
        assert info["batches_per_epoch"] == 2 and info["global_step"] == 6
        assert info["prior_initialized"] and info["is_trained"]
    assert "mixture_entropy_train" in infos[0]["history"]
    # gradients are averaged and the k-means mixture is broadcast: one model on both ranks
    for name in ("params", "prior"):
        np.testing.assert_array_equal(
            np.load(out / f"{name}_rank0.npy"), np.load(out / f"{name}_rank1.npy")
        )

    # the model saved by rank 0 loads in a single process
    import mixvi

    sys.path.insert(0, str(TESTS))
    from helpers import make_counts

    adata = make_counts(n_cells=256, n_genes=40)
    model = mixvi.MixVI.load(str(out / "model"), adata=adata)
    z = model.get_latent_representation()
    assert z.shape == (256, 4) and np.isfinite(z).all()


def test_multimixvi_ddp_two_cpu_processes(tmp_path):
    proc = _run(tmp_path, _MULTIMIXVI)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    infos = [json.loads((out / f"info_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(i["world_size"] == 2 and i["global_step"] == 4 for i in infos)
    assert all(i["prior_initialized"] for i in infos)
    np.testing.assert_array_equal(
        np.load(out / "params_rank0.npy"), np.load(out / "params_rank1.npy")
    )


def test_ddp_nonfinite_loss_on_one_rank_stops_all_without_hanging(tmp_path):
    """A NaN on one rank must not leave the other rank waiting in the all-reduce forever."""
    proc = _run(tmp_path, _NAN, timeout=180)
    result = json.loads((tmp_path / "out" / "nan_rank0.json").read_text())
    assert result["raised"], proc.stderr[-3000:]
    assert "non-finite" in result["message"] and "another process" in result["message"]
    assert result["kept"]  # rank 0 did not apply the poisoned step either
