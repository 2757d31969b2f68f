"""A DistributedDataParallel communication hook that exchanges each gradient bucket with a plan.

DDP keeps doing what it does: buckets of gradients (``bucket_cap_mb_list=[first, size]``, filled in the
order backward produces them after the first step), the hook called as soon as backward has filled a
bucket, the optimizer step after every bucket's future has completed. The hook only decides *how* a bucket
is exchanged: it divides the bucket by the number of workers (as DDP's ``allreduce_hook`` does, before the
sum so nothing overflows) and hands it to one communication thread, which runs the registry plan with
``firerun.executor.Executor`` (or the backend's own all-reduce for ``builtin``) and completes the
``torch.futures.Future`` it returned. Buckets go through the thread one after another, as on one NCCL
stream, while autograd goes on computing the next ones: the overlap with backward is DDP's own.

On a GPU the hook records a CUDA event on the stream that produced the gradients and the thread makes its
own stream wait for it before the plan reads the bucket; it synchronises its stream before completing the
future, so DDP reads finished sums. (This path is written to torch's contract but has not run on a GPU.)

Plans with dedicated parameter servers (``ps:...,colocated=false``) have ranks that hold no model: DDP runs
on the workers' group only, and worker 0 tells each server the size of the next bucket (one 8-byte control
message) before the plan runs, since DDP decides the buckets at run time; ``serve_step`` is the servers'
side. Every rank records when each bucket was ready and when its exchange ran, for the iteration trace.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from firerun.bench import BUILTIN
from firerun.executor import Executor
from firerun.transport import PeerFailure
from firesim.plans import Op, Plan, resolve

END_OF_STEP = -1.0


@dataclass
class BucketEvent:
    """One bucket exchange on one rank: perf_counter seconds."""

    step: int
    index: int
    nbytes: int
    ready_s: float  # the hook was called: backward has produced the bucket
    start_s: float  # the communication thread started exchanging it
    end_s: float  # the sum is in the bucket, divided by the workers


def plan_pairs(plan: Plan) -> list[tuple[int, int]]:
    """Every ordered (src, dst) pair the plan sends over (NCCL creates a communicator per pair up front)."""
    sends = plan.op == Op.SEND
    return sorted({(int(a), int(b)) for a, b in zip(plan.op_rank()[sends], plan.peer[sends])})


class PlanHook:
    """State of the hook (``ddp.register_comm_hook(state, plan_hook)``): the executor, one plan per bucket
    size, the communication thread, and what it measured. ``algo`` is a registry spec or 'builtin'."""

    def __init__(self, ex: Executor, algo: str):
        self.ex = ex
        self.algo = algo
        self.builtin = algo == BUILTIN
        self.choice = None if self.builtin else resolve(algo)
        self.workers = ex.size if self.builtin else self.choice.workers(ex.size)
        if not self.builtin:
            self.choice = self.choice.check(self.workers)
        self.servers = list(range(self.workers, ex.size))
        self._plans: dict[int, Plan] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="firerun-comm")
        self._stream = torch.cuda.Stream(ex.device) if ex.device.type == "cuda" else None
        self._lock = threading.Lock()
        self.events: list[BucketEvent] = []
        self.error: BaseException | None = None
        self.step = 0
        if not self.builtin and ex.device.type == "cuda":
            ex.transport.prepare(plan_pairs(self.plan(4 * self.workers)))  # every rank, main thread, same order

    @property
    def is_worker(self) -> bool:
        return self.ex.rank < self.workers

    def plan(self, nbytes: int) -> Plan:
        plan = self._plans.get(nbytes)
        if plan is None:
            plan = self._plans[nbytes] = self.choice.build(self.workers, nbytes)
        return plan

    def exchange(self, bucket: dist.GradBucket) -> torch.futures.Future:
        ready = time.perf_counter()
        buf = bucket.buffer()
        fut: torch.futures.Future = torch.futures.Future()
        if self.error is not None:  # an earlier bucket failed: fail fast, the caller raises self.error
            fut.set_exception(self.error)
            return fut
        produced = None
        if self._stream is not None:
            produced = torch.cuda.Event()
            produced.record()
        self._pool.submit(self._run, self.step, bucket.index(), buf, ready, produced, fut)
        return fut

    def _run(self, step: int, index: int, buf: torch.Tensor, ready: float, produced, fut) -> None:
        try:
            start = time.perf_counter()
            nbytes = buf.numel() * buf.element_size()
            if self._stream is not None:
                with torch.cuda.stream(self._stream):
                    self._stream.wait_event(produced)
                    self._reduce(buf, nbytes)
                    self._stream.synchronize()
            else:
                self._reduce(buf, nbytes)
            with self._lock:
                self.events.append(BucketEvent(step, index, nbytes, ready, start, time.perf_counter()))
            fut.set_result(buf)
        except BaseException as err:  # handed to DDP through the future, kept for the caller
            self.error = err
            fut.set_exception(err)

    def _reduce(self, buf: torch.Tensor, nbytes: int) -> None:
        buf.div_(self.workers)
        if self.builtin:
            self.ex.allreduce_builtin(buf)
            return
        if self.ex.rank == 0:
            for server in self.servers:
                self._tell(server, float(nbytes))
        self.ex.run(self.plan(nbytes), buf, trace=False)

    def _tell(self, server: int, value: float) -> None:
        try:
            self.ex.transport.sendrecv(np.array([value]), server, None, None, self.ex.timeout_s)
        except PeerFailure as err:
            raise self.ex._control_error("telling a parameter server the bucket size", err) from None

    def end_step(self) -> None:
        """Worker 0, after the optimizer step: tell the dedicated servers this step has no more buckets."""
        if self.ex.rank == 0:
            for server in self.servers:
                self._tell(server, END_OF_STEP)
        self.step += 1

    def serve_step(self, dtype: torch.dtype = torch.float32) -> None:
        """A dedicated server's side of one step: run the plan for every bucket worker 0 announces."""
        header = np.zeros(1)
        index = 0
        while True:
            try:
                self.ex.transport.sendrecv(None, None, header, 0, self.ex.timeout_s)
            except PeerFailure as err:
                raise self.ex._control_error("waiting for the next bucket from rank 0", err) from None
            if header[0] == END_OF_STEP:
                break
            nbytes = int(header[0])
            start = time.perf_counter()
            self.ex.run(self.plan(nbytes), None, trace=False, dtype=dtype)
            self.events.append(BucketEvent(self.step, index, nbytes, start, start, time.perf_counter()))
            index += 1
        self.step += 1

    def take_events(self) -> list[BucketEvent]:
        with self._lock:
            out, self.events = self.events, []
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def plan_hook(state: PlanHook, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """(No ``from __future__ import annotations`` in this module: DDP checks these annotations' values.)

    The function to register: ``ddp.register_comm_hook(PlanHook(ex, 'ring'), plan_hook)``."""
    return state.exchange(bucket)
