"""The validation loop: run plans for real on an emulated cluster, simulate the same plans, compare.

One call of :func:`validate` is one cluster configuration (topology, shaper, backend). It builds the cluster
from the topology file (``firerun.emulate``), starts one rank per host namespace (gloo bound to the namespace's
``eth0``, or MPI through ``mpiexec``), and in that job

1. calibrates through the real path (veths, bridges, shapers) and the executor's own send/recv: alpha = half
   the round trip of a 4-byte ping-pong between ranks 0 and 1; ``buffered_bytes`` = what TCP holds when a
   send returns (a 16 MiB send completes once its tail is in the socket buffer: the gap to the recv's
   completion times the route's goodput): the engine's ``eager_window_nbytes``; the token bucket's peak rate
   from the one-way times of a 16 KiB and a 96 KiB message after an idle gap (both inside the shapers'
   128 KiB burst); late receives: single messages of 256 KiB to 8 MiB whose receive is posted only after the
   data could have arrived twice over. A receive that completes at once after its post found the data pushed
   eagerly; one that takes the transfer time waited for it (rendezvous), and the smallest size from which
   every message waits is ``rendezvous_nbytes`` (gloo: from the smallest; MPI: above its eager threshold).
   What a rendezvous message takes beyond the engine's own prediction of the same probe is
   ``message_overhead_s`` (MPI's request-to-send / clear-to-send handshake); whether a swap between ranks
   0 and 1 runs both ways at once (``swap_serialized``, a check: gloo announces a posted receive on the
   connection that carries its data, behind a send already queued there, which is why the executor posts
   each pass's receives first); gamma = a local ``add_`` per byte at rank 0 (one thread, as the ranks run);
2. runs every (algorithm, size) ``warmup + repeat`` times with ``firerun.execute`` (median, min and max of
   the repeats), checks the exact sum, and reads the shapers' byte counters of every directed link before and
   after the measured runs.

Then it simulates each plan with ``firesim.engine.simulate`` on the same topology, as :func:`predict_case`
says, and compares: the traces with ``firesim.trace.compare`` (end to end, per op, per rank) and the counters
with the bytes ``firesim.topology.link_bytes`` routes over each link. Error = (predicted - measured) /
measured. The same rule for every case; no per-case factor.

Algorithms come from the registry (``firesim.plans.registry``): each spec gets as many workers as fit on the
hosts beside its servers (``Choice.workers``), so ``ps:servers=1,colocated=false`` on 4 hosts is 3 workers and
a dedicated server. Nothing here knows an algorithm by name.

:func:`validate_suite` runs the cross product of topologies, shapers and backends, with its run time
estimated up front (the engine's prediction of every run plus measured overheads) and a progress bar;
``firerun.validate_report`` writes docs/validation.md and its figures from the reports.

The machine is shared: other processes' CPU load slows the ranks, which no network model should absorb. The
CPU use of the machine is sampled before each configuration; the suite waits (bounded) for a quiet machine
and, above 10 % busy, the report carries a warning.

The worker is this module run as ``python -m firerun.validate worker SPEC.json`` inside a namespace.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import networkx as nx
import numpy as np
import typer

from firerun.emulate import (
    QUEUE_LIMIT_BYTES,
    SHAPER_BURST_BYTES,
    TCP_GOODPUT_EFFICIENCY,
    EmulatedCluster,
    MAX_HOST_RATE_bps,
    check_emulable,
    check_tcp_interval,
    host_rate_bps,
    sampling_tcp,
)
from firesim.clikit import output_dir, output_file
from firesim.errors import UserError
from firesim.io import dumps, write_json_atomic
from firesim.plans import Op, Plan, algorithms, match_messages, resolve, split_specs
from firesim.trace import Trace, compare

__all__ = ["CaseResult", "ValidationReport", "case_plan", "default_specs", "estimate_seconds", "engine_topology",
           "predict_case", "probe_transport", "calibration_from_probes", "route_goodput_Bps", "validate",
           "validate_cmd", "validate_suite"]

MASTER_PORT = 29500  # inside the cluster's own namespaces: nothing else listens there
PINGPONG_ROUND_TRIPS = 50
GAMMA_PROBE_BYTES = 8 << 20
BUFFER_PROBE_BYTES = 16 << 20  # larger than any socket buffer: its send completes before it arrives
MESSAGE_PROBE_BYTES = (16 << 10, 96 << 10)  # one message each after an idle gap, both inside the shapers' burst
LATE_PROBE_BYTES = (256 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20)  # one message each, received late
MAX_PEAK_BANDWIDTH_Bps = 10e9  # the veths' copy rate bounds a burst; a noisy probe is clipped to it
SWAP_PROBE_BYTES = 8 << 20  # ranks 0-1, 2-3, ... swap 4 MiB halves both ways at once (rendezvous for MPI too)
EMULATION_LIMIT_SHARE = 0.9  # host links at this share of what the machine shapes faithfully: named as a cause
UNEQUAL_SHARE = 0.05  # one sender's messages measured this share of the run further apart than the model has them
UNEQUAL_INTO_SHARE = 0.015  # two senders' messages to one receiver: the run this share of it off the model's equal share
# the swap probe this much over the engine (1: one way after the other) names serialized swaps: gloo's reads
# 0-24 % over (tbf's ACKs), MPI's 49-100 % (UCX's rendezvous; the median of 5 probes, some serialized, some not)
SWAP_SERIALIZED_CAUSE = 0.35
PROBE_IDLE_s = 0.02  # before each probe: the shapers' buckets refill (128 KiB at 200 Mbit/s: 5.5 ms)
PROBE_REPEATS = 5
BUSY_WARNING = 0.10
RANK_TIE = 0.02  # measured medians closer than this are a tie (repeats spread about 1 %)
LINK_BYTES_TOLERANCE = 0.03  # wire bytes beyond the plan's x 1514/1448: retransmissions or foreign traffic
WIRE_PER_PAYLOAD = 1 / TCP_GOODPUT_EFFICIENCY  # Ethernet bytes the shaper counts per TCP payload byte
LARGE_NBYTES = 4 << 20
TARGET_LARGE, TARGET_LARGE_MEDIAN, TARGET_SMALL = 0.05, 0.02, 0.10  # |error| per case >= 4 MiB, their median, < 4 MiB
# Run-time estimate (measured on the 2-core machine): building the cluster, starting the ranks and calibrating;
# and per measured run, the barrier, clock alignment, trace gather and two reads of the byte counters.
CLUSTER_OVERHEAD_s = {"torch": 25.0, "mpi": 15.0}
RUN_OVERHEAD_s = 0.05
NOMINAL_ALPHA_s, NOMINAL_GAMMA_s_per_byte = 100e-6, 0.1e-9  # for the estimate only (calibrated values vary)
NOMINAL_PEAK_BANDWIDTH_Bps = 1.25e9


# --------------------------------------------------------------------------------------------------------
# what is run and how it is predicted


def case_plan(spec: str, hosts: int, nbytes: int) -> Plan:
    """The plan a spec runs on ``hosts`` ranks: as many workers as fit beside its servers (the registry says)."""
    choice = resolve(spec)
    return choice.build(choice.workers(hosts), nbytes)


def default_specs(hosts: int) -> list[str]:
    """Every registered algorithm once: its name, or its first example when the name alone needs options or
    does not fit ``hosts`` ranks."""
    specs = []
    for algorithm in algorithms():
        for spec in (algorithm.name, *algorithm.examples):
            try:
                case_plan(spec, hosts, 4 * hosts)
            except UserError:
                continue
            specs.append(spec)
            break
    return specs


def engine_topology(G: nx.Graph, peak_bandwidth_Bps: float = NOMINAL_PEAK_BANDWIDTH_Bps) -> nx.Graph:
    """The emulated links as the engine sees them: TCP payload per shaped byte (``efficiency``) and the
    shaper's token bucket (``burst_nbytes`` passed at ``peak_bandwidth_Bps``; none on a link whose rate is
    not below the peak)."""
    H = G.copy()
    for u, v in H.edges:
        H.edges[u, v]["efficiency"] = TCP_GOODPUT_EFFICIENCY
        if peak_bandwidth_Bps > H.edges[u, v]["bandwidth_Bps"]:
            H.edges[u, v]["burst_nbytes"] = SHAPER_BURST_BYTES
            H.edges[u, v]["peak_bandwidth_Bps"] = peak_bandwidth_Bps
    return H


@dataclass
class Calibration:
    """What the job measured before the cases, through the real path."""

    alpha_s: float
    gamma_s_per_byte: float
    buffered_bytes: int  # bytes TCP holds when a send returns: the eager window
    message_one_way_s: dict[str, float]  # nbytes -> fastest one-way time of one message from rank 0 to 1
    message_overhead_s: float  # what a rendezvous message takes beyond the engine's prediction (>= 0)
    peak_bandwidth_Bps: float = NOMINAL_PEAK_BANDWIDTH_Bps  # the shapers' rate inside their burst (wire bytes)
    rendezvous_nbytes: float | None = 0.0  # smallest message that waits for its receive; None: none probed did
    late_recv_s: dict[str, float] = field(default_factory=dict)  # nbytes -> post-to-completion of a late receive
    swap_serialized: float = 0.0  # 0: a swap runs both ways at once; 1: one way after the other (see _swap_plan)
    swap_over_model: float = 0.0  # the receive-first swap probe's time over the engine's prediction of it, - 1
    pingpong_round_trip_s: list[float] = field(default_factory=list)
    notice_behind_data: bool = False  # gloo: a receive's ready notice shares the pair's socket with data

    def transport(self):
        """The engine's ``Transport`` these measurements give."""
        from firesim.engine import Transport

        return Transport(rendezvous_nbytes=math.inf if self.rendezvous_nbytes is None else self.rendezvous_nbytes,
                         eager_window_nbytes=float(self.buffered_bytes), message_overhead_s=self.message_overhead_s,
                         notice_behind_data=self.notice_behind_data)


def predict_case(plan: Plan, H: nx.Graph, cal: Calibration) -> Trace:
    """The engine's prediction of one case: the one place where calibrated values become model inputs."""
    from firesim.engine import simulate

    return simulate(plan, H, alpha_s=cal.alpha_s, gamma_s_per_byte=cal.gamma_s_per_byte, transport=cal.transport())


def _nominal_s(plan: Plan, H: nx.Graph) -> float:
    from firesim.engine import simulate

    return simulate(plan, H, alpha_s=NOMINAL_ALPHA_s, gamma_s_per_byte=NOMINAL_GAMMA_s_per_byte).duration_s


def estimate_seconds(G: nx.Graph, specs: Sequence[str], sizes: Sequence[int], *, repeat: int, warmup: int,
                     backend: str = "torch") -> tuple[float, dict[tuple[str, int], float]]:
    """Expected wall time of one configuration and the expected seconds of each (spec, size) run."""
    H = engine_topology(G)
    hosts = len(G.graph["endpoints"])
    per_run = {(spec, int(n)): _nominal_s(case_plan(spec, hosts, int(n)), H) + RUN_OVERHEAD_s
               for spec in specs for n in sizes}
    return CLUSTER_OVERHEAD_s[backend] + (warmup + repeat) * sum(per_run.values()), per_run


# --------------------------------------------------------------------------------------------------------
# results


@dataclass
class CaseResult:
    """One (algorithm spec, size): measured repeats, the prediction, the comparison and the link-byte check."""

    spec: str
    algorithm: str
    workers: int
    ranks: int
    nbytes: int
    measured_s: float  # median of the repeats
    measured_min_s: float
    measured_max_s: float
    repeats_s: list[float]
    predicted_s: float
    error: float  # (predicted - measured) / measured, end to end, signed
    op_error_median: float  # over ops: |t_end error| / measured duration (the median run's trace)
    op_error_p95: float
    rank_error_max: float  # the worst rank's |finish time error| / measured duration
    first_divergence: dict | None  # the first op off by > 5 % of the run (firesim.trace.compare)
    link_bytes_error: float  # wire / expected - 1 on the link where it is largest in size (signed)
    stray_link_bytes: int  # wire bytes on links the plan does not use (control traffic)
    start_skew_s: float  # median over repeats of the spread of the ranks' start times after the barrier
    target: float = 0.0  # the |error| this case must stay within
    ranking_right: bool = True  # no pair with this case at this size is predicted in the wrong order
    cause: str = ""  # for a case outside its target: what the traces and counters show
    measured_trace: str = ""
    predicted_trace: str = ""

    @property
    def ok(self) -> bool:
        return abs(self.error) <= self.target


@dataclass
class ValidationReport:
    topology: str
    hosts: int
    shaper: str
    backend: str
    repeat: int
    calibration: Calibration
    cases: list[CaseResult]
    ranking: dict[str, dict] = field(default_factory=dict)  # size -> measured/predicted order, ties, wrong pairs
    ranking_match: bool = True
    machine: str = ""
    date: str = ""
    background_cpu: float = 0.0  # busy fraction of the machine's CPUs just before the run
    wall_s: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def error_summary(self) -> dict:
        return error_summary(self.cases)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "cases"}, "summary": self.error_summary(),
                "records": [{**asdict(c), "ok": c.ok} for c in self.cases]}

    @classmethod
    def from_dict(cls, data: dict) -> ValidationReport:
        """The inverse of ``to_dict`` (docs/validation.json holds a list of these)."""
        fields = {k: v for k, v in data.items() if k not in ("summary", "records", "calibration")}
        cases = [CaseResult(**{k: v for k, v in r.items() if k != "ok"}) for r in data["records"]]
        return cls(**fields, calibration=Calibration(**data["calibration"]), cases=cases)


def error_summary(cases: Sequence[CaseResult]) -> dict:
    """Median and worst |error| of the cases >= 4 MiB and below, and how many miss their target."""
    out = {}
    for key, sel in (("large", [c for c in cases if c.nbytes >= LARGE_NBYTES]),
                     ("small", [c for c in cases if c.nbytes < LARGE_NBYTES])):
        errors = [abs(c.error) for c in sel]
        worst = max(sel, key=lambda c: abs(c.error), default=None)
        out[key] = {"cases": len(errors), "median_abs_error": statistics.median(errors) if errors else None,
                    "max_abs_error": abs(worst.error) if worst else None,
                    "worst": f"{worst.spec} {worst.nbytes >> 20} MiB" if worst else "",
                    "misses": sum(not c.ok for c in sel)}
    out["min_nbytes"] = LARGE_NBYTES
    return out


def _rankings(cases: list[CaseResult]) -> tuple[dict[str, dict], bool]:
    """Per size: algorithms fastest first, measured and predicted, and whether they agree.

    Two algorithms whose measured medians are within ``RANK_TIE`` of each other are a tie: this machine cannot
    tell which is faster, so either predicted order is right. Every other pair must come out in the measured
    order; each case in a wrongly ordered pair gets ``ranking_right = False``, and the pair a reason: which of
    the two misses its accuracy target, or, both within it, how far apart they measured.
    """
    out, match = {}, True
    for nbytes in sorted({c.nbytes for c in cases}):
        group = [c for c in cases if c.nbytes == nbytes]
        ties, wrong, why = [], [], []
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if abs(a.measured_s - b.measured_s) <= RANK_TIE * min(a.measured_s, b.measured_s):
                    ties.append([a.spec, b.spec])
                elif (a.measured_s < b.measured_s) != (a.predicted_s < b.predicted_s):
                    wrong.append([a.spec, b.spec])
                    a.ranking_right = b.ranking_right = False
                    why.append({"outside_target": [c.spec for c in (a, b) if not c.ok],
                                "apart": abs(a.measured_s - b.measured_s) / min(a.measured_s, b.measured_s)})
        out[str(nbytes)] = {"measured": [c.spec for c in sorted(group, key=lambda c: c.measured_s)],
                            "predicted": [c.spec for c in sorted(group, key=lambda c: c.predicted_s)],
                            "ties": ties, "wrong": wrong, "why": why}
        match &= not wrong
    return out, match


def _swaps_rendezvous(plan: Plan, rendezvous_nbytes: float | None) -> bool:
    """Whether two ranks of the plan send each other rendezvous-size messages."""
    if rendezvous_nbytes is None:
        return False
    rank = np.repeat(np.arange(plan.ranks), np.diff(plan.offsets))
    big = (plan.op == Op.SEND) & (plan.op_nbytes() >= rendezvous_nbytes)
    pairs = set(zip(rank[big].tolist(), plan.peer[big].tolist()))
    return any((b, a) in pairs for a, b in pairs)


def _messages(plan: Plan, trace: Trace) -> list[tuple[int, int, int, float, float, float, int, int]]:
    """(src, dst, nbytes, send start, receive posted, arrival, send op, receive op) of every message of ``plan``
    in ``trace`` (its ops in plan order; arrival is the receive's end)."""
    partner = match_messages(plan)
    sends = np.flatnonzero(plan.op == Op.SEND)
    rank = plan.op_rank()
    return [(int(rank[s]), int(plan.peer[s]), int(trace.nbytes[s]), float(trace.t_start[s]), float(trace.t_start[r]),
             float(trace.t_end[r]), int(s), int(r)) for s, r in zip(sends.tolist(), partner[sends].tolist())]


def _unequal_sharing(plan: Plan, predicted: Trace, measured: Trace, shaper: str, faster: bool = True) -> str:
    """Two messages of one sender to different peers on the wire at once share a link in the model, and the run
    delivered them in the other order, or (a run ``faster`` than the model: one of them early) further apart
    (cause 6 of docs/validation.md): a tbf port is one byte FIFO that sends the message written first, first;
    TCP connections through one port (a switch's FIFO, or a host's classes with htb) need not keep pace."""
    duration_s = float(measured.t_end.max() - measured.t_start.min())
    got = _messages(plan, measured)
    msgs = sorted(zip(_messages(plan, predicted), got), key=lambda m: m[0][3])
    for i, ((a, b, _, _, _, arrival, _, _), (*_, arrived, _, _)) in enumerate(msgs):
        for (a2, b2, _, start2, _, arrival2, _, _), (*_, arrived2, _, _) in msgs[i + 1:]:
            model_gap, gap_run = arrival - arrival2, arrived - arrived2
            if (a2 == a and b2 != b and start2 < arrival and min(arrival, arrival2) - start2 > 0.02 * predicted.duration_s
                    and (model_gap * gap_run < 0 and abs(gap_run - model_gap) > UNEQUAL_SHARE * duration_s
                         or faster and abs(gap_run) - abs(model_gap) > UNEQUAL_SHARE * duration_s)):
                port = ("the tbf port is one FIFO: the message written first leaves first" if shaper == "tbf" else
                        "connections through one port did not keep pace")
                return (f"rank {a}'s messages to {b} and {b2} share a link in the model "
                        f"({_apart(model_gap, b, b2, duration_s)}), measured {_apart(gap_run, b, b2, duration_s)} "
                        f"({port})")
    return ""


def _shared_unequally_into(plan: Plan, predicted: Trace, measured: Trace, faster: bool) -> str:
    """Two senders' messages to one receiver overlap in the model, which shares the ports their routes have in
    common equally while both are on the wire (cause 8 of docs/validation.md). A run ``faster`` than the model
    delivered the one that started first well before the model has it: the flow that joined a switch's FIFO
    port behind an established one got less than an equal share. A slower run delivered the two further apart
    than the model, the later one well after the model has it. Named only where nothing else is."""
    duration_s = float(measured.t_end.max() - measured.t_start.min())
    tolerance_s = UNEQUAL_INTO_SHARE * duration_s
    msgs = sorted(zip(_messages(plan, predicted), _messages(plan, measured)), key=lambda m: m[0][3])
    for i, ((a, c, _, start, _, arrival, _, _), (*_, arrived, _, _)) in enumerate(msgs):
        for (b, c2, _, start2, _, arrival2, _, _), (*_, arrived2, _, _) in msgs[i + 1:]:
            if c2 != c or b == a or not start2 < arrival - 0.02 * predicted.duration_s:
                continue
            if faster:
                if start < start2 and arrival - arrived > tolerance_s and arrival < arrival2 and arrived < arrived2:
                    return (f"rank {b}'s message to {c} joins rank {a}'s {(start2 - start) * 1e3:.1f} ms after it "
                            f"started (the model shares their ports from then), measured rank {a}'s arrived "
                            f"{(arrival - arrived) * 1e3:.1f} ms before the model has it (the joining flow got less "
                            "than an equal share)")
                continue
            late, late_by = (a, arrived - arrival) if arrived > arrived2 else (b, arrived2 - arrival2)
            if abs(arrived - arrived2) - abs(arrival - arrival2) > tolerance_s and late_by > tolerance_s:
                return (f"rank {a}'s and rank {b}'s messages to {c} share their ports in the model "
                        f"({_apart(arrival - arrival2, a, b, duration_s)}), measured "
                        f"{_apart(arrived - arrived2, a, b, duration_s)}, rank {late}'s {late_by * 1e3:.1f} ms after "
                        "the model has it (the port was not shared equally)")
    return ""


def _apart(gap_s: float, first: int, second: int, duration_s: float) -> str:
    """How far apart two arrivals ``gap_s`` = (first's - second's) are, and which came first."""
    if abs(gap_s) < 0.001 * duration_s:
        return "together"
    return f"{abs(gap_s) * 1e3:.1f} ms apart, {first if gap_s < 0 else second} first"


def _diagnose(case: CaseResult, background_cpu: float, cal: Calibration, plan: Plan, shaper: str,
              predicted: Trace | None = None, host_rate_bps: float = 0.0, measured: Trace | None = None) -> str:
    """Why a case misses its target, from what was measured beside the time (empty if it does not): the
    mechanisms docs/validation.md traces, where the calibration's swap probe, the predicted trace or the measured
    one shows them in this case."""
    if case.ok:
        return ""
    causes = []
    if predicted is not None and measured is not None:
        causes.append(_unequal_sharing(plan, predicted, measured, shaper, case.error > 0))
    if case.error < 0 and host_rate_bps >= EMULATION_LIMIT_SHARE * MAX_HOST_RATE_bps:
        causes.append(f"{host_rate_bps / 1e9:g} Gbit/s of shaped host links: the most this machine emulates")
    causes = [c for c in causes if c]
    serialized = (cal.swap_over_model > SWAP_SERIALIZED_CAUSE and cal.rendezvous_nbytes is not None
                  and cal.rendezvous_nbytes <= SWAP_PROBE_BYTES // 2)
    if case.error < 0 and serialized and _swaps_rendezvous(plan, cal.rendezvous_nbytes):
        causes.append(f"rendezvous swaps serialized (swap probe {cal.swap_over_model:+.0%} over the model)")
    elif case.error < 0 and shaper == "tbf":
        causes.append("tbf: ACKs queue behind data" + ("" if serialized else
                                                        f" (swap probe {cal.swap_over_model:+.0%} over the model)"))
    if not causes and predicted is not None and measured is not None:
        causes = [c for c in [_shared_unequally_into(plan, predicted, measured, case.error > 0)] if c]
    if background_cpu > BUSY_WARNING:
        causes.append(f"machine {background_cpu:.0%} busy with other work")
    if abs(case.link_bytes_error) > LINK_BYTES_TOLERANCE:
        causes.append(f"link bytes {case.link_bytes_error:+.1%} off the plan (retransmissions)")
    if case.start_skew_s > 0.02 * case.measured_s:
        causes.append(f"ranks started {case.start_skew_s * 1e3:.1f} ms apart")
    d = case.first_divergence
    if d:
        arrow = "to" if d["op"] == "send" else "from"
        causes.append(f"first off: rank {d['rank']} {d['op']} chunk {d['chunk']} {arrow} {d['peer']} "
                      f"({d['error']:+.1%} of the run)")
    return "; ".join(causes) or "end-to-end only (no op off by > 5 %)"


# --------------------------------------------------------------------------------------------------------
# the parent: build the cluster, start the ranks, simulate, compare


def _machine() -> str:
    import platform

    return f"{platform.node() or 'linux'}, {os.cpu_count()} cores, Linux {platform.release()}"


def validate(topology: str | os.PathLike, algos: Sequence[str] | None = None,
             sizes: Sequence[int] = (4 << 20, 16 << 20), *, repeat: int = 5, warmup: int = 1,
             out_dir: str | os.PathLike | None = None, timeout_s: float = 600.0,
             state_dir: str | os.PathLike | None = None, shaper: str = "htb",
             queue_limit_bytes: int = QUEUE_LIMIT_BYTES, backend: str = "torch", log=None,
             on_run: Callable[[str, int], None] | None = None, tcp_sample_s: float = 0.0) -> ValidationReport:
    """Measure and predict every (algorithm spec, size) on the emulated ``topology``; traces go to ``out_dir``.

    ``algos`` defaults to :func:`default_specs`. ``on_run(spec, nbytes)`` is called after every run (warm-up
    or measured), for progress. ``tcp_sample_s`` > 0: every connection's window, RTT and buffers and every
    link's queue that often during the job, into ``out_dir``/tcp.json (``firerun.emulate.sampling_tcp``; slows
    the job).
    """
    from firesim.topology import load_topology

    if backend not in ("torch", "mpi"):
        raise UserError(f"backend: 'torch' (gloo) or 'mpi' (mpi4py, MPICH), got {backend!r}")
    if repeat < 1 or warmup < 0:
        raise UserError(f"repeat: must be >= 1 (warmup >= 0), got {repeat} ({warmup})")
    if tcp_sample_s:
        check_tcp_interval(tcp_sample_s)
    sizes = [int(n) for n in sizes]
    if any(n < 4 or n % 4 for n in sizes):
        raise UserError(f"size: must be a positive multiple of 4 bytes (float32), got {sizes}")
    G = load_topology(topology)
    check_emulable(G)
    name = str(G.graph.get("name", Path(topology).stem))
    p = len(G.graph["endpoints"])
    if p < 2:
        raise UserError(f"validate {name}: needs at least 2 hosts")
    specs = list(algos) if algos is not None else default_specs(p)
    for spec in specs:
        case_plan(spec, p, 4 * p)  # one-line UserError for an unknown algorithm or options that do not fit
    out = Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir()) / f"firerun-validate-{name}"
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    started = time.monotonic()

    background = _busy_fraction()
    warnings = []
    if background > BUSY_WARNING:
        warnings.append(f"the machine was {background:.0%} busy before the run (other processes): "
                        "measured times include their CPU contention")
        say(f"warning: {warnings[-1]}")
    H = engine_topology(G)
    kwargs = {} if state_dir is None else {"state_dir": state_dir}
    with EmulatedCluster(topology, shaper=shaper, queue_limit_bytes=queue_limit_bytes, **kwargs) as cluster:
        spec = {"cases": [{"algo": a, "nbytes": n} for n in sizes for a in specs], "repeat": repeat,
                "warmup": warmup, "out_dir": str(out.resolve()), "timeout_s": min(timeout_s, 120.0),
                "probe_goodput_Bps": route_goodput_Bps(H, 0, 1), "backend": backend,
                "topology": name, "ports": [{"node": pt.node, "peer": pt.peer, "ns": pt.ns, "ifname": pt.ifname}
                                            for pair in cluster.links for pt in pair]}
        spec_path = out / "spec.json"
        write_json_atomic(spec_path, spec)
        for stale in ("results.json", "progress.jsonl"):
            (out / stale).unlink(missing_ok=True)
        say(f"cluster {cluster.id} up: {p} ranks on {name}, {shaper}, {backend}; running {len(spec['cases'])} "
            f"cases x {warmup}+{repeat}")
        with sampling_tcp(cluster, out / "tcp.json", tcp_sample_s) if tcp_sample_s else contextlib.nullcontext():
            _run_ranks(cluster, spec_path, p, timeout_s, backend, on_run=on_run)
    results = json.loads((out / "results.json").read_text())
    cal = calibration_from_probes(results, G, backend)
    H = engine_topology(G, cal.peak_bandwidth_Bps)
    cases = []
    for case in results["cases"]:
        plan = case_plan(case["algo"], p, case["nbytes"])
        predicted = predict_case(plan, H, cal)
        stem = _stem(name, case["algo"], case["nbytes"])
        predicted.save(out / f"predicted-{stem}.json")
        measured = Trace.load(out / f"measured-{stem}.json")
        comparison = compare(predicted, measured)
        durations = case["durations_s"]
        measured_s = statistics.median(durations)
        link_err, stray = _link_check(plan, G, case["wire_bytes"])
        cases.append(CaseResult(
            spec=case["algo"], algorithm=resolve(case["algo"]).name, workers=plan.workers, ranks=plan.ranks,
            nbytes=case["nbytes"], measured_s=measured_s, measured_min_s=min(durations),
            measured_max_s=max(durations), repeats_s=durations, predicted_s=predicted.duration_s,
            error=(predicted.duration_s - measured_s) / measured_s, op_error_median=comparison.op_end_error_median,
            op_error_p95=comparison.op_end_error_p95, rank_error_max=comparison.rank_end_error_max,
            first_divergence=comparison.first_divergence, link_bytes_error=link_err, stray_link_bytes=stray,
            start_skew_s=statistics.median(max(st) - min(st) for st in case["rank_start_s"]),
            target=TARGET_LARGE if case["nbytes"] >= LARGE_NBYTES else TARGET_SMALL,
            measured_trace=str(out / f"measured-{stem}.json"), predicted_trace=str(out / f"predicted-{stem}.json")))
    ranking, match = _rankings(cases)
    after = _busy_fraction(0.5)
    if after > BUSY_WARNING and not warnings:
        warnings.append(f"the machine was {after:.0%} busy right after the run (other processes)")
    for c in cases:
        c.cause = _diagnose(c, max(background, after), cal, case_plan(c.spec, p, c.nbytes), shaper,
                            Trace.load(c.predicted_trace), host_rate_bps(G), Trace.load(c.measured_trace))
    return ValidationReport(topology=name, hosts=p, shaper=shaper, backend=backend, repeat=repeat, calibration=cal,
                            cases=cases, ranking=ranking, ranking_match=match, machine=_machine(),
                            date=time.strftime("%Y-%m-%d"), background_cpu=background,
                            wall_s=time.monotonic() - started, warnings=warnings)


def calibration_from_probes(results: dict, G: nx.Graph, backend: str) -> Calibration:
    """The engine's inputs from the probes (see the module doc); the late-receive probes are compared with the
    engine's prediction of the same plans, so alpha, the wire and the token bucket are not counted twice. With
    gloo (backend ``torch``) a receive's notice queues behind data (docs/engine.md, mechanism 6): gloo writes it
    to the one socket of the pair; UCX's handshake is not traced, and no MPI case changes with it on."""
    from firesim.engine import Transport, simulate

    alpha_s, gamma = float(results["alpha_s"]), float(results["gamma_s_per_byte"])
    one_way = {str(n): float(t) for n, t in results["message_one_way_s"].items()}
    (n1, t1), (n2, t2) = sorted((int(n), t) for n, t in one_way.items())[:2]
    payload_Bps = (n2 - n1) / (t2 - t1) if t2 > t1 else math.inf
    peak = min(payload_Bps / TCP_GOODPUT_EFFICIENCY, MAX_PEAK_BANDWIDTH_Bps)
    H = engine_topology(G, peak)
    p = len(G.graph["endpoints"])
    goodput = route_goodput_Bps(H, 0, 1)
    cal = Calibration(alpha_s=alpha_s, gamma_s_per_byte=gamma, buffered_bytes=int(results["buffered_bytes"]),
                      message_one_way_s=one_way, message_overhead_s=0.0, peak_bandwidth_Bps=peak,
                      late_recv_s={str(n): float(t) for n, t in results["late_recv_s"].items()},
                      swap_serialized=min(max(results["swap_s"]["swap"] / results["swap_s"]["swap-recv-first"] - 1,
                                              0.0), 1.0),
                      pingpong_round_trip_s=list(results["pingpong_round_trip_s"]),
                      notice_behind_data=backend == "torch")
    waited = {}  # nbytes -> (measured, predicted as rendezvous without overhead)
    for n_str, measured in cal.late_recv_s.items():
        n = int(n_str)
        plan = _late_recv_plan(p, n, _late_delay_s(n, goodput))
        trace = simulate(plan, H, alpha_s=alpha_s, gamma_s_per_byte=gamma,
                         transport=Transport(eager_window_nbytes=float(cal.buffered_bytes)))
        recv = int(plan.offsets[1]) + 1
        waited[n] = (measured, float(trace.t_end[recv] - trace.t_start[recv]))
    rendezvous = [n for n, (measured, predicted) in sorted(waited.items()) if measured > predicted / 2]
    sizes = sorted(waited)
    # the smallest size from which every larger probe waited too
    first = next((n for k, n in enumerate(sizes) if all(m in rendezvous for m in sizes[k:])), None)
    cal.rendezvous_nbytes = None if first is None else (0.0 if first == sizes[0] else float(first))
    extra = [waited[n][0] - waited[n][1] for n in sizes if first is not None and n >= first]
    cal.message_overhead_s = max(statistics.median(extra), 0.0) if extra else 0.0
    swap = simulate(_swap_plan(p, SWAP_PROBE_BYTES, True), H, alpha_s=alpha_s, gamma_s_per_byte=gamma,
                    transport=cal.transport())  # the engine's time for the swap probe, with all the above
    cal.swap_over_model = max(results["swap_s"]["swap-recv-first"] / swap.duration_s - 1, 0.0)
    return cal


def _stem(topology: str, algo: str, nbytes: int) -> str:
    """File-name part for one case ('ps:servers=2' has characters a file name should not)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{topology}-{algo}-{nbytes}")


def route_goodput_Bps(H: nx.Graph, a: int, b: int) -> float:
    from firesim.topology import route_capacity_Bps

    ends = H.graph["endpoints"]
    return route_capacity_Bps(H, ends[a], ends[b])


def _busy_fraction(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat); 0 where that is unreadable."""
    def sample() -> list[int]:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]

    try:
        a = sample()
        time.sleep(seconds)
        b = sample()
    except (OSError, ValueError):
        return 0.0
    d = [y - x for x, y in zip(a, b)]
    total = sum(d)
    return 1.0 - (d[3] + d[4]) / total if total > 0 else 0.0


def _link_check(plan: Plan, G: nx.Graph, wire_bytes: dict[str, float]) -> tuple[float, int]:
    """Worst relative gap (signed) between the wire bytes counted per run and the plan's bytes x 1514/1448, over
    the links the plan uses, and the bytes seen on links it does not use."""
    from firesim.topology import link_bytes

    expected = {(str(u), str(v)): n for (u, v), n in link_bytes(plan, G).items()}
    measured = {tuple(key.split(">")): n for key, n in wire_bytes.items()}
    worst = 0.0
    for link, payload in expected.items():
        if payload > 0:
            gap = measured.get(link, 0.0) / (payload * WIRE_PER_PAYLOAD) - 1
            worst = gap if abs(gap) > abs(worst) else worst
    stray = sum(n for link, n in measured.items() if expected.get(link, 0) == 0)
    return worst, int(stray)


def _run_ranks(cluster: EmulatedCluster, spec_path: Path, p: int, timeout_s: float, backend: str = "torch",
               on_run: Callable[[str, int], None] | None = None) -> None:
    """One worker per host namespace; all must exit 0 within ``timeout_s`` (else all are stopped).

    torch: one process per namespace, gloo bound to its interface, rendezvous at rank 0's address. mpi: one
    ``mpiexec`` in host 0's namespace that places a rank in every namespace (``EmulatedCluster.mpiexec_argv``).
    Rank 0 appends a line to ``progress.jsonl`` after every run; each one is passed to ``on_run``.
    """
    worker = [sys.executable, "-m", "firerun.validate", "worker", str(spec_path)]
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if backend == "mpi":
        logs = [spec_path.parent / "mpiexec.log"]
    else:
        env.update(MASTER_ADDR=cluster.address(0), MASTER_PORT=str(MASTER_PORT), WORLD_SIZE=str(p),
                   GLOO_SOCKET_IFNAME=cluster.ifname)
        logs = [spec_path.parent / f"rank{r}.log" for r in range(p)]
    progress = spec_path.parent / "progress.jsonl"
    seen = 0
    procs = []
    handles = [open(path, "w") for path in logs]  # noqa: SIM115 (closed below)
    try:
        if backend == "mpi":
            procs.append(cluster.run_in(0, cluster.mpiexec_argv(worker, spec_path.parent), env,
                                        stdout=handles[0], stderr=subprocess.STDOUT))
        for r in range(p if backend != "mpi" else 0):
            procs.append(cluster.run_in(r, worker, {**env, "RANK": str(r)}, stdout=handles[r],
                                        stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        while any(proc.poll() is None for proc in procs):
            failed = [r for r, proc in enumerate(procs) if proc.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                time.sleep(1.0)  # let the others report their side before they are stopped
                break
            seen = _report_progress(progress, seen, on_run)
            time.sleep(0.1)
        _report_progress(progress, seen, on_run)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        for h in handles:
            h.close()
    bad = [r for r, proc in enumerate(procs) if proc.returncode != 0]
    if bad:
        r = bad[0]
        tail = logs[r].read_text().strip().splitlines()[-1:] or ["(no output)"]
        who = "mpiexec" if backend == "mpi" else f"rank {r}"
        raise RuntimeError(f"validate: {who} exited with {procs[r].returncode}: {tail[0]} (see {logs[r]})")


def _report_progress(path: Path, seen: int, on_run: Callable[[str, int], None] | None) -> int:
    """Pass the runs rank 0 finished since the last look to ``on_run``; returns how many lines were read."""
    if on_run is None or not path.exists():
        return seen
    lines = path.read_text().splitlines()
    complete = lines if path.read_text().endswith("\n") else lines[:-1]
    for line in complete[seen:]:
        run = json.loads(line)
        on_run(run["algo"], run["nbytes"])
    return len(complete)


# --------------------------------------------------------------------------------------------------------
# the whole suite


@dataclass
class SuiteConfig:
    topology: Path
    shaper: str
    backend: str


def validate_suite(topologies: Sequence[Path], *, shapers: Sequence[str] = ("htb",),
                   backends: Sequence[str] = ("torch",), algos: Sequence[str] | None = None,
                   sizes: Sequence[int] = (1 << 20, 4 << 20, 16 << 20), repeat: int = 5, warmup: int = 1,
                   traces_dir: Path | None = None, state_dir: Path | None = None, quiet_wait_s: float = 300.0,
                   console=None) -> tuple[list[ValidationReport], list[str]]:
    """Every topology x shaper x backend, with the run time estimated and printed first and a progress bar.

    Before each configuration the machine must be quiet (< 10 % busy): the suite waits up to ``quiet_wait_s``
    for that, then runs anyway with a warning in the report. A configuration that fails (a rank dies) is
    reported as a failure line and the suite goes on. Returns the reports and the failures.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from firesim.io import write_json_atomic
    from firesim.topology import load_topology

    console = console or Console(stderr=True)
    graphs = {path: load_topology(path) for path in topologies}
    for G in graphs.values():
        check_emulable(G)
    plan_specs = {path: list(algos) if algos is not None else default_specs(len(G.graph["endpoints"]))
                  for path, G in graphs.items()}
    configs = [SuiteConfig(path, shaper, backend) for path in topologies for shaper in shapers for backend in backends]
    estimates = {}
    for cfg in configs:
        estimates[id(cfg)] = estimate_seconds(graphs[cfg.topology], plan_specs[cfg.topology], sizes, repeat=repeat,
                                              warmup=warmup, backend=cfg.backend)
    total_s = sum(e[0] for e in estimates.values())
    runs = sum(len(plan_specs[c.topology]) * len(sizes) * (warmup + repeat) for c in configs)
    console.print(f"validate: {len(configs)} cluster configurations ({len(topologies)} topologies x "
                  f"{len(shapers)} shapers x {len(backends)} backends), {runs} runs; "
                  f"estimated {total_s / 60:.0f} min")
    busy = _busy_fraction()
    if busy > BUSY_WARNING:
        console.print(f"[yellow]warning:[/] the machine is {busy:.0%} busy now; timings need a quiet machine "
                      f"(each configuration waits up to {quiet_wait_s:.0f} s for one)")
    reports, failures = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("validate", total=total_s)
        done_s = 0.0
        for cfg in configs:
            estimate_s, per_run = estimates[id(cfg)]
            label = f"{graphs[cfg.topology].graph.get('name', cfg.topology.stem)} {cfg.shaper} {cfg.backend}"
            progress.update(task, description=f"{label}: waiting for a quiet machine")
            _wait_quiet(quiet_wait_s)
            progress.update(task, description=label)
            out = (traces_dir or Path(tempfile.gettempdir()) / "firerun-validate") / re.sub(r"\W", "-", label)
            try:
                report = validate(cfg.topology, plan_specs[cfg.topology], sizes, repeat=repeat, warmup=warmup,
                                  out_dir=out, state_dir=state_dir, shaper=cfg.shaper, backend=cfg.backend,
                                  on_run=lambda spec, n, r=per_run: progress.advance(task, r[(spec, n)]))
                reports.append(report)
                write_json_atomic(out / "report.json", report.to_dict())
                summary = report.error_summary()
                large, small = summary["large"], summary["small"]
                line = f"{label}: {report.wall_s:.0f} s"
                if large["cases"]:
                    line += f", >= 4 MiB median |error| {large['median_abs_error']:.1%}"
                if small["cases"]:
                    line += f", < 4 MiB median {small['median_abs_error']:.1%}"
                line += f", misses {large['misses'] + small['misses']}, ranking "
                line += "right" if report.ranking_match else "WRONG"
                progress.console.print(line + (f" [yellow](warning: {report.warnings[0]})[/]" if report.warnings
                                               else ""))
            except RuntimeError as err:
                failures.append(f"{label}: {err}")
                progress.console.print(f"[red]{label}: failed:[/] {err}")
            done_s += estimate_s
            progress.update(task, completed=done_s)
    return reports, failures


def _wait_quiet(limit_s: float, poll_s: float = 5.0) -> float:
    """Wait until the machine is under BUSY_WARNING busy or ``limit_s`` passed; returns the last reading."""
    deadline = time.monotonic() + limit_s
    busy = _busy_fraction()
    while busy > BUSY_WARNING and time.monotonic() < deadline:
        time.sleep(poll_s)
        busy = _busy_fraction()
    return busy


# --------------------------------------------------------------------------------------------------------
# the worker: one rank, inside its namespace


def _pingpong_plan(p: int) -> Plan:
    """4-byte messages back and forth between ranks 0 and 1; the others idle."""
    programs: list[list] = [[] for _ in range(p)]
    for _ in range(PINGPONG_ROUND_TRIPS):
        programs[0] += [("send", 0, 1), ("recv", 0, 1)]
        programs[1] += [("recv", 0, 0), ("send", 0, 0)]
    return Plan.from_programs("pingpong", 4, 1, programs)


def _swap_plan(p: int, nbytes: int, recv_first: bool) -> Plan:
    """Ranks 0-1, 2-3, ... swap halves of a buffer at once and swap back, each posting its receive after (or
    before) its send; an odd last rank idles. With one connection per pair, a receive posted after a send may
    only be announced to the peer behind the send's data (``swap_serialized``); a rendezvous protocol may run
    the two directions one after the other whatever the order (``swap_over_model``)."""
    def program(peer: int, half: int) -> list:
        if recv_first:
            return [("reduce", half, peer), ("send", 1 - half, peer), ("recv", 1 - half, peer), ("send", half, peer)]
        return [("send", 1 - half, peer), ("reduce", half, peer), ("send", half, peer), ("recv", 1 - half, peer)]

    programs = [program(r ^ 1, r % 2) if (r ^ 1) < p else [("compute", -1, 0.0)] for r in range(p)]
    return Plan.from_programs("swap-recv-first" if recv_first else "swap", nbytes, 2, programs, workers=2)


def _late_delay_s(nbytes: int, goodput_Bps: float) -> float:
    """How long the late receiver waits before posting: twice what the message needs, plus 5 ms."""
    return 2 * nbytes / goodput_Bps + 5e-3


def _late_recv_plan(p: int, nbytes: int, delay_s: float) -> Plan:
    """Rank 0 sends one message; rank 1 computes for ``delay_s``, then posts its receive (op 1 of rank 1)."""
    return Plan.from_programs("late-recv", nbytes, 1, [[("send", 0, 1)], [("compute", -1, delay_s), ("recv", 0, 0)]]
                              + [[] for _ in range(p - 2)])


def _one_message_plan(p: int, nbytes: int) -> Plan:
    return Plan.from_programs("one-message", nbytes, 1, [[("send", 0, 1)], [("recv", 0, 0)]] + [[] for _ in range(p - 2)])


def _gamma_s_per_byte(rounds: int = 9) -> float:
    """Seconds per byte of ``a.add_(b)`` on float32 buffers too big for the caches (median of rounds)."""
    import torch

    a = torch.ones(GAMMA_PROBE_BYTES // 4)
    b = torch.ones_like(a)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a.add_(b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / GAMMA_PROBE_BYTES


def _read_counters(ports: list[dict]) -> dict[str, int]:
    from firerun.emulate import _qdisc_bytes

    by_ns = {ns: _qdisc_bytes(ns) for ns in {pt["ns"] for pt in ports}}
    return {f"{pt['node']}>{pt['peer']}": by_ns[pt["ns"]].get(pt["ifname"], 0) for pt in ports}


def probe_transport(ex, rank: int, p: int, goodput_Bps: float) -> dict:
    """Alpha, the TCP buffering, one-way message times and gamma, measured by rank 0 (see the module doc)."""
    import torch

    out: dict = {}
    ping = _pingpong_plan(p)
    buf = torch.zeros(1)
    ex.run(ping, buf)  # warm-up: connections, clock offsets
    trips = []
    for _ in range(3):
        trace = ex.run(ping, buf)
        if rank == 0:
            ends = trace.t_end[trace.rank == 0]
            trips.append(float(np.median(np.diff(ends[1::2]))))
    probe = _one_message_plan(p, BUFFER_PROBE_BYTES)
    data = torch.zeros(BUFFER_PROBE_BYTES // 4)
    held = []
    for _ in range(3):
        trace = ex.run(probe, data)
        if rank == 0:
            held.append(float(trace.t_end[1] - trace.t_end[0]) * goodput_Bps)
    one_way = {}
    for nbytes in MESSAGE_PROBE_BYTES:  # the minimum: a few us of scheduling noise would swamp the slope
        probe = _one_message_plan(p, nbytes)
        data = torch.zeros(nbytes // 4)
        ex.run(probe, data)  # warm-up
        times = []
        for _ in range(PROBE_REPEATS):
            time.sleep(PROBE_IDLE_s)
            trace = ex.run(probe, data)
            if rank == 0:
                times.append(float(trace.t_end[1] - trace.t_start[0]))
        if rank == 0:
            one_way[str(nbytes)] = min(times)
    late = {}
    for nbytes in LATE_PROBE_BYTES:
        probe = _late_recv_plan(p, nbytes, _late_delay_s(nbytes, goodput_Bps))
        data = torch.zeros(nbytes // 4)
        recv = int(probe.offsets[1]) + 1
        times = []
        for _ in range(PROBE_REPEATS):
            time.sleep(PROBE_IDLE_s)
            trace = ex.run(probe, data)
            if rank == 0:
                times.append(float(trace.t_end[recv] - trace.t_start[recv]))
        if rank == 0:
            late[str(nbytes)] = statistics.median(times)
    swap = {}
    for recv_first in (False, True):
        plan = _swap_plan(p, SWAP_PROBE_BYTES, recv_first)
        data = torch.zeros(SWAP_PROBE_BYTES // 4)
        times = []
        for _ in range(PROBE_REPEATS):
            data.fill_(rank + 1.0)
            time.sleep(PROBE_IDLE_s)
            trace = ex.run(plan, data)
            if rank == 0:
                times.append(trace.duration_s)
        swap[plan.name] = statistics.median(times) if rank == 0 else 0.0
    if rank == 0:
        out = {"swap_s": swap, "buffered_bytes": max(int(statistics.median(held)), 0), "alpha_s": statistics.median(trips) / 2,
               "pingpong_round_trip_s": trips, "message_one_way_s": one_way, "late_recv_s": late, "gamma_s_per_byte": _gamma_s_per_byte()}
    ex.barrier("after calibration")
    return out


def _worker(spec_path: str) -> None:
    import datetime as dt

    import torch
    import torch.distributed as dist

    from firerun.executor import Executor

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    torch.set_num_threads(1)  # four ranks share two cores
    if spec["backend"] == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, p = comm.Get_rank(), comm.Get_size()
        executor = Executor("mpi", comm=comm, timeout_s=spec["timeout_s"])
    else:
        dist.init_process_group("gloo", timeout=dt.timedelta(seconds=spec["timeout_s"]))
        rank, p = dist.get_rank(), dist.get_world_size()
        executor = Executor("torch", timeout_s=spec["timeout_s"])
    results: dict = {"cases": []}
    progress = out / "progress.jsonl"
    try:
        with executor as ex:
            results.update(probe_transport(ex, rank, p, spec["probe_goodput_Bps"]))
            for case in spec["cases"]:
                plan = case_plan(case["algo"], p, case["nbytes"])
                tensor = torch.empty(case["nbytes"] // 4)
                expected = float(sum(range(1, plan.workers + 1)))
                durations, starts, traces = [], [], []
                before = None
                for i in range(spec["warmup"] + spec["repeat"]):
                    tensor.fill_(rank + 1.0)
                    if rank == 0 and i == spec["warmup"]:
                        before = _read_counters(spec["ports"])
                    trace = ex.run(plan, tensor)
                    if rank < plan.workers and not bool(torch.all(tensor == expected)):
                        raise RuntimeError(f"rank {rank}: {case['algo']} {case['nbytes']} B: wrong sum")
                    if rank == 0:
                        if i >= spec["warmup"]:
                            durations.append(trace.duration_s)
                            starts.append(list(trace.header.extra.get("rank_start_s", [0.0] * p)))
                            traces.append(trace)
                        with progress.open("a") as f:
                            f.write(json.dumps({**case, "run_s": trace.duration_s, "at": time.time()}) + "\n")
                if rank == 0:
                    median = traces[int(np.argsort(durations)[len(durations) // 2])]
                    median.save(out / f"measured-{_stem(spec['topology'], case['algo'], case['nbytes'])}.json")
                    after = _read_counters(spec["ports"])
                    wire = {k: (after[k] - before[k]) / spec["repeat"] for k in after}  # per run, on average
                    results["cases"].append({**case, "durations_s": durations, "rank_start_s": starts,
                                             "wire_bytes": wire})
            ex.barrier("end")
    finally:
        if spec["backend"] != "mpi":
            dist.destroy_process_group()
    if rank == 0:
        write_json_atomic(out / "results.json", results)


# --------------------------------------------------------------------------------------------------------
# CLI


def validate_cmd(
    topology: Annotated[Path | None, typer.Option(help="One topology YAML to emulate (<= 4 hosts).")] = None,
    suite: Annotated[Path | None, typer.Option(help="A folder of topology YAMLs: run them all and write the "
                                                    "report (validation.md, figures, JSON) to --out.")] = None,
    algo: Annotated[str | None, typer.Option(help="Algorithm specs, comma-separated (default: every registered "
                                                  "algorithm once).")] = None,
    size: Annotated[str, typer.Option(help="Buffer sizes, comma-separated (e.g. 4MiB,16MiB).")] = "1MiB,4MiB,16MiB",
    repeat: Annotated[int, typer.Option(min=1, max=1000, help="Measured runs per case (after the warm-up).")] = 5,
    warmup: Annotated[int, typer.Option(min=0, max=100, help="Unmeasured runs per case first.")] = 1,
    out: Annotated[Path | None, typer.Option(parser=output_dir, help="--topology: folder for traces and logs (default: a "
                                                  "temporary folder); --suite: folder for the report "
                                                  "(default: docs).")] = None,
    plot: Annotated[Path | None, typer.Option(parser=output_file(".png"), help="--topology: save measured-vs-predicted timelines (PNG).")] = None,
    shaper: Annotated[str, typer.Option(help="htb (ACKs first) and/or tbf (one FIFO), comma-separated.")] = "htb",
    backend: Annotated[str, typer.Option(help="torch (gloo) and/or mpi (mpi4py over MPICH), comma-separated.")] = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="--topology: print JSON instead of a table.")] = False,
    quiet_wait: Annotated[float, typer.Option(min=0, max=3600, help="--suite: seconds to wait before each configuration for the "
                                                   "machine to be under 10 % busy (then run with a warning).")] = 300.0,
    tcp_sample: Annotated[float, typer.Option(min=0, max=60, help="--topology: seconds between samples of every TCP connection's "
                                              "window, RTT and buffers (ss) and every link's queue (tc) into tcp.json in --out; "
                                              "0: off. Slows the run.")] = 0.0,
) -> None:
    """Run plans on an emulated cluster, simulate them, and report the prediction error."""
    from firerun import validate_report
    from firesim.units import parse_size_list, split_list

    if (topology is None) == (suite is None):
        raise UserError("validate: give either --topology FILE or --suite FOLDER")
    if tcp_sample and suite is not None:
        raise UserError("validate: --tcp-sample goes with --topology (it slows the runs it watches)")
    if repeat < 1 or warmup < 0 or not quiet_wait >= 0:
        raise UserError(f"repeat: must be >= 1, warmup and quiet-wait >= 0, got {repeat}, {warmup}, {quiet_wait}")
    sizes = parse_size_list(size, what="size")
    shapers, backends = split_list(shaper, "shaper"), split_list(backend, "backend")
    for s in shapers:
        if s not in ("htb", "tbf"):
            raise UserError(f"shaper: 'htb' or 'tbf', got {s!r}")
    for b in backends:
        if b not in ("torch", "mpi"):
            raise UserError(f"backend: 'torch' (gloo) or 'mpi' (mpi4py, MPICH), got {b!r}")
    specs = split_specs(algo) if algo is not None else None
    if suite is not None:
        files = sorted(suite.glob("*.yaml")) if suite.is_dir() else []
        if not files:
            raise UserError(f"suite: no *.yaml topology files in {str(suite)!r}")
        docs = out or Path("docs")
        validate_report.check_writable(docs)
        started = time.monotonic()
        reports, failures = validate_suite(files, shapers=shapers, backends=backends, algos=specs, sizes=sizes,
                                           repeat=repeat, warmup=warmup, quiet_wait_s=quiet_wait)
        command = (f"firerun validate --suite {suite} --shaper {shaper} --backend {backend} --size {size} "
                   f"--repeat {repeat} --warmup {warmup} --out {docs}" + (f" --algo '{algo}'" if algo else ""))
        written = validate_report.write_report(reports, failures, docs, command=command,
                                               wall_s=time.monotonic() - started)
        typer.echo(validate_report.summary_text(reports, failures))
        typer.echo(f"wrote {', '.join(str(p) for p in written)}")
        if failures:
            raise typer.Exit(1)
        return
    if len(shapers) * len(backends) != 1:
        raise UserError("validate --topology: one --shaper and one --backend (use --suite for the cross product)")
    log = None if as_json else (lambda msg: typer.echo(msg, err=True))
    try:
        report = validate(topology, specs, sizes, repeat=repeat, warmup=warmup, out_dir=out, shaper=shapers[0],
                          backend=backends[0], log=log, tcp_sample_s=tcp_sample)
    except RuntimeError as err:  # a rank failed or the cluster could not be built: one line, exit 1
        typer.echo(f"firerun validate: {err}", err=True)
        raise typer.Exit(1) from None
    if plot is not None:
        validate_report.plot_timelines(report, plot)
    if as_json:
        typer.echo(dumps(report.to_dict(), indent=2))
        return
    typer.echo(validate_report.summary_line(report))
    typer.echo(validate_report.format_table(report))
    typer.echo(validate_report.summary_text([report], []))
    typer.echo(f"traces (measured-*.json, predicted-*.json{', tcp.json' if tcp_sample else ''}): "
               f"{Path(report.cases[0].measured_trace).parent}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)


def _main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "worker":
        _worker(argv[1])
        return
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(validate_cmd)
    try:
        app(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    _main(sys.argv[1:])
