"""Fan a search out over a ``concurrent.futures`` executor, in chunks.

One function, ``map_chunked(fn, shared, tasks, executor=...)``, runs ``fn(shared, task)`` for every task and
returns the results in task order, whatever executor ran them, so a search gives the same records in one
process, on local worker processes, on MPI ranks or on a Dask cluster:

- ``executor=None``: in this process (no pickling, no start-up);
- ``make_executor("local", workers=N)``: a ``ProcessPoolExecutor`` of N processes;
- ``make_executor("mpi")``: ``mpi4py.futures.MPIPoolExecutor``. Start the job as
  ``mpiexec -n 4 python -m mpi4py.futures -m firesim sweep ... --executor mpi`` (or under ``srun``): rank 0
  runs the command, the other ranks are its workers. Outside such a launch it spawns ``--workers`` ranks
  (``MPI_Comm_spawn``), where the MPI library allows it;
- any other ``concurrent.futures.Executor`` from Python, e.g. ``distributed.Client(...).get_executor()``.

Tasks travel in chunks, with ``shared`` (profiles, clusters, settings) pickled once per chunk, so the
per-task cost of an executor (a few hundred microseconds for a process pool, more for MPI) is spread over
many configurations; chunks are small enough that every worker gets several and the progress bar moves.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, TypeVar

from firesim.errors import UserError

__all__ = ["EXECUTORS", "chunk_size", "executor_workers", "make_executor", "map_chunked"]

EXECUTORS = ("local", "mpi")
T = TypeVar("T")
R = TypeVar("R")

# A chunk of fewer tasks than this spends more on pickling and scheduling than on work (~0.3 ms per
# closed-form configuration, ~1 ms of overhead per chunk on a process pool).
MIN_CHUNK = 32
MAX_CHUNK = 4096
CHUNKS_PER_WORKER = 8


def executor_workers(executor: Executor | None) -> int:
    """How many tasks ``executor`` runs at once (1 for None; a guess of the CPU count if it does not say)."""
    if executor is None:
        return 1
    for attr in ("num_workers", "_max_workers"):
        value = getattr(executor, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return os.cpu_count() or 1


def chunk_size(tasks: int, workers: int) -> int:
    """Tasks per chunk: about ``CHUNKS_PER_WORKER`` chunks per worker, within [MIN_CHUNK, MAX_CHUNK]."""
    if tasks <= 0:
        return 1
    return max(1, min(tasks, MAX_CHUNK, max(MIN_CHUNK, math.ceil(tasks / (workers * CHUNKS_PER_WORKER)))))


def _run_chunk(fn: Callable[[Any, T], R], shared: Any, tasks: Sequence[T]) -> list[R]:
    return [fn(shared, task) for task in tasks]


def map_chunked(fn: Callable[[Any, T], R], shared: Any, tasks: Sequence[T], *, executor: Executor | None = None,
                chunksize: int | None = None, progress: Callable[[int], None] | None = None) -> list[R]:
    """``[fn(shared, t) for t in tasks]``, run by ``executor`` in chunks, results in task order.

    ``fn`` must be a module-level function (it is pickled by name) and deterministic, so that any executor
    gives the same list. ``progress(n)`` is called as each chunk of ``n`` tasks completes.
    """
    tasks = list(tasks)
    size = chunksize or chunk_size(len(tasks), executor_workers(executor))
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    results: list[list[R] | None] = [None] * len(chunks)
    if executor is None:
        for i, chunk in enumerate(chunks):
            results[i] = _run_chunk(fn, shared, chunk)
            if progress:
                progress(len(chunk))
    else:
        futures = {executor.submit(_run_chunk, fn, shared, chunk): i for i, chunk in enumerate(chunks)}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if progress:
                    progress(len(chunks[i]))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [r for chunk in results for r in chunk]  # type: ignore[union-attr]


@contextmanager
def make_executor(kind: str = "local", workers: int | None = None) -> Iterator[Executor | None]:
    """The executor a command asked for, shut down on exit. local with 1 worker (the default): None, i.e.
    this process. mpi: an ``MPIPoolExecutor`` (see the module doc); ``workers`` caps the ranks it uses."""
    if kind not in EXECUTORS:
        raise UserError(f"executor: must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if workers is not None and workers < 1:
        raise UserError(f"workers: must be >= 1, got {workers}")
    if kind == "local":
        if (workers or 1) == 1:
            yield None
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            yield pool
        return
    with _mpi_pool(workers) as pool:
        yield pool


LAUNCH_HINT = "mpiexec -n 4 python -m mpi4py.futures -m firesim ... --executor mpi"


@contextmanager
def _mpi_pool(workers: int | None) -> Iterator[Executor]:
    """An MPIPoolExecutor over the ranks of an ``mpi4py.futures`` launch, or spawned ones (see the module
    doc). Refuses the launches that would run the command on every rank or hang in a spawn."""
    try:
        from mpi4py import MPI
        from mpi4py.futures import MPIPoolExecutor, _core
    except ImportError as err:
        raise UserError(f"executor mpi: mpi4py is not usable here ({err}); pip install mpi4py mpich") from None
    world = MPI.COMM_WORLD.Get_size()
    if world > 1 and getattr(_core, "SharedPool", None) is None:
        raise UserError(f"executor mpi: all {world} ranks are running this command; start it as `{LAUNCH_HINT}`")
    if world == 1 and shutil.which("mpiexec") is None:
        raise UserError(f"executor mpi: not started under MPI and no mpiexec on PATH to spawn workers; "
                        f"start it as `{LAUNCH_HINT}`")
    with MPIPoolExecutor(max_workers=workers) as pool:
        yield pool
