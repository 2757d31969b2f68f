"""The Trace: one record per plan op, written alike by the simulator (predicted) and the executor (measured).

Records come in plan order (rank by rank, each rank's program in order), so two traces of the same plan align
row by row and ``compare`` needs no matching. Times are seconds from the start of the collective (the
executor aligns clocks across ranks before subtracting). ``t_start`` of a send is when it was issued, of a
recv/reduce when it was posted; ``t_end`` is when the op completed (data delivered and, for reduce, added).

A training iteration (``firerun train``, ``firesim.training``) is written in the same schema with trace-only
kinds (``Phase``: forward, backward, bucket ready, bucket exchange, wait, optimizer) beside the plan's op
kinds, and an optional ``step`` column; ``chunk`` is then the gradient bucket, ``nbytes`` its size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import platform
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from firesim.errors import UserError, validation_line
from firesim.io import read_json, write_json_atomic
from firesim.limits import BYTES_PER_OP, MAX_OPS
from firesim.plans.ir import OP_NAMES, Op, Plan, decode_array, encode_array
from firesim.units import MAX_BYTES, MAX_COUNT

TRACE_FORMAT = "firesim.trace/1"
_COLUMNS = {"rank": np.int32, "op": np.int8, "chunk": np.int32, "peer": np.int32, "nbytes": np.int64,
            "t_start": np.float64, "t_end": np.float64}


class Phase(IntEnum):
    """Record kinds of a training-iteration trace, beside the plan op kinds (``Op``, 0..3)."""

    FORWARD = 16
    BACKWARD = 17  # from the start of backward until its last gradient bucket is ready
    READY = 18  # instant: backward has produced gradient bucket ``chunk``
    EXCHANGE = 19  # bucket ``chunk`` being exchanged (the plan or the built-in all-reduce)
    WAIT = 20  # backward's compute is done, the rank waits for the exchanges (exposed communication)
    OPTIMIZER = 21


def kind_name(kind: int) -> str:
    """'send', 'recv', 'reduce', 'compute' or a Phase name ('forward', 'exchange', ...)."""
    return OP_NAMES[kind] if 0 <= kind < len(OP_NAMES) else Phase(kind).name.lower()


class TraceHeader(BaseModel):
    """What was run, where, and by whom."""

    model_config = ConfigDict(extra="forbid")

    plan: str
    ranks: int = Field(ge=1, le=MAX_COUNT)
    nbytes: int = Field(ge=0, le=MAX_BYTES)
    chunks: int = Field(ge=0, le=MAX_COUNT)  # 0: an iteration trace (no plan chunks)
    source: Literal["simulated", "measured"]
    topology: str = ""
    hardware: str = ""
    backend: str = ""
    dtype: str = "float32"
    versions: dict[str, str] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    extra: dict = Field(default_factory=dict)


def software_versions(*modules: str) -> dict[str, str]:
    """Python and the given packages' versions, for the header (packages that are not installed are skipped)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("firecaffe-sim", "numpy", "simpy", "networkx", *modules):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


@dataclass(frozen=True, eq=False)
class Trace:
    header: TraceHeader
    rank: np.ndarray
    op: np.ndarray
    chunk: np.ndarray
    peer: np.ndarray
    nbytes: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    step: np.ndarray | None = None  # training step of each record (iteration traces only)

    @classmethod
    def for_plan(cls, plan: Plan, t_start, t_end, *, itemsize: int = 4, **header) -> Trace:
        """A trace whose records are the plan's ops, with the given times."""
        return cls(
            header=TraceHeader(plan=plan.name, ranks=plan.ranks, nbytes=plan.nbytes, chunks=plan.chunks, **header),
            rank=plan.op_rank(), op=plan.op.copy(), chunk=plan.chunk.copy(), peer=plan.peer.copy(),
            nbytes=plan.op_nbytes(itemsize).astype(np.int64),
            t_start=np.asarray(t_start, np.float64), t_end=np.asarray(t_end, np.float64),
        )

    def __len__(self) -> int:
        return int(self.rank.shape[0])

    @property
    def duration_s(self) -> float:
        """End-to-end time: from the first op's start to the last op's end."""
        return float(self.t_end.max() - min(0.0, self.t_start.min())) if len(self) else 0.0

    def rank_end_s(self) -> np.ndarray:
        """When each rank finished its last op."""
        end = np.zeros(self.header.ranks)
        np.maximum.at(end, self.rank, self.t_end)
        return end

    def records(self) -> list[dict]:
        out = [
            {"rank": int(r), "op": kind_name(k), "chunk": int(c), "peer": int(p), "nbytes": int(n),
             "t_start": float(a), "t_end": float(b)}
            for r, k, c, p, n, a, b in zip(self.rank, self.op, self.chunk, self.peer, self.nbytes,
                                           self.t_start, self.t_end)
        ]
        if self.step is not None:
            for rec, s in zip(out, self.step.tolist()):
                rec["step"] = int(s)
        return out

    # ---- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        columns = {name: encode_array(getattr(self, name)) for name in _COLUMNS}
        if self.step is not None:
            columns["step"] = encode_array(self.step)
        return {"format": TRACE_FORMAT, "header": self.header.model_dump(), "columns": columns}

    @classmethod
    def from_dict(cls, data: dict) -> Trace:
        """A trace from its JSON form; every defect (a bad column, NaN or negative times, an end before its
        start, a rank outside the header's) is a one-line UserError."""
        if not isinstance(data, dict):
            raise UserError(f"trace: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != TRACE_FORMAT:
            raise UserError(f"trace: format must be {TRACE_FORMAT!r}, got {data.get('format')!r}")
        columns_in = data.get("columns")
        if not isinstance(columns_in, dict):
            raise UserError("trace: missing the columns object")
        missing = [name for name in _COLUMNS if name not in columns_in]
        if missing:
            raise UserError(f"trace: missing column {missing[0]!r}")
        try:
            header = TraceHeader.model_validate(data.get("header"))
        except ValidationError as err:
            raise UserError(f"trace: header.{validation_line(err)}") from None
        columns = {name: decode_array(columns_in[name], dtype, f"trace: column {name}")
                   for name, dtype in _COLUMNS.items()}
        step = columns_in.get("step")
        columns["step"] = None if step is None else decode_array(step, np.int32, "trace: column step")
        n = columns["rank"].shape[0]
        if any(c is not None and c.shape != (n,) for c in columns.values()):
            raise UserError("trace: columns differ in length")
        t_start, t_end = columns["t_start"], columns["t_end"]
        if not np.all(np.isfinite(t_start) & np.isfinite(t_end)):
            raise UserError("trace: t_start and t_end must be finite")
        if np.any(t_end < t_start):
            raise UserError("trace: an op ends before it starts")
        if np.any(columns["nbytes"] < 0):
            raise UserError("trace: nbytes must be >= 0")
        if np.any((columns["rank"] < 0) | (columns["rank"] >= header.ranks)):
            raise UserError(f"trace: a rank is outside 0..{header.ranks - 1}")
        if not np.all(np.isin(columns["op"], [*range(len(OP_NAMES)), *(int(p) for p in Phase)])):
            raise UserError("trace: unknown record kind (op code)")
        return cls(header=header, **columns)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Read a trace file (``save``); every defect is one line naming the file (``firesim.io.read_json``)."""
        return cls.from_dict(read_json(path, "trace file", max_bytes=2 * MAX_OPS * BYTES_PER_OP))

    def to_chrome(self, path: str | Path | None = None) -> dict:
        """Chrome trace (chrome://tracing, Perfetto): one row per rank, one slice per op, times in us."""
        name = f"{self.header.plan} ({self.header.source})"
        events = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": name}}]
        events += [{"ph": "M", "name": "thread_name", "pid": 0, "tid": r, "args": {"name": f"rank {r}"}}
                   for r in range(self.header.ranks)]
        steps = self.step.tolist() if self.step is not None else [None] * len(self)
        for r, k, c, p, n, a, b, s in zip(self.rank.tolist(), self.op.tolist(), self.chunk.tolist(),
                                          self.peer.tolist(), self.nbytes.tolist(), self.t_start.tolist(),
                                          self.t_end.tolist(), steps):
            name = kind_name(k)
            if k in (Phase.READY, Phase.EXCHANGE):
                label = f"{name} bucket {c}"
            elif k in (Op.SEND, Op.RECV, Op.REDUCE):
                label = f"{name} c{c} {'->' if k == Op.SEND else '<-'} {p}"
            else:
                label = name
            args = {"nbytes": n, "chunk": c, "peer": p} if s is None else {"nbytes": n, "bucket": c, "step": s}
            events.append({"ph": "X", "pid": 0, "tid": r, "name": label, "cat": name,
                           "ts": a * 1e6, "dur": max(b - a, 0.0) * 1e6, "args": args})
        chrome = {"traceEvents": events, "displayTimeUnit": "ms", "otherData": self.header.model_dump()}
        if path is not None:
            write_json_atomic(path, chrome)
        return chrome


@dataclass(frozen=True)
class Comparison:
    """How a prediction differs from a measurement of the same plan.

    Every error is relative to the measured duration and signed where it says so (positive: the prediction
    was later than the measurement). End to end is the headline; the per-op and per-rank errors say where a
    prediction went wrong: ``first_divergence`` is the earliest op (by measured end) whose end is off by more
    than ``DIVERGENCE`` of the duration, which is where a mechanism the model lacks first shows.
    """

    predicted_s: float
    measured_s: float
    error: float  # (predicted - measured) / measured, end to end
    op_end_error_median: float  # over ops: |predicted t_end - measured t_end| / measured duration
    op_end_error_p95: float
    op_end_error_max: float
    rank_end_error: tuple[float, ...]  # per rank, signed: when it finished, predicted vs measured
    rank_end_error_max: float  # the worst rank, absolute
    worst_op: dict  # the op with the largest |t_end error|: rank, op, chunk, peer, predicted/measured t_end
    first_divergence: dict | None  # the same for the first op off by more than DIVERGENCE (None: none is)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DIVERGENCE = 0.05


def _op_record(predicted: Trace, measured: Trace, i: int, scale: float) -> dict:
    return {"index": i, "rank": int(measured.rank[i]), "op": OP_NAMES[measured.op[i]],
            "chunk": int(measured.chunk[i]), "peer": int(measured.peer[i]),
            "predicted_end_s": float(predicted.t_end[i]), "measured_end_s": float(measured.t_end[i]),
            "error": float((predicted.t_end[i] - measured.t_end[i]) / scale)}


def compare(predicted: Trace, measured: Trace) -> Comparison:
    """Align two traces of the same plan row by row and report end-to-end, per-op and per-rank error."""
    if len(predicted) != len(measured) or not (
        np.array_equal(predicted.rank, measured.rank) and np.array_equal(predicted.op, measured.op)
        and np.array_equal(predicted.chunk, measured.chunk)
    ):
        raise UserError(f"compare: traces are of different plans ({predicted.header.plan}, {len(predicted)} ops "
                        f"vs {measured.header.plan}, {len(measured)} ops)")
    p_s, m_s = predicted.duration_s, measured.duration_s
    scale = m_s if m_s > 0 else 1.0
    op_err = np.abs(predicted.t_end - measured.t_end) / scale
    rank_err = (predicted.rank_end_s() - measured.rank_end_s()) / scale
    worst = first = None
    if len(measured):
        worst = _op_record(predicted, measured, int(np.argmax(op_err)), scale)
        off = np.flatnonzero(op_err > DIVERGENCE)
        if off.size:
            first = _op_record(predicted, measured, int(off[np.argmin(measured.t_end[off])]), scale)
    return Comparison(
        predicted_s=p_s, measured_s=m_s, error=(p_s - m_s) / scale,
        op_end_error_median=float(np.median(op_err)) if len(measured) else 0.0,
        op_end_error_p95=float(np.percentile(op_err, 95)) if len(measured) else 0.0,
        op_end_error_max=float(op_err.max(initial=0.0)),
        rank_end_error=tuple(float(x) for x in rank_err), rank_end_error_max=float(np.abs(rank_err).max(initial=0.0)),
        worst_op=worst or {}, first_divergence=first,
    )
