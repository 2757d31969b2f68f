"""Search throughput: training configurations predicted per second by ``firesim.search.sweep`` in this
process, on 2 local worker processes, and on MPI (``mpiexec -n 3 python -m mpi4py.futures``: 2 workers),
measured side by side on the same grid, each after its pool is up (start-up is reported apart). The three
must return identical records; the ratios, not the absolute rates, are the figure on a shared machine.

Run alone: ``python -m bench search``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from firesim.hardware import list_presets
from firesim.io import dumps
from firesim.plans import algorithms
from firesim.search import Setting, grid, make_executor, sweep
from firesim.workload import load_workload

MODELS = ("googlenet", "resnet50", "vgg19")
GPUS = tuple(2**k for k in range(11))
BATCHES = (256, 512, 1024, 2048, 4096, 8192)
DTYPES = ("fp32", "bf16")
MPI_RANKS = 3  # rank 0 runs the search, 2 workers


def _space():
    presets = {c.name: c for c in list_presets()}
    setting = Setting(profiles={m: load_workload(m) for m in MODELS}, clusters=presets)
    algos = [a.name for a in algorithms() if a.time is not None]
    return setting, grid(MODELS, list(presets), GPUS, algos, BATCHES, DTYPES)


def _timed(kind: str, workers: int) -> tuple[float, float, list[dict]]:
    """(start-up seconds, search seconds, records) for one executor."""
    setting, cases = _space()
    start = time.perf_counter()
    with make_executor(kind, workers) as pool:
        if pool is not None:  # bring every worker up (and importing firesim) before the clock starts
            list(pool.map(abs, range(64)))
        ready = time.perf_counter()
        records = sweep(setting, cases, executor=pool)
        done = time.perf_counter()
    return ready - start, done - ready, records


def _digest(records: list[dict]) -> str:
    return hashlib.sha256(dumps(records).encode()).hexdigest()


def _mpi_child() -> None:
    """Inside ``mpiexec ... -m mpi4py.futures -m bench.search --mpi``: print the timing as one JSON line."""
    startup_s, search_s, records = _timed("mpi", None)
    print(json.dumps({"startup_s": startup_s, "search_s": search_s, "configs": len(records),
                      "digest": _digest(records)}))


def _mpi() -> tuple[float, float, int, str] | str:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists() and not shutil.which("mpiexec"):
        return "no mpiexec (pip install mpich)"
    cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(MPI_RANKS), sys.executable, "-m",
           "mpi4py.futures", "-m", "bench.search", "--mpi"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return "timed out after 300 s"
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return row["startup_s"], row["search_s"], row["configs"], row["digest"]


def main() -> None:
    load = os.getloadavg()[0]
    rows = []
    reference = None
    for label, kind, workers in (("this process", "local", 1), ("2 local workers", "local", 2)):
        startup_s, search_s, records = _timed(kind, workers)
        digest = _digest(records)
        reference = reference or digest
        rows.append((label, len(records), startup_s, search_s, digest == reference))
    mpi = _mpi()
    table = Table(title=f"search: configurations predicted per second (load {load:.1f} on {os.cpu_count()} cores)")
    for col in ("executor", "configs", "start-up", "search", "configs/s", "vs this process", "same records"):
        table.add_column(col, justify="right")
    base = rows[0][1] / rows[0][3]
    for label, n, startup_s, search_s, same in rows:
        rate = n / search_s
        table.add_row(label, f"{n:,}", f"{startup_s:.2f} s", f"{search_s:.2f} s", f"{rate:,.0f}", f"{rate / base:.2f}x",
                      "yes" if same else "NO")
    if isinstance(mpi, str):
        table.add_row(f"MPI ({MPI_RANKS - 1} workers)", "-", "-", "-", "-", "-", mpi)
    else:
        startup_s, search_s, n, digest = mpi
        rate = n / search_s
        same = digest == reference
        table.add_row(f"MPI ({MPI_RANKS - 1} workers)", f"{n:,}", f"{startup_s:.2f} s", f"{search_s:.2f} s",
                      f"{rate:,.0f}", f"{rate / base:.2f}x", "yes" if same else "NO")
    Console().print(table)


if __name__ == "__main__":
    if sys.argv[1:] == ["--mpi"]:
        _mpi_child()
    else:
        main()
