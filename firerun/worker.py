"""Join the job this process was launched into and hand back an Executor; tear down cleanly afterwards.

Rank and world come from ``firerun.env.dist_env`` (torchrun, Slurm, MPICH/PMI, Open MPI). Where MASTER_ADDR
and MASTER_PORT are set, the ranks meet at the job's TCPStore (``firerun.liveness``: claimed by this run's id,
bound to loopback for local runs), which carries the process group's rendezvous and the fault board that
names the rank at fault when one dies or hangs. The torch backend needs it; the MPI backend uses it when
there (``firerun run --launcher mpiexec`` sets it), MPI.COMM_WORLD otherwise, and checks that MPI agrees with
the launcher's variables (a process started without an MPI launcher is a singleton world of one, which
would silently run every rank alone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Literal

import torch

from firerun.env import DistEnv, dist_env
from firerun.errors import ExecError
from firerun.executor import Executor, Fault
from firerun.liveness import FaultBoard, connect
from firerun.transport import is_timeout, short_reason
from firesim.errors import UserError


def _threads_per_rank(env: DistEnv) -> int:
    """Ranks sharing a host share its cores: give each its part, so torch's adds do not oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, env.local_world_size))


@contextlib.contextmanager
def session(backend: Literal["torch", "mpi"] = "torch", *, device: str = "cpu", timeout_s: float = 60.0,
            environ=None) -> Iterator[Executor]:
    """``with session('torch') as ex:`` -> an Executor over the whole job; the process group is destroyed after.

    Raises UserError for a bad setting or a MASTER_PORT taken by another job, ExecError when the job cannot
    assemble (a rank never joins) or, later, when a rank is lost or hangs.
    """
    env = dist_env(environ)
    if device not in ("cpu", "cuda"):
        raise UserError(f"device: must be cpu or cuda, got {device!r}")
    if device == "cuda" and backend == "mpi":
        raise UserError("device: cuda needs --backend torch (NCCL); the MPI backend moves host buffers")
    if device == "cpu":
        torch.set_num_threads(_threads_per_rank(env))
    fault = Fault.from_env(environ)
    if backend not in ("torch", "mpi"):
        raise UserError(f"backend: must be torch or mpi, got {backend!r}")
    if backend == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if env.launched and comm.Get_size() != env.world_size:
            raise UserError(f"backend mpi: MPI sees {comm.Get_size()} rank(s) but the launcher ({env.source}) "
                            f"started {env.world_size}; launch with mpiexec (firerun run --launcher mpiexec)")
        joinable = env.world_size > 1 and env.master_addr and env.master_port is not None
        board = _board(env, timeout_s, environ) if joinable else None
        ex = Executor("mpi", comm=comm, timeout_s=timeout_s, fault=fault, board=board)
        with _running(ex, board, lambda: None):
            yield ex
        return
    import torch.distributed as dist

    kind = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device: cuda requested but torch sees no GPU")
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    timeout = dt.timedelta(seconds=timeout_s)
    board = None
    if env.world_size == 1:
        dist.init_process_group(kind, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        if not env.master_addr or env.master_port is None:
            raise UserError(f"MASTER_ADDR/MASTER_PORT: not set for a {env.world_size}-rank torch job "
                            f"({env.source}); launch with `firerun run` or torchrun, or export them")
        board = _board(env, timeout_s, environ)
        try:
            dist.init_process_group(kind, store=board.rv.store, rank=env.rank, world_size=env.world_size,
                                    timeout=timeout)
        except Exception as err:
            why = board.absentees() or short_reason(err)
            kind_ = f"timed out after {timeout_s:g} s" if is_timeout(err) else "failed"
            raise ExecError(f"rank {env.rank}: the rendezvous at {board.rv.address} {kind_}: {why}",
                            rank=env.rank, timed_out=is_timeout(err)) from None
    ex = Executor("torch", timeout_s=timeout_s, fault=fault, board=board)
    with _running(ex, board, dist.destroy_process_group):
        yield ex


@contextlib.contextmanager
def _running(ex: Executor, board: FaultBoard | None, teardown: Callable[[], None]) -> Iterator[Executor]:
    """On success: leave the board (with everyone), then tear down. After a lost peer: nothing (peers may be
    gone, tearing down could block on them; the caller exits). After any other error: leave the board
    without waiting, so that a peer's exit is not taken for a fault."""
    ok = False
    try:
        yield ex
        ok = True
    except ExecError:
        raise
    except BaseException:
        if board is not None:
            board.close(wait=False)
        raise
    finally:
        ex.close()
        if ok:
            if board is not None:
                board.close()
            teardown()


def _board(env: DistEnv, timeout_s: float, environ) -> FaultBoard:
    """Meet the job at its TCPStore (see firerun.liveness) and open its fault board."""
    assert env.master_addr is not None and env.master_port is not None
    rv = connect(env.rank, env.world_size, env.master_addr, env.master_port, timeout_s, environ=environ)
    return FaultBoard(rv, env.rank, env.world_size, timeout_s)
