"""Join the job this process was launched into and hand back an Executor; tear down cleanly afterwards.

Rank and world come from ``firerun.env.dist_env`` (torchrun, Slurm, MPICH/PMI, Open MPI). The torch backend
rendezvouses at MASTER_ADDR:MASTER_PORT with a bounded timeout; the MPI backend uses MPI.COMM_WORLD and
checks that it agrees with the launcher's variables (a process started without an MPI launcher is a
singleton world of one, which would silently run every rank alone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from typing import Literal

import torch

from firerun.env import DistEnv, dist_env
from firerun.execute import Executor, Fault
from firesim.errors import UserError


def _threads_per_rank(env: DistEnv) -> int:
    """Ranks sharing a host share its cores: give each its part, so torch's adds do not oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, env.local_world_size))


@contextlib.contextmanager
def session(backend: Literal["torch", "mpi"] = "torch", *, device: str = "cpu", timeout_s: float = 60.0,
            environ=None) -> Iterator[Executor]:
    """``with session('torch') as ex:`` -> an Executor over the whole job; the process group is destroyed after."""
    env = dist_env(environ)
    if device not in ("cpu", "cuda"):
        raise UserError(f"device: must be cpu or cuda, got {device!r}")
    if device == "cuda" and backend == "mpi":
        raise UserError("device: cuda needs --backend torch (NCCL); the MPI backend moves host buffers")
    if device == "cpu":
        torch.set_num_threads(_threads_per_rank(env))
    fault = Fault.from_env(environ)
    if backend == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if env.launched and comm.Get_size() != env.world_size:
            raise UserError(f"backend mpi: MPI sees {comm.Get_size()} rank(s) but the launcher ({env.source}) "
                            f"started {env.world_size}; launch with mpiexec (firerun run --launcher mpiexec)")
        ex = Executor("mpi", comm=comm, timeout_s=timeout_s, fault=fault)
        try:
            yield ex
        finally:
            ex.close()
        return
    if backend != "torch":
        raise UserError(f"backend: must be torch or mpi, got {backend!r}")
    import torch.distributed as dist

    kind = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device: cuda requested but torch sees no GPU")
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    timeout = dt.timedelta(seconds=timeout_s)
    if env.world_size == 1:
        dist.init_process_group(kind, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        if not env.master_addr or env.master_port is None:
            raise UserError(f"MASTER_ADDR/MASTER_PORT: not set for a {env.world_size}-rank torch job "
                            f"({env.source}); launch with `firerun run` or torchrun, or export them")
        dist.init_process_group(kind, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                                rank=env.rank, world_size=env.world_size, timeout=timeout)
    ex = Executor("torch", timeout_s=timeout_s, fault=fault)
    ok = False
    try:
        yield ex
        ok = True
    finally:
        ex.close()
        if ok:  # after a failure peers may be gone: tearing down could block on them, so the caller exits
            dist.destroy_process_group()
