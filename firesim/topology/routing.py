"""Routes flows take through a topology.

``shortest``: a minimum-hop path. Where several tie, one is picked per hop (as ECMP switches do) from a
stable 128-bit BLAKE2 hash of ``(src, dst, flow_key)`` read as a mixed-radix number, so different flows
spread evenly over the tied paths and every run, process and machine picks the same one (Python's
``hash()`` is salted per process and would not). GPU nodes never relay traffic for others: a GPU is an
endpoint, the NVSwitch or host next to it forwards. (Without that rule a hop-count router would send
inter-node traffic through a neighbouring GPU's NVLink and NIC.)

``dimension_order``: tori route x first, then y, then z, the shortest way round each ring, ties (a ring
of even size, exactly half way) broken toward +. This is what Cray Gemini does and is deterministic, so
``flow_key`` is ignored. Dimension-order paths are minimum-hop paths too.

Use :func:`routes` (or :class:`Routes`) when asking for many routes: it precomputes next hops per
destination lazily (one BFS per destination switch, shared by the hosts behind it) and walks them.
:func:`route` is the one-off convenience on top of the same cache.

What a plan puts on the wire follows from the same routes: :func:`link_bytes` is the payload every directed
link carries (what the engine's flows move and what an emulated cluster's byte counters must show), and
:func:`route_capacity_Bps` the bottleneck of one route (bandwidth x efficiency).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from firesim.errors import UserError

if TYPE_CHECKING:
    from firesim.plans.ir import Plan


def _flow_hash(src: Hashable, dst: Hashable, flow_key: Hashable) -> int:
    """128 stable bits from (src, dst, flow_key): the same in every process, unlike ``hash()``."""
    data = f"{src!r}\x1f{dst!r}\x1f{flow_key!r}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")


class Routes:
    """A router for one graph: ``Routes(G).path(src, dst, flow_key)``; build once, ask many times.

    For ``shortest`` routing it keeps, per destination, each node's tuple of next hops on minimum-hop
    paths (BFS from the destination, computed on first use). A destination with a single link shares the
    table of the node it hangs off, so a fat tree needs one BFS per edge switch, not per host. Mutating
    the graph afterwards is not noticed: build a new ``Routes``.
    """

    def __init__(self, G: nx.Graph):
        self.G = G
        self.routing = G.graph.get("routing", "shortest")
        if self.routing not in ("shortest", "dimension_order"):
            raise UserError(f"topology {G.graph.get('name')!r}: unknown routing {self.routing!r}")
        self._adj = {u: tuple(G.adj[u]) for u in G}
        self._order = {u: i for i, u in enumerate(sorted(G, key=str))}  # ECMP candidates in a stable order
        self._relays = {u for u, role in G.nodes(data="role") if role != "gpu"}
        self._anchor = {
            u: nbrs[0] for u, nbrs in self._adj.items() if len(nbrs) == 1 and nbrs[0] in self._relays
        }
        self._tables: dict[Hashable, dict[Hashable, tuple]] = {}
        if self.routing == "dimension_order":
            self._init_torus()

    # -- shortest -----------------------------------------------------------------------------------
    def _table(self, target: Hashable) -> dict[Hashable, tuple]:
        table = self._tables.get(target)
        if table is not None:
            return table
        adj, relays = self._adj, self._relays
        nexts: dict[Hashable, list] = {target: []}
        dist = {target: 0}
        frontier, d = [target], 0
        while frontier:
            d += 1
            new = []
            for w in frontier:
                if w != target and w not in relays:
                    continue  # a GPU is reachable as a source but relays nothing
                for u in adj[w]:
                    du = dist.get(u)
                    if du is None:
                        dist[u] = d
                        nexts[u] = [w]
                        new.append(u)
                    elif du == d:
                        nexts[u].append(w)
            frontier = new
        order = self._order
        table = {
            u: (tuple(v) if len(v) < 2 else tuple(sorted(v, key=order.__getitem__))) for u, v in nexts.items()
        }
        self._tables[target] = table
        return table

    def _shortest(self, src: Hashable, dst: Hashable, flow_key: Hashable) -> tuple:
        anchor = self._anchor.get(dst)
        target, tail = (anchor, (dst,)) if anchor is not None and anchor != src else (dst, ())
        table = self._tables.get(target) or self._table(target)
        hops = table.get(src)
        if hops is None:
            raise nx.NetworkXNoPath(f"no route from {src!r} to {dst!r}")
        path = [src]
        u, h = src, None
        while u != target:
            if len(hops) == 1:
                u = hops[0]
            else:
                if h is None:
                    h = _flow_hash(src, dst, flow_key)
                h, i = divmod(h, len(hops))
                u = hops[i]
            path.append(u)
            hops = table[u]
        return tuple(path) + tail

    # -- dimension order ----------------------------------------------------------------------------
    def _init_torus(self) -> None:
        G = self.G
        try:
            self._dims = tuple(G.graph["dims"])
            self._router_at = {tuple(c): u for u, c in G.nodes(data="coord") if c is not None}
        except (KeyError, TypeError):
            raise UserError(
                f"topology {G.graph.get('name')!r}: dimension_order routing needs dims and coords"
            ) from None
        self._coord = {u: c for c, u in self._router_at.items()}
        self._home = {}
        for u in G:
            if u in self._coord:
                self._home[u] = u
            else:
                routers = [v for v in self._adj[u] if v in self._coord]
                if len(routers) == 1:
                    self._home[u] = routers[0]

    def _dimension_order(self, src: Hashable, dst: Hashable) -> tuple:
        try:
            r_src, r_dst = self._home[src], self._home[dst]
        except KeyError as e:
            raise nx.NetworkXNoPath(f"{e.args[0]!r} is not on exactly one torus router") from None
        path = [src] if src == r_src else [src, r_src]
        c = list(self._coord[r_src])
        target = self._coord[r_dst]
        for d, size in enumerate(self._dims):
            delta = (target[d] - c[d]) % size
            step, count = (1, delta) if 2 * delta <= size else (-1, size - delta)
            for _ in range(count):
                c[d] = (c[d] + step) % size
                path.append(self._router_at[tuple(c)])
        if dst != r_dst:
            path.append(dst)
        return tuple(path)

    # -- public -------------------------------------------------------------------------------------
    def path(self, src: Hashable, dst: Hashable, flow_key: Hashable = 0) -> tuple:
        """Nodes from ``src`` to ``dst`` inclusive; ``flow_key`` picks among equal-cost paths."""
        if src not in self._adj:
            raise nx.NodeNotFound(f"node {src!r} is not in the topology")
        if dst not in self._adj:
            raise nx.NodeNotFound(f"node {dst!r} is not in the topology")
        if src == dst:
            return (src,)
        if self.routing == "dimension_order":
            return self._dimension_order(src, dst)
        return self._shortest(src, dst, flow_key)

    __call__ = path

    def links(self, src: Hashable, dst: Hashable, flow_key: Hashable = 0) -> list[tuple]:
        """Directed hops ``(u, v)`` of the route: the link resources one direction of the flow uses."""
        p = self.path(src, dst, flow_key)
        return list(zip(p[:-1], p[1:]))


_ROUTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def routes(G: nx.Graph) -> Routes:
    """The cached :class:`Routes` of ``G``, kept while ``G`` lives.

    Rebuilt when the node count or routing changes; counting edges would cost O(E) per call, so after
    rewiring links of an existing graph build ``Routes(G)`` yourself (builders never do that).
    """
    key = (len(G), G.graph.get("routing"))
    cached = _ROUTES.get(G)
    if cached is None or cached[0] != key:
        cached = (key, Routes(G))
        _ROUTES[G] = cached
    return cached[1]


def route(G: nx.Graph, src: Hashable, dst: Hashable, flow_key: Hashable = 0) -> tuple:
    """The path (tuple of nodes) a flow from ``src`` to ``dst`` takes; see the module doc for the rules."""
    return routes(G).path(src, dst, flow_key)


def route_links(G: nx.Graph, path: Sequence[Hashable]) -> list[tuple]:
    """Directed hops of ``path``: ``[(path[0], path[1]), ...]``; each must be a link of ``G``."""
    hops = list(zip(path[:-1], path[1:]))
    for u, v in hops:
        if not G.has_edge(u, v):
            raise nx.NetworkXError(f"{u!r}-{v!r} is not a link of {G.graph.get('name')!r}")
    return hops


def _placement(G: nx.Graph, ranks: int, placement: Sequence[Hashable] | None) -> list:
    """The endpoint of every rank: ``placement``, else the graph's endpoints in order."""
    nodes = list(placement) if placement is not None else list(G.graph.get("endpoints") or [])[:ranks]
    if len(nodes) != ranks:
        raise UserError(f"placement: needs one endpoint per rank ({ranks}) in {G.graph.get('name')!r}, "
                        f"got {len(nodes)}")
    return nodes


def link_bytes(plan: Plan, G: nx.Graph, placement: Sequence[Hashable] | None = None, *, itemsize: int = 4,
               flow_key: Hashable = 0) -> dict[tuple, int]:
    """Payload bytes the plan moves over every directed link ``(u, v)`` of ``G`` that it uses.

    Rank i sits on ``placement[i]`` (default: the graph's endpoints in order); every message between two
    ranks takes the route the engine gives it (``flow_key`` as its ``seed``). Ranks on one endpoint use no link.
    """
    from firesim.plans.ir import Op

    nodes = _placement(G, plan.ranks, placement)
    sends = plan.op == Op.SEND
    pair = plan.op_rank()[sends].astype(np.int64) * plan.ranks + plan.peer[sends]
    keys, where = np.unique(pair, return_inverse=True)
    per_pair = np.bincount(where, weights=plan.op_nbytes(itemsize)[sends], minlength=keys.size)
    router = routes(G)
    out: dict[tuple, int] = {}
    for key, nbytes in zip(keys.tolist(), per_pair.tolist()):
        src, dst = divmod(key, plan.ranks)
        for hop in router.links(nodes[src], nodes[dst], flow_key):
            out[hop] = out.get(hop, 0) + int(nbytes)
    return out


def route_capacity_Bps(G: nx.Graph, src: Hashable, dst: Hashable, flow_key: Hashable = 0) -> float:
    """Bytes/s a lone flow gets from ``src`` to ``dst``: the smallest bandwidth x efficiency on its route."""
    hops = routes(G).links(src, dst, flow_key)
    return min((float(G.edges[u, v]["bandwidth_Bps"]) * float(G.edges[u, v].get("efficiency", 1.0))
                for u, v in hops), default=float("inf"))
