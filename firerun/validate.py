"""The validation loop: run plans for real on an emulated cluster, simulate the same plans, compare.

One call of :func:`validate` builds the cluster from the topology file (``firerun.emulate``), starts one rank
per host namespace (gloo bound to the namespace's ``eth0``, MASTER_ADDR = rank 0's namespace address), and
in that job

1. calibrates alpha with a ping-pong of 4-byte messages between ranks 0 and 1 through the real path
   (veth, bridges, shapers) and the executor's own send/recv: alpha = round trip / 2;
2. measures how many bytes a send hands to TCP before they are delivered (``buffered_bytes``): one 16 MiB
   message from rank 0 to rank 1, whose send completes when its tail is in the socket buffer; the gap to the
   recv's completion times the path's goodput is what TCP was holding;
3. measures gamma as the time of a local ``add_`` per byte at rank 0 (one thread, as the ranks run);
4. runs every plan ``warmup + repeat`` times with ``firerun.execute`` (median, min and max of the repeats),
   checks the result is the exact sum, and reads the shapers' byte counters of every directed link around
   each run, to compare with the bytes the plan routes over it.

Then it simulates each plan with ``firesim.engine.simulate`` on the same topology, in which every link gets
``efficiency = TCP_GOODPUT_EFFICIENCY`` (1448/1514: the shaper counts Ethernet frames, TCP carries 1448
bytes of each), with the calibrated alpha and gamma, and sends modelled as rendezvous (a send completes when
its data has arrived) by default. ``dist.isend`` over TCP sits in between: it completes once the tail of the
message is in the socket buffer (``buffered_bytes`` before arrival, 1.5 MiB measured here), which the engine
cannot express; both of its models are simulated for every case and reported, the chosen one gives the error.
The same rule for every case; no per-case factor. Error = (predicted - measured) / measured.

The machine is shared: other processes' CPU load slows the ranks, which no network model should absorb. The
CPU use of the machine is sampled for a second before the run; above 10 % the report carries a warning.

The worker is this module run as ``python -m firerun.validate worker SPEC.json`` inside a namespace.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import networkx as nx
import numpy as np
import typer

from firerun.emulate import (
    QUEUE_LIMIT_BYTES,
    TCP_GOODPUT_EFFICIENCY,
    EmulatedCluster,
    check_emulable,
    plan_link_bytes,
)
from firesim.clikit import output_dir, output_file
from firesim.errors import UserError
from firesim.io import dumps, write_json_atomic
from firesim.plans import Op, Plan, build, resolve, split_specs
from firesim.topology import load_topology
from firesim.trace import Trace

__all__ = ["CaseResult", "ValidationReport", "engine_topology", "validate", "validate_cmd"]

MASTER_PORT = 29500  # inside the cluster's own namespaces: nothing else listens there
PINGPONG_ROUND_TRIPS = 50
GAMMA_PROBE_BYTES = 8 << 20
BUFFER_PROBE_BYTES = 16 << 20  # larger than any socket buffer: its send completes before it arrives
BUSY_WARNING = 0.10
RANK_TIE = 0.02  # measured medians closer than this are a tie (repeats spread about 1 %)
WIRE_PER_PAYLOAD = 1 / TCP_GOODPUT_EFFICIENCY  # Ethernet bytes tbf counts per TCP payload byte


def engine_topology(G: nx.Graph) -> nx.Graph:
    """The graph handed to the engine: the emulated links, each at TCP goodput through tbf."""
    H = G.copy()
    for u, v in H.edges:
        H.edges[u, v]["efficiency"] = TCP_GOODPUT_EFFICIENCY
    return H


# --------------------------------------------------------------------------------------------------------
# results


@dataclass
class CaseResult:
    """One (algorithm, size): measured repeats, the prediction, and the link-byte check."""

    algo: str
    nbytes: int
    measured_s: float  # median of the repeats
    measured_min_s: float
    measured_max_s: float
    predicted_s: float
    error: float  # (predicted - measured) / measured, signed
    repeats_s: list[float]
    eager: bool  # how the engine modelled this plan's sends (for predicted_s)
    predicted_eager_s: float  # both models, for comparison
    predicted_rendezvous_s: float
    link_bytes_error: float  # worst |wire / expected - 1| over links the plan uses
    stray_link_bytes: int  # wire bytes on links the plan does not use (control traffic, ACKs)
    start_skew_s: float  # median over repeats of the spread of the ranks' start times after the barrier
    measured_trace: str = ""
    predicted_trace: str = ""


@dataclass
class ValidationReport:
    topology: str
    hosts: int
    alpha_s: float
    gamma_s_per_byte: float
    buffered_bytes: int
    shaper: str
    backend: str
    repeat: int
    cases: list[CaseResult]
    ranking: dict[str, dict] = field(default_factory=dict)  # size -> measured/predicted order, ties, wrong pairs
    ranking_match: bool = True
    machine: str = ""
    date: str = ""
    background_cpu: float = 0.0  # busy fraction of the machine's CPUs just before the run
    warnings: list[str] = field(default_factory=list)

    def error_summary(self, min_nbytes: int = 4 << 20) -> dict:
        """Median and worst |error| of the cases at or above ``min_nbytes`` and below it."""
        out = {}
        for key, sel in (("large", [c for c in self.cases if c.nbytes >= min_nbytes]),
                         ("small", [c for c in self.cases if c.nbytes < min_nbytes])):
            errors = [abs(c.error) for c in sel]
            out[key] = {"cases": len(errors), "median_abs_error": statistics.median(errors) if errors else None,
                        "max_abs_error": max(errors) if errors else None}
        out["min_nbytes"] = min_nbytes
        return out

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "cases"},
                "summary": self.error_summary(), "records": [asdict(c) for c in self.cases]}


def _rankings(cases: list[CaseResult]) -> tuple[dict[str, dict], bool]:
    """Per size: algorithms fastest first, measured and predicted, and whether they agree.

    Two algorithms whose measured medians are within ``RANK_TIE`` of each other are a tie: this machine cannot
    tell which is faster, so either predicted order is right. Every other pair must come out in the measured
    order.
    """
    out, match = {}, True
    for nbytes in sorted({c.nbytes for c in cases}):
        group = [c for c in cases if c.nbytes == nbytes]
        measured = [c.algo for c in sorted(group, key=lambda c: c.measured_s)]
        predicted = [c.algo for c in sorted(group, key=lambda c: c.predicted_s)]
        ties, wrong = [], []
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if abs(a.measured_s - b.measured_s) <= RANK_TIE * min(a.measured_s, b.measured_s):
                    ties.append([a.algo, b.algo])
                elif (a.measured_s < b.measured_s) != (a.predicted_s < b.predicted_s):
                    wrong.append([a.algo, b.algo])
        out[str(nbytes)] = {"measured": measured, "predicted": predicted, "ties": ties, "wrong": wrong}
        match &= not wrong
    return out, match


# --------------------------------------------------------------------------------------------------------
# the parent: build the cluster, start the ranks, simulate, compare


def _machine() -> str:
    import platform

    return f"{platform.node() or 'linux'}, {os.cpu_count()} cores, Linux {platform.release()}"


def validate(topology: str | os.PathLike, algos: Sequence[str] = ("ring", "tree", "ps"),
             sizes: Sequence[int] = (4 << 20, 16 << 20), *, repeat: int = 5, warmup: int = 1,
             out_dir: str | os.PathLike | None = None, eager: str = "off", timeout_s: float = 600.0,
             state_dir: str | os.PathLike | None = None, shaper: str = "htb",
             queue_limit_bytes: int = QUEUE_LIMIT_BYTES, backend: str = "torch", log=None) -> ValidationReport:
    """Measure and predict every (algo, size) on the emulated ``topology``; traces go to ``out_dir``.

    eager: 'off' (rendezvous: a send completes when its data has arrived; the default, see docs/validation.md),
    'on' (a send completes at issue) or 'auto' (eager for plans whose messages fit in the measured TCP
    buffering).
    """
    from firesim.engine import simulate

    if backend not in ("torch", "mpi"):
        raise UserError(f"backend: 'torch' (gloo) or 'mpi' (mpi4py, MPICH), got {backend!r}")
    if eager not in ("auto", "on", "off"):
        raise UserError(f"eager: 'auto', 'on' or 'off', got {eager!r}")
    if repeat < 1 or warmup < 0:
        raise UserError(f"repeat: must be >= 1 (warmup >= 0), got {repeat} ({warmup})")
    algos = list(algos)
    for a in algos:
        resolve(a)  # one-line UserError for an unknown algorithm or a malformed option
    sizes = [int(n) for n in sizes]
    if any(n < 4 or n % 4 for n in sizes):
        raise UserError(f"size: must be a positive multiple of 4 bytes (float32), got {sizes}")
    G = load_topology(topology)
    check_emulable(G)
    name = str(G.graph.get("name", Path(topology).stem))
    p = len(G.graph["endpoints"])
    if p < 2:
        raise UserError(f"validate {name}: needs at least 2 hosts")
    for a in algos:  # each fits the cluster's ranks (dedicated servers among them)
        choice = resolve(a)
        choice.check(choice.workers(p))
    out = Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir()) / f"firerun-validate-{name}"
    out.mkdir(parents=True, exist_ok=True)  # every check passed: from here on, files are written
    say = log or (lambda msg: None)

    background = _busy_fraction()
    warnings = []
    if background > BUSY_WARNING:
        warnings.append(f"the machine was {background:.0%} busy before the run (other processes): "
                        "measured times include their CPU contention")
        say(f"warning: {warnings[-1]}")
    kwargs = {} if state_dir is None else {"state_dir": state_dir}
    with EmulatedCluster(topology, shaper=shaper, queue_limit_bytes=queue_limit_bytes, **kwargs) as cluster:
        spec = {"cases": [{"algo": a, "nbytes": n} for n in sizes for a in algos], "repeat": repeat,
                "warmup": warmup, "out_dir": str(out.resolve()), "timeout_s": min(timeout_s, 120.0),
                "probe_goodput_Bps": _route_goodput_Bps(G, 0, 1), "backend": backend,
                "topology": name, "ports": [{"node": pt.node, "peer": pt.peer, "ns": pt.ns, "ifname": pt.ifname}
                                            for pair in cluster.links for pt in pair]}
        spec_path = out / "spec.json"
        write_json_atomic(spec_path, spec)
        (out / "results.json").unlink(missing_ok=True)
        say(f"cluster {cluster.id} up: {p} ranks on {name}; running {len(spec['cases'])} cases x "
            f"{warmup}+{repeat}")
        _run_ranks(cluster, spec_path, p, timeout_s, backend)
    results = json.loads((out / "results.json").read_text())

    H = engine_topology(G)
    alpha_s, gamma = float(results["alpha_s"]), float(results["gamma_s_per_byte"])
    buffered = int(results["buffered_bytes"])
    cases = []
    for case in results["cases"]:
        plan = build(case["algo"], p, case["nbytes"])
        plan_eager = eager == "on" or eager == "auto" and _largest_message(plan) <= buffered
        both = {mode: simulate(plan, H, alpha_s=alpha_s, gamma_s_per_byte=gamma, eager=mode) for mode in (False, True)}
        predicted = both[plan_eager]
        stem = _stem(name, case["algo"], case["nbytes"])
        predicted.save(out / f"predicted-{stem}.json")
        durations = case["durations_s"]
        measured_s = statistics.median(durations)
        link_err, stray = _link_check(plan, G, case["wire_bytes"])
        cases.append(CaseResult(
            algo=case["algo"], nbytes=case["nbytes"], measured_s=measured_s, measured_min_s=min(durations),
            measured_max_s=max(durations), predicted_s=predicted.duration_s,
            error=(predicted.duration_s - measured_s) / measured_s, repeats_s=durations, eager=plan_eager,
            predicted_eager_s=both[True].duration_s, predicted_rendezvous_s=both[False].duration_s,
            link_bytes_error=link_err, stray_link_bytes=stray,
            start_skew_s=statistics.median(max(st) - min(st) for st in case["rank_start_s"]),
            measured_trace=str(out / f"measured-{stem}.json"), predicted_trace=str(out / f"predicted-{stem}.json")))
    ranking, match = _rankings(cases)
    after = _busy_fraction(0.5)
    if after > BUSY_WARNING and not warnings:
        warnings.append(f"the machine was {after:.0%} busy right after the run (other processes)")
    return ValidationReport(topology=name, hosts=p, alpha_s=alpha_s, gamma_s_per_byte=gamma,
                            buffered_bytes=buffered, shaper=shaper, backend=backend, repeat=repeat, cases=cases,
                            ranking=ranking, ranking_match=match, machine=_machine(),
                            date=time.strftime("%Y-%m-%d"), background_cpu=background, warnings=warnings)


def _stem(topology: str, algo: str, nbytes: int) -> str:
    """File-name part for one case ('ps:servers=2' has characters a file name should not)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{topology}-{algo}-{nbytes}")


def _route_goodput_Bps(G: nx.Graph, a: int, b: int) -> float:
    """TCP goodput of the bottleneck on the route from rank a to rank b."""
    from firesim.topology import route

    ends = G.graph["endpoints"]
    path = route(G, ends[a], ends[b])
    return min(float(G.edges[u, v]["bandwidth_Bps"]) for u, v in zip(path[:-1], path[1:])) * TCP_GOODPUT_EFFICIENCY


def _largest_message(plan: Plan) -> int:
    sends = plan.op == Op.SEND
    return int(plan.op_nbytes()[sends].max(initial=0))


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


def _link_check(plan: Plan, G: nx.Graph, wire_bytes: list[dict]) -> tuple[float, int]:
    """Worst relative gap between the wire bytes counted and the plan's bytes x 1514/1448, over the links the
    plan uses (median over repeats), and the bytes seen on links it does not use."""
    expected = plan_link_bytes(plan, G)
    measured: dict[tuple[str, str], float] = {}
    for key in {k for run in wire_bytes for k in run}:
        u, v = key.split(">")
        measured[(u, v)] = statistics.median(run.get(key, 0) for run in wire_bytes)
    worst = 0.0
    for link, payload in expected.items():
        if payload > 0:
            worst = max(worst, abs(measured.get(link, 0.0) / (payload * WIRE_PER_PAYLOAD) - 1))
    stray = sum(n for link, n in measured.items() if expected.get(link, 0) == 0)
    return worst, int(stray)


def _run_ranks(cluster: EmulatedCluster, spec_path: Path, p: int, timeout_s: float, backend: str = "torch") -> None:
    """One worker per host namespace; all must exit 0 within ``timeout_s`` (else all are stopped).

    torch: one process per namespace, gloo bound to its interface, rendezvous at rank 0's address. mpi: one
    ``mpiexec`` in host 0's namespace that places a rank in every namespace (``EmulatedCluster.mpiexec_argv``).
    """
    worker = [sys.executable, "-m", "firerun.validate", "worker", str(spec_path)]
    env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if backend == "mpi":
        logs = [spec_path.parent / "mpiexec.log"]
    else:
        env.update(MASTER_ADDR=cluster.address(0), MASTER_PORT=str(MASTER_PORT), WORLD_SIZE=str(p),
                   GLOO_SOCKET_IFNAME=cluster.ifname)
        logs = [spec_path.parent / f"rank{r}.log" for r in range(p)]
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
            time.sleep(0.05)
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


# --------------------------------------------------------------------------------------------------------
# the worker: one rank, inside its namespace


def _pingpong_plan(p: int) -> Plan:
    """4-byte messages back and forth between ranks 0 and 1; the others idle."""
    programs: list[list] = [[] for _ in range(p)]
    for _ in range(PINGPONG_ROUND_TRIPS):
        programs[0] += [("send", 0, 1), ("recv", 0, 1)]
        programs[1] += [("recv", 0, 0), ("send", 0, 0)]
    return Plan.from_programs("pingpong", 4, 1, programs)


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
    try:
        with executor as ex:
            ping = _pingpong_plan(p)
            buf = torch.zeros(1)
            ex.run(ping, buf)  # warm-up: connections, clock offsets
            trips = []
            for _ in range(3):
                trace = ex.run(ping, buf)
                if rank == 0:
                    ends = trace.t_end[trace.rank == 0]
                    trips.append(float(np.median(np.diff(ends[1::2]))))
            probe = Plan.from_programs("buffer-probe", BUFFER_PROBE_BYTES, 1,
                                       [[("send", 0, 1)], [("recv", 0, 0)]] + [[] for _ in range(p - 2)])
            data = torch.zeros(BUFFER_PROBE_BYTES // 4)
            held = []
            for _ in range(3):
                trace = ex.run(probe, data)
                if rank == 0:
                    held.append(float(trace.t_end[1] - trace.t_end[0]) * spec["probe_goodput_Bps"])
            if rank == 0:
                results["buffered_bytes"] = int(statistics.median(held))
                results["alpha_s"] = statistics.median(trips) / 2
                results["pingpong_round_trip_s"] = trips
                results["gamma_s_per_byte"] = _gamma_s_per_byte()
            ex.barrier("after calibration")
            for case in spec["cases"]:
                plan = build(case["algo"], p, case["nbytes"])
                tensor = torch.empty(case["nbytes"] // 4)
                expected = float(sum(range(1, plan.workers + 1)))
                durations, starts, wire, traces = [], [], [], []
                for i in range(spec["warmup"] + spec["repeat"]):
                    tensor.fill_(rank + 1.0)
                    before = _read_counters(spec["ports"]) if rank == 0 else None
                    trace = ex.run(plan, tensor)
                    if rank < plan.workers and not bool(torch.all(tensor == expected)):
                        raise RuntimeError(f"rank {rank}: {case['algo']} {case['nbytes']} B: wrong sum")
                    if rank == 0 and i >= spec["warmup"]:
                        after = _read_counters(spec["ports"])
                        wire.append({k: after[k] - before[k] for k in after})
                        durations.append(trace.duration_s)
                        starts.append(list(trace.header.extra.get("rank_start_s", [0.0] * p)))
                        traces.append(trace)
                if rank == 0:
                    median = traces[int(np.argsort(durations)[len(durations) // 2])]
                    median.save(out / f"measured-{_stem(spec['topology'], case['algo'], case['nbytes'])}.json")
                    results["cases"].append({**case, "durations_s": durations, "rank_start_s": starts,
                                             "wire_bytes": wire})
            ex.barrier("end")
    finally:
        if spec["backend"] != "mpi":
            dist.destroy_process_group()
    if rank == 0:
        write_json_atomic(out / "results.json", results)


# --------------------------------------------------------------------------------------------------------
# presentation: table, plot, CLI


def summary_line(report: ValidationReport) -> str:
    return (f"{report.topology}: {report.hosts} ranks, {report.backend}, {report.shaper} shaping, alpha {report.alpha_s * 1e6:.0f} us, "
            f"gamma {report.gamma_s_per_byte * 1e9:.3f} ns/B, TCP buffering {report.buffered_bytes / 2**20:.2f} MiB, "
            f"{report.repeat} repeats ({report.machine}, {report.date}, CPU {report.background_cpu:.0%} busy before)")


def format_table(report: ValidationReport) -> str:
    """The report as a Markdown table (what docs/validation.md shows)."""
    from firesim.units import format_bytes, format_duration

    lines = ["| algo | size | measured median (min-max) | predicted | error | error if the other send model "
             "| link bytes vs plan |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in report.cases:
        other_s = c.predicted_rendezvous_s if c.eager else c.predicted_eager_s
        lines.append(f"| {c.algo} | {format_bytes(c.nbytes)} | {format_duration(c.measured_s)} "
                     f"({format_duration(c.measured_min_s)}-{format_duration(c.measured_max_s)}) | "
                     f"{format_duration(c.predicted_s)} | "
                     f"{c.error * 100:+.1f} % | {(other_s - c.measured_s) / c.measured_s * 100:+.1f} % "
                     f"({'rendezvous' if c.eager else 'eager'}) | {c.link_bytes_error * 100:.1f} % |")
    lines.append("")
    for size, order in report.ranking.items():
        m, pr = " < ".join(order["measured"]), " < ".join(order["predicted"])
        verdict = "match" if not order["wrong"] else "MISMATCH " + ", ".join("/".join(w) for w in order["wrong"])
        tie = f"; tie within {RANK_TIE:.0%}: " + ", ".join("/".join(t) for t in order["ties"]) if order["ties"] else ""
        lines.append(f"- {format_bytes(int(size))}: measured {m}; predicted {pr} ({verdict}{tie})")
    return "\n".join(lines)


def plot_timelines(report: ValidationReport, path: str | os.PathLike, max_cases: int = 9) -> None:
    """Measured (left) and predicted (right) timelines, one lane per rank, one row per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from firesim.plans import Op

    cases = report.cases[:max_cases]
    fig, axes = plt.subplots(len(cases), 2, figsize=(12, 1.0 + 1.5 * len(cases)), squeeze=False)
    colors = {Op.SEND: "tab:blue", Op.RECV: "tab:orange", Op.REDUCE: "tab:green", Op.COMPUTE: "tab:gray"}
    for row, c in enumerate(cases):
        traces = [Trace.load(c.measured_trace), Trace.load(c.predicted_trace)]
        t_max = max(t.duration_s for t in traces) * 1e3
        for col, (trace, label) in enumerate(zip(traces, ("measured", "predicted"))):
            ax = axes[row][col]
            for kind, color in colors.items():
                sel = trace.op == kind
                if not sel.any():
                    continue
                lane = trace.rank[sel] + (0.05 if kind == Op.SEND else 0.5)
                start_ms = trace.t_start[sel] * 1e3
                width_ms = np.maximum(trace.t_end[sel] - trace.t_start[sel], 0) * 1e3
                ax.barh(lane, np.maximum(width_ms, t_max * 2e-3), left=start_ms, height=0.4, color=color,
                        alpha=0.6, align="edge", label=Op(kind).name.lower())
            ax.set_xlim(0, t_max * 1.02)
            ax.set_ylim(trace.header.ranks, 0)
            ax.set_yticks(np.arange(trace.header.ranks) + 0.5, [f"r{r}" for r in range(trace.header.ranks)])
            ax.set_title(f"{c.algo} {c.nbytes / 2**20:g} MiB {label}: {trace.duration_s * 1e3:.1f} ms", fontsize=9)
            if row == len(cases) - 1:
                ax.set_xlabel("ms")
    axes[0][1].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{report.topology}: measured vs predicted (sends above, recv/reduce below each rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validate_cmd(
    topology: Annotated[Path, typer.Option(help="Topology YAML to emulate (<= 4 hosts).")],
    algo: Annotated[str, typer.Option(help="Algorithms, comma-separated.")] = "ring,tree,ps",
    size: Annotated[str, typer.Option(help="Buffer sizes, comma-separated (e.g. 4MiB,16MiB).")] = "4MiB,16MiB",
    repeat: Annotated[int, typer.Option(min=1, max=1000, help="Measured runs per case (after one warm-up).")] = 5,
    out: Annotated[Path | None, typer.Option(parser=output_dir, help="Directory for traces and logs (default: "
                                             "firerun-validate-NAME in $TMPDIR).")] = None,
    plot: Annotated[Path | None, typer.Option(parser=output_file(".png"), help="Save measured-vs-predicted "
                                              "timelines (PNG).")] = None,
    eager: Annotated[Literal["off", "on", "auto"], typer.Option(help="Sends in the model: off (rendezvous), on "
                     "(eager), auto (eager when messages fit the measured TCP buffering).")] = "off",
    shaper: Annotated[Literal["htb", "tbf"], typer.Option(help="htb (ACKs first, default) or tbf (one FIFO).")] = "htb",
    backend: Annotated[Literal["torch", "mpi"], typer.Option(help="torch (gloo) or mpi (mpi4py over MPICH, shared "
                                                             "memory off).")] = "torch",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Run plans on an emulated cluster, simulate them, and report the prediction error."""
    from firesim.units import parse_size_list

    log = None if as_json else (lambda msg: typer.echo(msg, err=True))
    algos, sizes = split_specs(algo), parse_size_list(size, what="size")
    try:
        report = validate(topology, algos, sizes, repeat=repeat, out_dir=out, eager=eager, shaper=shaper,
                          backend=backend, log=log)
    except RuntimeError as err:  # a rank failed or the cluster could not be built: one line, exit 1
        typer.echo(f"firerun validate: {err}", err=True)
        raise typer.Exit(1) from None
    if plot is not None:
        plot_timelines(report, plot)
    if as_json:
        typer.echo(dumps(report.to_dict(), indent=2))
        return
    typer.echo(summary_line(report))
    typer.echo(format_table(report))
    typer.echo(f"ranking {'matches' if report.ranking_match else 'does NOT match'}")
    summary = report.error_summary()
    for key, label in (("large", ">= 4 MiB"), ("small", "< 4 MiB")):
        if summary[key]["cases"]:
            typer.echo(f"{label}: median |error| {summary[key]['median_abs_error']:.1%}, "
                       f"worst {summary[key]['max_abs_error']:.1%} over {summary[key]['cases']} cases")
    typer.echo(f"traces (measured-*.json, predicted-*.json): {Path(report.cases[0].measured_trace).parent}")
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
