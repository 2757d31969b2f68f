"""The discrete-event interpreter of a plan: each transfer a fluid flow sharing links max-min fairly.

Cost model (DESIGN.md): a message waits ``alpha_s`` (software) plus the latencies of its route's links, then
moves its bytes as a flow over every directed link of the route; the flows active on a link share its
capacity (``bandwidth_Bps x efficiency``) max-min fairly, and rates are recomputed whenever a flow starts or
ends. A ``reduce`` costs ``gamma_s_per_byte`` per byte at the receiver once the data has arrived and the
earlier ops on its chunks are done; a ``compute`` op occupies its rank for ``seconds / rank_speed[rank]``.
The issue/complete rules are those of ``firesim.plans.ir``; in addition:

- a send's flow starts once the matching recv has been posted (rendezvous, as NCCL and MPI do for large
  messages), and the send completes when its data has arrived. ``eager=True`` models ``dist.send`` over TCP
  instead: the flow starts at issue (the receiver's socket buffers it) and the send completes at once, so
  back-to-back sends from a rank overlap;
- all messages between two ranks take one route (ECMP hashes the pair and ``seed``, as a switch hashes a
  connection), and ranks placed on the same endpoint exchange data at no bandwidth cost.

Why it is fast. A 1024-rank ring is ~4 M ops and 2 M flows; one SimPy process per rank and one event per op
cannot run that in seconds, and with unequal route latencies (a fat tree) the ranks drift apart, so even
batching the events of one instant leaves ~p instants per ring step. Time advances instead in windows as
wide as the lookahead L = alpha + the smallest route latency: nothing that happens at t can start a flow
before t + L, so every flow that starts in [t, t + L) is known when the window opens. The network runs first:
a flow alone on its links runs at its route's bottleneck and touches no other, so such flows start and end
in bulk; only where flows meet on a link does it stop at that instant for exact max-min rates (vectorised,
over the flows on shared links only). Then the ops run as dataflow: each op counts down its inputs (chunk
predecessors, posting, arrival, the program counter) and takes the latest input's time, so all ranks'
program counters advance together in a few numpy passes whatever their exact times. SimPy keeps the clock:
one driver process, one timeout per window.

``simulate_reference`` is the same model written the obvious way (a SimPy process per rank, per-flow
events, a from-scratch max-min per change); the tests check that both agree on random plans.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import defaultdict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import simpy

from firesim import topology as topo
from firesim.errors import UserError
from firesim.limits import MAX_OPS, check_ops
from firesim.plans.ir import OP_NAMES, Op, Plan, check_structure
from firesim.plans.verify import PlanError, match_messages
from firesim.trace import Trace, software_versions

__all__ = ["simulate", "simulate_reference", "max_min_rates"]

# Network events within this relative distance are one instant: merges times that differ only by rounding.
_TOLERANCE = 1e-12
_TOLERANCE_ABS_s = 1e-15
_LINK_ATTRS = ("bandwidth_Bps", "latency_s", "efficiency")


def _limit(t: float) -> float:
    """The last time that still counts as ``t``."""
    return t + abs(t) * _TOLERANCE + _TOLERANCE_ABS_s


def _expand(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of the ranges lo[i]:hi[i] (vectorised CSR gather)."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(lo - starts, counts)


# ---------------------------------------------------------------------------------------------------------
# the network: directed links and the route of every rank pair


@dataclass
class _Network:
    """Directed link resources of a topology and the routes of the rank pairs a plan uses."""

    name: str
    capacity_Bps: np.ndarray  # per directed link id
    link_names: list[tuple]
    pair_index: dict[tuple[int, int], int]
    pair_keys: np.ndarray  # src * ranks + dst of every pair, ascending (pair i has key pair_keys[i])
    pair_ptr: np.ndarray  # CSR over pairs into pair_links
    pair_links: np.ndarray
    pair_latency_s: np.ndarray
    pair_capacity_Bps: np.ndarray  # bottleneck of the route (inf for a route with no links)

    def route(self, src: int, dst: int) -> tuple[list[int], float]:
        i = self.pair_index[(src, dst)]
        return self.pair_links[self.pair_ptr[i]:self.pair_ptr[i + 1]].tolist(), float(self.pair_latency_s[i])


def _resolve_topology(topology, ranks: int, beta_s_per_byte: float | None) -> nx.Graph:
    if topology is None:
        if beta_s_per_byte is None or not beta_s_per_byte > 0 or not math.isfinite(beta_s_per_byte):
            raise UserError(f"beta_s_per_byte: without a topology it must be a positive number, got {beta_s_per_byte!r}")
        G = topo.star(ranks, bandwidth_Bps=1.0 / beta_s_per_byte, latency_s=0.0)
        G.graph["name"] = f"star-{ranks}-nonblocking"
        return G
    if isinstance(topology, str):
        return topo.from_spec(topology, ranks)
    if not isinstance(topology, nx.Graph):
        raise UserError(f"topology: expected a networkx graph, a spec string or None, got {type(topology).__name__}")
    return topology


def _build_network(G: nx.Graph, ranks: int, pairs: np.ndarray, *, placement, link_overrides, seed) -> _Network:
    """Routes (cached per endpoint pair) and link capacities for the (src, dst) rank pairs in ``pairs``."""
    if placement is None:
        endpoints = list(G.graph.get("endpoints") or [])
        if len(endpoints) < ranks:
            raise UserError(f"topology {G.graph.get('name')!r}: {len(endpoints)} endpoints for {ranks} ranks")
        nodes = endpoints[:ranks]
    else:
        nodes = list(placement)
        if len(nodes) != ranks:
            raise UserError(f"placement: needs one endpoint per rank ({ranks}), got {len(nodes)}")
        missing = [u for u in nodes if u not in G]
        if missing:
            raise UserError(f"placement: {missing[0]!r} is not a node of topology {G.graph.get('name')!r}")
    overrides: dict[frozenset, dict] = {}
    for key, values in (link_overrides or {}).items():
        try:
            u, v = key
        except (TypeError, ValueError):
            raise UserError(f"link_overrides: keys must be (u, v) links, got {key!r}") from None
        if not G.has_edge(u, v):
            raise UserError(f"link_overrides: {u!r}-{v!r} is not a link of {G.graph.get('name')!r}")
        if not isinstance(values, Mapping):
            raise UserError(f"link_overrides[{key!r}]: expected a mapping of {', '.join(_LINK_ATTRS)}")
        bad = set(values) - set(_LINK_ATTRS)
        if bad:
            raise UserError(f"link_overrides[{key!r}]: unknown attribute {sorted(bad)[0]!r} (known: {', '.join(_LINK_ATTRS)})")
        overrides.setdefault(frozenset((u, v)), {}).update(values)

    router = topo.routes(G)
    link_id: dict[tuple, int] = {}
    capacity: list[float] = []
    latency: list[float] = []

    def link(u: Hashable, v: Hashable) -> int:
        i = link_id.get((u, v))
        if i is None:
            attrs = {**G.edges[u, v], **overrides.get(frozenset((u, v)), {})}
            bw, eff, lat = float(attrs["bandwidth_Bps"]), float(attrs.get("efficiency", 1.0)), float(attrs.get("latency_s", 0.0))
            if not (bw > 0 and 0 < eff <= 1 and lat >= 0):
                raise UserError(f"link {u!r}-{v!r}: need bandwidth_Bps > 0, 0 < efficiency <= 1, latency_s >= 0")
            i = link_id[(u, v)] = len(capacity)
            capacity.append(bw * eff)
            latency.append(lat)
        return i

    by_nodes: dict[tuple, tuple[list[int], float]] = {}
    pair_index: dict[tuple[int, int], int] = {}
    ptr, flat, lat_s = [0], [], []
    for src, dst in pairs.tolist():
        a, b = nodes[src], nodes[dst]
        hit = by_nodes.get((a, b))
        if hit is None:
            try:
                path = router.path(a, b, seed)
            except (nx.NetworkXNoPath, nx.NodeNotFound) as err:
                raise UserError(f"topology {G.graph.get('name')!r}: no route from rank {src} to rank {dst}: {err}") from None
            ids = [link(u, v) for u, v in zip(path[:-1], path[1:])]
            hit = by_nodes[(a, b)] = (ids, float(sum(latency[i] for i in ids)))
        pair_index[(src, dst)] = len(lat_s)
        flat.extend(hit[0])
        ptr.append(len(flat))
        lat_s.append(hit[1])
    cap = np.asarray(capacity, np.float64)
    pair_ptr = np.asarray(ptr, np.int64)
    pair_links = np.asarray(flat, np.int64)
    bottleneck = np.full(len(lat_s), np.inf)
    if pair_links.size:
        nonempty = np.diff(pair_ptr) > 0
        bottleneck[nonempty] = np.minimum.reduceat(cap[pair_links], pair_ptr[:-1][nonempty])
    return _Network(name=str(G.graph.get("name", "")), capacity_Bps=cap,
                    link_names=[k for k, _ in sorted(link_id.items(), key=lambda kv: kv[1])],
                    pair_index=pair_index, pair_keys=pairs[:, 0].astype(np.int64) * ranks + pairs[:, 1],
                    pair_ptr=pair_ptr, pair_links=pair_links,
                    pair_latency_s=np.asarray(lat_s, np.float64), pair_capacity_Bps=bottleneck)


def max_min_rates(flow: np.ndarray, link: np.ndarray, n_flows: int, capacity_Bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates of ``n_flows`` flows given their (flow, link) incidence pairs; every flow crosses
    at least one link. Vectorised over the pairs, in rounds of local bottlenecks.

    A link whose fair share (remaining capacity / flows not yet fixed) is no larger than the share of any
    other link its flows cross saturates at exactly that share: shares only grow as other flows are fixed
    below them. So every such link fixes its flows in the same round; the smallest share is always one, and
    the number of rounds is the depth of the chain of bottlenecks, not the number of distinct rates.
    """
    flow, link = np.asarray(flow, np.int64), np.asarray(link, np.int64)
    if flow.size > 1 and np.any(flow[1:] < flow[:-1]):
        order = np.argsort(flow, kind="stable")
        flow, link = flow[order], link[order]
    n_links = capacity_Bps.shape[0]
    remaining = capacity_Bps.astype(np.float64)
    rate = np.zeros(n_flows)
    while flow.size:
        count = np.bincount(link, minlength=n_links)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.maximum(remaining, 0.0) / count
        starts = np.flatnonzero(np.concatenate([[True], flow[1:] != flow[:-1]]))
        sizes = np.diff(np.append(starts, flow.size))
        flow_share = np.minimum.reduceat(share[link], starts)  # each flow's tightest link
        pair_share = np.repeat(flow_share, sizes)
        link_low = np.full(n_links, np.inf)
        np.minimum.at(link_low, link, pair_share)
        bottleneck = link_low >= share * (1 - _TOLERANCE)  # no flow here is held lower by another link
        fixed = np.logical_or.reduceat(bottleneck[link], starts)
        rate[flow[starts[fixed]]] = flow_share[fixed]
        gone = np.repeat(fixed, sizes)
        remaining -= np.bincount(link[gone], weights=pair_share[gone], minlength=n_links)
        flow, link = flow[~gone], link[~gone]
    return rate


# ---------------------------------------------------------------------------------------------------------
# arguments shared by both interpreters


@dataclass
class _Setup:
    plan: Plan
    network: _Network
    rank: np.ndarray  # rank of every op
    nbytes: np.ndarray  # bytes of every op
    start_s: np.ndarray  # per rank
    release_s: np.ndarray  # per op: not before this time (NaN: no gate)
    speed: np.ndarray  # per rank
    alpha_s: float
    gamma_s_per_byte: float
    eager: bool
    header: dict


def _setup(plan: Plan, topology, *, alpha_s, gamma_s_per_byte, beta_s_per_byte, placement, eager, itemsize,
           rank_speed, link_overrides, seed, start_s, op_nbytes=None, release_s=None,
           max_ops: int = MAX_OPS) -> _Setup:
    check_structure(plan)
    check_ops(plan.n_ops, f"simulate {plan.name} ({plan.ranks} ranks)", max_ops)
    for name, value in (("alpha_s", alpha_s), ("gamma_s_per_byte", gamma_s_per_byte)):
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise UserError(f"{name}: must be a finite number >= 0, got {value!r}")
    if isinstance(itemsize, bool) or not isinstance(itemsize, int) or itemsize < 1:
        raise UserError(f"itemsize: must be an integer >= 1, got {itemsize!r}")
    p = plan.ranks
    speed = np.ones(p) if rank_speed is None else np.asarray(rank_speed, np.float64)
    if speed.shape != (p,) or not np.all(np.isfinite(speed) & (speed > 0)):
        raise UserError(f"rank_speed: needs {p} positive finite factors")
    start = np.zeros(p) if start_s is None else np.asarray(start_s, np.float64)
    if start.shape != (p,) or not np.all(np.isfinite(start) & (start >= 0)):
        raise UserError(f"start_s: needs {p} finite times >= 0")
    if op_nbytes is None:
        nbytes = plan.op_nbytes(itemsize).astype(np.int64)
    else:
        nbytes = np.asarray(op_nbytes)
        if nbytes.shape != (plan.n_ops,) or np.any(nbytes < 0) or np.any((plan.op == Op.COMPUTE) & (nbytes != 0)):
            raise UserError(f"op_nbytes: needs {plan.n_ops} byte counts >= 0 (0 for compute ops)")
        nbytes = nbytes.astype(np.int64)
    release = np.full(plan.n_ops, np.nan) if release_s is None else np.asarray(release_s, np.float64)
    if release.shape != (plan.n_ops,) or np.any(np.isinf(release) | (release < 0)):
        raise UserError(f"release_s: needs {plan.n_ops} times >= 0 (NaN: none)")
    G = _resolve_topology(topology, p, beta_s_per_byte)
    rank = plan.op_rank()
    sends = np.flatnonzero(plan.op == Op.SEND)
    pair_keys = np.unique(rank[sends].astype(np.int64) * p + plan.peer[sends])
    pairs = np.stack([pair_keys // p, pair_keys % p], axis=1)
    network = _build_network(G, p, pairs, placement=placement, link_overrides=link_overrides, seed=seed)
    hardware = f"alpha={alpha_s:.4g}s gamma={gamma_s_per_byte:.4g}s/B"
    if topology is None:
        hardware += f" beta={beta_s_per_byte:.4g}s/B"
    header = dict(topology=network.name, hardware=hardware, versions=software_versions("simpy"),
                  extra={"alpha_s": float(alpha_s), "gamma_s_per_byte": float(gamma_s_per_byte),
                         "eager": bool(eager), "seed": seed, "itemsize": itemsize})
    return _Setup(plan=plan, network=network, rank=rank, nbytes=nbytes, start_s=start, release_s=release,
                  speed=speed, alpha_s=float(alpha_s), gamma_s_per_byte=float(gamma_s_per_byte),
                  eager=bool(eager), header=header)


def _trace(s: _Setup, t_start: np.ndarray, t_end: np.ndarray, itemsize: int, **extra) -> Trace:
    undone = np.flatnonzero(np.isnan(t_end))
    if undone.size:
        j = int(undone[0])
        r = int(s.rank[j])
        raise PlanError(f"plan {s.plan.name}: deadlock: {undone.size} op(s) never complete; rank {r} op "
                        f"{j - int(s.plan.offsets[r])} ({OP_NAMES[s.plan.op[j]]} chunk {s.plan.chunk[j]} "
                        f"peer {s.plan.peer[j]}) is the first")
    header = dict(s.header)
    header["extra"] = {**header["extra"], **extra}
    trace = Trace.for_plan(s.plan, t_start, t_end, itemsize=itemsize, source="simulated", **header)
    return dataclasses.replace(trace, nbytes=s.nbytes.copy())


# ---------------------------------------------------------------------------------------------------------
# the fast interpreter

# kinds of timed work: flow activation, recv done, compute done, rank start, an op's release time
_ACT, _RDONE, _CDONE, _START, _RELEASE = range(5)
_KINDS = 5


def _chunk_order(plan: Plan, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pred, succ) op pairs: succ is the next op after pred on one of pred's chunks at the same rank.

    Completion on a chunk is in program order, so waiting for these immediate predecessors is waiting for
    every earlier op on the chunks. Spans are cut into the elementary intervals between the chunk bounds
    the rank's ops use, so a span of 2048 chunks costs a few intervals, not 2048 entries.
    """
    named = np.flatnonzero((plan.op != Op.COMPUTE) | (plan.chunk >= 0))
    if named.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    r = rank[named].astype(np.int64)
    c = plan.chunk[named].astype(np.int64)
    s = plan.span[named].astype(np.int64)
    if np.all(s == 1):
        key = r * plan.chunks + c
        order = np.argsort(key, kind="stable")
        same = key[order[1:]] == key[order[:-1]]
        return named[order[:-1][same]], named[order[1:][same]]
    width = plan.chunks + 1
    lo_key, hi_key = r * width + c, r * width + c + s
    bounds = np.unique(np.concatenate([lo_key, hi_key]))
    lo, hi = np.searchsorted(bounds, lo_key), np.searchsorted(bounds, hi_key)
    element = _expand(lo, hi)
    owner = np.repeat(named, hi - lo)
    order = np.argsort(element, kind="stable")  # owners stay in program order within an interval
    element, owner = element[order], owner[order]
    same = element[1:] == element[:-1]
    pred, succ = owner[:-1][same], owner[1:][same]
    n = np.int64(plan.n_ops)
    edges = np.unique(succ * n + pred)
    return edges % n, edges // n


class _Wavefront:
    """State of one fast run. ``run`` wakes once per time window (a SimPy timeout); see ``_window``."""

    def __init__(self, s: _Setup):
        plan, net = s.plan, s.network
        n, p = plan.n_ops, plan.ranks
        self.s, self.eager = s, s.eager
        self.kind = plan.op
        self.rank = s.rank.astype(np.int64)
        self.end = plan.offsets[1:].astype(np.int64)
        # next op at or after j that can block issue (send or compute), capped at the rank's end
        pos = np.where((plan.op == Op.SEND) | (plan.op == Op.COMPUTE), np.arange(n, dtype=np.int64), n)
        self.next_block = np.minimum(np.minimum.accumulate(pos[::-1])[::-1], self.end[self.rank]) if n else pos
        pred, succ = _chunk_order(plan, s.rank)
        n_pred = np.bincount(succ, minlength=n)
        n_succ = np.bincount(pred, minlength=n)
        self.single_pred = bool(n_pred.max(initial=0) <= 1)
        self.single_succ = bool(n_succ.max(initial=0) <= 1)
        if self.single_succ:
            self.succ1 = np.full(n, -1, np.int64)
            self.succ1[pred] = succ
        else:
            self.succ = succ[np.argsort(pred, kind="stable")]
            self.succ_ptr = np.concatenate([[0], np.cumsum(n_succ)]).astype(np.int64)
        self.is_recv = (plan.op == Op.RECV) | (plan.op == Op.REDUCE)
        # Dataflow: an op is ready when its countdown reaches 0 (chunk predecessors, plus posting and arrival
        # for recvs or the pc for sends/computes); its time is the latest of those inputs.
        self.wait = (n_pred + np.where(self.is_recv, 2, 1)).astype(np.int32)
        self.ready_t = np.full(n, -np.inf)
        partner = match_messages(plan)
        sends = np.flatnonzero(plan.op == Op.SEND)
        m = sends.shape[0]
        self.msg_of = np.full(n, -1, np.int64)
        self.msg_of[sends] = np.arange(m)
        self.msg_of[partner[sends]] = np.arange(m)
        self.msg_send, self.msg_recv = sends, partner[sends]
        self.msg_bytes = s.nbytes[sends].astype(np.float64)
        self.msg_pair = np.searchsorted(net.pair_keys, self.rank[sends] * p + plan.peer[sends])
        self.msg_wait = np.full(m, 1 if self.eager else 2, np.int8)  # send issued (and recv posted)
        self.msg_ready_t = np.full(m, -np.inf)
        self.act_delay = s.alpha_s + net.pair_latency_s[self.msg_pair]
        # No flow can start sooner than this after anything happens: the window's width.
        self.lookahead = float(self.act_delay.min()) if m else 0.0
        self.msg_instant = (self.msg_bytes == 0) | (np.diff(net.pair_ptr)[self.msg_pair] == 0)
        self.recv_delay = np.where(plan.op == Op.REDUCE, s.gamma_s_per_byte * s.nbytes, 0.0)
        self.compute_s = np.where(plan.op == Op.COMPUTE, plan.seconds / s.speed[s.rank], 0.0)
        self.pc = plan.offsets[:-1].astype(np.int64).copy()
        self.t_start = np.full(n, np.nan)
        self.t_end = np.full(n, np.nan)
        # timed work not yet due, per kind: times and ids; additions are staged and merged per window
        self.p_time = [np.zeros(0) for _ in range(_KINDS)]
        self.p_ids = [np.zeros(0, np.int64) for _ in range(_KINDS)]
        self.p_min = [math.inf] * _KINDS
        self.staged: list[list] = [[] for _ in range(_KINDS)]
        self.due: list[list] = [[] for _ in range(_KINDS)]
        self.woken: list[tuple] = []
        self.horizon = -math.inf  # end of the current window (exclusive)
        self.windows = self.instants = self.reshares = 0
        self._push(_START, s.start_s, np.arange(p, dtype=np.int64))
        gated = np.flatnonzero(~np.isnan(s.release_s))
        self.wait[gated] += 1  # the release is one more input
        self._push(_RELEASE, s.release_s[gated], gated)
        self._merge()
        # the network: active flows as parallel arrays
        self.cap = net.capacity_Bps
        self.pair_ptr, self.pair_links, self.pair_cap = net.pair_ptr, net.pair_links, net.pair_capacity_Bps
        self.load = np.zeros(self.cap.shape[0], np.int32)  # active flows per directed link
        # when a link frees up: its private flow's finish; +inf on the links of flows that share a link
        self.busy_until = np.full(self.cap.shape[0], -np.inf)
        self.shared_next = math.inf  # earliest finish of a flow that shares a link
        self.f_msg = np.zeros(0, np.int64)
        self.f_rem = np.zeros(0)  # bytes left at f_t0
        self.f_t0 = np.zeros(0)
        self.f_rate = np.zeros(0)
        self.f_fin = np.zeros(0)
        self.f_next = math.inf

    # -- timed work ---------------------------------------------------------------------------------
    def _push(self, kind: int, times: np.ndarray, ids: np.ndarray) -> None:
        if ids.size == 0:
            return
        if kind != _ACT:  # flows start at least a lookahead later, so never inside the window
            now = times < self.horizon
            if now.all():
                self.due[kind].append((ids, times))
                return
            if now.any():
                self.due[kind].append((ids[now], times[now]))
                times, ids = times[~now], ids[~now]
        self.staged[kind].append((times, ids))

    def _merge(self) -> None:
        for k in range(_KINDS):
            if self.staged[k]:
                self.p_time[k] = np.concatenate([self.p_time[k], *(t for t, _ in self.staged[k])])
                self.p_ids[k] = np.concatenate([self.p_ids[k], *(i for _, i in self.staged[k])])
                self.staged[k] = []
                self.p_min[k] = float(self.p_time[k].min())

    def _pop(self, kind: int, before: float) -> tuple[np.ndarray, np.ndarray]:
        """Pending work of ``kind`` due before ``before``, removed from the pending set."""
        times = self.p_time[kind]
        now = times < before
        ids, when = self.p_ids[kind][now], times[now]
        self.p_time[kind], self.p_ids[kind] = times[~now], self.p_ids[kind][~now]
        self.p_min[kind] = float(self.p_time[kind].min()) if self.p_time[kind].size else math.inf
        return ids, when

    @staticmethod
    def _take(queue: list) -> tuple[np.ndarray, np.ndarray]:
        if len(queue) == 1:
            ids, times = queue[0]
        else:
            ids, times = np.concatenate([q[0] for q in queue]), np.concatenate([q[1] for q in queue])
        queue.clear()
        return ids, times

    # -- dataflow: ops ------------------------------------------------------------------------------
    def _inputs(self, ops: np.ndarray, times: np.ndarray) -> np.ndarray:
        """One input each for ``ops`` (distinct) at ``times``; returns those now ready."""
        self.ready_t[ops] = np.maximum(self.ready_t[ops], times)
        left = self.wait[ops] - 1
        self.wait[ops] = left
        return ops[left == 0]

    def _complete(self, ops: np.ndarray, times: np.ndarray) -> None:
        """Ops done at ``times``: their chunk successors get an input; ready recvs finish after gamma,
        ready sends/computes (their rank's pc is on them) issue."""
        self.t_end[ops] = times
        if self.single_succ:
            nxt = self.succ1[ops]
            has = nxt >= 0
            nxt, when = nxt[has], times[has]
        else:
            lo, hi = self.succ_ptr[ops], self.succ_ptr[ops + 1]
            nxt, when = self.succ[_expand(lo, hi)], np.repeat(times, hi - lo)
        if nxt.size == 0:
            return
        if self.single_pred:
            ready = self._inputs(nxt, when)
        else:
            np.maximum.at(self.ready_t, nxt, when)
            np.subtract.at(self.wait, nxt, 1)
            ready = nxt[self.wait[nxt] == 0]
            if ready.size > 1:
                ready = np.unique(ready)  # an op with two predecessors done at once appears twice
        self._ready(ready)

    def _ready(self, ready: np.ndarray) -> None:
        """Ops whose last input came: recvs finish after gamma, sends/computes issue (their pc is on them)."""
        if ready.size:
            recv = self.is_recv[ready]
            if recv.any():
                done = ready[recv]
                self._push(_RDONE, self.ready_t[done] + self.recv_delay[done], done)
                ready = ready[~recv]
            if ready.size:
                self.woken.append((ready, self.ready_t[ready]))

    def _message_input(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """Send issued or recv posted: the flow starts after the latency once both have happened."""
        self.msg_ready_t[msgs] = np.maximum(self.msg_ready_t[msgs], times)
        left = self.msg_wait[msgs] - 1
        self.msg_wait[msgs] = left
        go = msgs[left == 0]
        if go.size:
            self._push(_ACT, self.msg_ready_t[go] + self.act_delay[go], go)

    def _post(self, ops: np.ndarray, times: np.ndarray) -> None:
        self.t_start[ops] = times
        ready = self._inputs(ops, times)
        if self.eager:
            if ready.size:  # the data came before the recv was posted
                self._push(_RDONE, self.ready_t[ready] + self.recv_delay[ready], ready)
        else:
            self._message_input(self.msg_of[ops], times)

    def _issue(self, ranks: np.ndarray, ops: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ready sends/computes at the ranks' pcs start at ``times``; returns the ranks that issue on."""
        self.t_start[ops] = times
        send = self.kind[ops] == Op.SEND
        if not send.all():
            comp = ops[~send]
            self._push(_CDONE, times[~send] + self.compute_s[comp], comp)
            ranks, ops, times = ranks[send], ops[send], times[send]
        if ops.size:
            self.pc[ranks] = ops + 1
            self._message_input(self.msg_of[ops], times)
            if self.eager:
                self._complete(ops, times)
        return ranks, times

    def _advance(self, ranks: np.ndarray, times: np.ndarray) -> None:
        """Ranks whose pc just moved at ``times``: post the recvs up to the next send/compute, issue it if ready."""
        pc, end, next_block = self.pc, self.end, self.next_block
        while ranks.size:
            live = pc[ranks] < end[ranks]
            if not live.all():
                ranks, times = ranks[live], times[live]
                if not ranks.size:
                    return
            j = pc[ranks]
            k = next_block[j]
            gap = k - j
            if gap.any():
                self._post(_expand(j, k), np.repeat(times, gap))
            pc[ranks] = k
            live = k < end[ranks]
            if not live.all():
                ranks, k, times = ranks[live], k[live], times[live]
            ready_t = self.ready_t
            ready_t[k] = np.maximum(ready_t[k], times)
            left = self.wait[k] - 1
            self.wait[k] = left
            ready = left == 0
            if not ready.all():
                ranks, k = ranks[ready], k[ready]
            if ranks.size:
                ranks, times = self._issue(ranks, k, ready_t[k])

    def _arrive(self, msgs: np.ndarray, times: np.ndarray) -> None:
        if not self.eager:
            self._complete(self.msg_send[msgs], times)
        ready = self._inputs(self.msg_recv[msgs], times)
        if ready.size:
            self._push(_RDONE, self.ready_t[ready] + self.recv_delay[ready], ready)

    def _dataflow(self, arrivals: list) -> None:
        """Everything due before the horizon, in dependency order (times come from the inputs, not the
        order of processing)."""
        due, take = self.due, self._take
        for kind in (_RDONE, _CDONE, _START, _RELEASE):
            if self.p_min[kind] < self.horizon:
                ids, times = self._pop(kind, self.horizon)
                due[kind].append((ids, times))
        while True:
            if arrivals:
                self._arrive(*take(arrivals))
            elif due[_RDONE]:
                self._complete(*take(due[_RDONE]))
            elif self.woken:
                ops, times = take(self.woken)
                self._advance(*self._issue(self.rank[ops], ops, times))
            elif due[_CDONE]:
                ops, times = take(due[_CDONE])
                self._complete(ops, times)
                self.pc[self.rank[ops]] = ops + 1
                self._advance(self.rank[ops], times)
            elif due[_START]:
                self._advance(*take(due[_START]))
            elif due[_RELEASE]:
                self._ready(self._inputs(*take(due[_RELEASE])))
            else:
                return

    # -- network ------------------------------------------------------------------------------------
    def _flow_links(self, msgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pair = self.msg_pair[msgs]
        lo, hi = self.pair_ptr[pair], self.pair_ptr[pair + 1]
        return self.pair_links[_expand(lo, hi)], hi - lo

    def _add_flows(self, msgs, start, rate, fin) -> None:
        self.f_msg = np.concatenate([self.f_msg, msgs])
        self.f_rem = np.concatenate([self.f_rem, self.msg_bytes[msgs]])
        self.f_t0 = np.concatenate([self.f_t0, start])
        self.f_rate = np.concatenate([self.f_rate, rate])
        self.f_fin = np.concatenate([self.f_fin, fin])

    def _drop_flows(self, done: np.ndarray) -> np.ndarray:
        """Remove the flows where ``done``; returns their messages."""
        msgs = self.f_msg[done]
        links, _ = self._flow_links(msgs)
        np.subtract.at(self.load, links, 1)
        keep = ~done
        self.f_msg, self.f_rem, self.f_t0 = self.f_msg[keep], self.f_rem[keep], self.f_t0[keep]
        self.f_rate, self.f_fin = self.f_rate[keep], self.f_fin[keep]
        return msgs

    def _bulk(self, horizon: float, arrivals: list) -> float:
        """A flow alone on its links runs at its route's bottleneck and affects no other: until the first
        time a new flow would meet another on a link or a flow that shares a link ends (or the horizon),
        start every known flow and finish every private one that ends before it. Returns that time."""
        clash = min(horizon, self.shared_next)
        if self.p_min[_ACT] < clash:
            times = self.p_time[_ACT]
            window = times < clash
            msgs, start = self.p_ids[_ACT][window], times[window]
            instant = self.msg_instant[msgs]
            flows, f_start = msgs[~instant], start[~instant]
            if flows.size:
                links, n_links = self._flow_links(flows)
                fin = f_start + self.msg_bytes[flows] / self.pair_cap[self.msg_pair[flows]]
                e_start, e_fin = np.repeat(f_start, n_links), np.repeat(fin, n_links)
                # starting as another ends (to rounding) is no meeting
                hit = e_start + (np.abs(e_start) * _TOLERANCE + _TOLERANCE_ABS_s) < self.busy_until[links]
                if hit.any():
                    clash = min(clash, float(e_start[hit].min()))
                if flows.size > 1:
                    order = np.lexsort((e_start, links))
                    lk, st, fn = links[order], e_start[order], e_fin[order]
                    hit = (lk[1:] == lk[:-1]) & (st[1:] < fn[:-1] - (np.abs(fn[:-1]) * _TOLERANCE + _TOLERANCE_ABS_s))
                    if hit.any():
                        clash = min(clash, float(st[1:][hit].min()))
                go = f_start < clash
                if not go.all():
                    keep_e = np.repeat(go, n_links)
                    links, e_fin = links[keep_e], e_fin[keep_e]
                    flows, f_start, fin = flows[go], f_start[go], fin[go]
                np.add.at(self.load, links, 1)
                np.maximum.at(self.busy_until, links, e_fin)
                self._add_flows(flows, f_start, self.pair_cap[self.msg_pair[flows]], fin)
            if instant.any():
                arrivals.append((msgs[instant], start[instant]))
            taken = window.copy()
            taken[window] = instant | (start < clash)
            self.p_time[_ACT], self.p_ids[_ACT] = times[~taken], self.p_ids[_ACT][~taken]
            self.p_min[_ACT] = float(self.p_time[_ACT].min()) if self.p_time[_ACT].size else math.inf
            self.f_next = float(self.f_fin.min()) if self.f_fin.size else math.inf
        if self.f_next < clash:
            done = self.f_fin < clash
            when = self.f_fin[done]
            arrivals.append((self._drop_flows(done), when))
            self.f_next = float(self.f_fin.min()) if self.f_fin.size else math.inf
        return clash

    def _instant(self, t: float, arrivals: list) -> None:
        """Flows meet on a link, or one that shared a link ends, at t: exact max-min over the flows at t."""
        self.instants += 1
        lim = _limit(t)
        if self.f_next <= lim:
            msgs = self._drop_flows(self.f_fin <= lim)
            arrivals.append((msgs, np.full(msgs.size, t)))
        if self.p_min[_ACT] <= lim:
            msgs, _ = self._pop(_ACT, np.nextafter(lim, math.inf))
            instant = self.msg_instant[msgs]
            if instant.any():
                arrivals.append((msgs[instant], np.full(int(instant.sum()), t)))
                msgs = msgs[~instant]
            if msgs.size:
                links, _ = self._flow_links(msgs)
                np.add.at(self.load, links, 1)
                self._add_flows(msgs, np.full(msgs.size, t), np.zeros(msgs.size), np.full(msgs.size, np.inf))
        self._reshare(t)

    def _reshare(self, t: float) -> None:
        """Rates of all active flows at t: a private flow gets its route's bottleneck, flows on shared links
        get max-min fair shares (progressive filling over just those)."""
        self.reshares += 1
        n = self.f_msg.shape[0]
        pair = self.msg_pair[self.f_msg]
        lo, hi = self.pair_ptr[pair], self.pair_ptr[pair + 1]
        links = self.pair_links[_expand(lo, hi)]
        flow = np.repeat(np.arange(n, dtype=np.int64), hi - lo)
        on_shared = self.load[links] >= 2
        rate = self.pair_cap[pair].copy()
        shared = np.zeros(n, bool)
        if on_shared.any():
            shared[flow[on_shared]] = True
            local = np.cumsum(shared) - 1
            sel = shared[flow]
            rate[shared] = max_min_rates(local[flow[sel]], links[sel], int(shared.sum()), self.cap)  # flow-sorted
        changed = rate != self.f_rate
        if changed.any():
            rem = self.f_rem[changed] - self.f_rate[changed] * (t - self.f_t0[changed])
            rem = np.maximum(rem, 0.0)
            self.f_rem[changed] = rem
            self.f_t0[changed] = t
            self.f_rate[changed] = rate[changed]
            self.f_fin[changed] = t + rem / rate[changed]
        self.busy_until.fill(-np.inf)
        self.busy_until[links] = np.where(shared[flow], np.inf, self.f_fin[flow])
        self.shared_next = float(self.f_fin[shared].min()) if shared.any() else math.inf
        self.f_next = float(self.f_fin.min()) if n else math.inf

    def _network(self, horizon: float) -> list:
        """Advance the network to the horizon; returns the arrivals (messages, times) before it."""
        arrivals: list = []
        while True:
            t = self._bulk(horizon, arrivals)
            if t >= horizon:
                return arrivals
            self._instant(t, arrivals)

    # -- the loop -----------------------------------------------------------------------------------
    def _window(self, t: float) -> None:
        """Everything in [t, t + lookahead): no flow can start in it that is not already known, so the network
        runs first on the known flows, then the dataflow takes its arrivals and everything else due."""
        self.windows += 1
        self.horizon = max(t + self.lookahead, np.nextafter(_limit(t), math.inf))
        while True:
            self._dataflow(self._network(self.horizon))
            self._merge()
            if self.p_min[_ACT] >= self.horizon:
                return
            # only with zero lookahead (or rounding): flows that start inside this window; run them now
            self.p_time[_ACT] = np.maximum(self.p_time[_ACT], t)

    def _next_time(self) -> float:
        return min(self.f_next, *self.p_min)

    def run(self) -> None:
        env = simpy.Environment(initial_time=min(0.0, float(self.s.start_s.min(initial=0.0))))

        def driver():
            while True:
                t = self._next_time()
                if t == math.inf:
                    return
                if t > env.now:
                    yield env.timeout(t - env.now)
                self._window(t)

        env.process(driver())
        env.run()


def simulate(plan: Plan, topology: nx.Graph | str | None = None, *, alpha_s: float, gamma_s_per_byte: float,
             beta_s_per_byte: float | None = None, placement: Sequence[Hashable] | None = None, eager: bool = False,
             itemsize: int = 4, rank_speed=None, link_overrides: Mapping | None = None, seed: int = 0,
             start_s=None, op_nbytes=None, release_s=None, max_ops: int = MAX_OPS) -> Trace:
    """Predict when every op of ``plan`` starts and ends on ``topology``; returns the simulated Trace.

    topology: a networkx graph (``firesim.topology``), a spec such as ``"fat-tree:k=8"``, or None for a
    non-blocking star whose host links carry ``1 / beta_s_per_byte`` bytes/s with no link latency.
    placement: the node of every rank (default ``G.graph["endpoints"]`` in order).
    rank_speed: per-rank factors dividing compute ops' seconds. start_s: per-rank time at which the rank
    starts issuing (e.g. when backward produced a bucket). link_overrides: ``{(u, v): {"bandwidth_Bps": ...,
    "latency_s": ..., "efficiency": ...}}`` replaces those attributes of link u-v (both directions).
    seed: salts ECMP path choice. For plans composed of parts of different sizes (``firesim.training``):
    op_nbytes gives every op's bytes (default: the plan's chunk sizes) and release_s every op's gate, a time
    before which it does not issue (send/compute) or complete (recv); NaN for none. See the module docstring for the model and ``firesim.plans.ir`` for the
    semantics. Raises PlanError if the plan deadlocks or its messages do not match. A plan of more than
    ``max_ops`` ops is refused before anything is allocated (``firesim.limits``).
    """
    s = _setup(plan, topology, alpha_s=alpha_s, gamma_s_per_byte=gamma_s_per_byte, beta_s_per_byte=beta_s_per_byte,
               placement=placement, eager=eager, itemsize=itemsize, rank_speed=rank_speed,
               link_overrides=link_overrides, seed=seed, start_s=start_s, op_nbytes=op_nbytes, release_s=release_s,
               max_ops=max_ops)
    w = _Wavefront(s)
    w.run()
    return _trace(s, w.t_start, w.t_end, itemsize, windows=w.windows, network_instants=w.instants,
                  rate_passes=w.reshares, events=int(plan.n_ops + 2 * w.msg_send.shape[0]))


# ---------------------------------------------------------------------------------------------------------
# the reference interpreter: obviously right, slow


def _reference_max_min(flows: dict[int, list[int]], capacity_Bps: np.ndarray) -> dict[int, float]:
    """Progressive filling written plainly: raise every unfrozen flow until a link saturates, freeze its flows."""
    remaining = {link: float(capacity_Bps[link]) for links in flows.values() for link in links}
    unfrozen = set(flows)
    rate: dict[int, float] = {}
    level = 0.0
    while unfrozen:
        count: dict[int, int] = defaultdict(int)
        for f in unfrozen:
            for link in flows[f]:
                count[link] += 1
        step = min(remaining[link] / c for link, c in count.items())
        level += step
        saturated = set()
        for link, c in count.items():
            if remaining[link] / c <= step * (1 + _TOLERANCE):
                saturated.add(link)
                remaining[link] = 0.0
            else:
                remaining[link] -= c * step
        for f in [f for f in unfrozen if any(link in saturated for link in flows[f])]:
            rate[f] = level
            unfrozen.discard(f)
    return rate


class _ReferenceNetwork:
    """Every flow an entry in a dict; all rates recomputed from scratch whenever a flow starts or ends."""

    def __init__(self, env: simpy.Environment, capacity_Bps: np.ndarray):
        self.env, self.capacity = env, capacity_Bps
        self.flows: dict[int, dict] = {}
        self.count = 0
        self.generation = 0

    def transfer(self, links: list[int], nbytes: float) -> simpy.Event:
        done = self.env.event()
        if nbytes <= 0 or not links:
            done.succeed()
            return done
        self._progress()
        self.count += 1
        self.flows[self.count] = {"links": links, "rem": float(nbytes), "rate": 0.0, "done": done}
        self._reshare()
        return done

    def _progress(self) -> None:
        now = self.env.now
        for f in self.flows.values():
            f["rem"] -= f["rate"] * (now - f["t0"]) if f["rate"] else 0.0
            f["t0"] = now

    def _reshare(self) -> None:
        now = self.env.now
        for f in self.flows.values():
            f.setdefault("t0", now)
        rates = _reference_max_min({i: f["links"] for i, f in self.flows.items()}, self.capacity)
        for i, f in self.flows.items():
            f["rate"] = rates[i]
        if self.flows:
            self.generation += 1
            dt = min(max(f["rem"], 0.0) / f["rate"] for f in self.flows.values())
            self.env.process(self._wake(self.generation, dt))

    def _wake(self, generation: int, dt: float):
        yield self.env.timeout(dt)
        if generation != self.generation:
            return  # rates changed since; a newer wake-up is scheduled
        self._progress()
        lim = _limit(self.env.now)
        for i in [i for i, f in self.flows.items() if self.env.now + max(f["rem"], 0.0) / f["rate"] <= lim]:
            self.flows.pop(i)["done"].succeed()
        self._reshare()


def simulate_reference(plan: Plan, topology: nx.Graph | str | None = None, *, alpha_s: float,
                       gamma_s_per_byte: float, beta_s_per_byte: float | None = None,
                       placement: Sequence[Hashable] | None = None, eager: bool = False, itemsize: int = 4,
                       rank_speed=None, link_overrides: Mapping | None = None, seed: int = 0,
                       start_s=None, op_nbytes=None, release_s=None) -> Trace:
    """``simulate`` written the obvious way: a SimPy process per rank and per message, one event per op and
    flow, rules transcribed from ``firesim.plans.ir``. Quadratic in a rank's program length; for tests."""
    s = _setup(plan, topology, alpha_s=alpha_s, gamma_s_per_byte=gamma_s_per_byte, beta_s_per_byte=beta_s_per_byte,
               placement=placement, eager=eager, itemsize=itemsize, rank_speed=rank_speed,
               link_overrides=link_overrides, seed=seed, start_s=start_s, op_nbytes=op_nbytes, release_s=release_s)
    n = plan.n_ops
    release = s.release_s.tolist()
    op, chunk, span, peer = plan.op.tolist(), plan.chunk.tolist(), plan.span.tolist(), plan.peer.tolist()
    seconds, nbytes, offsets = plan.seconds.tolist(), s.nbytes.tolist(), plan.offsets.tolist()
    env = simpy.Environment(initial_time=min(0.0, float(s.start_s.min(initial=0.0))))
    net = _ReferenceNetwork(env, s.network.capacity_Bps)
    done = [env.event() for _ in range(n)]
    posted = [env.event() for _ in range(n)]
    arrived = [env.event() for _ in range(n)]
    t_start, t_end = np.full(n, np.nan), np.full(n, np.nan)

    # rule 5: the k-th send from a to b matches the k-th recv at b from a
    partner = [-1] * n
    queues: dict[tuple[int, int], deque] = defaultdict(deque)
    for r in range(plan.ranks):
        for j in range(offsets[r], offsets[r + 1]):
            if op[j] == Op.SEND:
                queues[(r, peer[j], "send")].append(j)
            elif op[j] != Op.COMPUTE:
                queues[(peer[j], r, "recv")].append(j)
    for (a, b, what), q in list(queues.items()):
        if what == "send":
            other = queues.get((a, b, "recv"), deque())
            if len(other) != len(q):
                raise PlanError(f"plan {plan.name}: rank {a} sends {len(q)} messages to rank {b}, which posts {len(other)}")
            for j, k in zip(q, other):
                partner[j], partner[k] = k, j

    def earlier_on_chunks(j: int) -> list[simpy.Event]:
        """Rules 2-4: the earlier ops at this rank that touch any of op j's chunks."""
        if op[j] == Op.COMPUTE and chunk[j] < 0:
            return []
        r = int(s.rank[j])
        mine = range(chunk[j], chunk[j] + span[j])
        return [done[i] for i in range(offsets[r], j)
                if not (op[i] == Op.COMPUTE and chunk[i] < 0) and set(range(chunk[i], chunk[i] + span[i])) & set(mine)]

    def sender(j: int):
        q = partner[j]
        if not s.eager:
            yield posted[q]
        links, latency = s.network.route(int(s.rank[j]), peer[j])
        yield env.timeout(s.alpha_s + latency)
        yield net.transfer(links, nbytes[j])
        arrived[q].succeed()
        if not s.eager:
            t_end[j] = env.now
            done[j].succeed()

    def gate(j: int):
        if release[j] == release[j] and release[j] > env.now:  # not NaN, still ahead
            yield env.timeout(release[j] - env.now)

    def receiver(j: int, before: list):
        yield env.all_of([*before, arrived[j]])
        yield from gate(j)
        if op[j] == Op.REDUCE:
            yield env.timeout(s.gamma_s_per_byte * nbytes[j])
        t_end[j] = env.now
        done[j].succeed()

    def rank(r: int):
        if s.start_s[r] > env.now:
            yield env.timeout(s.start_s[r] - env.now)
        for j in range(offsets[r], offsets[r + 1]):  # rule 1: program order
            before = earlier_on_chunks(j)
            if op[j] in (Op.RECV, Op.REDUCE):  # rule 2: posted at once, never blocks
                t_start[j] = env.now
                posted[j].succeed()
                env.process(receiver(j, before))
            elif op[j] == Op.SEND:  # rule 3: the rank waits for the chunks, the transfer runs in background
                yield env.all_of(before)
                yield from gate(j)
                t_start[j] = env.now
                env.process(sender(j))
                if s.eager:
                    t_end[j] = env.now
                    done[j].succeed()
            else:  # rule 4
                yield env.all_of(before)
                yield from gate(j)
                t_start[j] = env.now
                yield env.timeout(seconds[j] / s.speed[r])
                t_end[j] = env.now
                done[j].succeed()

    for r in range(plan.ranks):
        env.process(rank(r))
    env.run()
    return _trace(s, t_start, t_end, itemsize)
