"""Measured vs predicted training iterations: ``firerun train --nproc 4 [--emulate topo.yaml] ...``.

One command, three runs, no fitting:

1. **compute calibration**: the same training (model, micro-batch, buckets, thread count) as one-rank jobs,
   here, with nothing to exchange: forward, backward, the optimizer step, the buckets DDP forms and when backward
   produces each. One such job per rank of the job, all at once, each bound to the cores its rank will have:
   the compute of one device as it runs beside the others (on a GPU node: each on its own device; here: ranks
   sharing cores, which costs more than the share, below), before and after the job;
2. **the job**: ``nproc`` ranks on loopback, or one rank per host of an emulated cluster (``firerun.emulate``:
   namespaces, veths, shaped links), each step starting at a barrier and traced (``firerun.train``), each rank
   bound to its cores (``core_binding``). It first measures the network constants the simulator needs: alpha
   (4-byte ping-pong through the executor), gamma (an ``add_`` per byte) and, on loopback, the bandwidth; on an
   emulated cluster also ``firerun validate``'s transport probes (eager window, rendezvous, overhead, burst);
3. **the prediction**: ``firesim.training.simulate_iteration`` for the same model, plan, bucket sizes, batch
   and topology (the emulated one at TCP goodput with the calibrated ``Transport``, or a star at the measured
   loopback bandwidth), with the one-rank compute (``MeasuredCompute``) and the bucket schedule and overlap of
   firesim's model.

**Ranks sharing cores.** With more runnable threads than cores, the ranks share them. The job binds rank r's
threads to cores round robin (as ``srun --cpu-bind=cores``), so every core carries the same number of ranks:
left to the kernel, three ranks shared one core while one had the other to itself for tens of milliseconds. A
bound thread runs at ``min(1, 1 / (threads on its core + B / C))`` of a core, with ``B`` runnable threads of
other processes (``OtherLoad``: sampled during each run, the machine's running count less our own) spread over
``C`` cores, in the job and in the calibration alike; the ratio of their means is each rank's speed factor
(``cpu_share``) applied to the calibrated compute. The calibration runs bound as the job, so the share is in
it (the ratio is 1.0 on a quiet machine), and so is what sharing costs beyond the share:
two ranks time-sliced on one core refill each other's caches, at batch 4 forward took 22-35 % more CPU than
alone and backward 13 % (batch 32: 0-7 %). It is derived from the core and thread counts and the other
processes' load, not fitted to any time. It ignores the CPU that communication itself takes (gloo threads, the
kernel's TCP stack, the emulator's shapers), which slows the compute it overlaps with; and other processes' load
changes from second to second: run it on a quiet machine (the table reports the load).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from firesim.errors import UserError
from firesim.io import write_json_atomic
from firesim.trace import Phase, Trace

MASTER_PORT = 29500  # inside an emulated cluster's own namespaces nothing else listens
JOB_TIMEOUT_S = 3600.0  # a whole run; every single wait inside it is bounded by the ranks' --timeout-s


# ------------------------------------------------------------------------------------------------ worker
def worker_main(spec_path: str) -> int:
    """One rank: measure the network, train every config, rank 0 writes results (``firerun train-worker``)."""
    import torch

    from firerun.calibrate import fit_alpha_beta, measure_gamma, measure_pingpong
    from firerun.train import TrainConfig, train
    from firerun.worker import session

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out_dir"])
    if spec.get("binding"):  # before any thread starts: the threads gloo and torch start inherit it
        os.sched_setaffinity(0, spec["binding"][int(os.environ.get("RANK", "0"))])
    with session("torch", timeout_s=spec["timeout_s"]) as ex:
        torch.set_num_threads(spec["threads"])
        net = {}
        if ex.size > 1:
            sizes = [4, 1 << 20, 4 << 20]
            times = measure_pingpong(ex, 0, 1, sizes, dtype=torch.float32, round_trips=20, reps=3)
            alpha, beta = fit_alpha_beta(sizes, times)
            net = {"alpha_s": times[0], "beta_s_per_byte": beta, "fit_alpha_s": alpha,
                   "gamma_s_per_byte": measure_gamma(ex, [8 << 20], torch.float32)}
            if spec.get("probe_goodput_Bps"):  # emulated: the transport's probes, as firerun validate runs them
                from firerun.validate import probe_transport

                net["transport_probes"] = probe_transport(ex, ex.rank, ex.size, spec["probe_goodput_Bps"])
        for i, config in enumerate(spec["configs"]):
            r = train(ex, TrainConfig.make(**config), check_every=1, step_barrier=True, record=True,
                      threads=spec["threads"])
            if ex.rank == 0:
                r.trace.save(out / f"trace-{i}.json")
                write_json_atomic(out / f"result-{i}.json", {**r.to_dict(), "net": net})
        ex.barrier("end")
    return 0


class OtherLoad:
    """Samples, while a run goes on, how many threads of *other* processes are runnable: the machine's running
    count (``/proc/loadavg``) less the running threads of this process and its descendants (the ranks).
    ``bound_speeds(binding)`` is then the mean fraction of a core each rank got: the processor sharing that
    slows a rank when other work competes for its cores."""

    def __init__(self, cores: int, interval_s: float = 0.5):
        self.cores, self.interval_s = cores, interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firerun-load", daemon=True)

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(self.interval_s):
            try:
                running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
                self.samples.append(max(0, running - _our_running_threads(me)))
            except (OSError, ValueError, IndexError):
                return

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else 0.0

    def bound_speeds(self, binding: Sequence[Sequence[int]]) -> np.ndarray:
        """Per rank, the mean share of a core its slowest thread gets when rank r's threads are bound to
        ``binding[r]`` (one core each): the core's threads share it, with the others' load spread evenly."""
        load: dict[int, int] = {}
        for cores in binding:
            for c in cores:
                load[c] = load.get(c, 0) + 1
        return np.array([np.mean([min(min(1.0, 1.0 / (load[c] + b / self.cores)) for c in cores)
                                  for b in self.samples or [0]]) for cores in binding])


def core_binding(nproc: int, threads: int, cores: Sequence[int]) -> list[list[int]]:
    """Rank r's ``threads`` cores, round robin over ``cores`` (``srun --cpu-bind=cores``, ``mpirun --bind-to
    core``): every core gets the same number of threads when ``nproc * threads`` is a multiple of the cores,
    instead of the kernel's placement, which left three ranks on one core and one on the other for tens of
    milliseconds at a time."""
    cores = sorted(cores)
    return [[cores[(r * threads + i) % len(cores)] for i in range(threads)] for r in range(nproc)]


def _our_running_threads(root: int) -> int:
    """Threads in state R of ``root`` and its descendants (this sampler's own read counts as one)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    ours, frontier = {root}, [root]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in ours:
                ours.add(child)
                frontier.append(child)
    count = 0
    for pid in ours:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                if Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                    count += 1
            except OSError:
                continue
    return count


def _spec(out: Path, configs, threads: int, timeout_s: float, probe_goodput_Bps: float | None = None,
          binding: list[list[int]] | None = None) -> Path:
    path = out / "spec.json"
    write_json_atomic(path, {"configs": [c.model_dump(mode="json") for c in configs], "threads": threads,
                             "timeout_s": timeout_s, "out_dir": str(out), "probe_goodput_Bps": probe_goodput_Bps,
                             "binding": binding})
    return path


def _worker_argv(spec: Path) -> list[str]:
    return [sys.executable, "-m", "firerun", "train-worker", str(spec)]


def _run_local(nproc: int, spec: Path, threads: int) -> None:
    from firerun.launch import launch

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    code = launch(nproc, ["train-worker", str(spec)], timeout_s=JOB_TIMEOUT_S, env=env)
    if code:
        raise RuntimeError(f"the {nproc}-rank job failed (exit {code})")


def _run_emulated(cluster, spec: Path, threads: int) -> None:
    """One rank per host namespace, gloo on the namespace's interface (as ``firerun validate``)."""
    from firerun.launch import supervise

    p = len(cluster.hosts)
    env = {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "MASTER_ADDR": cluster.address(0),
           "MASTER_PORT": str(MASTER_PORT), "WORLD_SIZE": str(p), "LOCAL_WORLD_SIZE": str(p),
           "GLOO_SOCKET_IFNAME": cluster.ifname}
    procs = [cluster.run_in(r, _worker_argv(spec), {**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                            start_new_session=True) for r in range(p)]
    code = supervise(procs, [f"rank {r}" for r in range(p)], grace_s=3.0, timeout_s=JOB_TIMEOUT_S)
    if code:
        raise RuntimeError(f"the {p}-rank job on the emulated cluster failed (exit {code})")


# ------------------------------------------------------------------------------------------------ statistics
@dataclass
class Breakdown:
    """Median over the timed steps of one iteration's parts, seconds (compute parts: mean over workers)."""

    forward_s: float
    backward_s: float  # compute: until backward has produced the last bucket
    exchange_s: float  # the buckets' exchanges, one after another on the communication thread (summed)
    exposed_s: float  # waiting for exchanges after backward's compute
    optimizer_s: float
    iteration_s: float  # first rank's forward start to last rank's optimizer end
    iteration_min_s: float = 0.0
    iteration_max_s: float = 0.0


def _timed_steps(trace: Trace, skip: int) -> list[int]:
    """The trace's steps after the first ``skip`` (at least the last one)."""
    steps = sorted({int(s) for s in trace.step.tolist()})
    return [s for s in steps if s >= steps[0] + skip] or steps[-1:]


def measured_breakdown(trace: Trace, workers: int, skip: int) -> Breakdown:
    """The measured parts of an iteration from a ``firerun.train`` trace (steps after the first ``skip``)."""
    rows: dict[str, list[float]] = {k: [] for k in ("forward", "backward", "exchange", "exposed", "optimizer",
                                                    "iteration")}
    worker = trace.rank < workers
    dur = trace.t_end - trace.t_start
    for s in _timed_steps(trace, skip):
        at = trace.step == s

        def total(kind, sel=at & worker):
            m = sel & (trace.op == kind)
            return float(np.sum(dur[m])) / workers

        rows["forward"].append(total(Phase.FORWARD))
        rows["backward"].append(total(Phase.BACKWARD))
        rows["exposed"].append(total(Phase.WAIT))
        rows["optimizer"].append(total(Phase.OPTIMIZER))
        rows["exchange"].append(total(Phase.EXCHANGE))
        first = float(trace.t_start[at & (trace.op == Phase.FORWARD)].min())
        last = float(trace.t_end[at & (trace.op == Phase.OPTIMIZER)].max())
        rows["iteration"].append(last - first)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return Breakdown(forward_s=med["forward"], backward_s=med["backward"], exchange_s=med["exchange"],
                     exposed_s=med["exposed"], optimizer_s=med["optimizer"], iteration_s=med["iteration"],
                     iteration_min_s=min(rows["iteration"]), iteration_max_s=max(rows["iteration"]))


def bucket_schedule(trace: Trace, skip: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """DDP's buckets (bytes, exchange order) and when backward produced each, seconds from its start
    (median over timed steps) from a one-rank trace."""
    ready: dict[int, list[float]] = {}
    sizes: dict[int, int] = {}
    for s in _timed_steps(trace, skip):
        at = (trace.step == s) & (trace.rank == 0)
        start = float(trace.t_start[at & (trace.op == Phase.BACKWARD)].min())
        for k, n, t in zip(trace.chunk[at & (trace.op == Phase.READY)].tolist(),
                           trace.nbytes[at & (trace.op == Phase.READY)].tolist(),
                           trace.t_start[at & (trace.op == Phase.READY)].tolist()):
            ready.setdefault(k, []).append(t - start)
            sizes[k] = n
    order = sorted(sizes)
    return tuple(sizes[k] for k in order), tuple(statistics.median(ready[k]) for k in order)


# ------------------------------------------------------------------------------------------------ prediction
def predict_iteration(cfg, workers: int, calibration: Breakdown, buckets, ready_s, net: dict, topology,
                      cpu_share: np.ndarray, name: str, transport=None):
    """firesim's iteration for this config: one-rank compute scaled by each rank's ``cpu_share``, network
    from ``net`` (and, on an emulated cluster, the ``transport`` its probes calibrated)."""
    from firesim.cluster import cluster_topology
    from firesim.compute import NO_OVERHEADS
    from firesim.hardware import HardwareProfile, profile_to_cluster
    from firesim.plans import resolve
    from firesim.training import MeasuredCompute, simulate_iteration
    from firesim.workload import load_workload

    profile = HardwareProfile(name=name, alpha_s=net["alpha_s"], beta_s_per_byte=net["beta_s_per_byte"],
                              gamma_s_per_byte=net["gamma_s_per_byte"], compute_flops=1e9,
                              source="firerun train --nproc (measured in the job)")
    cluster = profile_to_cluster(profile)  # loopback: a star whose links carry alpha (half on each end)
    ranks = workers if cfg.algo == "builtin" else resolve(cfg.algo).ranks(workers)
    if topology is None:
        graph = cluster_topology(cluster, ranks)
    else:  # the emulated links have no latency of their own: alpha is all software (as firerun validate)
        graph, cluster = topology, cluster.model_copy(update={"software_latency_s": net["alpha_s"]})
    algo = "ring" if cfg.algo == "builtin" else cfg.algo  # gloo's all_reduce is a ring (REFERENCE.md)
    # after the last exchange: DDP's end of backward (the hook's hand-off back, the future) and the optimizer
    # step, both as measured on one rank
    measured = MeasuredCompute(forward_s=calibration.forward_s, backward_s=calibration.backward_s,
                               bucket_nbytes=buckets, bucket_ready_s=ready_s,
                               optimizer_s=calibration.exposed_s + calibration.optimizer_s)
    # NO_OVERHEADS: firesim's default overheads are GPU figures (NCCL kernels slowing compute, spread between
    # GPUs, a node's input pipeline); here the ranks' sharing of the cores is cpu_share
    return simulate_iteration(load_workload(cfg.model), cluster, workers, algo, batch_per_gpu=cfg.batch,
                              topology=graph, overheads=NO_OVERHEADS, measured=measured, transport=transport,
                              rank_speed=np.asarray(cpu_share)[:workers])


def predicted_breakdown(sim, calibration: Breakdown) -> Breakdown:
    """The same parts from firesim's simulated iteration (means over workers)."""
    workers = len(sim.rank_speed)
    slow = float(np.mean(1.0 / sim.rank_speed))  # one-rank seconds -> the job's, mean over workers
    ready, done = sim.bucket_ready_s[:, :workers], sim.bucket_done_s[:, :workers]
    start = np.maximum(ready, np.vstack([np.zeros((1, workers)), done[:-1]]))  # one bucket after another
    backward_end = (calibration.forward_s + calibration.backward_s) / sim.rank_speed
    return Breakdown(forward_s=calibration.forward_s * slow, backward_s=calibration.backward_s * slow,
                     exchange_s=float(np.mean(np.sum(done - start, axis=0))),
                     exposed_s=float(np.mean(np.maximum(done.max(axis=0) - backward_end, 0.0)))
                     + calibration.exposed_s * slow,  # the one-rank hand-off, as measured "exposed" has it
                     optimizer_s=calibration.optimizer_s * slow, iteration_s=sim.iteration_s,
                     iteration_min_s=sim.iteration_s, iteration_max_s=sim.iteration_s)


# ------------------------------------------------------------------------------------------------ report
@dataclass
class AlgoResult:
    algo: str
    workers: int
    bucket_nbytes: list[int]
    measured: Breakdown
    predicted: Breakdown
    error: float  # (predicted - measured) / measured, iteration
    replicas_identical: bool


@dataclass
class IterationReport:
    model: str
    batch_per_worker: int
    nproc: int
    where: str  # "loopback" or the emulated topology's name
    threads: int
    cores: int
    cpu_share: float  # mean over ranks of rank_cpu_share
    background_threads: tuple[float, float]  # mean runnable threads of other processes: calibration, job
    calibration: Breakdown
    net: dict
    results: list[AlgoResult]
    skip: int
    steps: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    date: str = ""
    ranking_right: bool | None = None
    firesim_buckets: list[int] = field(default_factory=list)  # firesim's own bucketing of the profile
    rank_cpu_share: list[float] = field(default_factory=list)  # per rank: speed in the job / in the calibration
    binding: list[list[int]] = field(default_factory=list)  # per rank: the cores its threads were bound to
    calibration_spread: float = 0.0  # |before - after| / mean of the calibrated iteration around the job

    @property
    def replicas_identical(self) -> bool:
        return all(r.replicas_identical for r in self.results)

    def to_dict(self) -> dict:
        return {"kind": "firerun.train.iteration/1", **asdict(self)}

    def table(self):
        from rich.table import Table

        from firesim.units import format_bytes

        def ms(x: float) -> str:
            return f"{x * 1e3:.1f}"

        title = (f"{self.model}, batch {self.batch_per_worker} per worker, {self.nproc} ranks on {self.where}, "
                 f"{self.threads} thread(s) per rank on {self.cores} cores, {self.background_threads[1]:.1f} other "
                 f"runnable threads (cpu share {self.cpu_share:.2f}); "
                 f"median of steps {self.skip}..{self.steps - 1}; load {self.load_before[0]:.1f} before, "
                 f"{self.load_after[0]:.1f} after")
        t = Table(title=title, title_justify="left")
        for col in ("algo", "buckets", "forward ms", "backward ms", "exchange ms", "exposed ms", "optimizer ms",
                    "iteration ms (min-max)", "predicted ms", "error"):
            t.add_column(col, justify="right" if col not in ("algo",) else "left")
        cal = self.calibration
        t.add_row("1 rank (calibration)", "", ms(cal.forward_s), ms(cal.backward_s), "", ms(cal.exposed_s),
                  ms(cal.optimizer_s), ms(cal.iteration_s), "", "")
        for r in self.results:
            m, p = r.measured, r.predicted
            t.add_row(r.algo, ", ".join(format_bytes(n) for n in r.bucket_nbytes), ms(m.forward_s), ms(m.backward_s),
                      f"{ms(m.exchange_s)} ({ms(p.exchange_s)})", f"{ms(m.exposed_s)} ({ms(p.exposed_s)})",
                      ms(m.optimizer_s), f"{ms(m.iteration_s)} ({ms(m.iteration_min_s)}-{ms(m.iteration_max_s)})",
                      ms(p.iteration_s), f"{r.error:+.1%}")
        tr = self.net.get("transport")
        transport = "" if tr is None else (
            f", eager window {format_bytes(tr['eager_window_nbytes'])}, rendezvous from "
            f"{'never' if tr['rendezvous_nbytes'] is None else format_bytes(tr['rendezvous_nbytes'])}, "
            f"{tr['message_overhead_s'] * 1e6:.0f} us per message")
        t.caption = (f"(predicted in parentheses) compute: one-rank runs, one per rank at once, bound as the job, "
                     f"before and after it "
                     f"({self.calibration_spread:.0%} apart); alpha {self.net.get('alpha_s', 0) * 1e6:.0f} us, gamma "
                     f"{self.net.get('gamma_s_per_byte', 0) * 1e9:.2f} ns/B{transport}; predicted with DDP's buckets "
                     f"(firesim's own bucketing of the profile: "
                     f"{', '.join(format_bytes(n) for n in self.firesim_buckets)})"
                     + (f"; ranking {'right' if self.ranking_right else 'WRONG'}" if self.ranking_right is not None
                        else ""))
        return t


# ------------------------------------------------------------------------------------------------ the command
def _load(out: Path, i: int) -> tuple[dict, Trace]:
    return json.loads((out / f"result-{i}.json").read_text()), Trace.load(out / f"trace-{i}.json")


def _mean_breakdown(parts: Sequence[Breakdown]) -> Breakdown:
    return Breakdown(**{f.name: float(np.mean([getattr(p, f.name) for p in parts])) for f in fields(Breakdown)})


def _mean_calibration(runs: Sequence[tuple[Breakdown, tuple, np.ndarray]]) -> tuple[Breakdown, tuple, np.ndarray]:
    """Calibration runs (each: breakdown, (bucket sizes, ready times), per-rank core share) averaged: the
    machine's speed drifts by 10 % and more over minutes, and the job sits between the run before and after."""
    sizes = {run[1][0] for run in runs}
    if len(sizes) != 1:
        raise RuntimeError(f"DDP formed different buckets in the one-rank runs: {sorted(sizes)}")
    ready = tuple(float(x) for x in np.mean([run[1][1] for run in runs], axis=0))
    return _mean_breakdown([run[0] for run in runs]), (sizes.pop(), ready), np.mean([run[2] for run in runs], axis=0)


def _ranking_right(results: list[AlgoResult], tie: float = 0.02) -> bool | None:
    """Every pair of plans whose measured times differ by more than ``tie`` is predicted in that order."""
    if len(results) < 2:
        return None
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            m_a, m_b = a.measured.iteration_s, b.measured.iteration_s
            if abs(m_a - m_b) <= tie * min(m_a, m_b):
                continue
            if (m_a < m_b) != (a.predicted.iteration_s < b.predicted.iteration_s):
                return False
    return True


def measure_and_predict(configs: Sequence, nproc: int, *, emulate: str | os.PathLike | None = None, skip: int = 3,
                        timeout_s: float = 600.0, threads: int | None = None, plot=None, trace_path=None,
                        chrome_path=None, log: Callable[[str], None] | None = None) -> IterationReport:
    """Calibrate compute (one-rank runs, one per rank at once, bound as the job), run ``nproc`` ranks (loopback
    or emulated), predict, compare."""
    from firerun.emulate import EmulatedCluster, check_emulable
    from firerun.launch import launch_alone
    from firerun.validate import calibration_from_probes, engine_topology, route_goodput_Bps
    from firesim.topology import load_topology

    say = log or (lambda m: None)
    if nproc < 2:
        raise UserError(f"nproc: measured vs predicted needs at least 2 ranks, got {nproc}")
    if not 0 <= skip < configs[0].steps:
        raise UserError(f"skip: must be in 0..steps-1 ({configs[0].steps - 1}), got {skip}")
    graph = None
    if emulate is not None:
        graph = load_topology(emulate)
        check_emulable(graph)
        if len(graph.graph["endpoints"]) != nproc:
            raise UserError(f"emulate: {graph.graph.get('name', emulate)} has {len(graph.graph['endpoints'])} hosts; "
                            f"run --nproc {len(graph.graph['endpoints'])}")
        if os.geteuid() != 0:
            raise UserError("emulate: needs root to build network namespaces")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = threads or max(1, cores // nproc)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="firerun-iteration-") as tmp:
        job_dir = Path(tmp) / "job"
        job_dir.mkdir()

        binding = core_binding(nproc, threads, os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
                               else range(cores))
        alone = configs[0].model_copy(update={"algo": "builtin"})

        def calibrate(when: str) -> tuple[list[tuple[Breakdown, tuple, np.ndarray]], OtherLoad]:
            """One one-rank job per rank, all at once, each bound to its rank's cores."""
            dirs = [Path(tmp) / f"calibration-{when}-{r}" for r in range(nproc)]
            specs = []
            for r, d in enumerate(dirs):
                d.mkdir()
                specs.append(_spec(d, [alone], threads, timeout_s, binding=[binding[r]]))
            with OtherLoad(cores) as load:
                code = launch_alone([["train-worker", str(s)] for s in specs], timeout_s=JOB_TIMEOUT_S,
                                    env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            if code:
                raise RuntimeError(f"the one-rank calibration runs failed (exit {code})")
            traces = [_load(d, 0)[1] for d in dirs]
            return [(measured_breakdown(t, 1, skip), bucket_schedule(t, skip), load.bound_speeds(binding))
                    for t in traces], load

        say(f"1/4 compute alone: {nproc} one-rank runs at once, bound as the ranks ({threads} thread(s)), "
            f"{configs[0].steps} steps")
        before, load_cal_before = calibrate("before")
        say(f"2/4 {nproc} ranks on {'loopback' if graph is None else graph.graph.get('name')}: "
            f"{', '.join(c.algo for c in configs)}")
        spec = _spec(job_dir, configs, threads, timeout_s,
                     None if graph is None else route_goodput_Bps(engine_topology(graph), 0, 1), binding)
        with OtherLoad(cores) as load_job:
            if graph is None:
                _run_local(nproc, spec, threads)
            else:
                with EmulatedCluster(emulate) as cluster:
                    _run_emulated(cluster, spec, threads)
        load_after = os.getloadavg()
        say(f"3/4 compute alone again, {nproc} one-rank runs at once, {configs[0].steps} steps")
        after, load_cal_after = calibrate("after")
        calibration, (buckets, ready_s), cal_speed = _mean_calibration(before + after)
        cpu_share = load_job.bound_speeds(binding) / cal_speed
        say("4/4 firesim's prediction")
        results, sims, traces = [], [], []
        loaded = [_load(job_dir, i) for i in range(len(configs))]
        net = loaded[0][0]["net"]
        topology, transport = None, None
        if graph is not None:  # the transport firerun validate would calibrate, from the same probes
            cal = calibration_from_probes(net.pop("transport_probes"), graph, "torch")
            topology, transport = engine_topology(graph, cal.peak_bandwidth_Bps), cal.transport()
            net.update(alpha_s=cal.alpha_s, gamma_s_per_byte=cal.gamma_s_per_byte, transport={
                "eager_window_nbytes": cal.buffered_bytes, "rendezvous_nbytes": cal.rendezvous_nbytes,
                "message_overhead_s": cal.message_overhead_s, "peak_bandwidth_Bps": cal.peak_bandwidth_Bps})
        for cfg, (res, trace) in zip(configs, loaded, strict=True):
            workers = int(res["workers"])
            measured = measured_breakdown(trace, workers, skip)
            sim = predict_iteration(cfg, workers, calibration, buckets, ready_s, net, topology, cpu_share,
                                    f"{cfg.model}-{'loopback' if graph is None else graph.graph.get('name')}",
                                    transport)
            predicted = predicted_breakdown(sim, calibration)
            results.append(AlgoResult(algo=cfg.algo, workers=workers, bucket_nbytes=list(res["bucket_nbytes"]),
                                      measured=measured, predicted=predicted,
                                      error=(predicted.iteration_s - measured.iteration_s) / measured.iteration_s,
                                      replicas_identical=bool(res["replicas_identical"])))
            sims.append(sim)
            traces.append(trace)
    from firesim.training import gradient_buckets
    from firesim.workload import load_workload

    report = IterationReport(
        model=configs[0].model, batch_per_worker=configs[0].batch, nproc=nproc,
        where="loopback" if graph is None else f"{graph.graph.get('name')} (emulated)", threads=threads,
        cores=cores, cpu_share=float(np.mean(cpu_share)),
        background_threads=((load_cal_before.mean + load_cal_after.mean) / 2, load_job.mean),
        calibration_spread=abs(_mean_breakdown([b[0] for b in before]).iteration_s
                               - _mean_breakdown([a[0] for a in after]).iteration_s) / calibration.iteration_s,
        calibration=calibration, net=net, results=results, skip=skip,
        steps=configs[0].steps, load_before=load_before, load_after=load_after, date=time.strftime("%Y-%m-%d"),
        ranking_right=_ranking_right(results), rank_cpu_share=cpu_share.tolist(), binding=binding,
        firesim_buckets=[b.nbytes for b in gradient_buckets(load_workload(configs[0].model),
                                                            configs[0].bucket_nbytes, configs[0].first_bucket_nbytes)])
    if trace_path is not None:
        traces[0].save(trace_path)
    if chrome_path is not None:
        traces[0].to_chrome(chrome_path)
    if plot is not None:
        plot_timelines(report, traces, sims, plot)
    return report


def predicted_trace(sim, calibration: Breakdown) -> dict[str, np.ndarray]:
    """Per worker, per phase (start, end) of the predicted iteration, for the timeline plot."""
    workers = len(sim.rank_speed)
    ready, done = sim.bucket_ready_s[:, :workers], sim.bucket_done_s[:, :workers]
    start = np.maximum(ready, np.vstack([np.zeros((1, workers)), done[:-1]]))
    fwd = calibration.forward_s / sim.rank_speed
    bwd_end = (calibration.forward_s + calibration.backward_s) / sim.rank_speed
    comm_end = np.maximum(done.max(axis=0), bwd_end)
    return {"forward": np.stack([np.zeros(workers), fwd], 1), "backward": np.stack([fwd, bwd_end], 1),
            "exchange": np.stack([start, done], 2), "wait": np.stack([bwd_end, comm_end], 1),
            "optimizer": np.stack([comm_end, sim.rank_end_s[:workers]], 1)}


def plot_timelines(report: IterationReport, traces: list[Trace], sims, path) -> None:
    """For each algorithm: one measured step (the median one) beside the predicted iteration, a lane per rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"forward": "tab:blue", "backward": "tab:orange", "wait": "tab:red", "optimizer": "tab:purple",
              "exchange": "tab:green"}
    kinds = {Phase.FORWARD: "forward", Phase.BACKWARD: "backward", Phase.WAIT: "wait",
             Phase.OPTIMIZER: "optimizer", Phase.EXCHANGE: "exchange"}
    n = len(report.results)
    fig, axes = plt.subplots(n, 2, figsize=(12, 0.8 + 1.6 * n), squeeze=False, sharex="row")
    for row, (res, trace, sim) in enumerate(zip(report.results, traces, sims)):
        steps = _timed_steps(trace, report.skip)
        spans = []
        for s in steps:
            at = trace.step == s
            spans.append((float(trace.t_end[at & (trace.op == Phase.OPTIMIZER)].max()
                                - trace.t_start[at & (trace.op == Phase.FORWARD)].min()), s))
        step = sorted(spans)[len(spans) // 2][1]
        at = trace.step == step
        t0 = float(trace.t_start[at & (trace.op == Phase.FORWARD)].min())
        ax = axes[row][0]
        for kind, name in kinds.items():
            sel = at & (trace.op == kind) & (trace.rank < res.workers)
            lane = trace.rank[sel] + (0.5 if kind == Phase.EXCHANGE else 0.05)
            ax.barh(lane, (trace.t_end[sel] - trace.t_start[sel]) * 1e3, left=(trace.t_start[sel] - t0) * 1e3,
                    height=0.4, color=colors[name], align="edge", label=name)
        ax.set_title(f"{res.algo}: measured step {step}, {res.measured.iteration_s * 1e3:.1f} ms (median)",
                     fontsize=9)
        ax = axes[row][1]
        pred = predicted_trace(sim, report.calibration)
        for name, se in pred.items():
            if name == "exchange":
                for k in range(se.shape[0]):
                    ax.barh(np.arange(res.workers) + 0.5, (se[k, :, 1] - se[k, :, 0]) * 1e3, left=se[k, :, 0] * 1e3,
                            height=0.4, color=colors[name], align="edge", edgecolor="white")
            else:
                ax.barh(np.arange(res.workers) + 0.05, (se[:, 1] - se[:, 0]) * 1e3, left=se[:, 0] * 1e3,
                        height=0.4, color=colors[name], align="edge")
        ax.set_title(f"{res.algo}: predicted, {res.predicted.iteration_s * 1e3:.1f} ms ({res.error:+.1%})",
                     fontsize=9)
        for ax in axes[row]:
            ax.set_ylim(res.workers, 0)
            ax.set_yticks(np.arange(res.workers) + 0.5, [f"r{r}" for r in range(res.workers)])
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    for ax in axes[-1]:
        ax.set_xlabel("ms from the step's start (compute above, bucket exchanges below each rank)")
    fig.suptitle(f"{report.model}, batch {report.batch_per_worker}/worker, {report.where}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", fontsize=8, ncol=5, frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_rows(report: IterationReport, case: str) -> list[str]:
    """Rows of the README's measured-vs-predicted table for one report."""
    from firesim.units import format_bytes

    rows = []
    for r in report.results:
        m, p = r.measured, r.predicted
        rows.append(f"| {case} | {report.where} | {r.algo} | {' + '.join(format_bytes(n) for n in r.bucket_nbytes)} "
                    f"| {m.iteration_s * 1e3:.0f} ({m.iteration_min_s * 1e3:.0f}-{m.iteration_max_s * 1e3:.0f}) "
                    f"| {p.iteration_s * 1e3:.0f} | {r.error:+.1%} | {m.exposed_s * 1e3:.0f} / {p.exposed_s * 1e3:.0f} "
                    f"| {report.load_before[0]:.1f} |")
    return rows


MARKDOWN_HEADER = ["| case | network | algo | buckets | measured ms (min-max) | predicted ms | error "
                   "| exposed comm ms, measured / predicted | load |",
                   "|---|---|---|---|---:|---:|---:|---:|---:|"]
