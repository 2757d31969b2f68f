"""Run the calling rank's program of a plan on its buffer, in place, and measure every op.

The executor is the second interpreter of ``firesim.plans`` (the simulator is the first) and follows the rules
in ``firesim/plans/ir.py`` literally:

1. ops are issued in program order;
2. a recv/reduce is posted at once, into a pooled temporary buffer (or straight into its chunks when no earlier
   op on them is still pending, which then nothing can touch until it completes), and is applied (copied or
   added in place) when its message has arrived *and* every earlier op on its chunks has completed;
3. a send (and a compute naming chunks) first waits until every earlier op on its chunks has completed;
4. a compute op occupies the rank for its seconds while transfers keep progressing;
5. messages of an ordered pair match first-in first-out; tags carry the per-pair sequence number anyway, so
   a mismatch can only hang (and time out), never pair the wrong data.

Chunk ``k`` of a buffer of ``numel`` elements is the view ``buf[b[k]:b[k+1]]`` with ``b = chunk_bounds(numel,
chunks)`` (``torch.tensor_split(buf, b[1:-1])``; note that ``tensor_split(buf, chunks)`` would put the larger
chunks first, unlike the plan); a span of chunks is one contiguous slice and one message.

Every wait is bounded by ``timeout_s``. When a peer dies or hangs, this rank raises ``ExecError`` naming the
rank really at fault (found on the job's fault board, ``firerun.liveness``) and what this rank was waiting for,
e.g. ``rank 2: lost rank 3 (its process exited) while waiting for reduce chunk 3 from rank 1 (op 7 of 12)``;
without a board (an Executor on a group you made yourself) it names the peer it waited for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from firerun.errors import PEER_FAILED, ExecError
from firerun.liveness import FaultBoard, Verdict, Wait
from firerun.names import DTYPE_ALIASES, DTYPE_NAMES
from firerun.transport import (
    DATA_TAGS,
    MpiTransport,
    PeerFailure,
    TorchTransport,
    TransportError,
    is_timeout,
    short_reason,
)
from firesim.errors import UserError
from firesim.plans import Op, Plan, chunk_bounds
from firesim.trace import Trace, software_versions

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}
FAULT_ENV = "FIRERUN_FAULT"


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise UserError(f"dtype: {name} is not supported; choose from {', '.join(DTYPES)}")
        return name
    key = DTYPE_ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in DTYPES:
        raise UserError(f"dtype: unknown {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


FAULT_MODES = ("exit", "hang", "stop")


@dataclass(frozen=True)
class Fault:
    """Fail on purpose after issuing ``after_ops`` ops (plan ops and built-in all-reduces, counted over the
    executor's life), to prove that the other ranks notice and name this rank: ``exit`` dies on the spot (exit
    code 17), ``hang`` stays alive but stops making progress, ``stop`` sends itself SIGSTOP (the whole process
    freezes, as under a debugger or a stalled node)."""

    rank: int
    after_ops: int
    mode: Literal["exit", "hang", "stop"] = "exit"

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """'rank=1,after=5,mode=exit'."""
        fields: dict[str, str] = {}
        for item in filter(None, (x.strip() for x in spec.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise UserError(f"{FAULT_ENV}: {item!r} must look like key=value (rank=1,after=5,mode=exit)")
            fields[key.strip()] = value.strip()
        try:
            fault = cls(rank=int(fields["rank"]), after_ops=int(fields.get("after", 0)),
                        mode=fields.get("mode", "exit"))  # type: ignore[arg-type]
        except (KeyError, ValueError):
            raise UserError(f"{FAULT_ENV}: cannot parse {spec!r}; expected rank=1,after=5,mode=exit") from None
        if fault.mode not in FAULT_MODES:
            raise UserError(f"{FAULT_ENV}: mode must be one of {', '.join(FAULT_MODES)}, got {fault.mode!r}")
        return fault

    @classmethod
    def from_env(cls, environ=None) -> Fault | None:
        spec = (os.environ if environ is None else environ).get(FAULT_ENV, "").strip()
        return cls.parse(spec) if spec else None

    def trigger(self) -> None:
        if self.mode == "exit":
            os._exit(17)
        if self.mode == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(24 * 3600)  # deliberately unresponsive; the launcher kills us


@dataclass
class _Program:
    """One rank's program of one plan, lowered to Python lists for a tight issue loop."""

    plan: Plan
    numel: int
    kind: list[int]
    c0: list[int]
    c1: list[int]  # one past the last chunk
    lo: list[int]  # element offsets of the op's slice
    hi: list[int]
    peer: list[int]
    tag: list[int]
    seconds: list[float]
    pairs: list[tuple[int, int]]  # every ordered (src, dst) pair the plan uses, same list on every rank
    views: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.kind)


def _compile(plan: Plan, rank: int, numel: int) -> _Program:
    lo_op, hi_op = int(plan.offsets[rank]), int(plan.offsets[rank + 1])
    kind = plan.op[lo_op:hi_op].astype(np.int64)
    chunk = plan.chunk[lo_op:hi_op].astype(np.int64)
    span = plan.span[lo_op:hi_op].astype(np.int64)
    peer = plan.peer[lo_op:hi_op].astype(np.int64)
    bounds = chunk_bounds(numel, plan.chunks)
    named = chunk >= 0
    c0 = np.where(named, chunk, 0)
    c1 = np.where(named, chunk + span, 0)
    tags = []
    sent: dict[int, int] = {}
    received: dict[int, int] = {}
    for k, q in zip(kind.tolist(), peer.tolist()):
        if k == Op.SEND:
            seq = sent.get(q, 0)
            sent[q] = seq + 1
        elif k != Op.COMPUTE:
            seq = received.get(q, 0)
            received[q] = seq + 1
        else:
            seq = 0
        tags.append(seq % DATA_TAGS)
    comm = plan.op != Op.COMPUTE
    src = plan.op_rank()[comm]
    dst = plan.peer[comm]
    sends = plan.op[comm] == Op.SEND
    pairs = sorted({(int(a), int(b)) for a, b in zip(src[sends], dst[sends])})
    return _Program(plan=plan, numel=numel, kind=kind.tolist(), c0=c0.tolist(), c1=c1.tolist(),
                    lo=bounds[c0].tolist(), hi=bounds[c1].tolist(), peer=peer.tolist(), tag=tags,
                    seconds=plan.seconds[lo_op:hi_op].tolist(), pairs=pairs)


class _Pool:
    """Temporary receive buffers, reused across ops and runs (allocation would dominate small messages)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.free: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}

    def get(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        stack = self.free.get((dtype, numel))
        if stack:
            return stack.pop()
        return torch.empty(numel, dtype=dtype, device=self.device)

    def put(self, t: torch.Tensor) -> None:
        self.free.setdefault((t.dtype, t.numel()), []).append(t)


def _clock_key() -> int:
    """Processes with the same key read the same monotonic clock (same kernel boot), so their offset is 0."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            ident = fh.read().strip()
    except OSError:
        ident = socket.gethostname()
    return zlib.crc32(ident.encode())


class Executor:
    """Runs plans on one rank. Keep one per communicator: it pools buffers, caches lowered programs and
    estimates the clock offsets between ranks once.

    ``backend`` is 'torch' (torch.distributed, gloo on CPU or NCCL on GPU; ``group`` defaults to the world) or
    'mpi' (mpi4py; ``comm`` defaults to MPI.COMM_WORLD, duplicated so plan messages never match yours).
    ``board`` (``firerun.session`` makes one) lets failures name the rank really at fault.
    """

    def __init__(self, backend: Literal["torch", "mpi"] = "torch", *, group=None, comm=None,
                 timeout_s: float = 60.0, fault: Fault | None = None, board: FaultBoard | None = None):
        if timeout_s <= 0:
            raise UserError(f"timeout_s: must be > 0, got {timeout_s}")
        if backend == "torch":
            self.transport = TorchTransport(group, timeout_s=timeout_s)
        elif backend == "mpi":
            self.transport = MpiTransport(comm, timeout_s=timeout_s)
        else:
            raise UserError(f"backend: must be 'torch' or 'mpi', got {backend!r}")
        self.backend = backend
        self.rank = self.transport.rank
        self.size = self.transport.size
        self.device = self.transport.device
        self.timeout_s = float(timeout_s)
        self.fault = fault if fault is not None and fault.rank == self.rank else None
        self._issued = 0
        self._pool = _Pool(self.device)
        self._program: _Program | None = None
        self._offsets_s: np.ndarray | None = None  # rank r's clock minus rank 0's (rank 0 only)
        self._synced = False
        self._broken: str | None = None
        # What this rank is doing, read by the board's watcher thread when another rank raises the alarm:
        self._run: _Run | None = None  # the plan run in progress
        self._blocking: tuple[str, tuple[int, ...], float] | None = None  # a call that cannot be interrupted
        self._idle_since = time.perf_counter()
        self._verdict: Verdict | None = None  # the job's root cause, once known
        self._reporting = False  # this rank's main thread is reporting a failure itself
        self.board = board if board is not None and self.size > 1 else None
        if self.board is not None:
            self.board.start(self.current_wait, self._on_verdict)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    # ---- failures ----------------------------------------------------------------------------------------
    def _fail(self, message: str, **kw) -> ExecError:
        self._broken = message
        return ExecError(f"rank {self.rank}: {message}", rank=self.rank, **kw)

    def _failure(self, wait: Wait, fallback: str, **kw) -> ExecError:
        """This rank saw a failure while ``wait``: name the root cause the board finds (the first rank to see
        the failure decides it for the job), else ``fallback`` (what this rank saw itself)."""
        self._reporting = True
        verdict = self._verdict
        if verdict is None and self.board is not None:
            verdict = self.board.blame(wait)
        if verdict is None or verdict.cause == "unknown":
            return self._fail(fallback, **kw)
        return self._fail(f"{verdict.phrase} {wait.what}", culprits=verdict.culprits, cause=verdict.cause, **kw)

    def current_wait(self) -> Wait:
        """What this rank is blocked on now (called from the watcher thread: reads, never locks)."""
        now = time.perf_counter()
        run = self._run
        if run is not None:
            return run.current_wait(now)
        blocking = self._blocking
        if blocking is not None:
            what, peers, since = blocking
            peer = self.transport.waiting_on
            peers = (peer,) if peer is not None else peers
            where = f" (waiting for rank {peer})" if peer is not None else ""
            return Wait(peers, f"in {what}{where}", now - since)
        return Wait((), "between collectives", now - self._idle_since)

    def _on_verdict(self, verdict: Verdict) -> None:
        """From the watcher: another rank found the job's root cause. Interrupt what this rank waits for; a
        call that cannot be interrupted (gloo's own collective, a control message) ends the process with the
        line the main thread would have printed, as NCCL's async error handling does."""
        if self._reporting:
            return  # the main thread reports, with this same verdict from the board
        self._verdict = verdict
        run = self._run
        if run is not None and run.interrupt():
            return
        deadline = time.perf_counter() + 0.2  # the main thread may be returning from the call on its own
        while self._blocking is not None and not self._reporting and time.perf_counter() < deadline:
            time.sleep(0.01)
        if self._blocking is None or self._reporting:
            return  # idle: the next call raises the verdict
        sys.stdout.flush()
        sys.stderr.write(f"firerun: rank {self.rank}: {verdict.phrase} {self.current_wait().what}\n")
        sys.stderr.flush()
        os._exit(PEER_FAILED)

    @contextlib.contextmanager
    def _blocked(self, what: str, peers: tuple[int, ...]):
        """Mark a blocking call (for the watcher), and turn a peer's failure into this rank's ExecError."""
        self._check_usable()
        self._blocking = (what, peers, time.perf_counter())
        try:
            yield
        except PeerFailure as err:
            raise self._control_error(what, err) from None
        finally:
            self._blocking = None
            self._idle_since = time.perf_counter()

    def _describe(self, prog: _Program, j: int) -> str:
        k, c0, c1, q = prog.kind[j], prog.c0[j], prog.c1[j], prog.peer[j]
        chunks = f"chunk {c0}" if c1 - c0 == 1 else f"chunks {c0}-{c1 - 1}"
        if k == Op.SEND:
            return f"send {chunks} to rank {q}"
        if k == Op.COMPUTE:
            return f"compute on {chunks}" if c1 > c0 else "compute"
        return f"{'reduce' if k == Op.REDUCE else 'recv'} {chunks} from rank {q}"

    def _op_error(self, prog: _Program, j: int, err: BaseException | None, waited_s: float,
                  posting: bool = False) -> ExecError:
        where = f"{self._describe(prog, j)} (op {j + 1} of {prog.n})"
        peer = prog.peer[j]
        if err is None or is_timeout(err):
            return self._failure(Wait((peer,), f"after {waited_s:.1f} s waiting for {where}", waited_s, "timeout"),
                                 f"timed out after {waited_s:.1f} s waiting for {where}", op_index=j, peer=peer,
                                 timed_out=True)
        doing = "posting" if posting else "waiting for"
        return self._failure(Wait((peer,), f"while {doing} {where}", waited_s, "closed"),
                             f"lost rank {peer} while {doing} {where}: {short_reason(err)}", op_index=j, peer=peer)

    def _control_error(self, what: str, err: PeerFailure) -> ExecError:
        waited_s = time.perf_counter() - self._blocking[2] if self._blocking is not None else 0.0
        wait = Wait((err.peer,) if err.peer is not None else (), f"in {what} (waiting for rank {err.peer})",
                    waited_s, "timeout" if err.timed_out else "closed")
        if err.timed_out:
            return self._failure(wait, f"timed out after {self.timeout_s:.1f} s in {what} waiting for rank "
                                       f"{err.peer}", peer=err.peer, timed_out=True)
        return self._failure(wait, f"lost rank {err.peer} in {what}: {err}", peer=err.peer)

    def _check_usable(self) -> None:
        verdict = self._verdict
        if verdict is not None and self._broken is None:
            self._reporting = True
            raise self._fail(f"{verdict.phrase}, noticed between collectives", culprits=verdict.culprits,
                             cause=verdict.cause)
        if self._broken is not None:
            raise ExecError(f"rank {self.rank}: executor unusable after an earlier failure ({self._broken})",
                            rank=self.rank)

    # ---- control: barrier, clocks, gathers ------------------------------------------------------------------
    def barrier(self, what: str = "barrier") -> None:
        """Dissemination barrier on point-to-point messages: ceil(lg p) rounds, each bounded by timeout_s."""
        p, r = self.size, self.rank
        token_out, token_in = np.zeros(1), np.zeros(1)
        distance = 1
        with self._blocked(what, self._others()):
            while distance < p:
                self.transport.sendrecv(token_out, (r + distance) % p, token_in, (r - distance) % p,
                                        self.timeout_s)
                distance *= 2

    def _others(self) -> tuple[int, ...]:
        return tuple(q for q in range(self.size) if q != self.rank)

    def gather(self, local: np.ndarray, sizes: list[int], what: str = "gather") -> list[np.ndarray] | None:
        """float64 arrays of known sizes from every rank to rank 0 (None elsewhere)."""
        local = np.ascontiguousarray(local, dtype=np.float64)
        with self._blocked(what, self._others() if self.rank == 0 else (0,)):
            if self.rank != 0:
                self.transport.sendrecv(local, 0, None, None, self.timeout_s)
                return None
            out = [local]
            for q in range(1, self.size):
                buf = np.empty(sizes[q], np.float64)
                self.transport.sendrecv(None, None, buf, q, self.timeout_s)
                out.append(buf)
            return out

    def broadcast(self, values: np.ndarray, what: str = "broadcast") -> np.ndarray:
        """float64 array from rank 0 to every rank (same size everywhere)."""
        values = np.ascontiguousarray(values, dtype=np.float64).copy()
        with self._blocked(what, self._others() if self.rank == 0 else (0,)):
            if self.rank == 0:
                for q in range(1, self.size):
                    self.transport.sendrecv(values, q, None, None, self.timeout_s)
            else:
                self.transport.sendrecv(None, None, values, 0, self.timeout_s)
        return values

    def reduce_max(self, value: float) -> float:
        """max over ranks of ``value``, known everywhere."""
        parts = self.gather(np.array([value]), [1] * self.size, "reduce_max")
        top = max(float(a[0]) for a in parts) if parts is not None else 0.0
        return float(self.broadcast(np.array([top]), "reduce_max")[0])

    def reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """element-wise sum over ranks of a small float64 array, known everywhere."""
        values = np.asarray(values, np.float64)
        parts = self.gather(values, [values.size] * self.size, "reduce_sum")
        total = np.sum(parts, axis=0) if parts is not None else np.zeros_like(values)
        return self.broadcast(total, "reduce_sum")

    def clock_offsets(self, rounds: int = 8) -> np.ndarray | None:
        """Offset of every rank's perf_counter from rank 0's (rank 0 only; None elsewhere).

        Ranks on rank 0's machine share its monotonic clock (offset 0 exactly). Others: ``rounds`` ping-pongs,
        offset from the one with the shortest round trip (Cristian's algorithm; error <= RTT/2).
        """
        if self.size == 1:
            return np.zeros(1)
        if self._synced:
            return self._offsets_s
        key = float(_clock_key())
        offsets = np.zeros(self.size)
        with self._blocked("clock synchronisation", self._others() if self.rank == 0 else (0,)):
            for q in range(1, self.size):
                if self.rank == 0:
                    best_rtt = np.inf
                    reply = np.zeros(2)
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        self.transport.sendrecv(np.array([t0, key]), q, reply, q, self.timeout_s)
                        t1 = time.perf_counter()
                        if reply[1] == key:  # same machine: same clock
                            offsets[q] = 0.0
                            break
                        if t1 - t0 < best_rtt:
                            best_rtt, offsets[q] = t1 - t0, reply[0] - (t0 + t1) / 2
                elif self.rank == q:
                    ping = np.zeros(2)
                    for _ in range(rounds):
                        self.transport.sendrecv(None, None, ping, 0, self.timeout_s)
                        self.transport.sendrecv(np.array([time.perf_counter(), key]), 0, None, None, self.timeout_s)
                        if ping[1] == key:
                            break
        self._offsets_s = offsets if self.rank == 0 else None
        self._synced = True
        return self._offsets_s

    # ---- the interpreter ------------------------------------------------------------------------------------
    def _lower(self, plan: Plan, numel: int) -> _Program:
        prog = self._program
        if prog is None or prog.plan is not plan or prog.numel != numel:
            prog = _compile(plan, self.rank, numel)
            self.transport.prepare(prog.pairs)
            self._program = prog
        return prog

    def _buffer(self, plan: Plan, tensor, dtype: torch.dtype | None) -> torch.Tensor:
        is_server = self.rank >= plan.workers
        if tensor is None:
            if not is_server:
                raise UserError(f"execute: rank {self.rank} is a worker of plan {plan.name} and needs a tensor")
            dt_ = dtype or torch.float32
            itemsize = torch.empty(0, dtype=dt_).element_size()
            if plan.nbytes % itemsize:
                raise UserError(f"execute: plan nbytes {plan.nbytes} is not a whole number of {dtype_name(dt_)}")
            return self._pool.get(dt_, plan.nbytes // itemsize)
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"execute: expected a torch tensor or numpy array, got {type(tensor).__name__}")
        if not tensor.is_contiguous():
            raise UserError("execute: the buffer must be contiguous (chunks are slices of one flat buffer)")
        if tensor.dtype not in DTYPES.values():
            raise UserError(f"execute: dtype {tensor.dtype} not supported; use one of {', '.join(DTYPES)}")
        if tensor.device.type != self.device.type:
            raise UserError(f"execute: the {self.transport.name} backend needs {self.device.type} tensors, "
                            f"got one on {tensor.device}")
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes != plan.nbytes:
            raise UserError(f"execute: plan {plan.name} is for {plan.nbytes} bytes but the buffer has {nbytes}; "
                            f"use plan.with_nbytes({nbytes})")
        if is_server:  # dedicated servers hold no data of their own: work in scratch, leave the tensor alone
            return self._pool.get(tensor.dtype, tensor.numel())
        return tensor.view(-1)

    def run(self, plan: Plan, tensor: torch.Tensor | np.ndarray | None, *, trace: bool = True,
            dtype: torch.dtype | str | None = None) -> Trace | None:
        """Execute this rank's program on ``tensor`` in place. With ``trace``, ranks first meet at a barrier and
        rank 0 returns the measured Trace (clocks aligned); other ranks return None.

        On a dedicated server rank (rank >= plan.workers) ``tensor`` may be None (then ``dtype`` says the
        element type); servers compute in a scratch buffer.
        """
        self._check_usable()
        if plan.ranks != self.size:
            raise UserError(f"execute: plan {plan.name} has {plan.ranks} ranks but the job has {self.size}")
        dt_ = parse_dtype(dtype) if dtype is not None else None
        buf = self._buffer(plan, tensor, dt_)
        prog = self._lower(plan, buf.numel())
        if trace:
            self.clock_offsets()
            self.barrier("barrier before the traced run")
        t_start, t_end = self._interpret(prog, buf)
        if self.rank >= plan.workers:
            self._pool.put(buf)
        if not trace:
            return None
        return self._gather_trace(plan, prog, buf, t_start, t_end)

    def _interpret(self, prog: _Program, buf: torch.Tensor) -> tuple[list[float], list[float]]:
        run = _Run(self, prog, buf)
        tr = self.transport
        self._run = run
        try:
            if tr.pushes:
                run.drive_pushed()
            else:
                run.drive_polled()
        except _Failed as failed:
            raise self._op_error(prog, failed.op, failed.err, failed.waited_s, failed.posting) from None
        except _Interrupted:
            self._run = None
            raise self._failure(run.current_wait(time.perf_counter()), "interrupted") from None
        finally:
            self._run = None
            self._idle_since = time.perf_counter()
        tr.synchronize()
        return run.t_start, run.t_end

    def _gather_trace(self, plan: Plan, prog: _Program, buf: torch.Tensor, t_start: list[float],
                      t_end: list[float]) -> Trace | None:
        counts = np.diff(plan.offsets).astype(int)
        local = np.concatenate([[min(t_start, default=0.0)], t_start, t_end])
        parts = self.gather(local, [1 + 2 * int(c) for c in counts], "trace gather")
        if parts is None:
            return None
        offsets = self._offsets_s if self._offsets_s is not None else np.zeros(self.size)
        starts = np.array([part[0] - offsets[q] for q, part in enumerate(parts)])
        zero = float(starts.min())
        t0 = np.concatenate([part[1:1 + counts[q]] - offsets[q] - zero for q, part in enumerate(parts)])
        t1 = np.concatenate([part[1 + counts[q]:] - offsets[q] - zero for q, part in enumerate(parts)])
        return Trace.for_plan(
            plan, t0, t1, itemsize=buf.element_size(), source="measured", backend=self.transport.name,
            dtype=dtype_name(buf.dtype), versions=software_versions("torch", "mpi4py"),
            extra={"rank_start_s": (starts - zero).tolist(), "clock_offset_s": offsets.tolist(),
                   "timeout_s": self.timeout_s, "host": socket.gethostname()},
        )

    # ---- the backend's own all-reduce, for comparison ----------------------------------------------------------
    def allreduce_builtin(self, tensor: torch.Tensor) -> None:
        """torch.distributed.all_reduce or MPI_Allreduce on ``tensor``, in place, bounded by timeout_s."""
        self._check_usable()
        self._tick()
        others = self._others()
        self._blocking = ("the built-in all_reduce", others, time.perf_counter())
        try:
            self.transport.allreduce_builtin(tensor.view(-1), self.timeout_s)
        except TransportError as err:
            waited_s = time.perf_counter() - self._blocking[2]
            wait = Wait(others, f"after {waited_s:.1f} s in the built-in all_reduce" if err.timed_out else
                        "in the built-in all_reduce", waited_s, "timeout" if err.timed_out else "closed")
            raise self._failure(wait, err.reason, timed_out=err.timed_out) from None
        finally:
            self._blocking = None
            self._idle_since = time.perf_counter()

    def _tick(self) -> None:
        """Count an op towards the injected fault, and trigger it when due."""
        if self.fault is not None:
            self._issued += 1
            if self._issued > self.fault.after_ops:
                self.fault.trigger()


class _Failed(Exception):
    """Op ``op`` of a run failed (``err``: the backend's error; None: timed out); the main thread words it."""

    def __init__(self, op: int, err: BaseException | None, waited_s: float, posting: bool = False):
        super().__init__(op)
        self.op, self.err, self.waited_s, self.posting = op, err, waited_s, posting


class _Interrupted(Exception):
    """The board's watcher delivered the job's verdict while this rank waited."""


class _Run:
    """One execution of a lowered program: the IR's issue/complete rules as a state machine.

    ``advance`` issues ops in program order until one must wait; ``complete`` records a finished transfer and
    applies every op it unblocks. With gloo the waiter thread that sees a completion calls both (under a lock),
    so a dependent send goes out from the thread that saw its input arrive: one thread wake-up per message, as
    in a hand-written loop, instead of a hop through the main thread. With polled backends (MPI, NCCL) the
    main thread calls them between polls.
    """

    def __init__(self, ex: Executor, prog: _Program, buf: torch.Tensor):
        self.ex, self.tr, self.prog, self.buf = ex, ex.transport, prog, buf
        n = self.n = prog.n
        self.pending: list[deque] = [deque() for _ in range(prog.plan.chunks)]
        self.arrived = bytearray(n)
        self.finished = bytearray(n)
        self.temp: list[torch.Tensor | None] = [None] * n
        self.t_start = [0.0] * n
        self.t_end = [0.0] * n
        key = (buf.data_ptr(), buf.numel(), buf.dtype)
        views = prog.views.get(key)
        if views is None:  # slicing costs ~1 us an op: keep the views of the last buffer (they pin its storage)
            views = [buf[lo:hi] for lo, hi in zip(prog.lo, prog.hi)]
            prog.views.clear()
            prog.views[key] = views
        self.views = views
        self.next = 0  # next op to issue
        self.left = n  # ops not yet complete
        self.computing = -1  # the compute op occupying the rank, if any
        self.busy_until = 0.0
        self.error: BaseException | None = None
        self.last_progress = time.perf_counter()
        self.busy_since = 0.0  # set while a thread issues or applies ops: a rank stuck there waits for nobody
        self.cond: threading.Condition | None = None  # the pushed driver's lock
        self.interrupted = False

    # ---- rules ---------------------------------------------------------------------------------------------
    def chunks_free(self, c0: int, c1: int) -> bool:
        pending = self.pending
        for c in range(c0, c1):
            if pending[c]:
                return False
        return True

    def advance(self) -> None:
        """Issue ops in program order until one has to wait (rule 3) or the rank is busy computing (rule 4).

        The ops issued in one call issue at the same instant as far as the plan is concerned; among them the
        transport gets the receives first. Gloo announces a posted receive on the pair's connection behind
        any data it is already writing there, so a send to a peer followed by a receive from it, in that order,
        lets the peer's data leave only after ours has arrived: a pairwise exchange runs one way after the
        other (twice as long; docs/validation.md). Posting the receive first changes no plan semantics."""
        sends: list[int] = []
        self._issue(sends)
        self._post_sends(sends)

    def _post_sends(self, sends: list[int]) -> None:
        views, peers, tags, tr, now = self.views, self.prog.peer, self.prog.tag, self.tr, time.perf_counter
        for j in sends:
            try:
                tr.isend(j, views[j], peers[j], tags[j])
            except (RuntimeError, OSError) as err:
                raise _Failed(j, err, now() - self.last_progress, posting=True) from None

    def _issue(self, sends: list[int]) -> None:
        prog, pending, views, now = self.prog, self.pending, self.views, time.perf_counter
        kind, c0s, c1s, peers, tags = prog.kind, prog.c0, prog.c1, prog.peer, prog.tag
        ex, tr = self.ex, self.tr
        if self.computing >= 0:
            t = now()
            if t < self.busy_until:
                return
            self.t_end[self.computing] = t
            self.computing = -1
            self.left -= 1
            self.last_progress = t
        while self.next < self.n:
            j = self.next
            k = kind[j]
            c0, c1 = c0s[j], c1s[j]
            if (k == Op.SEND or k == Op.COMPUTE) and c1 > c0 and not self.chunks_free(c0, c1):
                return
            if ex.fault is not None:
                ex._tick()
            t = now()
            self.t_start[j] = t
            self.next = j + 1
            self.last_progress = t
            if k == Op.COMPUTE:
                self.finished[j] = self.arrived[j] = 1
                self.computing, self.busy_until = j, t + prog.seconds[j]
                self._issue(sends)
                return
            view = views[j]
            try:
                if view.numel() == 0:  # both ends skip empty chunks (both know the bounds): no message at all
                    for c in range(c0, c1):
                        pending[c].append(j)
                    self.arrived[j] = 1
                    self.finish_ready(j, t)
                elif k == Op.SEND:
                    for c in range(c0, c1):
                        pending[c].append(j)
                    sends.append(j)  # posted after this call's receives (see advance)
                else:
                    if k == Op.RECV and self.chunks_free(c0, c1):
                        target = view  # nothing reads or writes these chunks before this op completes
                    else:
                        target = self.temp[j] = ex._pool.get(self.buf.dtype, view.numel())
                    for c in range(c0, c1):
                        pending[c].append(j)
                    tr.irecv(j, target, peers[j], tags[j])
            except (RuntimeError, OSError) as err:
                raise _Failed(j, err, t - self.last_progress, posting=True) from None

    def finish_ready(self, j: int, t_seen: float) -> None:
        """Complete j if every earlier op on its chunks has, then every op that this unblocks (rule 2)."""
        prog, pending, arrived, finished, temp, views = (self.prog, self.pending, self.arrived, self.finished,
                                                         self.temp, self.views)
        kind, c0s, c1s = prog.kind, prog.c0, prog.c1
        stack = [j]
        while stack:
            j = stack.pop()
            if finished[j] or not arrived[j]:
                continue
            c0, c1 = c0s[j], c1s[j]
            if any(pending[c][0] != j for c in range(c0, c1)):
                continue
            k = kind[j]
            tmp = temp[j]
            if tmp is not None:
                if k == Op.REDUCE:
                    views[j].add_(tmp)
                else:
                    views[j].copy_(tmp)
                self.ex._pool.put(tmp)
                temp[j] = None
            elif k == Op.REDUCE and views[j].numel():
                raise AssertionError("reduce without a receive buffer")
            self.t_end[j] = time.perf_counter() if k != Op.SEND else t_seen
            finished[j] = 1
            self.left -= 1
            for c in range(c0, c1):
                q = pending[c]
                q.popleft()
                if q:
                    stack.append(q[0])

    def complete(self, j: int, t_seen: float, err: BaseException | None) -> None:
        if err is not None:
            raise _Failed(j, err, t_seen - self.last_progress)
        self.arrived[j] = 1
        self.last_progress = t_seen
        self.finish_ready(j, t_seen)

    def blocker(self) -> int:
        """The op this rank is really waiting for: the earliest transfer that has not arrived."""
        kind = self.prog.kind
        for j in range(self.next):
            if not self.finished[j] and not self.arrived[j] and kind[j] != Op.COMPUTE:
                return j
        return min(self.next, self.n - 1)

    @property
    def done(self) -> bool:
        return self.left == 0 and self.next == self.n

    def _timeout(self) -> _Failed:
        return _Failed(self.blocker(), None, time.perf_counter() - self.last_progress)

    def current_wait(self, now: float) -> Wait:
        """What this run waits for (read from the watcher thread without the lock: a snapshot is enough)."""
        prog, busy = self.prog, self.busy_since
        if busy:
            j = min(self.next, self.n - 1)
            return Wait((), f"in {self.ex._describe(prog, j)} (op {j + 1} of {self.n})", now - busy)
        if self.computing >= 0:
            return Wait((), f"computing (op {self.computing + 1} of {self.n})", 0.0)
        j = self.blocker()
        return Wait((prog.peer[j],), f"while waiting for {self.ex._describe(prog, j)} (op {j + 1} of {self.n})",
                    now - self.last_progress)

    def interrupt(self) -> bool:
        """Make the main thread raise _Interrupted; False if a thread is stuck inside the run."""
        self.interrupted = True  # drive_polled looks between slices, drive_pushed before it first waits
        cond = self.cond
        if cond is None:
            return True
        if not cond.acquire(timeout=0.5):
            return False
        try:
            if self.error is None:
                self.error = _Interrupted()
            cond.notify_all()
        finally:
            cond.release()
        return True

    def step(self, t: float) -> None:
        """advance(), marked busy for the watcher."""
        self.busy_since = t
        try:
            self.advance()
        finally:
            self.busy_since = 0.0

    # ---- drivers -------------------------------------------------------------------------------------------
    def drive_polled(self) -> None:
        """Single thread: issue, poll, apply, repeat. With a fault board, waits are sliced so that a verdict
        from the watcher is seen within 50 ms."""
        tr, timeout = self.tr, self.ex.timeout_s
        slice_s = 0.05 if self.ex.board is not None else float("inf")
        self.step(time.perf_counter())
        while not self.done:
            if self.interrupted:
                raise _Interrupted()
            if tr.outstanding():
                deadline = min(self.last_progress + timeout, time.perf_counter() + slice_s)
                if self.computing >= 0:
                    deadline = min(deadline, self.busy_until)
                events = tr.wait_some(deadline)
                for j, t, err in events:
                    self.busy_since = t
                    self.complete(j, t, err)
                    self.busy_since = 0.0
            elif self.computing >= 0:
                time.sleep(max(min(self.busy_until - time.perf_counter(), slice_s), 0.0))
            if not self.done and time.perf_counter() - self.last_progress >= timeout and self.computing < 0:
                raise self._timeout()
            self.step(time.perf_counter())

    def drive_pushed(self) -> None:
        """Waiter threads report completions; whichever sees one applies it and issues what it unblocks."""
        lock = self.cond = threading.Condition()

        def on_complete(j: int, t: float, err: BaseException | None) -> None:
            with lock:
                if self.error is not None:
                    return
                self.busy_since = t
                try:
                    self.complete(j, t, err)
                    self.advance()
                except BaseException as exc:  # handed to the main thread, which raises it
                    self.error = exc
                finally:
                    self.busy_since = 0.0
                if self.done or self.error is not None:
                    lock.notify_all()

        timeout = self.ex.timeout_s
        self.tr.set_handler(on_complete)
        try:
            with lock:
                if self.interrupted:
                    raise _Interrupted()
                self.step(time.perf_counter())
                while not self.done and self.error is None:
                    now = time.perf_counter()
                    wake = self.last_progress + timeout
                    if self.computing >= 0:
                        wake = min(wake, self.busy_until)
                    if wake > now:
                        lock.wait(wake - now)
                        continue
                    if self.computing >= 0:
                        self.step(now)
                        continue
                    raise self._timeout()
                if self.error is not None:
                    raise self.error
        finally:
            self.tr.set_handler(None)


def execute(plan: Plan, tensor, *, backend: Literal["torch", "mpi"] = "torch", group=None, comm=None,
            timeout_s: float = 60.0, trace: bool = True, dtype=None) -> Trace | None:
    """Run the calling rank's program of ``plan`` on ``tensor`` in place (see ``Executor.run``).

    One-shot convenience: repeated runs should keep an ``Executor`` (it pools buffers and syncs clocks once).
    """
    with Executor(backend, group=group, comm=comm, timeout_s=timeout_s) as ex:
        return ex.run(plan, tensor, trace=trace, dtype=dtype)
