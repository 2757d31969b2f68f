"""The fast interpreter: the plan as vectorised dataflow, the network as vectorised fluid flows.

Dataflow. Every op, every message's hand-over, first byte and local completion counts down its inputs and
takes the latest input's time (chunk predecessors, the program counter, posting, arrival, release gates,
the connection's previous message), so whole waves of ops at all ranks advance in a few numpy passes, in
dependency order rather than time order: an op's time depends on its inputs' times only.

What needs time order is the network, where flows that meet on a link share it. Most never do: with FIFO
connections, a pair whose links no other pair ever crosses (and hold no token bucket) always has its
route to itself, so its messages take ``bytes / bottleneck`` one after another and are pure dataflow
("private"; a ring on a fat tree is all private). The rest ("shared") go to ``_Network``, which advances in
windows as wide as the lookahead L (alpha + overhead + the smallest route latency of a shared message):
nothing that happens at t can hand a shared message over before t + L, so when a window opens every shared
flow that starts in it is known. Within a window, flows alone on their links start and end in bulk (at
their bottleneck rate) until the first instant where flows meet or a shared one ends or a token bucket
runs dry; there the rates are solved exactly (max-min over the flows on shared links only).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import simpy

from firesim.engine.maxmin import max_min_rates
from firesim.engine.model import (
    TOKEN_TOLERANCE,
    TOLERANCE,
    Messages,
    Setup,
    TOLERANCE_ABS_s,
    limit,
    position_major,
    recv_cost_per_byte,
    stable_argsort,
)
from firesim.plans.ir import Op, Plan, expand_ranges


def chunk_order(plan: Plan, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        order = stable_argsort(key)
        same = key[order[1:]] == key[order[:-1]]
        return named[order[:-1][same]], named[order[1:][same]]
    width = plan.chunks + 1
    lo_key, hi_key = r * width + c, r * width + c + s
    bounds = np.unique(np.concatenate([lo_key, hi_key]))
    lo, hi = np.searchsorted(bounds, lo_key), np.searchsorted(bounds, hi_key)
    element = expand_ranges(lo, hi)
    owner = np.repeat(named, hi - lo)
    order = np.argsort(element, kind="stable")  # owners stay in program order within an interval
    element, owner = element[order], owner[order]
    same = element[1:] == element[:-1]
    pred, succ = owner[:-1][same], owner[1:][same]
    n = np.int64(plan.n_ops)
    edges = np.unique(succ * n + pred)
    return edges % n, edges // n


def _csr(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """values grouped by key (0 <= key < n): (ptr, values sorted by key, stable)."""
    order = stable_argsort(keys)
    ptr = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=n))]).astype(np.int64)
    return ptr, values[order]


def _take(queue: list) -> tuple[np.ndarray, np.ndarray]:
    if len(queue) == 1:
        ids, times = queue[0]
    else:
        ids, times = np.concatenate([q[0] for q in queue]), np.concatenate([q[1] for q in queue])
    queue.clear()
    return ids, times


class _Countdown:
    """Nodes that fire once all their inputs came; each fires at the latest input's time."""

    def __init__(self, wait: np.ndarray):
        self.wait = wait.astype(np.int8 if wait.max(initial=0) < 127 else np.int32)
        self.t = np.full(wait.shape[0], -np.inf)

    def input(self, ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One input each for ``ids`` (distinct) at ``times``; returns those now complete, and their times."""
        latest = np.maximum(self.t[ids], times)
        self.t[ids] = latest
        left = self.wait[ids] - 1
        self.wait[ids] = left
        done = left == 0
        return ids[done], latest[done]

    def input_mask(self, ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``input``, returning which of ``ids`` are now complete as a mask, and all their times."""
        latest = np.maximum(self.t[ids], times)
        self.t[ids] = latest
        left = self.wait[ids] - 1
        self.wait[ids] = left
        return left == 0, latest

    def input_repeated(self, ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``input`` where an id may appear more than once."""
        np.maximum.at(self.t, ids, times)
        np.subtract.at(self.wait, ids, 1)
        ready = ids[self.wait[ids] == 0]
        ready = np.unique(ready) if ready.size > 1 else ready
        return ready, self.t[ready]


# ---------------------------------------------------------------------------------------------------------
# the shared network


class _Network:
    """Flows of shared messages: FIFO connections, max-min rates, token buckets, watched byte counts."""

    def __init__(self, s: Setup, msgs: Messages, watchers: tuple[np.ndarray, np.ndarray]):
        net = s.network
        shared = ~msgs.private
        m = msgs.nbytes.shape[0]
        self.cap, self.peak, self.burst = net.capacity_Bps, net.peak_Bps, net.burst_nbytes
        self.bursty = np.flatnonzero(net.burst_nbytes > 0)
        n_links = self.cap.shape[0]
        self.pair_ptr, self.pair_links, self.pair_cap = net.pair_ptr, net.pair_links, net.pair_capacity_Bps
        self.msg_pair, self.msg_bytes = msgs.pair, msgs.nbytes
        self.prev = np.where(msgs.prev >= 0, msgs.prev, m)  # m: "no previous message"
        self.w_ptr, self.w_ids = watchers
        self.w_next = self.w_ptr[:-1].copy()  # next watcher of each message not yet fired
        self.w_left = msgs.watch_remaining
        # per message: when its flow ends (projected while on the wire; +inf before it starts; -inf for "none")
        self.m_fin = np.full(m + 1, np.inf)
        self.m_fin[m] = -np.inf
        self.lookahead = float(msgs.delay_s[shared].min()) if shared.any() else math.inf
        # handed-over messages not yet on the wire
        self.p_time = np.zeros(0)
        self.p_ids = np.zeros(0, np.int64)
        # the flows on the wire, as parallel arrays
        self.f_msg = np.zeros(0, np.int64)
        self.f_rem = np.zeros(0)  # bytes left at f_t0
        self.f_t0 = np.zeros(0)
        self.f_rate = np.zeros(0)
        self.f_fin = np.zeros(0)
        self.load = np.zeros(n_links, np.int32)  # flows per directed link
        # when a link frees up: its private flow's end; +inf while flows share it or it has a token bucket
        self.busy_until = np.full(n_links, -np.inf)
        self.busy_until[self.bursty] = np.inf
        self.shared_next = math.inf  # earliest end of a flow that shares a link
        self.tokens = self.burst[self.bursty].copy()
        self.tokens_t = 0.0
        self.tokens_load = np.zeros(self.bursty.shape[0])  # rate through each bucket since tokens_t
        self.tokens_next = math.inf  # when the first bucket that drains runs dry
        self.instants = self.reshares = 0

    # -- state -----------------------------------------------------------------------------------------
    def hand_over(self, msgs: np.ndarray, times: np.ndarray) -> None:
        self.p_time = np.concatenate([self.p_time, times])
        self.p_ids = np.concatenate([self.p_ids, msgs])

    def idle(self) -> bool:
        return self.p_ids.size == 0 and self.f_msg.size == 0

    def _eligible(self) -> np.ndarray:
        """When each handed-over message can go on the wire: its own time, and after its predecessor."""
        return np.maximum(self.p_time, self.m_fin[self.prev[self.p_ids]])

    def next_time(self) -> float:
        """The first time the network changes or tells the dataflow something (an arrival, a send's
        bytes fitting the window): the next window opens there."""
        pending = float(self._eligible().min()) if self.p_ids.size else math.inf
        flows = float(self.f_fin.min()) if self.f_fin.size else math.inf
        return min(pending, flows, self.tokens_next, self._next_watch())

    def _watch_cross(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flows, their next watcher, when it fires) for the flows on the wire with watchers left."""
        nxt = self.w_next[self.f_msg]
        idx = np.flatnonzero((nxt < self.w_ptr[self.f_msg + 1]) & (self.f_rate > 0))
        w = nxt[idx]
        return idx, w, self.f_t0[idx] + (self.f_rem[idx] - self.w_left[self.w_ids[w]]) / self.f_rate[idx]

    def _next_watch(self) -> float:
        if not self.f_msg.size or not self.w_ids.size:
            return math.inf
        cross = self._watch_cross()[2]
        return float(cross.min()) if cross.size else math.inf

    def _flow_links(self, msgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pair = self.msg_pair[msgs]
        lo, hi = self.pair_ptr[pair], self.pair_ptr[pair + 1]
        return self.pair_links[expand_ranges(lo, hi)], hi - lo

    def _add_flows(self, msgs, start, rate, fin) -> None:
        self.f_msg = np.concatenate([self.f_msg, msgs])
        self.f_rem = np.concatenate([self.f_rem, self.msg_bytes[msgs]])
        self.f_t0 = np.concatenate([self.f_t0, start])
        self.f_rate = np.concatenate([self.f_rate, rate])
        self.f_fin = np.concatenate([self.f_fin, fin])
        self.m_fin[msgs] = fin

    def _drop_flows(self, done: np.ndarray, when: np.ndarray, out) -> None:
        """Remove the flows where ``done``, arrived at ``when``: their remaining watchers fire then."""
        msgs = self.f_msg[done]
        links, _ = self._flow_links(msgs)
        np.subtract.at(self.load, links, 1)
        lo, hi = self.w_next[msgs], self.w_ptr[msgs + 1]
        if np.any(hi > lo):
            out.watched.append((self.w_ids[expand_ranges(lo, hi)], np.repeat(when, hi - lo)))
            self.w_next[msgs] = hi
        keep = ~done
        self.f_msg, self.f_rem, self.f_t0 = self.f_msg[keep], self.f_rem[keep], self.f_t0[keep]
        self.f_rate, self.f_fin = self.f_rate[keep], self.f_fin[keep]
        self.m_fin[msgs] = when
        out.arrivals.append((msgs, when))

    def _fire_watches(self, until: float, inclusive: bool, out) -> None:
        """Watchers of flows on the wire whose byte count is reached before ``until`` (rates are fixed until then)."""
        while self.f_msg.size and self.w_ids.size:
            idx, w, cross = self._watch_cross()
            due = cross <= until if inclusive else cross < until
            if not due.any():
                return
            out.watched.append((self.w_ids[w[due]], cross[due]))
            self.w_next[self.f_msg[idx[due]]] += 1

    # -- bulk: flows alone on their links ---------------------------------------------------------------
    def _bulk(self, horizon: float, out) -> float:
        """Until the first time a new flow would meet another on a link, a flow that shares a link ends or
        a token bucket runs dry (or the horizon): start every flow that can, at its route's bottleneck, and
        end every flow alone on its links that ends before then. Returns that time."""
        clash = min(horizon, self.shared_next, self.tokens_next)
        if self.p_ids.size:
            eligible = self._eligible()
            cand = eligible < clash
            if cand.any():
                clash = self._start_private(eligible, cand, clash, out)
        if self.f_fin.size:
            self._fire_watches(clash, False, out)
            done = self.f_fin < clash
            if done.any():
                self._drop_flows(done, self.f_fin[done], out)
        return clash

    def _start_private(self, eligible: np.ndarray, cand: np.ndarray, clash: float, out) -> float:
        """Start the handed-over messages that can go before ``clash`` (chains of one connection included)
        as flows alone on their links, up to the first time one would meet another flow. Returns that time."""
        ids, a = self.p_ids, self.p_time
        start = np.where(cand, eligible, np.nan)
        # a connection's later messages behind earlier ones that start now: one more of each chain per pass
        waiting = ~cand & np.isinf(self.m_fin[self.prev[ids]])  # the previous one has not started
        if waiting.any():
            order = np.argsort(ids)
            at = np.searchsorted(ids[order], self.prev[ids])
            at = np.minimum(at, ids.shape[0] - 1)
            behind = np.where(ids[order][at] == self.prev[ids], order[at], -1)  # position of the previous one
            waiting &= behind >= 0
        while waiting.any():
            i = np.flatnonzero(waiting)
            ahead = behind[i]
            known = ~np.isnan(start[ahead])
            if not known.any():
                break
            i, ahead = i[known], ahead[known]
            before = ids[ahead]
            fin = start[ahead] + np.where(self.msg_bytes[before] > 0,
                                          self.msg_bytes[before] / self.pair_cap[self.msg_pair[before]], 0.0)
            t = np.maximum(a[i], fin)
            start[i] = np.where(t < clash, t, np.nan)
            waiting[i] = False
        go = np.flatnonzero(~np.isnan(start))
        msgs, f_start = ids[go], start[go]
        nbytes = self.msg_bytes[msgs]
        instant = nbytes <= 0
        fin = f_start + np.where(instant, 0.0, nbytes / np.where(instant, 1.0, self.pair_cap[self.msg_pair[msgs]]))
        flows = ~instant
        if flows.any():
            links, n_links = self._flow_links(msgs[flows])
            e_start, e_fin = np.repeat(f_start[flows], n_links), np.repeat(fin[flows], n_links)
            # starting as another ends (to rounding) is no meeting
            hit = e_start + (np.abs(e_start) * TOLERANCE + TOLERANCE_ABS_s) < self.busy_until[links]
            if hit.any():
                clash = min(clash, float(e_start[hit].min()))
            if links.size > 1:
                order = np.lexsort((e_start, links))
                lk, st, fn = links[order], e_start[order], e_fin[order]
                hit = (lk[1:] == lk[:-1]) & (st[1:] < fn[:-1] - (np.abs(fn[:-1]) * TOLERANCE + TOLERANCE_ABS_s))
                if hit.any():
                    clash = min(clash, float(st[1:][hit].min()))
        now = f_start < clash
        if not now.any():
            return clash
        taken = go[now]
        keep = np.ones(ids.shape[0], bool)
        keep[taken] = False
        self.p_time, self.p_ids = self.p_time[keep], self.p_ids[keep]
        msgs, f_start, fin, instant = msgs[now], f_start[now], fin[now], instant[now]
        if instant.any():
            self.m_fin[msgs[instant]] = f_start[instant]
            out.arrivals.append((msgs[instant], f_start[instant]))
        flows = msgs[~instant]
        if flows.size:
            links, n_links = self._flow_links(flows)
            np.add.at(self.load, links, 1)
            np.maximum.at(self.busy_until, links, np.repeat(fin[~instant], n_links))
            self._add_flows(flows, f_start[~instant], self.pair_cap[self.msg_pair[flows]], fin[~instant])
        return clash

    # -- instants: exact rates ---------------------------------------------------------------------------
    def _instant(self, t: float, out) -> None:
        """Flows meet on a link, one that shared a link ends, or a bucket runs dry at t: exact rates."""
        self.instants += 1
        lim = limit(t)
        self._fire_watches(lim, True, out)
        self._update_tokens(t)
        if self.f_fin.size:
            done = self.f_fin <= lim
            if done.any():
                self._drop_flows(done, np.full(int(done.sum()), t), out)
        while self.p_ids.size:  # messages whose turn has come; zero-byte ones end at once and free the next
            go = self._eligible() <= lim
            if not go.any():
                break
            msgs = self.p_ids[go]
            self.p_time, self.p_ids = self.p_time[~go], self.p_ids[~go]
            instant = self.msg_bytes[msgs] <= 0
            if instant.any():
                self.m_fin[msgs[instant]] = t
                out.arrivals.append((msgs[instant], np.full(int(instant.sum()), t)))
            flows = msgs[~instant]
            if flows.size:
                links, _ = self._flow_links(flows)
                np.add.at(self.load, links, 1)
                self._add_flows(flows, np.full(flows.size, t), np.zeros(flows.size), np.full(flows.size, np.inf))
        self._reshare(t)

    def _update_tokens(self, t: float) -> None:
        if self.bursty.size and t > self.tokens_t:
            filled = self.tokens + (self.cap[self.bursty] - self.tokens_load) * (t - self.tokens_t)
            self.tokens = np.clip(filled, 0.0, self.burst[self.bursty])
        self.tokens_t = max(self.tokens_t, t)

    def _reshare(self, t: float) -> None:
        """Rates of all flows at t: a flow alone on links without buckets gets its route's bottleneck,
        the others max-min fair shares (progressive filling over just those)."""
        self.reshares += 1
        n = self.f_msg.shape[0]
        pair = self.msg_pair[self.f_msg]
        lo, hi = self.pair_ptr[pair], self.pair_ptr[pair + 1]
        links = self.pair_links[expand_ranges(lo, hi)]
        flow = np.repeat(np.arange(n, dtype=np.int64), hi - lo)
        cap = self.cap
        if self.bursty.size:
            cap = cap.copy()
            credit = self.tokens > TOKEN_TOLERANCE * self.burst[self.bursty]
            cap[self.bursty[credit]] = self.peak[self.bursty[credit]]
        on_shared = self.load[links] >= 2
        if self.bursty.size:
            is_bursty = np.zeros(cap.shape[0], bool)
            is_bursty[self.bursty] = True
            on_shared |= is_bursty[links]
        rate = self.pair_cap[pair].copy()
        shared = np.zeros(n, bool)
        if on_shared.any():
            shared[flow[on_shared]] = True
            local = np.cumsum(shared) - 1
            sel = shared[flow]
            rate[shared] = max_min_rates(local[flow[sel]], links[sel], int(shared.sum()), cap)  # flow-sorted
        changed = rate != self.f_rate
        if changed.any():
            rem = self.f_rem[changed] - self.f_rate[changed] * (t - self.f_t0[changed])
            rem = np.maximum(rem, 0.0)
            self.f_rem[changed] = rem
            self.f_t0[changed] = t
            self.f_rate[changed] = rate[changed]
            self.f_fin[changed] = t + rem / rate[changed]
            self.m_fin[self.f_msg[changed]] = self.f_fin[changed]
        self.busy_until.fill(-np.inf)
        self.busy_until[links] = np.where(shared[flow], np.inf, self.f_fin[flow])
        self.busy_until[self.bursty] = np.inf
        self.shared_next = float(self.f_fin[shared].min()) if shared.any() else math.inf
        self.tokens_next = math.inf
        if self.bursty.size:
            through = np.zeros(cap.shape[0])
            np.add.at(through, links, self.f_rate[flow])
            self.tokens_load = through[self.bursty]
            drain = self.tokens_load - self.cap[self.bursty]
            dry = credit & (drain > 0)
            if dry.any():
                self.tokens_next = t + float((self.tokens[dry] / drain[dry]).min())

    def advance(self, horizon: float, out) -> None:
        """Run the network up to the horizon; its arrivals and watched byte counts before it go to ``out``."""
        while True:
            t = self._bulk(horizon, out)
            if t >= horizon:
                break
            self._instant(t, out)
        self._fire_watches(horizon, False, out)


class _Outputs:
    """What the network hands back to the dataflow."""

    def __init__(self):
        self.arrivals: list = []
        self.watched: list = []


# ---------------------------------------------------------------------------------------------------------
# the dataflow


class _Numbering:
    """Ops numbered by position in their rank's program, then by rank ("new" numbers; "orig": the plan's).

    Ranks advance roughly in step, so the ops one dataflow pass touches lie together in memory (a pass over
    1024 ranks of a 4 M-op ring reads a few cache lines per array, not 1024). Where every rank's program
    has the same length the mapping is arithmetic and needs no table (tables of 4 M numbers cost more to
    allocate and zero than the whole run of a ring)."""

    def __init__(self, plan: Plan, rank: np.ndarray):
        self.n, self.p = plan.n_ops, plan.ranks
        lengths = np.diff(plan.offsets)
        self.uniform = bool(self.n and np.all(lengths == lengths[0]))
        if self.uniform:
            self.length = int(lengths[0])
            self.bounds = np.arange(0, self.n + 1, self.p, dtype=np.int64)
            return
        orig, self.bounds = position_major(plan.offsets, rank)
        self.orig_of = orig
        self.new_of = np.empty(self.n, np.int64)
        self.new_of[orig] = np.arange(self.n, dtype=np.int64)
        self.rank_of = rank[orig].astype(np.int64)

    def new(self, j: np.ndarray) -> np.ndarray:
        if not self.uniform:
            return self.new_of[j]
        rank, position = np.divmod(j, self.length)
        position *= self.p
        position += rank
        return position

    def orig(self, i: np.ndarray) -> np.ndarray:
        if not self.uniform:
            return self.orig_of[i]
        position, rank = np.divmod(i, self.p)
        rank *= self.length
        rank += position
        return rank

    def rank(self, i: np.ndarray) -> np.ndarray:
        return i % self.p if self.uniform else self.rank_of[i]

    def to_new(self, column: np.ndarray) -> np.ndarray:
        """A per-op column in the new numbering."""
        return column.reshape(self.p, self.length).T.ravel() if self.uniform else column[self.orig_of]

    def to_orig(self, column: np.ndarray) -> np.ndarray:
        return column.reshape(self.length, self.p).T.ravel() if self.uniform else column[self.new_of]


def _chunk_chain(plan: Plan, rank: np.ndarray, numbering: _Numbering, min_per_position: int = 64):
    """Where every op names one chunk (span 1): for every op (new numbering), whether an earlier op at its
    rank names its chunk, and each op's next op on its chunk (-1: none), by a scan over program positions
    (all ranks' k-th ops at once); None where ``chunk_order``'s sort is cheaper (spans, or few ranks per
    position)."""
    n, bounds = plan.n_ops, numbering.bounds
    if n == 0 or (bounds.shape[0] - 1) * min_per_position > n or not np.all(plan.span == 1):
        return None
    unnamed = plan.ranks * plan.chunks  # computes on no chunk share a slot nobody else reads
    key_type = np.int32 if unnamed < 2**31 - 1 else np.int64
    key = rank.astype(key_type) * key_type(plan.chunks)
    key += plan.chunk
    key[plan.chunk < 0] = unnamed
    key = numbering.to_new(key)
    last = np.full(unnamed + 1, -1, np.int64)
    succ = np.full(n, -1, np.int64)
    has_pred = np.empty(n, bool)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        k = key[a:b]
        here = np.arange(a, b)
        before = last[k]
        named = before >= 0
        has_pred[a:b] = named
        succ[before[named]] = here[named]
        last[k] = here
    last[unnamed] = -1  # computes on no chunk: no order between them
    unnamed_ops = np.flatnonzero(key == unnamed)
    if unnamed_ops.size:
        has_pred[unnamed_ops] = False
        succ[unnamed_ops] = -1
    return has_pred, succ


class _Run:
    """State of one fast run; ``run`` alternates dataflow to quiescence and a network window.

    Op state is kept in the position-major numbering (``_Numbering``), the program counters in the plan's,
    and ``times`` maps the results back.
    """

    def __init__(self, s: Setup):
        plan, net = s.plan, s.network
        n, p = plan.n_ops, plan.ranks
        self.s = s
        rank = s.rank
        self.num = num = _Numbering(plan, rank)
        self.kind = num.to_new(plan.op)
        # program navigation, in the plan's numbering: ``pc`` is each rank's first op not yet posted or
        # issued, ``next_block`` its next op that can block issue (a send or compute) as an index into
        # ``blocking``; ``block_end`` is where the rank's entries there end
        self.end = plan.offsets[1:].astype(np.int64)
        self.blocking = np.flatnonzero((plan.op == Op.SEND) | (plan.op == Op.COMPUTE))
        self.next_block = np.searchsorted(self.blocking, plan.offsets[:-1])
        self.block_end = np.searchsorted(self.blocking, self.end)
        self.blocking = np.append(self.blocking, n)  # a last entry for ranks past their last one
        self.pc = plan.offsets[:-1].astype(np.int64).copy()
        chain = _chunk_chain(plan, rank, num)
        if chain is not None:  # one chunk per op: one chain per (rank, chunk)
            n_pred, self.succ1 = chain
            self.single_pred = self.single_succ = True
        else:
            pred, succ = chunk_order(plan, s.rank)
            pred, succ = num.new(pred), num.new(succ)
            n_pred = np.bincount(succ, minlength=n)
            n_succ = np.bincount(pred, minlength=n)
            self.single_pred = bool(n_pred.max(initial=0) <= 1)
            self.single_succ = bool(n_succ.max(initial=0) <= 1)
            if self.single_succ:
                self.succ1 = np.full(n, -1, np.int64)
                self.succ1[pred] = succ
            else:
                self.succ_ptr, self.succ = _csr(pred, succ, n)
        self.is_recv = (self.kind == Op.RECV) | (self.kind == Op.REDUCE)
        self.is_compute = self.kind == Op.COMPUTE
        self.has_compute = bool(self.is_compute.any())
        # an op: chunk predecessors, plus posting and arrival (recvs) or the program counter, plus its gate
        wait = (n_pred.astype(np.int8) if n_pred.dtype == bool else n_pred) + self.is_recv
        wait += 1
        if s.release_s is not None:
            release = num.to_new(s.release_s)
            gates = np.flatnonzero(~np.isnan(release))
            wait[gates] += 1
        self.ops = _Countdown(wait)
        del wait, n_pred

        if self.has_compute:
            computes = np.flatnonzero(self.is_compute)
            self.compute_s = np.zeros(n)
            self.compute_s[computes] = (plan.seconds[num.orig(computes)] / s.speed[num.rank(computes)])
        self.t_start = np.full(n, np.nan)
        self.t_end = np.full(n, np.nan)
        # messages (already numbered k-th send of every rank together, see plan_messages)
        msgs = dataclasses.replace(s.messages, send=num.new(s.messages.send), recv=num.new(s.messages.recv))
        m = msgs.nbytes.shape[0]
        self.msgs = msgs
        self.msg_of = np.full(n, -1, np.int64)
        self.msg_of[msgs.send] = np.arange(m)
        self.msg_of[msgs.recv] = np.arange(m)
        self.rendezvous = msgs.rendezvous
        self.all_rendezvous = bool(msgs.rendezvous.all())
        self.private = msgs.private
        has_prev = msgs.prev >= 0
        # When a message's bytes can move: its send issued and (rendezvous) its recv posted, each plus the
        # delay, and for a private message the previous one of its connection arrived. The last input goes
        # to ``start`` itself where nothing needs the hand-over time alone (``direct``: the send completes
        # on arrival), else to ``first_byte`` after it.
        self.direct = ~msgs.private | ~has_prev | msgs.on_arrival
        self.all_direct_private = bool((self.direct & msgs.private).all())
        # Issue and post go through ``hand`` first where the hand-over time is needed alone: a send that
        # completes before arrival, and every message when notices look behind hand-overs
        # (Transport.notice_behind_data); ``start`` then gets the hand-over plus the delay as one input.
        self.notices = bool((msgs.behind >= 0).any())
        self.through_hand = np.ones(m, bool) if self.notices else ~msgs.on_arrival
        wait = (msgs.private & has_prev & self.direct).astype(np.int8)
        wait += 1
        wait[~self.through_hand] += msgs.rendezvous[~self.through_hand]
        self.start = _Countdown(wait)
        if not self.all_direct_private:
            self.first_byte = _Countdown(np.where(has_prev, 2, 1))
        per_recv, per_reduce = recv_cost_per_byte(s)  # what a recv costs once its data is there
        if per_recv or per_reduce:
            recv_op = s.messages.recv  # the recv's own bytes (op_nbytes may size it apart from its send)
            self.recv_cost = s.nbytes[recv_op] * np.where(s.plan.op[recv_op] == Op.REDUCE, per_reduce, per_recv)
        else:
            self.recv_cost = None
        self.next_msg = np.full(m + 1, -1, np.int64)
        self.next_msg[msgs.prev[has_prev]] = np.flatnonzero(has_prev)
        cap = net.pair_capacity_Bps[msgs.pair]
        self.private_s = msgs.nbytes / cap  # a route with no links has infinite capacity: 0 s
        watching = np.flatnonzero(msgs.watch >= 0)
        self.has_watches = bool(watching.size)
        if self.has_watches:
            self.msg_cap = cap
            self.watchers = _csr(msgs.watch[watching], watching, m)
        # a send completes at its arrival (zero window: that is after its hand-over), else once handed over
        # and, if it has a watch, once its connection's bytes fit the window
        self.on_arrival = msgs.on_arrival
        self.all_on_arrival = bool(msgs.on_arrival.all())
        self.hand = _Countdown(1 + msgs.rendezvous) if self.through_hand.any() else None
        self.all_through_hand = bool(self.through_hand.all())
        if not self.all_on_arrival:
            self.sent = _Countdown(1 + (msgs.watch >= 0))
        # notices behind data (Transport.notice_behind_data): a rendezvous recv's notice waits for the arrival of
        # the receiver's message ``behind`` if that was handed over in an earlier issue pass. Whether it was is
        # a comparison of times the dataflow may not have reached yet: such notices stay undecided until it
        # has, or until nothing known can still come before their post (``_settle``).
        if self.notices:
            waits = np.flatnonzero(msgs.behind >= 0)
            self.dependents = _csr(msgs.behind[waits], waits, m)
            self.handover_s = np.full(m, np.nan)
            self.arrival_s = np.full(m, np.nan)
            self.post_s = np.full(m, np.nan)
            self.notice_state = np.zeros(m, np.int8)  # 1: undecided, 2: waits for its ``behind`` to arrive
        self.network = None
        if not msgs.private.all():
            watchers = self.watchers if self.has_watches else (np.zeros(m + 1, np.int64), np.zeros(0, np.int64))
            self.network = _Network(s, msgs, watchers)
        # work queues of the dataflow: (ids, times)
        self.arrivals: list = []
        self.done: list = []
        self.windows = self.passes = 0
        self._advance(np.arange(p, dtype=np.int64), s.start_s.astype(np.float64))
        if s.release_s is not None and gates.size:
            self._on_ready(*self.ops.input(gates, release[gates]))

    def times(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_start, t_end) of every op (kept in the plan's numbering)."""
        return self.t_start, self.t_end

    def _recv_done(self, ops: np.ndarray, times: np.ndarray) -> None:
        """Recvs whose last input came at ``times``: they complete after their copy (and reduce) cost."""
        if self.recv_cost is not None:
            times = times + self.recv_cost[self.msg_of[ops]]
        self.done.append((ops, times))

    # -- ops ---------------------------------------------------------------------------------------------
    def _on_ready(self, ops: np.ndarray, times: np.ndarray) -> None:
        """Ops whose last input came: recvs complete after their delay, sends/computes issue (their pc is
        on them, that being one of their inputs)."""
        if not ops.size:
            return
        recv = self.is_recv[ops]
        if recv.any():
            done = ops[recv]
            self._recv_done(done, times[recv])
            ops, times = ops[~recv], times[~recv]
        if ops.size:
            self._advance(*self._issue(self.num.rank(ops), ops, times))

    def _issue(self, ranks: np.ndarray, ops: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ready sends/computes at the ranks' pcs start at ``times``; returns the ranks that issue on."""
        orig = self.num.orig(ops)
        self.t_start[orig] = times
        self.next_block[ranks] += 1
        if self.has_compute:
            comp = self.is_compute[ops]
            if comp.any():
                done = ops[comp]
                self.done.append((done, times[comp] + self.compute_s[done]))
                ranks, ops, times, orig = ranks[~comp], ops[~comp], times[~comp], orig[~comp]
        if ops.size:
            self.pc[ranks] = orig + 1
            self._hand_input(self.msg_of[ops], times)
        return ranks, times

    def _advance(self, ranks: np.ndarray, times: np.ndarray) -> None:
        """Ranks whose pc just moved at ``times``: post the recvs up to the next send/compute, issue it if ready."""
        pc, end, new = self.pc, self.end, self.num.new
        while ranks.size:
            j, stop = pc[ranks], end[ranks]
            live = j < stop
            if not live.all():
                ranks, times, j, stop = ranks[live], times[live], j[live], stop[live]
                if not ranks.size:
                    return
            b = self.next_block[ranks]
            k = np.where(b < self.block_end[ranks], self.blocking[b], stop)
            gap = k - j
            if gap.any():
                posts = expand_ranges(j, k)
                when = np.repeat(times, gap)
                self.t_start[posts] = when
                posts = new(posts)
                ready, at = self.ops.input(posts, when)
                if ready.size:  # the data came before the recv was posted
                    self._recv_done(ready, at)
                mine = self.msg_of[posts]
                if not self.all_rendezvous:
                    rdv = self.rendezvous[mine]
                    mine, when = mine[rdv], when[rdv]
                if mine.size:
                    if self.notices:
                        self._post(mine, when)
                    else:
                        self._hand_input(mine, when)
            pc[ranks] = k
            live = k < stop
            if not live.all():
                ranks, k, times = ranks[live], k[live], times[live]
            k = new(k)
            ready, at = self.ops.input_mask(k, times)
            if not ready.all():
                ranks, k, at = ranks[ready], k[ready], at[ready]
            if ranks.size:
                ranks, times = self._issue(ranks, k, at)

    def _complete(self, ops: np.ndarray, times: np.ndarray) -> None:
        """Ops done at ``times``: their chunk successors get an input; a compute moves its rank's pc."""
        self.t_end[self.num.orig(ops)] = times
        if self.single_succ:
            nxt = self.succ1[ops]
            has = nxt >= 0
            nxt, when = nxt[has], times[has]
        else:
            lo, hi = self.succ_ptr[ops], self.succ_ptr[ops + 1]
            nxt, when = self.succ[expand_ranges(lo, hi)], np.repeat(times, hi - lo)
        comp = self.is_compute[ops] if self.has_compute else None
        if comp is not None and comp.any():
            self.pc[self.num.rank(ops[comp])] = self.num.orig(ops[comp]) + 1
        if nxt.size:
            self._on_ready(*(self.ops.input(nxt, when) if self.single_pred else self.ops.input_repeated(nxt, when)))
        if comp is not None and comp.any():
            self._advance(self.num.rank(ops[comp]), times[comp])

    # -- messages ----------------------------------------------------------------------------------------
    def _hand_input(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """Send issued or recv posted at ``times``: the message's bytes can move a delay after both (or the
        send alone without rendezvous). Where the hand-over time is needed itself (``through_hand``), the
        inputs go through ``hand`` first."""
        if self.hand is None:
            self._start_input(msgs, times + self.msgs.delay_s[msgs])
            return
        if not self.all_through_hand:
            through = self.through_hand[msgs]
            if not through.all():
                direct = ~through
                self._start_input(msgs[direct], times[direct] + self.msgs.delay_s[msgs[direct]])
                msgs, times = msgs[through], times[through]
        if not msgs.size:
            return
        go, h = self.hand.input(msgs, times)
        if not go.size:
            return
        if not self.all_on_arrival:
            own = ~self.on_arrival[go]
            if own.any():
                self._sent_input(go[own], h[own])
        self._start_input(go, h + self.msgs.delay_s[go])
        if self.notices:
            self._handed(go, h)

    def _post(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """Rendezvous recvs posted at ``times``: the notice of those with a message to look behind is decided."""
        has = self.msgs.behind[msgs] >= 0
        if not has.all():
            self._hand_input(msgs[~has], times[~has])
        self.post_s[msgs[has]] = times[has]
        self._decide(msgs[has])

    def _decide(self, msgs: np.ndarray) -> None:
        """Notices whose post is known: behind their message k if k's send completed before the recv could be
        reached, or k was handed over strictly before the post; undecided while k's hand-over is not known."""
        k, post = self.msgs.behind[msgs], self.post_s[msgs]
        handed = self.handover_s[k]
        queued = self.msgs.behind_apart[msgs] | (limit(handed) < post)  # NaN: not known yet
        free = ~queued & ~np.isnan(handed)
        arrived = self.arrival_s[k]
        now = queued & ~np.isnan(arrived)
        # states first: a hand-over below may decide a notice of this very batch that looks behind it
        self.notice_state[msgs[queued & ~now]] = 2
        self.notice_state[msgs[~queued & ~free]] = 1
        if free.any():
            self._hand_input(msgs[free], post[free])
        if now.any():
            self._hand_input(msgs[now], np.maximum(post[now], arrived[now]))

    def _handed(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """Messages handed over at ``times``: they may decide the notices waiting to look behind them."""
        self.handover_s[msgs] = times
        waiting = self._dependents_in(msgs, 1)
        if waiting.size:
            self.notice_state[waiting] = 0
            self._decide(waiting)

    def _dependents_in(self, msgs: np.ndarray, state: int) -> np.ndarray:
        ptr, ids = self.dependents
        lo, hi = ptr[msgs], ptr[msgs + 1]
        if not np.any(hi > lo):
            return np.zeros(0, np.int64)
        d = ids[expand_ranges(lo, hi)]
        return d[self.notice_state[d] == state]

    def _settle(self, bound: float) -> bool:
        """At quiescence: every time the dataflow does not know yet comes after ``bound`` (the network's next
        event) or after an undecided post. So the undecided notices posted first, if not after ``bound``,
        look behind messages handed over no earlier than their post: not queued. Returns whether any were."""
        undecided = np.flatnonzero(self.notice_state == 1)
        if not undecided.size:
            return False
        post = self.post_s[undecided]
        first = float(post.min())
        if first > bound:
            return False
        go = undecided[post <= limit(first)]
        self.notice_state[go] = 0
        self._hand_input(go, self.post_s[go])
        return True

    def _start_input(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """One input of ``start``: a hand-over input plus the delay (or the hand-over itself plus the delay),
        or, for ``direct`` private messages, the arrival of the connection's previous message. Once all
        came: the first byte of a private message moves (or waits for its predecessor in ``first_byte``), a
        shared one goes to the network."""
        go, a = self.start.input(msgs, times)
        if not go.size:
            return
        if not self.all_direct_private:
            private = self.private[go]
            if not private.all():
                self.network.hand_over(go[~private], a[~private])
                go, a = go[private], a[private]
            direct = self.direct[go]
            if not direct.all():
                self._first_byte_input(go[~direct], a[~direct])
                go, a = go[direct], a[direct]
        if go.size:
            self._first_byte(go, a)

    def _first_byte_input(self, msgs: np.ndarray, times: np.ndarray) -> None:
        """Private messages that are not ``direct``: the first byte moves once the delay is over and the
        previous message arrived."""
        go, start = self.first_byte.input(msgs, times)
        if go.size:
            self._first_byte(go, start)

    def _first_byte(self, msgs: np.ndarray, start: np.ndarray) -> None:
        """Private messages whose first byte moves at ``start``: they arrive at their route's bottleneck
        rate, and the sends watching their bytes complete on the way."""
        self.arrivals.append((msgs, start + self.private_s[msgs]))
        if not self.has_watches:
            return
        lo, hi = self.watchers[0][msgs], self.watchers[0][msgs + 1]
        if np.any(hi > lo):
            idx = expand_ranges(lo, hi)
            w = self.watchers[1][idx]
            k = np.repeat(msgs, hi - lo)
            cap = self.msg_cap[k]
            left = self.msgs.nbytes[k] - self.msgs.watch_remaining[w]
            self._sent_input(w, np.repeat(start, hi - lo) + np.where(np.isfinite(cap), left / cap, 0.0))

    def _sent_input(self, msgs: np.ndarray, times: np.ndarray) -> None:
        go, at = self.sent.input(msgs, times)
        if go.size:
            self.done.append((self.msgs.send[go], at))

    def _arrive(self, msgs: np.ndarray, times: np.ndarray) -> None:
        if self.notices:
            self.arrival_s[msgs] = times
            waiting = self._dependents_in(msgs, 2)
            if waiting.size:
                self.notice_state[waiting] = 0
                self._hand_input(waiting, np.maximum(self.post_s[waiting], self.arrival_s[self.msgs.behind[waiting]]))
        ready, at = self.ops.input(self.msgs.recv[msgs], times)
        if ready.size:
            self._recv_done(ready, at)
        if self.all_on_arrival:
            self.done.append((self.msgs.send[msgs], times))
        else:
            now = self.on_arrival[msgs]
            if now.any():
                self.done.append((self.msgs.send[msgs[now]], times[now]))
        nxt = self.next_msg[msgs]
        follow = (nxt >= 0) & self.private[msgs]
        if not follow.all():
            nxt, times = nxt[follow], times[follow]
        if nxt.size:
            direct = self.direct[nxt]
            if direct.all():
                self._start_input(nxt, times)
            else:
                self._start_input(nxt[direct], times[direct])
                self._first_byte_input(nxt[~direct], times[~direct])

    # -- the loop ----------------------------------------------------------------------------------------
    def _dataflow(self) -> None:
        """Everything whose inputs are all known, in dependency order."""
        while self.arrivals or self.done:
            self.passes += 1
            if self.arrivals:
                self._arrive(*_take(self.arrivals))
            if self.done:
                self._complete(*_take(self.done))

    def run(self) -> None:
        net = self.network
        if net is None:  # all connections private: pure dataflow
            self._dataflow()
            while self.notices and self._settle(math.inf):
                self._dataflow()
            return
        out = _Outputs()
        env = simpy.Environment(initial_time=min(0.0, float(self.s.start_s.min(initial=0.0))))

        def driver():
            while True:
                self._dataflow()
                t = math.inf if net.idle() else net.next_time()
                if self.notices and self._settle(t):
                    continue
                if net.idle():
                    return
                if t == math.inf:
                    return  # messages wait for ones that never go: a deadlock, reported by the caller
                if t > env.now:
                    yield env.timeout(t - env.now)
                self.windows += 1
                net.advance(max(t + net.lookahead, np.nextafter(limit(t), math.inf)), out)
                if out.arrivals:
                    self.arrivals.append(_take(out.arrivals))
                if out.watched:
                    self._sent_input(*_take(out.watched))

        env.process(driver())
        env.run()
