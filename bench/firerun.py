"""firerun on 4 local ranks: plans beside the backends' own all-reduce, and the interpreter's cost per op.

Ratios are measured side by side in one job per backend (the algorithms interleave round by round, see
firerun.bench), never against numbers from another run. Target: the ring plan at >= 0.9x gloo's built-in
all_reduce at 16 and 64 MiB (gloo's is also a ring). Everything printed is measured here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RANKS = 4
SIZES = "16MiB,64MiB"
ALGOS = "ring,tree,ps"
TARGET_RING_VS_BUILTIN = 0.9


def _firerun(*args: str) -> None:
    cmd = [sys.executable, "-m", "firerun", *args]
    print("$ firerun " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, timeout=900)


def _bench(backend: str, out: Path) -> list[dict]:
    launch = ["run", "--nproc", str(RANKS)] + (["--launcher", "mpiexec"] if backend == "mpi" else [])
    _firerun(*launch, "bench", "--backend", backend, "--sizes", SIZES, "--algo", ALGOS, "--iters", "5",
             "--warmup", "2", "--reps", "3", "--timeout-s", "120", "--json", str(out))
    return json.loads(out.read_text())["records"]


def _overhead(backend: str, out: Path) -> dict:
    launch = ["run", "--nproc", str(RANKS)] + (["--launcher", "mpiexec"] if backend == "mpi" else [])
    _firerun(*launch, "overhead", "--backend", backend, "--size", "1KiB", "--round-trips", "100", "--reps", "5",
             "--json", str(out))
    return json.loads(out.read_text())


def main() -> None:
    print(f"machine: {os.cpu_count()} cores, {RANKS} ranks on loopback", flush=True)
    with tempfile.TemporaryDirectory(prefix="firerun-bench-") as tmp:
        folder = Path(tmp)
        results = {backend: _bench(backend, folder / f"{backend}.json") for backend in ("torch", "mpi")}
        overheads = {backend: _overhead(backend, folder / f"{backend}-overhead.json") for backend in ("torch", "mpi")}
    print("\nsummary (time per all-reduce; ratio = built-in time / plan time, > 1 is faster than the built-in)")
    for backend, records in results.items():
        builtin = "gloo all_reduce" if backend == "torch" else "MPI_Allreduce"
        for r in records:
            if r["algo"] == "builtin":
                print(f"  {backend:5} {r['size_bytes'] >> 20:3d} MiB  {builtin:15}  {r['time_us'] / 1e3:8.1f} ms  "
                      f"busbw {r['busbw_GBps']:.3f} GB/s")
                continue
            note = ""
            if backend == "torch" and r["algo"] == "ring":
                note = "  (target >= 0.9: " + ("met" if r["vs_builtin"] >= TARGET_RING_VS_BUILTIN else "MISSED") + ")"
            print(f"  {backend:5} {r['size_bytes'] >> 20:3d} MiB  {r['algo'] + ' plan':15}  {r['time_us'] / 1e3:8.1f} ms  "
                  f"busbw {r['busbw_GBps']:.3f} GB/s  ratio {r['vs_builtin']:.2f}  #wrong {r['wrong']}{note}")
    for backend, o in overheads.items():
        print(f"  {backend:5} 1 KiB ping-pong: raw {o['raw_one_way_us']:.1f} us, plan {o['plan_one_way_us']:.1f} us "
              f"one-way -> interpreter overhead {o['per_op_us']:.1f} us per op")
