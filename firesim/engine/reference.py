"""The reference interpreter: the model of ``firesim.engine`` written the obvious way, for the tests.

A SimPy process per rank and per message, one event per op, flow and connection change, max-min rates
recomputed from scratch (plain progressive filling) whenever anything changes, token buckets and
connection queues kept in dicts. Quadratic in a rank's program length; ``simulate`` must agree with it.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque

import numpy as np
import simpy

from firesim.engine.maxmin import reference_max_min
from firesim.engine.model import TOKEN_TOLERANCE, Setup, limit, make_trace, recv_cost_per_byte
from firesim.plans.ir import Op
from firesim.plans.verify import PlanError


class _Network:
    """Flows on links, connections that queue their messages, token buckets, watched byte counts."""

    def __init__(self, env: simpy.Environment, s: Setup, arrived: list, watched: list):
        net, msgs = s.network, s.messages
        self.env, self.s = env, s
        self.cap, self.peak, self.burst = net.capacity_Bps, net.peak_Bps, net.burst_nbytes
        self.tokens = {link: float(net.burst_nbytes[link]) for link in np.flatnonzero(net.burst_nbytes > 0).tolist()}
        self.fifo = s.transport.fifo_pairs
        self.arrived = arrived
        self.flows: dict[int, dict] = {}  # message -> links, rem (bytes left at t0), rate, t0
        # each connection's messages in send order (the order it carries them), and which were handed over
        self.order: dict = defaultdict(deque)
        for m in range(msgs.send.shape[0]):
            self.order[self._conn(m)].append(m)
        self.ready: set[int] = set()
        self.busy: set = set()  # connections with a message on the wire
        self.watchers: dict[int, list] = defaultdict(list)  # message k -> [(bytes left, event)] not yet fired
        for m in np.flatnonzero(msgs.watch >= 0).tolist():
            self.watchers[int(msgs.watch[m])].append((float(msgs.watch_remaining[m]), watched[m]))
        self.last = env.now
        self.generation = 0

    def _conn(self, m: int):
        return ("pair", int(self.s.messages.pair[m])) if self.fifo else ("message", m)

    # -- changes -------------------------------------------------------------------------------------
    def activate(self, m: int) -> None:
        """Message m's bytes are ready to go: on the wire once the connection's earlier ones are through."""
        self._progress()
        self.ready.add(m)
        self._next(self._conn(m))
        self._reshare()

    def _next(self, conn) -> None:
        """Put the connection's next message on the wire if it is free and that message is ready."""
        queue = self.order[conn]
        while conn not in self.busy and queue and queue[0] in self.ready:
            m = queue.popleft()
            links = self.s.network.route(int(self.s.messages.pair[m]))
            if self.s.messages.nbytes[m] <= 0 or not links:
                self._arrive(m)
            else:
                self.busy.add(conn)
                self.flows[m] = {"links": links, "rem": float(self.s.messages.nbytes[m]), "rate": 0.0}

    def _arrive(self, m: int) -> None:
        for _, event in self.watchers.pop(m, []):
            event.succeed()
        self.arrived[m].succeed()

    def _finish(self, m: int) -> None:
        self.flows.pop(m)
        self._arrive(m)
        conn = self._conn(m)
        self.busy.discard(conn)
        self._next(conn)

    # -- time ------------------------------------------------------------------------------------------
    def _load(self) -> dict[int, float]:
        load: dict[int, float] = defaultdict(float)
        for f in self.flows.values():
            for link in f["links"]:
                load[link] += f["rate"]
        return load

    def _progress(self) -> None:
        """Move every flow and token bucket to now at the rates set at the last change."""
        dt = self.env.now - self.last
        if dt > 0:
            load = self._load()
            for link, tokens in self.tokens.items():
                filled = tokens + (self.cap[link] - load[link]) * dt
                self.tokens[link] = min(max(filled, 0.0), float(self.burst[link]))
            for f in self.flows.values():
                f["rem"] -= f["rate"] * dt
        self.last = self.env.now

    def _capacity(self) -> np.ndarray:
        """A bucket holding credit passes its peak rate, an empty one its rate."""
        cap = self.cap.copy()
        for link, tokens in self.tokens.items():
            if tokens > TOKEN_TOLERANCE * self.burst[link]:
                cap[link] = self.peak[link]
        return cap

    def _reshare(self) -> None:
        rates = reference_max_min({m: f["links"] for m, f in self.flows.items()}, self._capacity())
        for m, f in self.flows.items():
            f["rate"] = rates[m]
        waits = [max(f["rem"], 0.0) / f["rate"] for f in self.flows.values()]
        for k, ws in self.watchers.items():
            if k in self.flows:
                waits += [max(self.flows[k]["rem"] - r, 0.0) / self.flows[k]["rate"] for r, _ in ws]
        load = self._load()
        for link, tokens in self.tokens.items():
            if tokens > TOKEN_TOLERANCE * self.burst[link] and load[link] > self.cap[link]:
                waits.append(tokens / (load[link] - self.cap[link]))  # the bucket runs dry
        self.generation += 1
        if waits:
            self.env.process(self._wake(self.generation, min(waits)))

    def _wake(self, generation: int, dt: float):
        yield self.env.timeout(dt)
        if generation != self.generation:
            return  # something changed since; a newer wake-up is scheduled
        self._progress()
        horizon = limit(self.env.now) - self.env.now
        for k, ws in list(self.watchers.items()):
            f = self.flows.get(k)
            if f is not None:
                due = [w for w in ws if (f["rem"] - w[0]) / f["rate"] <= horizon]
                for w in due:
                    ws.remove(w)
                    w[1].succeed()
        for m in [m for m, f in self.flows.items() if f["rem"] / f["rate"] <= horizon]:
            self._finish(m)
        self._reshare()


def run_reference(s: Setup):
    """``simulate`` written plainly; see the module docstring."""
    plan, msgs = s.plan, s.messages
    n = plan.n_ops
    release = [math.nan] * n if s.release_s is None else s.release_s.tolist()
    op, chunk, span, peer = plan.op.tolist(), plan.chunk.tolist(), plan.span.tolist(), plan.peer.tolist()
    seconds, offsets = plan.seconds.tolist(), plan.offsets.tolist()
    per_recv, per_reduce = recv_cost_per_byte(s)
    after_arrival = [per_recv * b if k == Op.RECV else per_reduce * b if k == Op.REDUCE else 0.0
                     for k, b in zip(op, s.nbytes.tolist())]
    env = simpy.Environment(initial_time=min(0.0, float(s.start_s.min(initial=0.0))))
    done = [env.event() for _ in range(n)]
    arrived = [env.event() for _ in range(msgs.send.shape[0])]
    watched = [env.event() for _ in range(msgs.send.shape[0])]
    net = _Network(env, s, arrived, watched)
    t_start, t_end = np.full(n, np.nan), np.full(n, np.nan)

    # rule 5: the k-th send from a to b matches the k-th recv at b from a
    message_of = [-1] * n
    queues: dict[tuple, deque] = defaultdict(deque)
    for r in range(plan.ranks):
        for j in range(offsets[r], offsets[r + 1]):
            if op[j] == Op.SEND:
                queues[(r, peer[j], "send")].append(j)
            elif op[j] != Op.COMPUTE:
                queues[(peer[j], r, "recv")].append(j)
    send_index = {int(j): m for m, j in enumerate(msgs.send.tolist())}
    for (a, b, what), q in list(queues.items()):
        if what == "send":
            other = queues.get((a, b, "recv"), deque())
            if len(other) != len(q):
                raise PlanError(f"plan {plan.name}: rank {a} sends {len(q)} messages to rank {b}, which posts {len(other)}")
            for j, k in zip(q, other):
                message_of[j] = message_of[k] = send_index[j]

    def earlier_on_chunks(j: int) -> list[simpy.Event]:
        """Rules 2-4: the earlier ops at this rank that touch any of op j's chunks."""
        if op[j] == Op.COMPUTE and chunk[j] < 0:
            return []
        r = int(s.rank[j])
        mine = range(chunk[j], chunk[j] + span[j])
        return [done[i] for i in range(offsets[r], j)
                if not (op[i] == Op.COMPUTE and chunk[i] < 0) and set(range(chunk[i], chunk[i] + span[i])) & set(mine)]

    def hand_over(m: int):
        yield env.timeout(float(msgs.delay_s[m]))
        net.activate(m)

    handover_s = [math.nan] * msgs.send.shape[0]  # when each message's data was handed to the transport
    noticed = [env.event() for _ in range(msgs.send.shape[0])]

    def notice(m: int):
        """The recv of m was just posted: its notice reaches m's sender now, or, if the receiver handed its own
        message k to that sender over in an earlier issue pass (strictly earlier, or k's send completed
        before the recv could be reached), once k has arrived."""
        k = int(msgs.behind[m])
        if k >= 0 and (msgs.behind_apart[m] or limit(handover_s[k]) < env.now):
            yield arrived[k]
        noticed[m].succeed()

    def sender(j: int):
        m = message_of[j]
        if msgs.rendezvous[m]:
            yield noticed[m]
        handover_s[m] = env.now
        env.process(hand_over(m))
        if msgs.on_arrival[m]:
            yield arrived[m]
        elif msgs.watch[m] >= 0:
            yield watched[m]
        t_end[j] = env.now
        done[j].succeed()

    def gate(j: int):
        if release[j] == release[j] and release[j] > env.now:  # not NaN, still ahead
            yield env.timeout(release[j] - env.now)

    def receiver(j: int, before: list):
        yield env.all_of([*before, arrived[message_of[j]]])
        yield from gate(j)
        if after_arrival[j] > 0:
            yield env.timeout(after_arrival[j])
        t_end[j] = env.now
        done[j].succeed()

    def rank(r: int):
        if s.start_s[r] > env.now:
            yield env.timeout(s.start_s[r] - env.now)
        for j in range(offsets[r], offsets[r + 1]):  # rule 1: program order
            before = earlier_on_chunks(j)
            if op[j] in (Op.RECV, Op.REDUCE):  # rule 2: posted at once, never blocks
                t_start[j] = env.now
                if msgs.rendezvous[message_of[j]]:
                    env.process(notice(message_of[j]))
                env.process(receiver(j, before))
            elif op[j] == Op.SEND:  # rule 3: the rank waits for the chunks, the transfer runs in background
                yield env.all_of(before)
                yield from gate(j)
                t_start[j] = env.now
                env.process(sender(j))
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
    return make_trace(s, t_start, t_end)  # names the first op that never completed, if any
