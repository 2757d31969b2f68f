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

Use :func:`routes` (or :class:`Routes`) when asking for many routes: it keeps hop counts per destination
(one BFS per destination switch, shared by the hosts behind it), and ``Routes.paths`` walks many routes
at once. :func:`route` is the one-off convenience on top of the same cache.

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

    For ``shortest`` routing it keeps, per destination, every node's hop count to it (a BFS in numpy,
    computed on first use; only relays forward). A destination with a single link shares the table of the
    node it hangs off, so a fat tree needs one BFS per edge switch, not per host. The next hops of a node are
    its neighbours one hop closer, in a stable order; ``paths`` walks many routes at once. Mutating the graph
    afterwards is not noticed: build a new ``Routes``.
    """

    def __init__(self, G: nx.Graph):
        self.G = G
        self.routing = G.graph.get("routing", "shortest")
        if self.routing not in ("shortest", "dimension_order"):
            raise UserError(f"topology {G.graph.get('name')!r}: unknown routing {self.routing!r}")
        self._adj = {u: tuple(G.adj[u]) for u in G}
        self._nodes = list(G)
        self._index = {u: i for i, u in enumerate(self._nodes)}
        by_name = sorted(range(len(self._nodes)), key=lambda i: str(self._nodes[i]))
        rank = np.empty(len(self._nodes), np.int64)  # ECMP candidates in a stable order
        rank[by_name] = np.arange(len(self._nodes))
        self._relay = np.array([role != "gpu" for _, role in G.nodes(data="role")], bool)
        nbrs = [sorted((self._index[v] for v in self._adj[u]), key=rank.__getitem__) for u in self._nodes]
        self._ptr = np.concatenate([[0], np.cumsum([len(x) for x in nbrs])]).astype(np.int64)
        self._nbr = np.fromiter((v for x in nbrs for v in x), np.int64, int(self._ptr[-1]))
        anchor = np.full(len(self._nodes), -1, np.int64)
        for i, x in enumerate(nbrs):
            if len(x) == 1 and self._relay[x[0]]:
                anchor[i] = x[0]
        self._anchor = anchor
        self._dist: dict[int, np.ndarray] = {}
        if self.routing == "dimension_order":
            self._init_torus()

    # -- shortest -----------------------------------------------------------------------------------
    def _hops_to(self, target: int) -> np.ndarray:
        """Hop count of every node to ``target`` through relays (-1: unreachable)."""
        dist = self._dist.get(target)
        if dist is not None:
            return dist
        dist = np.full(len(self._nodes), -1, np.int64)
        dist[target] = 0
        frontier, d = np.array([target], np.int64), 0
        while frontier.size:
            d += 1
            lo, hi = self._ptr[frontier], self._ptr[frontier + 1]
            counts = hi - lo
            seen = np.zeros(dist.shape[0], bool)
            seen[self._nbr[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))]] = True
            near = np.flatnonzero(seen & (dist < 0))
            dist[near] = d
            frontier = near[self._relay[near]]  # a GPU is reachable as a source but relays nothing
        self._dist[target] = dist
        return dist

    def _walk(self, src: np.ndarray, dst: np.ndarray, flow_key: Hashable) -> list[tuple]:
        """Node paths (as indices) from every src to its dst (src != dst), ECMP ties broken by the hash."""
        n = src.shape[0]
        anchor = self._anchor[dst]
        use = (anchor >= 0) & (anchor != src)
        target = np.where(use, anchor, dst)
        slots, tslot = np.unique(target, return_inverse=True)
        table = np.stack([self._hops_to(int(t)) for t in slots]) if n else np.zeros((0, 0), np.int64)
        if n and np.any(table[tslot, src] < 0):
            i = int(np.flatnonzero(table[tslot, src] < 0)[0])
            raise nx.NetworkXNoPath(f"no route from {self._nodes[src[i]]!r} to {self._nodes[dst[i]]!r}")
        paths = [[int(u)] for u in src.tolist()]
        hashes: dict[int, int] = {}
        u, live = src.copy(), np.flatnonzero(src != target)
        while live.size:
            lo, hi = self._ptr[u[live]], self._ptr[u[live] + 1]
            counts = hi - lo
            e = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
            v, who = self._nbr[e], np.repeat(np.arange(live.size), counts)
            tgt = target[live][who]
            ok = (table[tslot[live][who], v] == table[tslot[live], u[live]][who] - 1) & (self._relay[v] | (v == tgt))
            v, who = v[ok], who[ok]
            n_next = np.bincount(who, minlength=live.size)
            first = np.cumsum(n_next) - n_next
            pick = np.zeros(live.size, np.int64)
            for i in np.flatnonzero(n_next > 1).tolist():
                k = int(live[i])
                h = hashes.get(k)
                if h is None:
                    h = _flow_hash(self._nodes[src[k]], self._nodes[dst[k]], flow_key)
                hashes[k], pick[i] = divmod(h, int(n_next[i]))
            u[live] = v[first + pick]
            for k, w in zip(live.tolist(), u[live].tolist()):
                paths[k].append(w)
            live = live[u[live] != target[live]]
        for k in np.flatnonzero(use).tolist():
            paths[k].append(int(dst[k]))
        return [tuple(p) for p in paths]

    def paths(self, pairs: Sequence[tuple[Hashable, Hashable]], flow_key: Hashable = 0) -> list[tuple]:
        """``[self.path(src, dst, flow_key) for src, dst in pairs]``, walked together (fast for many)."""
        for a, b in pairs:
            for x in (a, b):
                if x not in self._index:
                    raise nx.NodeNotFound(f"node {x!r} is not in the topology")
        if self.routing == "dimension_order":
            return [self.path(a, b, flow_key) for a, b in pairs]
        src = np.fromiter((self._index[a] for a, _ in pairs), np.int64, len(pairs))
        dst = np.fromiter((self._index[b] for _, b in pairs), np.int64, len(pairs))
        out: list[tuple] = [(a,) for a, _ in pairs]
        far = np.flatnonzero(src != dst)
        nodes = self._nodes
        for k, p in zip(far.tolist(), self._walk(src[far], dst[far], flow_key)):
            out[k] = tuple(nodes[i] for i in p)
        return out

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
        return self.paths([(src, dst)], flow_key)[0]

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
