"""The plan IR: per-rank programs of chunked send / recv / reduce / compute ops, stored as columns.

A collective over ``ranks`` ranks on a buffer of ``nbytes`` bytes split into ``chunks`` chunks. Rank ``r``'s
program is the slice ``offsets[r]:offsets[r+1]`` of the op columns. An op covers the ``span`` consecutive
chunks starting at ``chunk`` (one message for a contiguous range, as MPI implementations send it).

Semantics that every interpreter (the verifier, the simulator, the executor) honours:

1. A rank issues its ops in program order.
2. ``recv``/``reduce`` is posted when issued and never blocks issue. It completes once the matching message
   has arrived and every earlier op on any of its chunks at this rank has completed; ``reduce`` adds into the
   local chunks (costing gamma per byte), ``recv`` overwrites them.
3. ``send`` is issued only when every earlier op on its chunks at this rank has completed (the rank waits
   there); the transfer then runs in the background, so sends of unrelated chunks overlap.
4. ``compute`` waits like a send (if it names chunks), then occupies the rank for ``seconds``.
5. Messages between an ordered pair of ranks match first-in first-out, as NCCL and MPI (same tag) do.

Columns instead of one object per op keep a 1024-rank ring (~4 M ops) cheap to build, check and store.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from firesim.errors import UserError, one_line
from firesim.io import read_json, write_json_atomic
from firesim.limits import BYTES_PER_OP, MAX_OPS, check_ops
from firesim.units import MAX_BYTES, MAX_COUNT

PLAN_FORMAT = "firesim.plan/1"


class Op(IntEnum):
    SEND = 0
    RECV = 1  # overwrite the local chunks with the received data
    REDUCE = 2  # add the received data into the local chunks
    COMPUTE = 3


OP_NAMES = ("send", "recv", "reduce", "compute")
_COLUMNS = {"offsets": np.int64, "op": np.int8, "chunk": np.int32, "span": np.int32, "peer": np.int32,
            "seconds": np.float64}


def encode_array(a: np.ndarray) -> dict:
    """A numpy column as JSON: base64 of its bytes (a 4 M-op plan saves in well under a second)."""
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(value, dtype, what: str = "column") -> np.ndarray:
    """Inverse of encode_array; a plain JSON list of numbers is accepted too, for hand-written files. Anything
    else (bad base64, a dtype that is not a plain number type, values that do not fit ``dtype``, NaN in an
    integer column) is a one-line UserError naming ``what``."""
    target = np.dtype(dtype)
    try:
        if isinstance(value, dict):
            if set(value) != {"dtype", "b64"} or not isinstance(value["b64"], str):
                raise ValueError("expected {dtype, b64}")
            source = np.dtype(str(value["dtype"]))
            if source.kind not in "biuf" or source.hasobject:
                raise ValueError(f"dtype {str(value['dtype'])!r} is not a number type")
            raw = np.frombuffer(base64.b64decode(value["b64"], validate=True), dtype=source)
        elif isinstance(value, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raw = np.asarray(value, dtype=np.float64 if any(isinstance(x, float) for x in value) else np.int64)
        else:
            raise ValueError(f"expected a list of numbers or {{dtype, b64}}, got {type(value).__name__}")
        if target.kind in "iu":
            if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
                raise ValueError("holds values that are not integers")
            info = np.iinfo(target)
            if raw.size and (raw.min() < info.min or raw.max() > info.max):
                raise ValueError(f"holds values outside {info.min}..{info.max}")
        return raw.astype(target)
    except (ValueError, TypeError, OverflowError, binascii.Error) as err:
        raise UserError(f"{what}: {one_line(err)}") from None


def _rows(column) -> int:
    """Rows of an int8 column before decoding it: a list's length, or the bytes its base64 text holds."""
    if isinstance(column, list):
        return len(column)
    return len(str(column.get("b64", ""))) * 3 // 4 if isinstance(column, dict) else 0


def json_int(data: dict, key: str, lo: int, hi: int, what: str) -> int:
    """``data[key]`` as an integer in lo..hi (JSON files: 3.0 is 3; 3.5, "3", true, 2**70 are errors)."""
    value = data[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UserError(f"{what}: {key} must be an integer in {lo}..{hi}, got {one_line(repr(value))[:80]}")
    return value


def chunk_bounds(total: int, chunks: int) -> np.ndarray:
    """Offsets (length chunks+1) of ``chunks`` nearly equal parts of ``total`` units; sizes differ by <= 1."""
    return (np.arange(chunks + 1, dtype=np.int64) * int(total)) // int(chunks)


@dataclass(frozen=True, eq=False)
class Plan:
    """A communication plan. Build one with a builder (``firesim.plans.ring`` ...) or ``PlanBuilder``."""

    name: str
    ranks: int
    workers: int  # ranks 0..workers-1 contribute data and must end with the full sum; the rest are servers
    nbytes: int
    chunks: int
    offsets: np.ndarray  # int64 [ranks + 1]
    op: np.ndarray  # int8 [n_ops], an Op
    chunk: np.ndarray  # int32 [n_ops], first chunk (-1: a compute op on no chunk)
    span: np.ndarray  # int32 [n_ops], number of consecutive chunks
    peer: np.ndarray  # int32 [n_ops], the other rank (-1 for compute)
    seconds: np.ndarray  # float64 [n_ops], duration of compute ops (0 for communication)
    params: dict = field(default_factory=dict)  # the builder's arguments, for display and JSON

    # ---- shape -------------------------------------------------------------------------------------
    @property
    def n_ops(self) -> int:
        return int(self.op.shape[0])

    def op_rank(self) -> np.ndarray:
        """The rank of every op (the column the CSR layout leaves implicit)."""
        return np.repeat(np.arange(self.ranks, dtype=np.int32), np.diff(self.offsets))

    def program(self, rank: int) -> list[tuple[str, int, int, int, float]]:
        """Rank ``rank``'s ops as (op, chunk, span, peer, seconds) tuples, for display and tests."""
        lo, hi = int(self.offsets[rank]), int(self.offsets[rank + 1])
        return [
            (OP_NAMES[k], int(c), int(s), int(p), float(t))
            for k, c, s, p, t in zip(
                self.op[lo:hi], self.chunk[lo:hi], self.span[lo:hi], self.peer[lo:hi], self.seconds[lo:hi]
            )
        ]

    @classmethod
    def from_programs(cls, name: str, nbytes: int, chunks: int, programs, workers: int | None = None) -> Plan:
        """A plan from hand-written programs: programs[r] = [(op name, chunk, peer), ...] or
        (op name, chunk, peer, span) or ('compute', chunk, seconds). For tests and one-off plans."""
        rows = []
        for r, program in enumerate(programs):
            for item in program:
                kind = OP_NAMES.index(item[0])
                if kind == Op.COMPUTE:
                    rows.append((r, kind, item[1], 1, -1, float(item[2])))
                else:
                    rows.append((r, kind, item[1], item[3] if len(item) > 3 else 1, item[2], 0.0))
        cols = list(zip(*rows)) if rows else [()] * 6
        counts = np.bincount(np.asarray(cols[0], np.int64), minlength=len(programs))
        plan = cls(name=name, ranks=len(programs), workers=len(programs) if workers is None else workers,
                   nbytes=int(nbytes), chunks=int(chunks),
                   offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   op=np.asarray(cols[1], np.int8), chunk=np.asarray(cols[2], np.int32),
                   span=np.asarray(cols[3], np.int32), peer=np.asarray(cols[4], np.int32),
                   seconds=np.asarray(cols[5], np.float64))
        check_structure(plan)
        return plan

    # ---- sizes -------------------------------------------------------------------------------------
    def chunk_offsets_bytes(self, itemsize: int = 4) -> np.ndarray:
        """Byte offset of every chunk boundary, split on element boundaries as the executor splits tensors."""
        elements = self.nbytes // itemsize
        bounds = chunk_bounds(elements, self.chunks) * itemsize
        bounds[-1] = self.nbytes  # a tail that is not a whole element goes to the last chunk
        return bounds

    def chunk_nbytes(self, itemsize: int = 4) -> np.ndarray:
        return np.diff(self.chunk_offsets_bytes(itemsize))

    def op_nbytes(self, itemsize: int = 4) -> np.ndarray:
        """Bytes moved by every op (0 for compute)."""
        bounds = self.chunk_offsets_bytes(itemsize)
        comm = self.op != Op.COMPUTE
        start = np.where(comm, self.chunk, 0)
        nbytes = bounds[start + np.where(comm, self.span, 0)] - bounds[start]
        return np.where(comm, nbytes, 0)

    def bytes_sent(self, itemsize: int = 4) -> np.ndarray:
        """Bytes each rank sends, by rank."""
        sends = self.op == Op.SEND
        return np.bincount(self.op_rank()[sends], weights=self.op_nbytes(itemsize)[sends], minlength=self.ranks)

    def messages_sent(self) -> np.ndarray:
        """Number of messages each rank sends, by rank."""
        return np.bincount(self.op_rank()[self.op == Op.SEND], minlength=self.ranks)

    def with_nbytes(self, nbytes: int) -> Plan:
        """The same programs on a buffer of another size (plans depend on the size only through chunks)."""
        return dataclasses.replace(self, nbytes=int(nbytes))

    # ---- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "name": self.name,
            "ranks": self.ranks,
            "workers": self.workers,
            "nbytes": self.nbytes,
            "chunks": self.chunks,
            "params": self.params,
            **{name: encode_array(getattr(self, name)) for name in _COLUMNS},
        }

    @classmethod
    def from_dict(cls, data: dict, *, max_ops: int = MAX_OPS) -> Plan:
        """A plan from its JSON form; every defect is a one-line UserError, and a plan of more than
        ``max_ops`` ops is refused before its columns are decoded."""
        if not isinstance(data, dict):
            raise UserError(f"plan: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != PLAN_FORMAT:
            raise UserError(f"plan: format must be {PLAN_FORMAT!r}, got {data.get('format')!r}")
        missing = [k for k in ("name", "ranks", "workers", "nbytes", "chunks", *_COLUMNS) if k not in data]
        if missing:
            raise UserError(f"plan: missing field {missing[0]!r}")
        check_ops(_rows(data["op"]), f"plan {str(data['name'])[:80]!r}", max_ops)
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise UserError(f"plan: params must be an object, got {type(params).__name__}")
        plan = cls(
            name=str(data["name"]),
            ranks=json_int(data, "ranks", 1, MAX_COUNT, "plan"),
            workers=json_int(data, "workers", 1, MAX_COUNT, "plan"),
            nbytes=json_int(data, "nbytes", 0, MAX_BYTES, "plan"),
            chunks=json_int(data, "chunks", 1, MAX_COUNT, "plan"),
            params=dict(params),
            **{name: decode_array(data[name], dtype, f"plan: column {name}") for name, dtype in _COLUMNS.items()},
        )
        check_structure(plan)
        return plan

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (a reader never sees half a file)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, max_ops: int = MAX_OPS) -> Plan:
        """Read a plan file (``save``); every defect is one line naming the file (``firesim.io.read_json``)."""
        return cls.from_dict(read_json(path, "plan file", max_bytes=max(2**20, 2 * max_ops * BYTES_PER_OP)),
                             max_ops=max_ops)

    def __repr__(self) -> str:
        return (f"Plan({self.name!r}, ranks={self.ranks}, workers={self.workers}, nbytes={self.nbytes}, "
                f"chunks={self.chunks}, ops={self.n_ops})")


def check_structure(plan: Plan) -> None:
    """Cheap vectorised checks of shapes and ranges; ``verify`` does the semantic proof."""
    n = plan.n_ops
    if plan.ranks < 1 or not 1 <= plan.workers <= plan.ranks:
        raise UserError(f"plan {plan.name}: need 1 <= workers <= ranks, got {plan.workers}, {plan.ranks}")
    if plan.chunks < 1:
        raise UserError(f"plan {plan.name}: chunks must be >= 1, got {plan.chunks}")
    if plan.nbytes < 0:
        raise UserError(f"plan {plan.name}: nbytes must be >= 0, got {plan.nbytes}")
    if plan.offsets.shape != (plan.ranks + 1,) or plan.offsets[0] != 0 or plan.offsets[-1] != n:
        raise UserError(f"plan {plan.name}: offsets must have ranks+1 entries from 0 to the op count")
    if np.any(np.diff(plan.offsets) < 0):
        raise UserError(f"plan {plan.name}: offsets must not decrease")
    for col in ("chunk", "span", "peer", "seconds"):
        if getattr(plan, col).shape != (n,):
            raise UserError(f"plan {plan.name}: column {col} has {getattr(plan, col).shape[0]} rows, expected {n}")
    if np.any((plan.op < 0) | (plan.op > Op.COMPUTE)):
        raise UserError(f"plan {plan.name}: unknown op code")
    comm = plan.op != Op.COMPUTE
    named = comm | (plan.chunk >= 0)
    if np.any(named & ((plan.chunk < 0) | (plan.span < 1) | (plan.chunk + plan.span > plan.chunks))):
        raise UserError(f"plan {plan.name}: an op names chunks outside 0..{plan.chunks - 1}")
    rank = plan.op_rank()
    if np.any(comm & ((plan.peer < 0) | (plan.peer >= plan.ranks) | (plan.peer == rank))):
        raise UserError(f"plan {plan.name}: a send/recv names a peer outside 0..{plan.ranks - 1} or itself")
    if not np.all(np.isfinite(plan.seconds) & (plan.seconds >= 0)):
        raise UserError(f"plan {plan.name}: compute seconds must be finite and >= 0")


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of the ranges lo[i]:hi[i] (a vectorised CSR gather; verify and the engine use it)."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(lo - starts, counts)


def _program_order(rank: np.ndarray, step: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Sort rows by (rank, step, seq); one int64 key when it fits (4x faster than lexsort on 4 M rows)."""
    if rank.size == 0:
        return np.zeros(0, np.int64)
    n_step, n_seq = int(step.max()) + 1, int(seq.max()) + 1
    if step.min() >= 0 and (int(rank.max()) + 1) * n_step * n_seq < 2**62:
        return np.argsort((rank * n_step + step) * n_seq + seq)
    return np.lexsort((seq, step, rank))


class PlanBuilder:
    """Write a collective in global view, transfer by transfer; ``build()`` lowers it to per-rank programs.

    ``transfer(src, dst, chunk, reduce, step)`` adds a send at ``src`` and the matching recv at ``dst``.
    Arguments may be numpy arrays (broadcast together) so a whole step of a 1024-rank ring is one call.
    Each rank's program is ordered by (step, order of declaration); a transfer's send and recv share that
    key, which keeps every pair's messages in the same order at both ends.
    """

    def __init__(self, name: str, ranks: int, nbytes: int, chunks: int, workers: int | None = None, **params):
        self.name, self.ranks, self.nbytes, self.chunks = name, int(ranks), int(nbytes), int(chunks)
        self.workers = self.ranks if workers is None else int(workers)
        self.params = params
        self._cols: list[tuple[np.ndarray, ...]] = []  # (rank, step, op, chunk, span, peer, seconds)
        self._seq = 0

    def _rows(self, rank, step, op, chunk, span, peer, seconds) -> None:
        rank, step, op, chunk, span, peer, seconds = np.broadcast_arrays(
            np.asarray(rank, np.int64), np.asarray(step, np.int64), np.asarray(op, np.int8),
            np.asarray(chunk, np.int32), np.asarray(span, np.int32), np.asarray(peer, np.int32),
            np.asarray(seconds, np.float64))
        count = rank.size
        seq = np.arange(self._seq, self._seq + count, dtype=np.int64)
        self._seq += count
        self._cols.append(tuple(a.ravel() for a in (rank, step, seq, op, chunk, span, peer, seconds)))

    def transfer(self, src, dst, chunk, *, reduce: bool, step, span=1) -> PlanBuilder:
        src, dst, chunk, step, span = np.broadcast_arrays(
            np.asarray(src), np.asarray(dst), np.asarray(chunk), np.asarray(step), np.asarray(span))
        base = self._seq
        self._rows(src, step, Op.SEND, chunk, span, dst, 0.0)
        self._seq = base  # the recv gets the same declaration key as its send
        self._rows(dst, step, Op.REDUCE if reduce else Op.RECV, chunk, span, src, 0.0)
        return self

    def compute(self, rank, seconds, *, step, chunk=-1, span=1) -> PlanBuilder:
        self._rows(rank, step, Op.COMPUTE, chunk, span, -1, seconds)
        return self

    def extend(self, plan: Plan, rank_map, *, step_offset: int) -> PlanBuilder:
        """Append another plan's programs with its ranks renamed by ``rank_map`` (composition)."""
        rank_map = np.asarray(rank_map, dtype=np.int64)
        rank = plan.op_rank()
        position = np.arange(plan.n_ops) - plan.offsets[rank]
        peer = np.where(plan.peer >= 0, rank_map[np.maximum(plan.peer, 0)], -1)
        self._rows(rank_map[rank], step_offset + position, plan.op, plan.chunk, plan.span, peer, plan.seconds)
        return self

    def build(self) -> Plan:
        if self._cols:
            rank, step, seq, op, chunk, span, peer, seconds = (np.concatenate(c) for c in zip(*self._cols))
        else:
            rank = step = seq = np.zeros(0, np.int64)
            op, chunk, span, peer, seconds = (np.zeros(0, t) for t in (np.int8, np.int32, np.int32, np.int32, np.float64))
        order = _program_order(rank, step, seq)
        counts = np.bincount(rank, minlength=self.ranks) if rank.size else np.zeros(self.ranks, np.int64)
        if counts.shape[0] > self.ranks:
            raise UserError(f"plan {self.name}: an op names rank {counts.shape[0] - 1} of {self.ranks}")
        plan = Plan(
            name=self.name, ranks=self.ranks, workers=self.workers, nbytes=self.nbytes, chunks=self.chunks,
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            op=op[order], chunk=chunk[order], span=span[order], peer=peer[order], seconds=seconds[order],
            params=self.params,
        )
        check_structure(plan)
        return plan
