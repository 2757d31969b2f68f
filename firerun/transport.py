"""Point-to-point transports the executor drives: torch.distributed (gloo, NCCL) and mpi4py buffer calls.

A transport posts non-blocking sends and receives identified by a key (the executor's op index) and reports
completions as ``(key, perf_counter seconds, error or None)``. How completion is observed differs:

* gloo: ``Work.is_completed()`` stays False until someone calls ``wait()`` and gloo's send/recv works have no
  future, so one waiter thread per (peer, direction) calls ``wait`` on that peer's transfers in order. Transfers
  between an ordered pair complete first-in first-out, so waiting in that order never delays an observation
  by more than the transfer ahead of it, and the thread releases the GIL while it waits.
* NCCL: one communicator (hence one CUDA stream) per *ordered* pair of ranks, so a send to B never queues
  behind a receive from B: NCCL ops on one stream block each other, while the plan IR lets the two
  directions proceed independently. Completion is polled with ``is_completed()`` (a CUDA event query).
  Not tested on GPUs yet (no multi-GPU machine was available).
* MPI: ``Isend``/``Irecv`` on buffers (never the pickle-based lowercase calls) on a duplicate of the
  communicator, so the plan's messages cannot match the caller's; completion is polled with ``Testsome``,
  which also drives MPICH's progress engine.

Every blocking call here takes a deadline: nothing waits forever.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from firesim.errors import UserError

Completion = tuple[int, float, BaseException | None]

# Plan messages use tags 0 .. DATA_TAGS-1 (a per-pair sequence number); control messages (clock sync, gathers,
# barriers) use tags above it, so a protocol slip hangs and times out instead of mixing data and control.
DATA_TAGS = 1 << 27
CONTROL_TAG = DATA_TAGS + 1


class TransportError(RuntimeError):
    """A backend call failed or timed out. ``timed_out`` separates a silent peer from a broken connection."""

    def __init__(self, reason: str, *, timed_out: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def short_reason(err: BaseException) -> str:
    """The useful first sentence of a backend error (gloo prefixes a source path and appends advice)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ")[0].rstrip(".")


def is_timeout(err: BaseException) -> bool:
    if isinstance(err, TransportError):
        return err.timed_out
    text = str(err).lower()
    return "timed out" in text or "timeout" in text  # gloo: "Application timeout caused pair closure"


class _Waiter(threading.Thread):
    """Calls ``wait`` on one peer's transfers in one direction, in the order they were posted, and hands each
    completion to the transport's handler (which runs the executor's bookkeeping in this thread)."""

    def __init__(self, transport: TorchTransport, timeout_s: float, name: str):
        super().__init__(name=name, daemon=True)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.transport = transport
        self.timeout = dt.timedelta(seconds=timeout_s)

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is None:
                return
            key, work = item
            try:
                work.wait(self.timeout)
            except BaseException as err:  # the handler turns it into an ExecError for the main thread
                self.transport._deliver(key, time.perf_counter(), err)
                return  # the pair is broken; later transfers on it cannot complete
            self.transport._deliver(key, time.perf_counter(), None)


class TorchTransport:
    """torch.distributed point-to-point on a process group: gloo (CPU tensors) or NCCL (CUDA tensors)."""

    def __init__(self, group=None, *, timeout_s: float = 60.0):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise UserError("backend torch: torch.distributed is not initialised (call init_process_group, or "
                            "use firerun.worker.session)")
        self.dist = dist
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.size = dist.get_world_size(self.group)
        self.backend = str(dist.get_backend(self.group)).lower()
        self.name = f"torch-{self.backend}"
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")
        self.timeout_s = float(timeout_s)
        self._polled = self.backend == "nccl"
        self.pushes = not self._polled  # gloo: completions arrive through set_handler's callback
        self._handler: Callable[[int, float, BaseException | None], None] | None = None
        self._waiters: dict[tuple[int, str], _Waiter] = {}
        self._outstanding: list[tuple[int, Any]] = []  # NCCL: (key, work) polled with is_completed
        self._pair_groups: dict[tuple[int, int], Any] = {}
        self._count = 0
        self.waiting_on: int | None = None  # the peer a blocking control call waits for now (for the watcher)

    # ---- data path ---------------------------------------------------------------------------------------
    def prepare(self, pairs: list[tuple[int, int]]) -> None:
        """NCCL: create one communicator per ordered pair (src, dst) the plan uses. Every rank calls this with
        the same sorted list (the plan is global), so the groups are created in the same order everywhere."""
        if not self._polled:
            return
        if self.group is not self.dist.group.WORLD:
            raise RuntimeError("NCCL plans run on the default (world) group only: every rank must create "
                               "the per-pair communicators together")
        for src, dst in pairs:
            if (src, dst) in self._pair_groups:
                continue
            # Every rank calls new_group for every pair, in the same order (torch's rule for new_group without
            # local synchronisation): hashed names would give (a, b) and (b, a) the same communicator.
            group = self.dist.new_group([src, dst])
            if self.rank in (src, dst):
                self._pair_groups[(src, dst)] = group
            else:
                self._pair_groups[(src, dst)] = None

    def _target(self, src: int, dst: int, peer: int) -> tuple[Any, int]:
        """The group and the peer's rank in it for a transfer src -> dst."""
        if not self._polled:
            return self.group, peer
        group = self._pair_groups.get((src, dst))
        if group is None:
            raise RuntimeError(f"no communicator for {src}->{dst}: call prepare() with the plan's pairs first")
        return group, 1 if peer == max(src, dst) else 0

    def _track(self, key: int, work, peer: int, direction: str) -> None:
        if self._polled:
            self._count += 1
            self._outstanding.append((key, work))
            return
        waiter = self._waiters.get((peer, direction))
        if waiter is None or not waiter.is_alive():
            waiter = _Waiter(self, self.timeout_s, f"firerun-{direction}-{peer}")
            waiter.start()
            self._waiters[(peer, direction)] = waiter
        waiter.inbox.put((key, work))

    def isend(self, key: int, tensor: torch.Tensor, peer: int, tag: int) -> None:
        group, group_peer = self._target(self.rank, peer, peer)
        # ProcessGroup.send is what dist.isend calls after its argument checks (~10 us of Python per op here);
        # the executor has already checked every argument once, when it lowered the plan.
        work = group.send([tensor], group_peer, tag)
        self._track(key, work, peer, "send")

    def irecv(self, key: int, tensor: torch.Tensor, peer: int, tag: int) -> None:
        group, group_peer = self._target(peer, self.rank, peer)
        work = group.recv([tensor], group_peer, tag)
        self._track(key, work, peer, "recv")

    def set_handler(self, handler: Callable[[int, float, BaseException | None], None] | None) -> None:
        """gloo: ``handler(key, seconds, error)`` is called from a waiter thread for every completion."""
        self._handler = handler

    def _deliver(self, key: int, t: float, err: BaseException | None) -> None:
        handler = self._handler
        if handler is not None:
            handler(key, t, err)

    def outstanding(self) -> int:
        """NCCL: transfers posted and not yet seen complete (gloo reports through the handler instead)."""
        return self._count

    def poll(self) -> list[Completion]:
        """NCCL: completions seen so far, without blocking."""
        return self._poll_nccl()

    def wait_some(self, deadline: float) -> list[Completion]:
        """NCCL: at least one completion, or [] once ``deadline`` (perf_counter seconds) has passed."""
        while True:
            out = self._poll_nccl()
            if out or time.perf_counter() >= deadline:
                return out
            time.sleep(0)

    def _poll_nccl(self) -> list[Completion]:
        out, keep = [], []
        for key, work in self._outstanding:
            try:
                if work.is_completed():
                    out.append((key, time.perf_counter(), None))
                else:
                    keep.append((key, work))
            except BaseException as err:
                out.append((key, time.perf_counter(), err))
        self._outstanding = keep
        self._count -= len(out)
        return out

    # ---- control path (small blocking messages, outside plan runs) ----------------------------------------
    def _as_tensor(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(arr)
        return t.to(self.device) if self.device.type != "cpu" else t

    def sendrecv(self, send: np.ndarray | None, dst: int | None, recv: np.ndarray | None, src: int | None,
                 timeout_s: float) -> None:
        """Send ``send`` to ``dst`` and receive into ``recv`` from ``src`` (either may be None), both bounded."""
        timeout = dt.timedelta(seconds=timeout_s)
        works = []
        recv_t = None
        try:
            if recv is not None:
                recv_t = self._as_tensor(np.empty_like(recv)) if self.device.type != "cpu" else torch.from_numpy(recv)
                works.append((src, self.dist.irecv(recv_t, group=self.group, group_src=src, tag=CONTROL_TAG)))
            if send is not None:
                works.append((dst, self.dist.isend(self._as_tensor(np.ascontiguousarray(send)), group=self.group,
                                                   group_dst=dst, tag=CONTROL_TAG)))
            for peer, work in works:
                self.waiting_on = peer
                try:
                    work.wait(timeout)
                except BaseException as err:
                    raise PeerFailure(peer, err) from None
        except PeerFailure:
            raise
        except BaseException as err:
            raise PeerFailure(src if src is not None else dst, err) from None
        finally:
            self.waiting_on = None
        if recv is not None and self.device.type != "cpu":
            recv[...] = recv_t.cpu().numpy()

    def allreduce_builtin(self, tensor: torch.Tensor, timeout_s: float) -> None:
        """The backend's own all_reduce (gloo: a TCP ring; NCCL: ring/tree), in place, bounded in time."""
        work = self.dist.all_reduce(tensor, group=self.group, async_op=True)
        try:
            work.wait(dt.timedelta(seconds=timeout_s))
        except BaseException as err:
            raise TransportError(f"built-in all_reduce: {short_reason(err)}", timed_out=is_timeout(err)) from None

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        for waiter in self._waiters.values():
            waiter.inbox.put(None)
        for waiter in self._waiters.values():
            waiter.join(timeout=self.timeout_s)  # idle waiters exit at once; busy ones are bounded by their wait
        self._waiters.clear()


class PeerFailure(RuntimeError):
    """A control message to or from ``peer`` failed or timed out."""

    def __init__(self, peer: int | None, err: BaseException):
        super().__init__(short_reason(err))
        self.peer = peer
        self.timed_out = is_timeout(err)


# ------------------------------------------------------------------------------------------------ MPI
def _mpi_types():
    from mpi4py import MPI

    return {torch.float32: MPI.FLOAT, torch.float64: MPI.DOUBLE, torch.float16: MPI.UINT16_T,
            torch.bfloat16: MPI.UINT16_T, torch.int32: MPI.INT32_T, torch.int64: MPI.INT64_T}


_NUMPY_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16}


def mpi_buffer(t: torch.Tensor, types: dict) -> list:
    """A torch CPU tensor as an mpi4py buffer spec, sharing memory. Two-byte floats travel as a 2-byte
    integer type: MPI only moves them, the executor adds them with torch."""
    view = t.view(_NUMPY_VIEW[t.dtype]) if t.dtype in _NUMPY_VIEW else t
    return [view.numpy(), types[t.dtype]]


class MpiTransport:
    """mpi4py ``Isend``/``Irecv`` on a duplicate of ``comm`` (MPI.COMM_WORLD by default), polled with Testsome."""

    def __init__(self, comm=None, *, timeout_s: float = 60.0):
        from mpi4py import MPI

        self.MPI = MPI
        base = comm if comm is not None else MPI.COMM_WORLD
        self.comm = base.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.backend = "mpi"
        self.name = "mpi"
        self.pushes = False
        self.device = torch.device("cpu")
        self.timeout_s = float(timeout_s)
        self._types = _mpi_types()
        self._requests: list = []
        self._keys: list[int] = []
        self._ops: dict[torch.dtype, Any] = {}
        self.waiting_on: int | None = None  # the peer a blocking control call waits for now (for the watcher)

    def prepare(self, pairs: list[tuple[int, int]]) -> None:
        return None

    def isend(self, key: int, tensor: torch.Tensor, peer: int, tag: int) -> None:
        self._requests.append(self.comm.Isend(mpi_buffer(tensor, self._types), peer, tag))
        self._keys.append(key)

    def irecv(self, key: int, tensor: torch.Tensor, peer: int, tag: int) -> None:
        self._requests.append(self.comm.Irecv(mpi_buffer(tensor, self._types), peer, tag))
        self._keys.append(key)

    def outstanding(self) -> int:
        return len(self._requests)

    def poll(self) -> list[Completion]:
        if not self._requests:
            return []
        try:
            done = self.MPI.Request.Testsome(self._requests)
        except self.MPI.Exception as err:
            return [(self._keys[0], time.perf_counter(), err)]
        if not done:
            return []
        now = time.perf_counter()
        finished = set(done)
        out = [(self._keys[i], now, None) for i in sorted(done)]
        self._requests = [r for i, r in enumerate(self._requests) if i not in finished]
        self._keys = [k for i, k in enumerate(self._keys) if i not in finished]
        return out

    def wait_some(self, deadline: float) -> list[Completion]:
        spins = 0
        while True:
            out = self.poll()
            if out or time.perf_counter() >= deadline:
                return out
            spins += 1
            if spins > 64:  # oversubscribed hosts: let the peer we are waiting for run
                os.sched_yield()

    def _wait_requests(self, requests: list, peers: list[int], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        spins = 0
        self.waiting_on = peers[0]
        while True:
            try:
                if self.MPI.Request.Testall(requests):
                    self.waiting_on = None
                    return
            except self.MPI.Exception as err:
                raise PeerFailure(peers[0], err) from None
            if time.perf_counter() >= deadline:
                pending = [p for p, r in zip(peers, requests) if r != self.MPI.REQUEST_NULL]
                for r in requests:
                    if r != self.MPI.REQUEST_NULL:
                        r.Cancel()
                raise PeerFailure(pending[0] if pending else peers[0],
                                  TransportError(f"timed out after {timeout_s:.1f} s", timed_out=True))
            spins += 1
            if spins > 64:  # control messages are not latency-critical: back off to sleeping, so an idle
                time.sleep(min(1e-3, 1e-6 * (spins - 64)))  # rank does not steal a core from busy ones

    def sendrecv(self, send: np.ndarray | None, dst: int | None, recv: np.ndarray | None, src: int | None,
                 timeout_s: float) -> None:
        requests, peers = [], []
        if recv is not None:
            requests.append(self.comm.Irecv(recv, src, CONTROL_TAG))
            peers.append(src)
        if send is not None:
            requests.append(self.comm.Isend(np.ascontiguousarray(send), dst, CONTROL_TAG))
            peers.append(dst)
        self._wait_requests(requests, peers, timeout_s)

    def _sum_op(self, dtype: torch.dtype):
        """MPI_SUM for float32/64; a user-defined sum (torch add) for the 2-byte floats MPI does not know."""
        if dtype not in _NUMPY_VIEW:
            return self.MPI.SUM
        if dtype not in self._ops:
            def add(inbuf, inoutbuf, datatype, dtype=dtype):
                a = torch.frombuffer(inbuf, dtype=dtype)
                b = torch.frombuffer(inoutbuf, dtype=dtype)
                b.add_(a)

            self._ops[dtype] = self.MPI.Op.Create(add, commute=True)
        return self._ops[dtype]

    def allreduce_builtin(self, tensor: torch.Tensor, timeout_s: float) -> None:
        """MPI_Allreduce in place. A blocking MPI call cannot be interrupted, so a watchdog bounds it."""
        buf = mpi_buffer(tensor, self._types)
        op = self._sum_op(tensor.dtype)
        with Watchdog(timeout_s, f"rank {self.rank}: timed out after {timeout_s:.1f} s in MPI_Allreduce",
                      abort=lambda: self.comm.Abort(3)):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=op)

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        for op in self._ops.values():
            op.Free()
        self._ops.clear()
        if self.comm != self.MPI.COMM_NULL:
            self.comm.Free()


class Watchdog:
    """Bound a call that has no timeout of its own: after ``timeout_s`` print ``message`` and end the job.

    Used only around blocking library collectives (MPI_Allreduce); everything the executor does itself is
    non-blocking and checks its own deadlines.
    """

    def __init__(self, timeout_s: float, message: str, abort: Callable[[], None] | None = None):
        self.timeout_s, self.message, self.abort = timeout_s, message, abort
        self._timer: threading.Timer | None = None

    def _fire(self) -> None:
        import sys

        sys.stderr.write(self.message + "\n")
        sys.stderr.flush()
        try:
            if self.abort is not None:
                self.abort()
        finally:
            os._exit(3)

    def __enter__(self) -> Watchdog:
        self._timer = threading.Timer(self.timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
