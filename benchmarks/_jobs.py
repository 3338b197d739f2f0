"""Benchmark runs as fresh processes, a few at a time, each result kept as a JSON file.

A benchmark script calls :func:`run_jobs` with its own path and a list of job keys; each key
(strings, the seed last) runs as ``python SCRIPT --one KEY...`` in a new process with one
torch / BLAS thread, so a run's memory and speed are its own and a crashed run does not stop
the others. The child writes its result with :func:`save_result`. A run whose JSON file
exists is skipped, so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def result_path(runs: Path, key: Sequence) -> Path:
    """``runs / "<key...>_s<seed>.json"`` (the seed is the key's last element)."""
    *names, seed = (str(k) for k in key)
    return runs / f"{'_'.join([*names, f's{seed}'])}.json"


def save_result(runs: Path, key: Sequence, result: dict) -> None:
    """Write one run's result (numpy scalars as floats)."""
    runs.mkdir(parents=True, exist_ok=True)
    result_path(runs, key).write_text(json.dumps(result, default=float))


def load_results(runs: Path, csv_path: Path):
    """Every run's result in ``runs`` as one DataFrame, also written to ``csv_path``; ``None``
    (and a message) when there is none yet."""
    import pandas as pd

    rows = [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    if not rows:
        print("no runs")
        return None
    frame = pd.DataFrame(rows)
    frame.to_csv(csv_path, index=False)
    return frame


def run_jobs(script: Path, runs: Path, jobs: Sequence[Sequence], parallel: int = 2) -> None:
    """Run ``script --one KEY`` for every key without a result yet, ``parallel`` at a time."""
    runs.mkdir(parents=True, exist_ok=True)

    def launch(key: Sequence) -> None:
        if result_path(runs, key).exists():
            return
        t0 = time.time()
        done = subprocess.run(
            [sys.executable, str(script), "--one", *map(str, key)],
            env={**os.environ, **THREAD_ENV}, capture_output=True, text=True, check=False,
        )
        label = " ".join(map(str, key))
        if done.returncode != 0:
            print(f"FAILED {label}:\n{done.stderr[-3000:]}", flush=True)
        else:
            print(f"done {label} in {time.time() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(launch, jobs))
