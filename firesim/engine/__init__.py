"""The discrete-event interpreter of a plan: each message a fluid flow, links shared max-min fairly, and what
TCP and the communication library do on top (docs/engine.md has the whole model and its measurements).

Cost model. A message is *handed over* when its send has issued and (rendezvous protocol, from
``rendezvous_nbytes`` up) its recv has been posted (with ``notice_behind_data``, gloo: once the recv's notice
has come through the reverse connection, behind the receiver's data handed over there in an earlier pass). After ``alpha_s`` (plus ``message_overhead_s`` for a
rendezvous) and the latencies of its route, its bytes move as a flow
over every directed link of the route; flows active on a link share its capacity (``bandwidth_Bps x
efficiency``) max-min fairly, and rates are recomputed whenever a flow starts or ends. With ``fifo_pairs``
the messages of one ordered rank pair go one after another over one connection (as TCP and NCCL channels
carry them) instead of sharing the link fairly. A link with ``burst_nbytes`` is a token bucket (tc tbf /
htb): after idling it passes up to that many bytes at ``peak_bandwidth_Bps`` before its rate bites. An eager
send completes at issue; a rendezvous one once its connection's bytes not yet delivered, up to its own, fit
in ``eager_window_nbytes`` (the socket buffering; 0: at arrival). A ``reduce`` costs ``gamma_s_per_byte`` per
byte at the receiver once the data has arrived and the earlier ops on its chunks are done (plus
``copy_s_per_byte`` for any recv); a ``compute`` op occupies its rank for ``seconds / rank_speed[rank]``.
The issue/complete rules are those of ``firesim.plans.ir``. All messages between two ranks take one route
(ECMP hashes the pair and ``seed``); ranks placed on the same endpoint exchange data at no bandwidth cost.

``simulate`` (``fast``) is the fast interpreter; ``simulate_reference`` (``reference``) the same model
written the obvious way, which the tests check it against on random plans, topologies and transports.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import networkx as nx

from firesim.engine.fast import _Run
from firesim.engine.maxmin import max_min_rates
from firesim.engine.model import EAGER, Transport, make_trace, setup
from firesim.engine.reference import run_reference
from firesim.limits import MAX_OPS
from firesim.plans.ir import Plan
from firesim.trace import Trace

__all__ = ["EAGER", "Transport", "max_min_rates", "simulate", "simulate_reference"]


def simulate(plan: Plan, topology: nx.Graph | str | None = None, *, alpha_s: float, gamma_s_per_byte: float,
             beta_s_per_byte: float | None = None, placement: Sequence[Hashable] | None = None,
             transport: Transport | None = None, eager: bool = False, itemsize: int = 4, rank_speed=None,
             link_overrides: Mapping | None = None, seed: int = 0, start_s=None, op_nbytes=None,
             release_s=None, max_ops: int = MAX_OPS) -> Trace:
    """Predict when every op of ``plan`` starts and ends on ``topology``; returns the simulated Trace.

    topology: a networkx graph (``firesim.topology``), a spec such as ``"fat-tree:k=8"``, or None for a
    non-blocking star whose host links carry ``1 / beta_s_per_byte`` bytes/s with no link latency. Links
    may carry ``burst_nbytes`` and ``peak_bandwidth_Bps`` (a token bucket, see the module docstring).
    placement: the node of every rank (default ``G.graph["endpoints"]`` in order).
    transport: a ``Transport`` (default: FIFO connections per rank pair, every message rendezvous, sends
    complete on arrival). ``eager=True`` is shorthand for ``EAGER`` (every send pushed at issue and
    complete at once).
    rank_speed: per-rank factors dividing compute ops' seconds. start_s: per-rank time at which the rank
    starts issuing (e.g. when backward produced a bucket). link_overrides: ``{(u, v): {"bandwidth_Bps": ...,
    "latency_s": ..., "efficiency": ..., "burst_nbytes": ..., "peak_bandwidth_Bps": ...}}`` replaces those
    attributes of link u-v (both directions). seed: salts ECMP path choice. For plans composed of parts of
    different sizes (``firesim.training``): op_nbytes gives every op's bytes (default: the plan's chunk
    sizes) and release_s every op's gate, a time before which it does not issue (send/compute) or complete
    (recv); NaN for none. See ``firesim.plans.ir`` for the semantics. Raises PlanError if the plan
    deadlocks or its messages do not match. A plan of more than ``max_ops`` ops is refused before anything
    is allocated (``firesim.limits``).
    """
    s = setup(plan, topology, alpha_s=alpha_s, gamma_s_per_byte=gamma_s_per_byte, beta_s_per_byte=beta_s_per_byte,
              placement=placement, transport=transport, eager=eager, itemsize=itemsize, rank_speed=rank_speed,
              link_overrides=link_overrides, seed=seed, start_s=start_s, op_nbytes=op_nbytes, release_s=release_s,
              max_ops=max_ops)
    run = _Run(s)
    run.run()
    net = run.network
    return make_trace(s, *run.times(), windows=run.windows, dataflow_passes=run.passes,
                      network_instants=net.instants if net else 0, rate_passes=net.reshares if net else 0,
                      private_messages=int(s.messages.private.sum()),
                      events=int(plan.n_ops + 2 * s.messages.send.shape[0]))


def simulate_reference(plan: Plan, topology: nx.Graph | str | None = None, *, alpha_s: float,
                       gamma_s_per_byte: float, beta_s_per_byte: float | None = None,
                       placement: Sequence[Hashable] | None = None, transport: Transport | None = None,
                       eager: bool = False, itemsize: int = 4, rank_speed=None, link_overrides: Mapping | None = None,
                       seed: int = 0, start_s=None, op_nbytes=None, release_s=None) -> Trace:
    """``simulate`` written the obvious way: a SimPy process per rank and per message, one event per op and
    flow, rules transcribed from ``firesim.plans.ir``. Quadratic in a rank's program length; for tests."""
    s = setup(plan, topology, alpha_s=alpha_s, gamma_s_per_byte=gamma_s_per_byte, beta_s_per_byte=beta_s_per_byte,
              placement=placement, transport=transport, eager=eager, itemsize=itemsize, rank_speed=rank_speed,
              link_overrides=link_overrides, seed=seed, start_s=start_s, op_nbytes=op_nbytes, release_s=release_s)
    return run_reference(s)
