"""What both interpreters share: the transport model, the network of a topology, and the static facts of a
plan (messages, connections, which of them can ever meet another on a link), computed once, vectorised."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from firesim import topology as topo
from firesim.errors import UserError
from firesim.limits import MAX_OPS, check_ops
from firesim.plans.ir import OP_NAMES, Op, Plan, check_structure, expand_ranges
from firesim.plans.verify import PlanError, match_messages
from firesim.trace import Trace, TraceHeader, software_versions

# Network events within this relative distance are one instant: merges times that differ only by rounding.
TOLERANCE = 1e-12
TOLERANCE_ABS_s = 1e-15
# A token bucket holding less than this fraction of its depth is empty (rounding of drain and refill).
TOKEN_TOLERANCE = 1e-9
LINK_ATTRS = ("bandwidth_Bps", "latency_s", "efficiency", "burst_nbytes", "peak_bandwidth_Bps")


def limit(t: float) -> float:
    """The last time that still counts as ``t``."""
    return t + abs(t) * TOLERANCE + TOLERANCE_ABS_s


def stable_argsort(key: np.ndarray) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` for integer keys >= 0, in one or two radix passes of 16 bits where
    they fit in 32 (numpy radix-sorts 16-bit keys; wider ones go to timsort, several times slower)."""
    if key.size == 0 or key.max() >= 1 << 32 or key.min() < 0:
        return np.argsort(key, kind="stable")
    low = np.argsort((key & 0xFFFF).astype(np.uint16), kind="stable")
    if key.max() < 1 << 16:
        return low
    high = np.argsort((key[low] >> 16).astype(np.uint16), kind="stable")
    return low[high]


def position_major(offsets: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items grouped by rank (CSR ``offsets``) in the order (position within their rank, rank), and the
    bounds of each position's block in that order: ranks advance roughly in step, so items handled together
    lie together in memory."""
    n, p = rank.shape[0], offsets.shape[0] - 1
    lengths = np.diff(offsets)
    positions = int(lengths.max(initial=0))
    if n and np.all(lengths == lengths[0]):
        order = np.arange(n, dtype=np.int64).reshape(p, positions).T.ravel()
        return order, np.arange(0, n + 1, p, dtype=np.int64)
    pos = np.arange(n, dtype=np.int64) - offsets[:-1][rank]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(pos, minlength=positions))]).astype(np.int64)
    return stable_argsort(pos), bounds


# ---------------------------------------------------------------------------------------------------------
# the transport


@dataclass(frozen=True)
class Transport:
    """What the software between the plan and the wire does with a message (docs/engine.md).

    fifo_pairs: the messages of one ordered rank pair go first-in first-out over one connection (TCP and
        NCCL channels serialise them); False: every message is its own flow, sharing links fairly.
    rendezvous_nbytes: messages of at least this many bytes use the rendezvous protocol: their data moves
        only once the matching recv is posted (gloo's send waits for the receiver's NOTIFY_RECV_READY; MPI
        above its eager threshold). Smaller ones are eager: pushed at issue, and the send completes at once
        (buffered). 0 (default): every message is rendezvous; ``math.inf``: every message is eager.
    eager_window_nbytes: a rendezvous send completes once its connection's bytes not yet delivered, up to
        and including its own, fit in this many bytes (the socket buffering ``calibrate`` measures).
        0: when its data has arrived; ``math.inf``: as soon as it is handed over.
    message_overhead_s: time a rendezvous message costs on top of ``alpha_s`` before its bytes move (MPI's
        request-to-send / clear-to-send round trip, which the small eager ping-pong that measures alpha
        does not pay).
    copy_s_per_byte: time per byte the receiver spends after the data arrived and before the recv
        completes (a copy out of the transport's buffers), on top of a reduce's gamma.
    notice_behind_data: the receiver's ready notice for a rendezvous message travels on the connection of
        the reverse pair, behind the data the receiver has already handed to it (gloo writes
        NOTIFY_RECV_READY to the pair's one socket): a recv posted in a later issue pass than the
        receiver's own message to that peer (its latest send to it before the recv in program order) was
        handed over (strictly earlier, or a send or compute on that message's chunks lies between the two)
        lets the sender go only once that message has arrived. Needs ``fifo_pairs``.
    """

    fifo_pairs: bool = True
    rendezvous_nbytes: float = 0.0
    eager_window_nbytes: float = 0.0
    message_overhead_s: float = 0.0
    copy_s_per_byte: float = 0.0
    notice_behind_data: bool = False

    def __post_init__(self):
        for name in ("fifo_pairs", "notice_behind_data"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"transport.{name}: must be true or false, got {getattr(self, name)!r}")
        if self.notice_behind_data and not self.fifo_pairs:
            raise UserError("transport.notice_behind_data: needs fifo_pairs (a notice queues behind a connection's data)")
        for name in ("rendezvous_nbytes", "eager_window_nbytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
                raise UserError(f"transport.{name}: must be a number of bytes >= 0 (inf allowed), got {value!r}")
        for name in ("message_overhead_s", "copy_s_per_byte"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise UserError(f"transport.{name}: must be a finite number >= 0, got {value!r}")


# ``eager=True`` of earlier versions: every send pushed at issue and complete at once.
EAGER = Transport(rendezvous_nbytes=math.inf)


# ---------------------------------------------------------------------------------------------------------
# the network: directed links and the route of every rank pair


@dataclass
class Network:
    """Directed link resources of a topology and the routes of the rank pairs a plan uses.

    Capacities are in payload bytes/s (bandwidth x efficiency). A link with ``burst_nbytes`` is a token
    bucket: it holds up to ``burst`` bytes of credit (scaled by efficiency, like the rate), refilled at its
    capacity; while it holds any, it passes ``peak`` bytes/s instead of ``capacity``.
    """

    name: str
    capacity_Bps: np.ndarray  # per directed link id
    burst_nbytes: np.ndarray  # token bucket depth per link (0: no bucket)
    peak_Bps: np.ndarray  # capacity while the bucket holds credit (= capacity without a bucket)
    link_names: list[tuple]
    pair_keys: np.ndarray  # src * ranks + dst of every pair, ascending (pair i has key pair_keys[i])
    pair_ptr: np.ndarray  # CSR over pairs into pair_links
    pair_links: np.ndarray
    pair_latency_s: np.ndarray
    pair_capacity_Bps: np.ndarray  # bottleneck of the route (inf for a route with no links)

    def route(self, pair: int) -> list[int]:
        return self.pair_links[self.pair_ptr[pair]:self.pair_ptr[pair + 1]].tolist()


def resolve_topology(topology, ranks: int, beta_s_per_byte: float | None) -> nx.Graph:
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


def _overrides(G: nx.Graph, link_overrides: Mapping | None) -> dict[frozenset, dict]:
    out: dict[frozenset, dict] = {}
    for key, values in (link_overrides or {}).items():
        try:
            u, v = key
        except (TypeError, ValueError):
            raise UserError(f"link_overrides: keys must be (u, v) links, got {key!r}") from None
        if not G.has_edge(u, v):
            raise UserError(f"link_overrides: {u!r}-{v!r} is not a link of {G.graph.get('name')!r}")
        if not isinstance(values, Mapping):
            raise UserError(f"link_overrides[{key!r}]: expected a mapping of {', '.join(LINK_ATTRS)}")
        bad = set(values) - set(LINK_ATTRS)
        if bad:
            raise UserError(f"link_overrides[{key!r}]: unknown attribute {sorted(bad)[0]!r} (known: {', '.join(LINK_ATTRS)})")
        out.setdefault(frozenset((u, v)), {}).update(values)
    return out


def _link_values(u, v, attrs: Mapping) -> tuple[float, float, float, float, float]:
    """(capacity, latency, burst, peak capacity, efficiency) of one direction of link u-v, checked; the
    bucket's depth and peak are in payload bytes like the capacity (scaled by efficiency)."""
    try:
        bw = float(attrs["bandwidth_Bps"])
        eff = float(attrs.get("efficiency", 1.0))
        lat = float(attrs.get("latency_s", 0.0))
        burst = float(attrs.get("burst_nbytes", 0.0) or 0.0)
        peak = float(attrs.get("peak_bandwidth_Bps", bw) or bw)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"link {u!r}-{v!r}: needs a numeric bandwidth_Bps (and numeric {', '.join(LINK_ATTRS[1:])})") from None
    if not (bw > 0 and math.isfinite(bw) and 0 < eff <= 1 and math.isfinite(lat) and lat >= 0):
        raise UserError(f"link {u!r}-{v!r}: need bandwidth_Bps > 0, 0 < efficiency <= 1, latency_s >= 0")
    if not (math.isfinite(burst) and burst >= 0):
        raise UserError(f"link {u!r}-{v!r}: burst_nbytes must be a finite number >= 0, got {burst!r}")
    if burst > 0 and not (math.isfinite(peak) and peak > bw):
        raise UserError(f"link {u!r}-{v!r}: a token-bucket burst needs a finite peak_bandwidth_Bps above the "
                        f"bandwidth ({bw:g}), the rate at which the burst leaves; got {peak!r}")
    if burst == 0:
        peak = bw
    return bw * eff, lat, burst * eff, peak * eff, eff


def build_network(G: nx.Graph, ranks: int, pairs: np.ndarray, *, placement, link_overrides, seed) -> Network:
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
    overrides = _overrides(G, link_overrides)
    router = topo.routes(G)
    link_id: dict[tuple, int] = {}
    columns: list[tuple[float, float, float, float, float]] = []

    def link(u: Hashable, v: Hashable) -> int:
        i = link_id.get((u, v))
        if i is None:
            attrs = {**G.edges[u, v], **overrides.get(frozenset((u, v)), {})}
            i = link_id[(u, v)] = len(columns)
            columns.append(_link_values(u, v, attrs))
        return i

    ends = list({(nodes[a], nodes[b]): None for a, b in pairs.tolist()})
    try:
        paths = router.paths(ends, seed)
    except (nx.NetworkXNoPath, nx.NodeNotFound) as err:
        raise UserError(f"topology {G.graph.get('name')!r}: no route between two ranks' endpoints: {err}") from None
    by_nodes: dict[tuple, tuple[list[int], float]] = {}
    for key, path in zip(ends, paths):
        ids = [link(u, v) for u, v in zip(path[:-1], path[1:])]
        by_nodes[key] = (ids, float(sum(columns[i][1] for i in ids)))
    ptr, flat, lat_s = [0], [], []
    for a, b in pairs.tolist():
        ids, latency = by_nodes[(nodes[a], nodes[b])]
        flat.extend(ids)
        ptr.append(len(flat))
        lat_s.append(latency)
    table = np.asarray(columns, np.float64).reshape(-1, 5)
    cap = table[:, 0].copy()
    pair_ptr = np.asarray(ptr, np.int64)
    pair_links = np.asarray(flat, np.int64)
    bottleneck = np.full(len(lat_s), np.inf)
    if pair_links.size:
        nonempty = np.diff(pair_ptr) > 0
        bottleneck[nonempty] = np.minimum.reduceat(cap[pair_links], pair_ptr[:-1][nonempty])
    return Network(name=str(G.graph.get("name", "")), capacity_Bps=cap, burst_nbytes=table[:, 2].copy(),
                   peak_Bps=table[:, 3].copy(),
                   link_names=[k for k, _ in sorted(link_id.items(), key=lambda kv: kv[1])],
                   pair_keys=pairs[:, 0].astype(np.int64) * ranks + pairs[:, 1], pair_ptr=pair_ptr,
                   pair_links=pair_links, pair_latency_s=np.asarray(lat_s, np.float64), pair_capacity_Bps=bottleneck)


# ---------------------------------------------------------------------------------------------------------
# messages and connections


@dataclass
class Messages:
    """Every message (one per send op, in op order) and the static facts about it.

    A connection is a rank pair with ``fifo_pairs`` (its messages in send order), else a single message.
    A send completes at its hand-over (eager messages, and rendezvous ones whose connection's bytes fit the
    window then), at its arrival (``on_arrival``: rendezvous with a zero window), or when message
    ``watch[m]`` of its connection has ``watch_remaining[m]`` bytes left, i.e. when the bytes of m's
    connection not yet delivered, up to m's, fit the eager window (-1: no watch).
    """

    send: np.ndarray  # op index of the send
    recv: np.ndarray  # op index of the matching recv
    nbytes: np.ndarray  # float64
    pair: np.ndarray  # index into Network pairs
    prev: np.ndarray  # previous message of the same connection (-1: none)
    rendezvous: np.ndarray  # bool: waits for the recv to be posted
    delay_s: np.ndarray  # from hand-over to the first byte moving: alpha (+ overhead) + route latency
    on_arrival: np.ndarray  # bool: the send completes when its data has arrived
    watch: np.ndarray
    watch_remaining: np.ndarray
    private: np.ndarray  # bool: its connection can never meet another flow on a link (see plan_facts)
    behind: np.ndarray  # per rendezvous message: the reverse pair's message its notice may queue behind (-1: none)
    behind_apart: np.ndarray  # bool: the recv is issued a pass after that message's send (see notice_behind)


def _connections(msg_pair: np.ndarray, fifo: bool, ordinal: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(order, prev): messages sorted by connection then send order (None: not computed, the caller sorts
    if it needs it), and each one's predecessor.

    Messages come numbered by ``ordinal`` (k-th send of its rank) then rank, so messages of one pair are in
    send order, and one ordinal's block holds at most one message per pair."""
    m = msg_pair.shape[0]
    prev = np.full(m, -1, np.int64)
    if not fifo:
        return np.arange(m, dtype=np.int64), prev
    blocks = int(ordinal.max(initial=-1)) + 1
    if blocks * 64 <= m:  # a scan over ordinals: all ranks' k-th messages at once
        last = np.full(int(msg_pair.max()) + 1, -1, np.int64)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(ordinal, minlength=blocks))]).tolist()
        for a, b in zip(bounds[:-1], bounds[1:]):
            k = msg_pair[a:b]
            prev[a:b] = last[k]
            last[k] = np.arange(a, b)
        return None, prev
    order = stable_argsort(msg_pair)
    same = msg_pair[order[1:]] == msg_pair[order[:-1]]
    prev[order[1:][same]] = order[:-1][same]
    return order, prev


def _watches(nbytes: np.ndarray, order: np.ndarray, conn_sorted: np.ndarray, window: float, watched: np.ndarray):
    """For every ``watched`` message: which message of its connection holds the byte at which its send
    completes, and how many bytes that message has left then (see ``Messages``)."""
    m = nbytes.shape[0]
    if window == 0 or not math.isfinite(window) or not watched.any():  # read-only views: no memory
        return np.broadcast_to(np.int64(-1), (m,)), np.broadcast_to(0.0, (m,))
    watch = np.full(m, -1, np.int64)
    remaining = np.zeros(m)
    b = nbytes[order]
    cum_end = np.cumsum(b)  # over all connections in turn: a connection's bytes are a contiguous range
    new = np.concatenate([[True], conn_sorted[1:] != conn_sorted[:-1]])
    base = np.maximum.accumulate(np.where(new, cum_end - b, 0.0))  # bytes of the connections before
    target = cum_end - window  # the connection must have delivered up to here
    needs = (target > base) & watched[order]
    pos = np.searchsorted(cum_end, target[needs], side="left")
    who = order[needs]
    watch[who] = order[pos]
    remaining[who] = cum_end[pos] - target[needs]
    return watch, remaining


def _matched_recvs(plan: Plan, rank: np.ndarray, sends: np.ndarray, send_key: np.ndarray) -> np.ndarray:
    """The recv op of every send (in op order): the k-th send from a to b matches the k-th recv at b from a
    (rule 5), by one radix sort per side. Where a plan breaks the rule, ``match_messages`` says how."""
    recvs = np.flatnonzero((plan.op == Op.RECV) | (plan.op == Op.REDUCE))
    recv_key = plan.peer[recvs].astype(np.int64) * plan.ranks + rank[recvs]
    if recvs.shape != sends.shape:
        match_messages(plan)  # raises the PlanError that names the pair
    s_order, r_order = stable_argsort(send_key), stable_argsort(recv_key)
    s_ops, r_ops = sends[s_order], recvs[r_order]
    if (np.any(send_key[s_order] != recv_key[r_order]) or np.any(plan.chunk[s_ops] != plan.chunk[r_ops])
            or np.any(plan.span[s_ops] != plan.span[r_ops])):
        match_messages(plan)
    out = np.empty(sends.shape[0], np.int64)
    out[s_order] = r_ops
    return out


def message_order(plan: Plan, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(send ops, their recv ops, their ordinal at their rank, their pair key src * ranks + dst), numbered
    k-th send of every rank together: ranks send in step, so messages handled together lie together in
    memory."""
    sends = np.flatnonzero(plan.op == Op.SEND)
    src = rank[sends]
    key = src.astype(np.int64) * plan.ranks + plan.peer[sends]
    recv = _matched_recvs(plan, rank, sends, key)
    starts = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=plan.ranks))])
    order, _ = position_major(starts, src)
    ordinal = order - starts[:-1][src[order]]
    return sends[order], recv[order], ordinal, key[order]


def pair_index(keys: np.ndarray, ranks: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys ascending, each key's index among them); a dense table where ranks^2 is small."""
    if ranks * ranks <= max(1 << 22, 4 * keys.shape[0]):
        seen = np.zeros(ranks * ranks, bool)
        seen[keys] = True
        distinct = np.flatnonzero(seen)
        slot = np.empty(ranks * ranks, np.int64)
        slot[distinct] = np.arange(distinct.shape[0])
        return distinct, slot[keys]
    distinct, index = np.unique(keys, return_inverse=True)
    return distinct, index


def notice_behind(plan: Plan, rank: np.ndarray, sends: np.ndarray, recvs: np.ndarray,
                  rendezvous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every rendezvous message a -> b: the message b -> a of b's latest send to a before the recv in b's
    program (-1: none), behind whose data the recv's notice may queue (``Transport.notice_behind_data``), and
    whether a send or compute between the two in b's program uses that send's chunks: then b reaches the recv
    only once the send completed, in a later issue pass, even where both fall on one instant."""
    m = sends.shape[0]
    behind = np.full(m, -1, np.int64)
    ops = np.concatenate([sends, recvs[rendezvous]])
    if not ops.size:
        return behind, np.zeros(m, bool)
    message = np.concatenate([np.arange(m), np.flatnonzero(rendezvous)])
    key = rank[ops].astype(np.int64) * plan.ranks + plan.peer[ops]
    order = np.lexsort((ops, key))  # by (rank, peer), then program order
    ops, key, message = ops[order], key[order], message[order]
    at = np.arange(ops.shape[0])
    group_start = np.maximum.accumulate(np.where(np.concatenate([[True], key[1:] != key[:-1]]), at, 0))
    last_send = np.maximum.accumulate(np.where(plan.op[ops] == Op.SEND, at, -1))
    found = (plan.op[ops] != Op.SEND) & (last_send >= group_start)
    waiting, k = message[found], message[last_send[found]]
    behind[waiting] = k
    send_op, recv_op = sends[k], recvs[waiting]
    between = expand_ranges(send_op + 1, recv_op)
    lo = np.repeat(plan.chunk[send_op], recv_op - send_op - 1)
    hi = lo + np.repeat(plan.span[send_op], recv_op - send_op - 1)
    blocks = (((plan.op[between] == Op.SEND) | (plan.op[between] == Op.COMPUTE)) & (plan.chunk[between] >= 0)
              & (plan.chunk[between] < hi) & (plan.chunk[between] + plan.span[between] > lo))
    apart = np.zeros(m, bool)
    if blocks.any():
        owner = np.repeat(np.arange(waiting.shape[0]), recv_op - send_op - 1)
        apart[waiting[np.unique(owner[blocks])]] = True
    return behind, apart


def plan_messages(plan: Plan, rank: np.ndarray, order: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                  pair: np.ndarray, nbytes_op: np.ndarray, net: Network, transport: Transport,
                  alpha_s: float) -> Messages:
    sends, recvs, ordinal, _ = order
    nbytes = nbytes_op[sends].astype(np.float64)
    order, prev = _connections(pair, transport.fifo_pairs, ordinal)
    rendezvous = nbytes >= transport.rendezvous_nbytes
    window = float(transport.eager_window_nbytes)
    if 0 < window < math.inf and order is None:
        order = stable_argsort(pair)
    conn_sorted = (pair[order] if transport.fifo_pairs else order) if order is not None else None
    watch, remaining = _watches(nbytes, order, conn_sorted, window, rendezvous)
    delay = alpha_s + np.where(rendezvous, transport.message_overhead_s, 0.0) + net.pair_latency_s[pair]
    # Links that only one pair's messages ever cross, none with a token bucket: with FIFO connections a
    # flow there is always alone, so its rate is the route's bottleneck whatever else happens.
    links_per_pair = np.diff(net.pair_ptr)
    n_links = net.capacity_Bps.shape[0]
    pair_users = np.bincount(net.pair_links, minlength=n_links)  # pairs are unique, so pairs per link
    exclusive = (pair_users <= 1) & (net.burst_nbytes == 0)
    if net.pair_links.size:
        bad = np.zeros(len(links_per_pair), np.int64)
        np.add.at(bad, np.repeat(np.arange(len(links_per_pair)), links_per_pair), ~exclusive[net.pair_links])
        pair_private = bad == 0
    else:
        pair_private = np.ones(len(links_per_pair), bool)
    private = pair_private[pair] if transport.fifo_pairs else links_per_pair[pair] == 0
    if transport.notice_behind_data:
        behind, apart = notice_behind(plan, rank, sends, recvs, rendezvous)
    else:
        behind, apart = np.broadcast_to(np.int64(-1), nbytes.shape), np.broadcast_to(False, nbytes.shape)
    return Messages(send=sends, recv=recvs, nbytes=nbytes, pair=pair, prev=prev, rendezvous=rendezvous,
                    delay_s=delay, on_arrival=rendezvous & (window == 0), watch=watch, watch_remaining=remaining,
                    private=private, behind=behind, behind_apart=apart)


# ---------------------------------------------------------------------------------------------------------
# arguments shared by both interpreters


@dataclass
class Setup:
    plan: Plan
    network: Network
    messages: Messages
    transport: Transport
    rank: np.ndarray  # rank of every op
    nbytes: np.ndarray  # bytes of every op
    start_s: np.ndarray  # per rank
    release_s: np.ndarray | None  # per op: not before this time (NaN: no gate); None: no gates at all
    speed: np.ndarray  # per rank
    alpha_s: float
    gamma_s_per_byte: float
    header: dict


def resolve_transport(transport: Transport | None, eager: bool) -> Transport:
    if not isinstance(eager, bool):
        raise UserError(f"eager: must be true or false, got {eager!r}")
    if transport is None:
        return EAGER if eager else Transport()
    if not isinstance(transport, Transport):
        raise UserError(f"transport: expected a firesim.engine.Transport, got {type(transport).__name__}")
    if eager:
        raise UserError("eager: give either eager=True or a transport, not both (eager=True is "
                        "Transport(eager_window_nbytes=inf, rendezvous=False))")
    return transport


def setup(plan: Plan, topology, *, alpha_s, gamma_s_per_byte, beta_s_per_byte, placement, transport, eager,
          itemsize, rank_speed, link_overrides, seed, start_s, op_nbytes=None, release_s=None,
          max_ops: int = MAX_OPS) -> Setup:
    check_structure(plan)
    check_ops(plan.n_ops, f"simulate {plan.name} ({plan.ranks} ranks)", max_ops)
    for name, value in (("alpha_s", alpha_s), ("gamma_s_per_byte", gamma_s_per_byte)):
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise UserError(f"{name}: must be a finite number >= 0, got {value!r}")
    if isinstance(itemsize, bool) or not isinstance(itemsize, int) or itemsize < 1:
        raise UserError(f"itemsize: must be an integer >= 1, got {itemsize!r}")
    transport = resolve_transport(transport, eager)
    p = plan.ranks
    speed = np.ones(p) if rank_speed is None else np.asarray(rank_speed, np.float64)
    if speed.shape != (p,) or not np.all(np.isfinite(speed) & (speed > 0)):
        raise UserError(f"rank_speed: needs {p} positive finite factors")
    start = np.zeros(p) if start_s is None else np.asarray(start_s, np.float64)
    if start.shape != (p,) or not np.all(np.isfinite(start) & (start >= 0)):
        raise UserError(f"start_s: needs {p} finite times >= 0")
    if op_nbytes is None:
        nbytes = np.asarray(plan.op_nbytes(itemsize), np.int64)
    else:
        nbytes = np.asarray(op_nbytes)
        if nbytes.shape != (plan.n_ops,) or np.any(nbytes < 0) or np.any((plan.op == Op.COMPUTE) & (nbytes != 0)):
            raise UserError(f"op_nbytes: needs {plan.n_ops} byte counts >= 0 (0 for compute ops)")
        nbytes = nbytes.astype(np.int64)
    release = None if release_s is None else np.asarray(release_s, np.float64)
    if release is not None and (release.shape != (plan.n_ops,) or np.any(np.isinf(release) | (release < 0))):
        raise UserError(f"release_s: needs {plan.n_ops} times >= 0 (NaN: none)")
    G = resolve_topology(topology, p, beta_s_per_byte)
    rank = plan.op_rank()
    sends = message_order(plan, rank)
    pair_keys, pair = pair_index(sends[3], p)
    pairs = np.stack([pair_keys // p, pair_keys % p], axis=1)
    network = build_network(G, p, pairs, placement=placement, link_overrides=link_overrides, seed=seed)
    messages = plan_messages(plan, rank, sends, pair, nbytes, network, transport, float(alpha_s))
    hardware = f"alpha={alpha_s:.4g}s gamma={gamma_s_per_byte:.4g}s/B"
    if topology is None:
        hardware += f" beta={beta_s_per_byte:.4g}s/B"
    header = dict(topology=network.name, hardware=hardware, versions=software_versions("simpy"),
                  extra={"alpha_s": float(alpha_s), "gamma_s_per_byte": float(gamma_s_per_byte),
                         "transport": {k: (v if not isinstance(v, float) or math.isfinite(v) else "inf")
                                       for k, v in dataclasses.asdict(transport).items()},
                         "seed": seed, "itemsize": itemsize})
    return Setup(plan=plan, network=network, messages=messages, transport=transport, rank=rank, nbytes=nbytes,
                 start_s=start, release_s=release, speed=speed, alpha_s=float(alpha_s),
                 gamma_s_per_byte=float(gamma_s_per_byte), header=header)


def recv_cost_per_byte(s: Setup) -> tuple[float, float]:
    """(recv, reduce): what a recv costs per byte once its data is there: the copy out of the transport,
    plus gamma to reduce."""
    copy = s.transport.copy_s_per_byte
    return copy, s.gamma_s_per_byte + copy


def make_trace(s: Setup, t_start: np.ndarray, t_end: np.ndarray, **extra) -> Trace:
    undone = np.flatnonzero(np.isnan(t_end))
    if undone.size:
        j = int(undone[0])
        r = int(s.rank[j])
        raise PlanError(f"plan {s.plan.name}: deadlock: {undone.size} op(s) never complete; rank {r} op "
                        f"{j - int(s.plan.offsets[r])} ({OP_NAMES[s.plan.op[j]]} chunk {s.plan.chunk[j]} "
                        f"peer {s.plan.peer[j]}) is the first")
    header = dict(s.header)
    header["extra"] = {**header["extra"], **extra}
    plan = s.plan
    return Trace(header=TraceHeader(plan=plan.name, ranks=plan.ranks, nbytes=plan.nbytes, chunks=plan.chunks,
                                    source="simulated", **header),
                 rank=s.rank, op=plan.op.copy(), chunk=plan.chunk.copy(), peer=plan.peer.copy(), nbytes=s.nbytes,
                 t_start=t_start, t_end=t_end)
