"""Network topologies as ``networkx`` graphs, and the routes flows take through them.

This is the substrate both interpreters share: the SimPy engine turns every route into a set of directed
link resources, and the network-namespace emulator builds veths and bridges from the same graph.

The graph contract
------------------
- Every builder is a pure function returning an undirected :class:`networkx.Graph`.
- Node attribute ``role`` is one of ``host``, ``gpu``, ``switch``, ``router``.
- Edge attributes: ``bandwidth_Bps`` (bytes/s **per direction**; links are full duplex, so each direction
  is an independent resource), ``latency_s`` and ``efficiency`` (in (0, 1], default 1.0; the usable
  capacity of a link is ``bandwidth_Bps * efficiency``).
- Graph attributes: ``name``; ``endpoints``, the ordered nodes that host ranks (rank i runs on
  ``endpoints[i]``: hosts, or GPUs in multi-GPU nodes); ``routing``, ``"shortest"`` or
  ``"dimension_order"`` (tori, which also carry ``dims`` and a ``coord`` on every router).

Routing
-------
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

Topology files
--------------
YAML, validated with pydantic; every problem is one line naming the file::

    name: two-level-4                 # optional
    hosts: [h0, h1, h2, {name: h3, gpus: 4}]
    switches: [s0, s1, spine]
    routers: []                       # optional, role "router"
    gpu_link: 300GB/s                 # needed when a host has gpus
    gpu_latency: 1us                  # optional
    links:                            # undirected, full duplex; rate per direction
      - [h0, s0, 1gbit]               # [a, b, rate] or [a, b, rate, latency]
      - {a: h1, b: s0, rate: 1gbit, latency: 50us, efficiency: 0.95}
      ...

A host with ``gpus: n`` becomes the node's internal switch: GPU endpoints ``h3/g0 .. h3/g{n-1}`` hang off
it, each by a ``gpu_link`` (think NVSwitch port), and replace the host in ``endpoints``. Endpoints are
listed host by host in file order (a host's GPUs in its place); an explicit ``endpoints:`` list or a
top-level ``gpus:`` list of GPU nodes (linked explicitly) are accepted too, which is what
:func:`dump_topology` writes for graphs it cannot express in the short form. Links without a latency get
0 s: the emulator cannot add delay, and the engine's per-message alpha covers software latency.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import math
import os
import weakref
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from firesim.config import read_yaml
from firesim.errors import UserError
from firesim.units import parse_rate, parse_seconds

__all__ = [
    "ROLES",
    "Routes",
    "describe",
    "draw",
    "dragonfly",
    "dump_topology",
    "fat_tree",
    "format_rate",
    "format_seconds",
    "from_spec",
    "load_topology",
    "nvlink_leaf_spine",
    "ring",
    "route",
    "route_links",
    "routes",
    "star",
    "torus",
]

ROLES = ("host", "gpu", "switch", "router")

# Defaults: a 100 Gbit/s (EDR InfiniBand class) link with ~0.5 us per hop (switch + wire + NIC share).
DEFAULT_BANDWIDTH_Bps = 12.5e9
DEFAULT_LATENCY_s = 0.5e-6
# Cray Gemini (Titan): ~6.4 GB/s per link direction (REFERENCE.md; real Y links are narrower, not
# modelled), ~0.1 us per router hop; two nodes per router.
GEMINI_LINK_Bps = 6.4e9
GEMINI_HOP_s = 0.1e-6
# NVLink 3 (A100): 600 GB/s bidirectional per GPU = 300 GB/s per direction; one 200 Gbit/s NIC per GPU.
NVLINK_Bps = 300e9
NIC_Bps = 25e9


# --------------------------------------------------------------------------------------------------
# small helpers


def _rate(value: Any, what: str) -> float:
    if isinstance(value, str) and value.strip().startswith("-"):
        raise UserError(f"{what}: must be a positive rate, got {value!r}")
    rate = parse_rate(value, what)
    if not rate > 0 or math.isinf(rate):
        raise UserError(f"{what}: must be a positive rate, got {value!r}")
    return float(rate)


def _seconds(value: Any, what: str) -> float:
    return float(parse_seconds(value, what))


def _count(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what}: must be an integer >= {minimum}, got {value!r}")
    return value


def _new_graph(name: str, routing: str = "shortest") -> nx.Graph:
    G = nx.Graph()
    G.graph.update(name=name, endpoints=[], routing=routing)
    return G


def _link(G: nx.Graph, a: Hashable, b: Hashable, bandwidth_Bps: float, latency_s: float) -> None:
    G.add_edge(a, b, bandwidth_Bps=float(bandwidth_Bps), latency_s=float(latency_s), efficiency=1.0)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.12g}"


def _pick_unit(value: float, candidates: list[tuple[float, str, int]], parse: Any, exact: bool) -> str | None:
    """The most readable of ``(mantissa, text, preference)`` that parses back to ``value``.

    Mantissas in [1, 1000) first, then fewest significant digits (200mbit over 25MB/s, 6.4GB/s over
    51.2gbit), then preference. ``exact``: the float must round-trip (files); else 4 significant digits
    (tables).
    """
    scored = []
    for mantissa, text, preference in candidates:
        if not exact:
            number = f"{mantissa:.4g}"
            text, mantissa = number + text[len(_num(mantissa)) :], float(number)
        back = parse(text)
        if back == value or not exact and math.isclose(back, value, rel_tol=1e-3):
            digits = len(_num(mantissa).replace(".", "").lstrip("0").rstrip("0"))
            scored.append((not 1 <= mantissa < 1000, digits, preference, len(text), text))
    best = min(scored, default=None)
    return best[4] if best is not None else None


def format_rate(bandwidth_Bps: float, exact: bool = True) -> str:
    """Unit string for a rate: 1.25e8 -> '1gbit', 2.5e7 -> '200mbit', 3e11 -> '300GB/s'.

    Ties go to bits up to 1 Tbit/s (tc's convention for network links) and to bytes above (GPU links).
    """
    bits_first = bandwidth_Bps * 8 <= 1e12
    candidates = []
    for prefix, scale in (("t", 1e12), ("g", 1e9), ("m", 1e6), ("k", 1e3), ("", 1.0)):
        bits, byts = bandwidth_Bps * 8 / scale, bandwidth_Bps / scale
        candidates.append((bits, f"{_num(bits)}{prefix}bit", 0 if bits_first else 1))
        candidates.append(
            (byts, f"{_num(byts)}{prefix.upper() if prefix != 'k' else 'k'}B/s", 1 if bits_first else 0)
        )
    text = _pick_unit(bandwidth_Bps, candidates, parse_rate, exact)
    return text or (repr(float(bandwidth_Bps)) if exact else f"{bandwidth_Bps:.4g}B/s")


def format_seconds(seconds: float, exact: bool = True) -> str:
    """Unit string for a duration: 0.0015 -> '1.5ms', 5e-07 -> '0.5us' (500*1e-9 is not exactly 5e-07)."""
    if seconds == 0:
        return "0s"
    candidates = [
        (seconds / scale, f"{_num(seconds / scale)}{unit}", 0)
        for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))
    ]
    text = _pick_unit(seconds, candidates, parse_seconds, exact)
    return text or (repr(float(seconds)) if exact else f"{seconds:.4g}s")


def _set_endpoints(G: nx.Graph, endpoints: Iterable[Hashable]) -> nx.Graph:
    G.graph["endpoints"] = list(endpoints)
    return G


# --------------------------------------------------------------------------------------------------
# builders


def star(
    n_hosts: int, bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps, latency_s: float = DEFAULT_LATENCY_s
) -> nx.Graph:
    """``n_hosts`` hosts on one non-blocking switch ``s0``: the only contention is at the host links."""
    n_hosts = _count(n_hosts, "star: n_hosts")
    bw, lat = _rate(bandwidth_Bps, "star: bandwidth_Bps"), _seconds(latency_s, "star: latency_s")
    G = _new_graph(f"star-{n_hosts}")
    hosts = [f"h{i}" for i in range(n_hosts)]
    G.add_nodes_from(hosts, role="host", layer=0)
    G.add_node("s0", role="switch", layer=1)
    for h in hosts:
        _link(G, h, "s0", bw, lat)
    return _set_endpoints(G, hosts)


def ring(
    n_hosts: int, bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps, latency_s: float = DEFAULT_LATENCY_s
) -> nx.Graph:
    """Hosts cabled in a cycle with no switch; hosts relay for each other (two hosts share one link)."""
    n_hosts = _count(n_hosts, "ring: n_hosts")
    bw, lat = _rate(bandwidth_Bps, "ring: bandwidth_Bps"), _seconds(latency_s, "ring: latency_s")
    G = _new_graph(f"ring-{n_hosts}")
    hosts = [f"h{i}" for i in range(n_hosts)]
    G.add_nodes_from(hosts, role="host", layer=0)
    for i in range(n_hosts if n_hosts > 2 else n_hosts - 1):
        _link(G, hosts[i], hosts[(i + 1) % n_hosts], bw, lat)
    return _set_endpoints(G, hosts)


def fat_tree(
    k: int,
    bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps,
    latency_s: float = DEFAULT_LATENCY_s,
    oversubscription: float = 1.0,
) -> nx.Graph:
    """k-ary fat tree (Al-Fares et al. 2008): k pods of k/2 edge and k/2 aggregation switches, (k/2)^2 cores.

    k^3/4 hosts ``h{i}``, edge ``e{pod}_{i}``, aggregation ``a{pod}_{i}``, core ``c{i}``; 5k^2/4 switches and
    3k^3/4 links. Hops: 2 within an edge switch, 4 within a pod, 6 across pods (k^2/4 equal-cost paths).

    ``oversubscription`` r keeps the wiring and divides the bandwidth of every edge-aggregation and
    aggregation-core link by r (it need not be an integer, unlike removing uplinks). The taper is then r:1
    at the edge tier and 1:1 at the aggregation tier, so host injection : core capacity = r.
    """
    k = _count(k, "fat-tree: k", minimum=2)
    if k % 2:
        raise UserError(f"fat-tree: k must be even, got {k}")
    bw, lat = _rate(bandwidth_Bps, "fat-tree: bandwidth_Bps"), _seconds(latency_s, "fat-tree: latency_s")
    if (
        isinstance(oversubscription, bool)
        or not isinstance(oversubscription, (int, float))
        or not oversubscription >= 1
    ):
        raise UserError(f"fat-tree: oversubscription must be a number >= 1, got {oversubscription!r}")
    up_bw = bw / float(oversubscription)
    half = k // 2
    G = _new_graph(f"fat-tree-k{k}" + (f"-os{_num(oversubscription)}" if oversubscription != 1 else ""))
    hosts = []
    for pod in range(k):
        for e in range(half):
            for j in range(half):
                h = f"h{(pod * half + e) * half + j}"
                G.add_node(h, role="host", layer=0, pod=pod)
                hosts.append(h)
    for pod in range(k):
        for e in range(half):
            G.add_node(f"e{pod}_{e}", role="switch", layer=1, pod=pod)
    for pod in range(k):
        for a in range(half):
            G.add_node(f"a{pod}_{a}", role="switch", layer=2, pod=pod)
    for c in range(half * half):
        G.add_node(f"c{c}", role="switch", layer=3)
    for i, h in enumerate(hosts):
        _link(G, h, f"e{i // (half * half)}_{(i // half) % half}", bw, lat)
    for pod in range(k):
        for e in range(half):
            for a in range(half):
                _link(G, f"e{pod}_{e}", f"a{pod}_{a}", up_bw, lat)
        for a in range(half):
            for j in range(half):
                _link(G, f"a{pod}_{a}", f"c{a * half + j}", up_bw, lat)
    return _set_endpoints(G, hosts)


def torus(
    dims: Sequence[int],
    hosts_per_router: int = 2,
    link_bandwidth_Bps: float = GEMINI_LINK_Bps,
    injection_bandwidth_Bps: float = GEMINI_LINK_Bps,
    latency_s: float = GEMINI_HOP_s,
) -> nx.Graph:
    """2D or 3D torus of routers with wraparound links, ``hosts_per_router`` hosts each (Cray Gemini: 2).

    Routers ``r{x}_{y}[_{z}]`` carry ``coord``; they are numbered in ``itertools.product`` order (last
    coordinate fastest) and host ``h{i}`` sits on router ``i // hosts_per_router``. A ring of size 2 has a
    single link between its two routers (both directions of the ring collapse onto it); size 1 has none.
    Routing is dimension order.
    """
    try:
        dims = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise UserError(f"torus: dims must be 2 or 3 integers, got {dims!r}") from None
    if len(dims) not in (2, 3) or any(d < 1 for d in dims):
        raise UserError(f"torus: dims must be 2 or 3 integers >= 1, got {dims!r}")
    hpr = _count(hosts_per_router, "torus: hosts_per_router")
    link_bw = _rate(link_bandwidth_Bps, "torus: link_bandwidth_Bps")
    inj_bw = _rate(injection_bandwidth_Bps, "torus: injection_bandwidth_Bps")
    lat = _seconds(latency_s, "torus: latency_s")
    G = _new_graph("torus-" + "x".join(map(str, dims)), routing="dimension_order")
    G.graph["dims"] = dims
    coords = list(itertools.product(*(range(d) for d in dims)))
    name = {c: "r" + "_".join(map(str, c)) for c in coords}
    hosts = [f"h{i}" for i in range(len(coords) * hpr)]
    G.add_nodes_from(hosts, role="host", layer=0)
    for c in coords:
        G.add_node(name[c], role="router", layer=1, coord=c)
    for i, h in enumerate(hosts):
        G.nodes[h]["router"] = name[coords[i // hpr]]
        _link(G, h, name[coords[i // hpr]], inj_bw, lat)
    for c in coords:
        for d, size in enumerate(dims):
            if size > 1:
                nb = c[:d] + ((c[d] + 1) % size,) + c[d + 1 :]
                if not G.has_edge(name[c], name[nb]):
                    _link(G, name[c], name[nb], link_bw, lat)
    return _set_endpoints(G, hosts)


def dragonfly(
    groups: int,
    routers_per_group: int = 4,
    hosts_per_router: int = 2,
    global_links_per_router: int | None = None,
    *,
    host_bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps,
    local_bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps,
    global_bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps,
    latency_s: float = DEFAULT_LATENCY_s,
) -> nx.Graph:
    """Dragonfly (Kim et al. 2008): routers all-to-all within a group, global links between groups.

    Routers ``g{g}r{r}``, hosts ``h{i}`` (group-major). Group i's global ports are numbered
    0..a*h-1 (port q on router q // h) and the "consecutive" arrangement links group i to group
    i+d (mod g) on port d-1, so every pair of groups has one global link per round; with a*h >= 2(g-1)
    further rounds add more, and two global links between the same two routers merge into one link of
    summed bandwidth (attribute ``parallel``). ``global_links_per_router`` defaults to the fewest that
    connect every pair of groups, ceil((g-1)/a); the balanced shape is a = 2p = 2h, g = a*h + 1.

    Routing is minimum-hop with ECMP, i.e. minimal routing (local, global, local), except that when a path
    over two global links is strictly fewer hops it is taken (real minimal routing would not).
    """
    g = _count(groups, "dragonfly: groups")
    a = _count(routers_per_group, "dragonfly: routers_per_group")
    p = _count(hosts_per_router, "dragonfly: hosts_per_router")
    if global_links_per_router is None:
        h = math.ceil((g - 1) / a)
    else:
        h = _count(global_links_per_router, "dragonfly: global_links_per_router", minimum=0)
    if a * h < g - 1:
        raise UserError(
            f"dragonfly: {g} groups need >= {g - 1} global links per group, "
            f"routers_per_group * global_links_per_router = {a * h}"
        )
    host_bw = _rate(host_bandwidth_Bps, "dragonfly: host_bandwidth_Bps")
    local_bw = _rate(local_bandwidth_Bps, "dragonfly: local_bandwidth_Bps")
    global_bw = _rate(global_bandwidth_Bps, "dragonfly: global_bandwidth_Bps")
    lat = _seconds(latency_s, "dragonfly: latency_s")
    G = _new_graph(f"dragonfly-g{g}a{a}p{p}h{h}")
    routers = [[f"g{gi}r{r}" for r in range(a)] for gi in range(g)]
    hosts = [f"h{i}" for i in range(g * a * p)]
    G.add_nodes_from(hosts, role="host", layer=0)
    for gi in range(g):
        for r in range(a):
            G.add_node(routers[gi][r], role="router", layer=1, group=gi)
    for i, host in enumerate(hosts):
        _link(G, host, routers[i // (a * p)][(i // p) % a], host_bw, lat)
    for gi in range(g):
        for r1, r2 in itertools.combinations(routers[gi], 2):
            _link(G, r1, r2, local_bw, lat)
    if g > 1:
        for rnd in range(a * h // (g - 1)):
            base = rnd * (g - 1)
            for gi in range(g):
                for d in range(1, g - gi):
                    gj = gi + d
                    u = routers[gi][(base + d - 1) // h]
                    v = routers[gj][(base + g - d - 1) // h]
                    if G.has_edge(u, v):
                        G.edges[u, v]["bandwidth_Bps"] += global_bw
                        G.edges[u, v]["parallel"] += 1
                    else:
                        _link(G, u, v, global_bw, lat)
                        G.edges[u, v]["parallel"] = 1
    return _set_endpoints(G, hosts)


def nvlink_leaf_spine(
    nodes: int,
    gpus_per_node: int = 8,
    nvlink_bandwidth_Bps: float = NVLINK_Bps,
    nic_bandwidth_Bps: float = NIC_Bps,
    leaves: int | None = None,
    spines: int | None = None,
    *,
    spine_bandwidth_Bps: float | None = None,
    latency_s: float = DEFAULT_LATENCY_s,
    nvlink_latency_s: float = 0.2e-6,
) -> nx.Graph:
    """Multi-GPU nodes (an NVSwitch each) with one NIC per GPU into a two-tier leaf-spine fabric.

    Per node i: GPUs ``n{i}/g{j}`` (the endpoints, node-major), switch ``n{i}/nvswitch`` linked to each
    GPU at ``nvlink_bandwidth_Bps``, and NICs ``n{i}/nic{j}`` (role switch, ``kind="nic"``; the PCIe hop
    GPU-NIC and the NIC-leaf cable both run at ``nic_bandwidth_Bps``). The NIC nodes keep the NVLink path
    (2 hops) strictly shorter than any path through the fabric, so intra-node traffic never ties with it.
    Rail-optimised wiring: NIC j of node i goes to leaf ``(i * gpus_per_node + j) % leaves``; by default
    ``leaves = gpus_per_node`` (one rail per GPU index) and ``spines = max(1, leaves // 2)``; every leaf
    connects to every spine at ``spine_bandwidth_Bps``, by default non-blocking (a leaf's NIC ports
    times ``nic_bandwidth_Bps`` shared over the spines).
    """
    n = _count(nodes, "nvlink: nodes")
    gpn = _count(gpus_per_node, "nvlink: gpus_per_node")
    nv_bw = _rate(nvlink_bandwidth_Bps, "nvlink: nvlink_bandwidth_Bps")
    nic_bw = _rate(nic_bandwidth_Bps, "nvlink: nic_bandwidth_Bps")
    n_leaves = gpn if leaves is None else _count(leaves, "nvlink: leaves")
    n_spines = max(1, n_leaves // 2) if spines is None else _count(spines, "nvlink: spines")
    ports_per_leaf = math.ceil(n * gpn / n_leaves)
    if spine_bandwidth_Bps is None:
        spine_bw = ports_per_leaf * nic_bw / n_spines
    else:
        spine_bw = _rate(spine_bandwidth_Bps, "nvlink: spine_bandwidth_Bps")
    lat = _seconds(latency_s, "nvlink: latency_s")
    nv_lat = _seconds(nvlink_latency_s, "nvlink: nvlink_latency_s")
    G = _new_graph(f"nvlink-{n}x{gpn}-leaf{n_leaves}-spine{n_spines}")
    gpus = [f"n{i}/g{j}" for i in range(n) for j in range(gpn)]
    for i in range(n):
        for j in range(gpn):
            G.add_node(f"n{i}/g{j}", role="gpu", layer=0, node=i)
    for i in range(n):
        G.add_node(f"n{i}/nvswitch", role="switch", layer=1, node=i, kind="nvswitch")
        for j in range(gpn):
            G.add_node(f"n{i}/nic{j}", role="switch", layer=1, node=i, kind="nic")
    G.add_nodes_from((f"leaf{x}" for x in range(n_leaves)), role="switch", layer=2)
    G.add_nodes_from((f"spine{x}" for x in range(n_spines)), role="switch", layer=3)
    for i in range(n):
        for j in range(gpn):
            gpu, nic = f"n{i}/g{j}", f"n{i}/nic{j}"
            _link(G, gpu, f"n{i}/nvswitch", nv_bw, nv_lat)
            _link(G, gpu, nic, nic_bw, nv_lat)
            _link(G, nic, f"leaf{(i * gpn + j) % n_leaves}", nic_bw, lat)
    for x in range(n_leaves):
        for s in range(n_spines):
            _link(G, f"leaf{x}", f"spine{s}", spine_bw, lat)
    return _set_endpoints(G, gpus)


# --------------------------------------------------------------------------------------------------
# routing


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


# --------------------------------------------------------------------------------------------------
# topology files


def _rename_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ")


class _Host(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    name: str = Field(min_length=1)
    gpus: int = Field(default=0, ge=0)


class _Link(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    a: str
    b: str
    rate: str
    latency: str | None = None
    efficiency: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) not in (3, 4):
                raise ValueError(f"expected [a, b, rate] or [a, b, rate, latency], got {len(value)} items")
            return dict(zip(("a", "b", "rate", "latency"), value))
        return value


class _TopologyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    name: str | None = None
    hosts: list[_Host] = []
    switches: list[str] = []
    routers: list[str] = []
    gpus: list[str] = []
    gpu_link: str | None = None
    gpu_latency: str | None = None
    links: list[_Link]
    endpoints: list[str] | None = None

    @model_validator(mode="after")
    def _has_endpoints(self) -> _TopologyFile:
        if not self.hosts and not self.gpus:
            raise ValueError("hosts: the topology needs at least one host or gpu")
        return self

    @field_validator("hosts", mode="before")
    @classmethod
    def _host_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                {"name": v} if isinstance(v, (str, int, float)) and not isinstance(v, bool) else v
                for v in value
            ]
        return value


def _pydantic_line(err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    loc = ""
    for part in first["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "extra_forbidden":
        known = (
            ", ".join(_TopologyFile.model_fields)
            if len(first["loc"]) == 1
            else "a, b, rate, latency, efficiency"
        )
        return f"unknown key {loc!r} (known: {known}){more}"
    message = _rename_value_error(first["msg"]) + more
    return f"{loc}: {message}" if loc else message


def load_topology(path: str | os.PathLike, latency_s: float = 0.0) -> nx.Graph:
    """Read and validate a YAML topology file (format in the module doc) into a graph.

    ``latency_s`` is given to links that state none. Every problem raises a one-line :class:`UserError`
    naming the file: malformed YAML, unknown keys, duplicate names, a link to an unknown node, a repeated
    or self link, a zero, negative or unparsable rate, a host not connected to the others.
    """
    path = Path(path)
    data = read_yaml(path, "topology file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with hosts: and links:, got {type(data).__name__}")
    try:
        spec = _TopologyFile.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{path}: {_pydantic_line(e)}") from None

    def fail(msg: str) -> UserError:
        return UserError(f"{path}: {msg}")

    G = _new_graph(spec.name or path.stem)
    default_latency = _seconds(latency_s, "latency_s")
    default_endpoints: list[str] = []
    gpu_bw = gpu_lat = None
    if any(h.gpus for h in spec.hosts):
        if spec.gpu_link is None:
            raise fail("hosts with gpus need gpu_link: (rate of each GPU's link to its host, e.g. 300GB/s)")
        try:
            gpu_bw = _rate(spec.gpu_link, "gpu_link")
            gpu_lat = (
                _seconds(spec.gpu_latency, "gpu_latency") if spec.gpu_latency is not None else default_latency
            )
        except UserError as e:
            raise fail(str(e)) from None

    def add(name: str, **attrs: Any) -> None:
        if name in G:
            raise fail(f"duplicate node name {name!r}")
        G.add_node(name, **attrs)

    for host in spec.hosts:
        add(host.name, role="host", **({"gpus": host.gpus} if host.gpus else {}))
        if host.gpus:
            for j in range(host.gpus):
                add(f"{host.name}/g{j}", role="gpu", host=host.name)
                G.add_edge(
                    host.name, f"{host.name}/g{j}", bandwidth_Bps=gpu_bw, latency_s=gpu_lat, efficiency=1.0
                )
                default_endpoints.append(f"{host.name}/g{j}")
        else:
            default_endpoints.append(host.name)
    for name in spec.gpus:
        add(name, role="gpu")
        default_endpoints.append(name)
    for name in spec.switches:
        add(name, role="switch")
    for name in spec.routers:
        add(name, role="router")

    for i, link in enumerate(spec.links):
        where = f"links[{i}] {link.a}-{link.b}"
        for end in (link.a, link.b):
            if end not in G:
                raise fail(
                    f"{where}: unknown node {end!r} (declare it under hosts, switches, routers or gpus)"
                )
        if link.a == link.b:
            raise fail(f"{where}: a link must join two different nodes")
        if G.has_edge(link.a, link.b):
            raise fail(f"{where}: duplicate link between {link.a!r} and {link.b!r}")
        try:
            bw = _rate(link.rate, f"{where}: rate")
            lat = _seconds(link.latency, f"{where}: latency") if link.latency is not None else default_latency
        except UserError as e:
            raise fail(str(e)) from None
        G.add_edge(link.a, link.b, bandwidth_Bps=bw, latency_s=lat, efficiency=float(link.efficiency))

    if spec.endpoints is not None:
        for name in spec.endpoints:
            if G.nodes.get(name, {}).get("role") not in ("host", "gpu"):
                raise fail(f"endpoints: {name!r} is not a declared host or gpu")
        if len(set(spec.endpoints)) != len(spec.endpoints):
            raise fail("endpoints: a node is listed twice")
        endpoints = list(spec.endpoints)
    else:
        endpoints = default_endpoints

    first = endpoints[0] if endpoints else next(iter(G))
    reachable = nx.node_connected_component(G, first)
    for node in G:
        if node not in reachable:
            role = G.nodes[node]["role"]
            what = "has no links" if G.degree(node) == 0 else f"is not connected to {first!r}"
            raise fail(f"{role} {node!r} {what}")
    return _set_endpoints(G, endpoints)


def _default_file_endpoints(hosts: list, gpus: list) -> list:
    out = []
    for h in hosts:
        if isinstance(h, dict):
            out.extend(f"{h['name']}/g{j}" for j in range(h["gpus"]))
        else:
            out.append(h)
    return out + list(gpus)


def dump_topology(G: nx.Graph, path: str | os.PathLike) -> None:
    """Write ``G`` as a topology file that :func:`load_topology` reads back to the same links and endpoints.

    Hosts whose GPUs look expanded from ``gpus: n`` (``h/g0..``, linked only to ``h``, one shared rate and
    latency) are written in the short form; other GPUs go under ``gpus:``. Routing is not written: a
    dumped torus reloads with minimum-hop ECMP routing (dimension-order paths are among its choices).
    """
    nodes_by_role: dict[str, list[str]] = {r: [] for r in ROLES}
    for u, role in G.nodes(data="role"):
        if role not in nodes_by_role:
            raise UserError(f"node {u!r}: role {role!r} is not one of {', '.join(ROLES)}")
        nodes_by_role[role].append(u)

    # Hosts with expanded GPUs -> short form, when every such GPU link is alike.
    short: dict[Hashable, int] = {}
    gpu_links = set()
    for h in nodes_by_role["host"]:
        n = G.nodes[h].get("gpus", 0)
        names = [f"{h}/g{j}" for j in range(n)]
        if n and all(G.nodes.get(g, {}).get("role") == "gpu" and list(G.adj[g]) == [h] for g in names):
            short[h] = n
            gpu_links |= {
                (
                    G.edges[h, g]["bandwidth_Bps"],
                    G.edges[h, g]["latency_s"],
                    G.edges[h, g].get("efficiency", 1.0),
                )
                for g in names
            }
    if len(gpu_links) > 1 or any(e != 1.0 for _, _, e in gpu_links):
        short = {}
    covered = {f"{h}/g{j}" for h, n in short.items() for j in range(n)}

    hosts: list = [
        {"name": str(h), "gpus": short[h]} if h in short else str(h) for h in nodes_by_role["host"]
    ]
    gpus = [str(g) for g in nodes_by_role["gpu"] if g not in covered]
    data: dict[str, Any] = {"name": str(G.graph.get("name", Path(path).stem)), "hosts": hosts}
    if gpus:
        data["gpus"] = gpus
    if short:
        bw, lat, _ = next(iter(gpu_links))
        data["gpu_link"] = format_rate(bw)
        data["gpu_latency"] = format_seconds(lat)
    for role, key in (("switch", "switches"), ("router", "routers")):
        if nodes_by_role[role]:
            data[key] = [str(u) for u in nodes_by_role[role]]
    links = []
    for u, v, attrs in G.edges(data=True):
        if u in covered or v in covered:
            continue
        rate, lat, eff = (
            format_rate(attrs["bandwidth_Bps"]),
            attrs.get("latency_s", 0.0),
            attrs.get("efficiency", 1.0),
        )
        if eff != 1.0:
            links.append(
                {"a": str(u), "b": str(v), "rate": rate, "latency": format_seconds(lat), "efficiency": eff}
            )
        else:
            links.append([str(u), str(v), rate] + ([format_seconds(lat)] if lat else []))
    data["links"] = links
    endpoints = [str(e) for e in G.graph.get("endpoints", [])]
    if endpoints != _default_file_endpoints(hosts, gpus):
        data["endpoints"] = endpoints
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))


# --------------------------------------------------------------------------------------------------
# specs


def _balanced_dims(n_routers: int) -> tuple[int, int, int]:
    """3D torus shape x <= y <= z with x*y*z = ``n_routers``: smallest z, then largest x (most cubic)."""
    best = (1, 1, n_routers)
    for x in range(1, round(n_routers ** (1 / 3)) + 2):
        if n_routers % x:
            continue
        for y in range(x, math.isqrt(n_routers // x) + 1):
            z = n_routers // x // y
            if (n_routers // x) % y == 0 and z >= y and (z, -x) < (best[2], -best[0]):
                best = (x, y, z)
    return best


def _parse_dims(value: str, what: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in value.lower().split("x"))
    except ValueError:
        raise UserError(f"{what}: expected dims like 8x8 or 8x8x8, got {value!r}") from None
    return dims


# kind -> (builder, size parameter, {spec alias: builder keyword})
_KINDS: dict[str, tuple[Any, str, dict[str, str]]] = {
    "star": (
        star,
        "n_hosts",
        {"n": "n_hosts", "bandwidth": "bandwidth_Bps", "bw": "bandwidth_Bps", "latency": "latency_s"},
    ),
    "ring": (
        ring,
        "n_hosts",
        {"n": "n_hosts", "bandwidth": "bandwidth_Bps", "bw": "bandwidth_Bps", "latency": "latency_s"},
    ),
    "fat-tree": (
        fat_tree,
        "k",
        {
            "bandwidth": "bandwidth_Bps",
            "bw": "bandwidth_Bps",
            "latency": "latency_s",
            "os": "oversubscription",
        },
    ),
    "torus": (
        torus,
        "dims",
        {
            "hosts": "hosts_per_router",
            "bandwidth": "bandwidth_Bps",
            "bw": "bandwidth_Bps",
            "link": "link_bandwidth_Bps",
            "injection": "injection_bandwidth_Bps",
            "latency": "latency_s",
        },
    ),
    "dragonfly": (
        dragonfly,
        "groups",
        {
            "routers": "routers_per_group",
            "hosts": "hosts_per_router",
            "global": "global_links_per_router",
            "bandwidth": "bandwidth_Bps",
            "bw": "bandwidth_Bps",
            "host_bw": "host_bandwidth_Bps",
            "local_bw": "local_bandwidth_Bps",
            "global_bw": "global_bandwidth_Bps",
            "latency": "latency_s",
        },
    ),
    "nvlink": (
        nvlink_leaf_spine,
        "nodes",
        {
            "gpus": "gpus_per_node",
            "nvlink": "nvlink_bandwidth_Bps",
            "nic": "nic_bandwidth_Bps",
            "bandwidth": "bandwidth_Bps",
            "bw": "bandwidth_Bps",
            "spine_bw": "spine_bandwidth_Bps",
            "latency": "latency_s",
            "nvlink_latency": "nvlink_latency_s",
        },
    ),
}
_KIND_ALIASES = {
    "switch": "star",
    "fattree": "fat-tree",
    "fat_tree": "fat-tree",
    "nvlink-leaf-spine": "nvlink",
    "nvlink_leaf_spine": "nvlink",
}
# A generic bandwidth_Bps means "the network links" of builders that name theirs more precisely.
_GENERIC_BANDWIDTH = {
    "torus": ("link_bandwidth_Bps", "injection_bandwidth_Bps"),
    "dragonfly": ("host_bandwidth_Bps", "local_bandwidth_Bps", "global_bandwidth_Bps"),
    "nvlink": ("nic_bandwidth_Bps",),
}
_BUILDER_KEYWORDS = {"bandwidth_Bps"} | {
    name for builder, _, _ in _KINDS.values() for name in inspect.signature(builder).parameters
}


def _parse_value(kind: str, key: str, value: Any) -> Any:
    what = f"{kind}: {key}"
    if not isinstance(value, str):
        return value
    if key.endswith("_Bps"):
        return parse_rate(value, what)
    if key.endswith("_s"):
        return parse_seconds(value, what)
    if key == "dims":
        return _parse_dims(value, what)
    try:
        return float(value) if key in ("oversubscription", "efficiency") else int(value)
    except ValueError:
        raise UserError(f"{what}: expected a number, got {value!r}") from None


def _size_from_n(kind: str, params: dict[str, Any], n: int) -> Any:
    if kind in ("star", "ring"):
        return n
    if kind == "fat-tree":
        k = 2
        while k**3 // 4 < n:
            k += 2
        return k
    if kind == "torus":
        return _balanced_dims(math.ceil(n / params.get("hosts_per_router", 2)))
    if kind == "dragonfly":
        return math.ceil(n / (params.get("routers_per_group", 4) * params.get("hosts_per_router", 2)))
    return math.ceil(n / params.get("gpus_per_node", 8))  # nvlink


def from_spec(spec: str, n_endpoints: int | None = None, **link_defaults: Any) -> nx.Graph:
    """Build a topology from a short spec or a YAML file path.

    Specs: ``star:n=64``, ``ring:n=16``, ``fat-tree:k=8,oversubscription=2``, ``torus:dims=8x8x8,hosts=2``,
    ``dragonfly:groups=9,routers=4,hosts=2[,global=2]``, ``nvlink:nodes=4,gpus=8[,leaves=8,spines=4]``;
    any builder keyword also works as a key (rates and times with units: ``bandwidth=100gbit,latency=1us``).
    ``link_defaults`` are builder keywords given by the caller; the spec's own values win over them, and a
    generic ``bandwidth_Bps`` sets all network links of builders that name theirs separately. Without a
    size the shape is the smallest that holds ``n_endpoints`` (tori: the most cubic factorisation). When
    ``n_endpoints`` is given, ``endpoints`` is cut to that many (the rest stay as idle hosts) and a topology
    with fewer is an error. ``efficiency=x`` sets every link's efficiency.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"topology: expected a spec like fat-tree:k=8 or a .yaml file, got {spec!r}")
    if n_endpoints is not None:
        n_endpoints = _count(n_endpoints, "n_endpoints")
    text = spec.strip()
    efficiency = link_defaults.pop("efficiency", None)
    kind_text, _, param_text = text.partition(":")
    kind = _KIND_ALIASES.get(kind_text.strip().lower(), kind_text.strip().lower())
    unknown_defaults = set(link_defaults) - _BUILDER_KEYWORDS
    if unknown_defaults:
        raise UserError(f"topology {text!r}: unknown link default {sorted(unknown_defaults)[0]!r}")
    if text.endswith((".yaml", ".yml")) or kind not in _KINDS and os.path.exists(text):
        G = load_topology(text, latency_s=link_defaults.get("latency_s", 0.0))
    else:
        if kind not in _KINDS:
            known = ", ".join(_KINDS)
            raise UserError(
                f"topology: unknown kind {kind_text.strip()!r} in {text!r} (known: {known}, or a .yaml file)"
            )
        builder, size_key, aliases = _KINDS[kind]
        accepted = set(inspect.signature(builder).parameters)
        params: dict[str, Any] = {}
        for key, value in link_defaults.items():
            # Defaults from a caller that does not know the kind: keep those this builder takes.
            if key in accepted or key == "bandwidth_Bps":
                params[key] = _parse_value(kind, key, value)
        n_spec = None
        for item in filter(None, (p.strip() for p in param_text.split(","))):
            key, eq, value = (s.strip() for s in item.partition("="))
            if not eq or not key or not value:
                raise UserError(f"topology {text!r}: expected key=value, got {item!r}")
            if key == "n" and kind not in ("star", "ring"):
                n_spec = _count(_parse_value(kind, "n", value), f"{kind}: n")
                continue
            if key == "efficiency":
                efficiency = _parse_value(kind, key, value)
                continue
            name = aliases.get(key, key)
            if name not in accepted and name != "bandwidth_Bps":
                known = ", ".join(sorted(set(aliases) | accepted))
                raise UserError(f"topology {text!r}: unknown parameter {key!r} for {kind} (known: {known})")
            params[name] = _parse_value(kind, name, value)
        if "bandwidth_Bps" in params and "bandwidth_Bps" not in accepted:
            generic = params.pop("bandwidth_Bps")
            for name in _GENERIC_BANDWIDTH[kind]:
                params.setdefault(name, generic)
        unknown = set(params) - accepted
        if unknown:
            raise UserError(f"topology {text!r}: unknown parameter {sorted(unknown)[0]!r} for {kind}")
        if size_key not in params:
            n = n_spec or n_endpoints
            if n is None:
                raise UserError(f"topology {text!r}: give the size ({size_key}) or a number of endpoints")
            params[size_key] = _size_from_n(kind, params, n)
        G = builder(**params)
        if n_spec is not None and n_endpoints is None:
            n_endpoints = n_spec
    if efficiency is not None:
        eff = float(efficiency)
        if not 0 < eff <= 1:
            raise UserError(f"topology {text!r}: efficiency must be in (0, 1], got {efficiency!r}")
        nx.set_edge_attributes(G, eff, "efficiency")
    if n_endpoints is not None:
        have = len(G.graph["endpoints"])
        if have < n_endpoints:
            raise UserError(f"topology {G.graph['name']!r} has {have} endpoints, {n_endpoints} needed")
        G.graph["endpoints"] = G.graph["endpoints"][:n_endpoints]
    return G


# --------------------------------------------------------------------------------------------------
# documentation helpers


def describe(G: nx.Graph) -> list[dict]:
    """One row per link (a, b, rate, latency) in unit strings, for a README table."""
    return [
        {
            "a": str(u),
            "b": str(v),
            "rate": format_rate(d["bandwidth_Bps"], exact=False),
            "latency": format_seconds(d.get("latency_s", 0.0), exact=False),
        }
        for u, v, d in G.edges(data=True)
    ]


_ROLE_COLORS = {"host": "#4C72B0", "gpu": "#55A868", "switch": "#DD8452", "router": "#C44E52"}


def _bfs_layers(G: nx.Graph, sources: list) -> Iterable[tuple[Hashable, int]]:
    for depth, nodes in enumerate(nx.bfs_layers(G, sources)):
        for u in nodes:
            yield u, depth


def _layout(G: nx.Graph) -> tuple[dict, dict]:
    """Positions and layers: torus routers on their grid (z slabs side by side), else layers above hosts."""
    if G.graph.get("dims") and all(
        G.nodes[u].get("coord") is not None for u, r in G.nodes(data="role") if r == "router"
    ):
        dims = tuple(G.graph["dims"]) + (1,)
        pos = {}
        for u, c in G.nodes(data="coord"):
            if c is not None:
                pos[u] = ((c[2] if len(c) > 2 else 0) * (dims[0] + 1) + c[0], c[1])
        for u in G:
            if u not in pos:
                r = next((v for v in G.adj[u] if v in pos), None)
                if r is None:
                    pos[u] = (0.0, -1.0)
                    continue
                mates = sorted((v for v in G.adj[r] if v not in pos or v == u), key=str)
                angle = 2 * math.pi * (mates.index(u) + 0.5) / max(len(mates), 1) + math.pi / 4
                pos[u] = (pos[r][0] + 0.3 * math.cos(angle), pos[r][1] + 0.3 * math.sin(angle))
        return pos, {}
    ends = list(G.graph.get("endpoints") or [u for u, r in G.nodes(data="role") if r in ("host", "gpu")])
    ends += [u for u, r in G.nodes(data="role") if r in ("host", "gpu") and u not in set(ends)]
    layer = dict(_bfs_layers(G, ends or list(G)[:1]))
    for u in G:
        layer.setdefault(u, 0)
        if G.nodes[u].get("role") not in ("host", "gpu") and layer[u] == 0:
            layer[u] = 1
    if max(layer.values(), default=0) == 0:  # direct-connect (ring): a circle
        return nx.circular_layout(G), layer
    pos = {}
    rows: dict[int, list] = {}
    for u in G:
        rows.setdefault(layer[u], []).append(u)
    rows[0] = [u for u in ends if layer[u] == 0] + [u for u in rows.get(0, []) if u not in set(ends)]
    xs: dict = {}
    for y in sorted(rows):
        row = rows[y]
        if y > 0:  # barycentre of neighbours already placed keeps trees uncrossed

            def bary(u: Hashable) -> float:
                below = [xs[v] for v in G.adj[u] if v in xs]
                return sum(below) / len(below) if below else 0.5

            row = sorted(row, key=bary)
        for i, u in enumerate(row):
            xs[u] = (i + 0.5) / len(row)
            pos[u] = (xs[u], float(y))
    return pos, layer


def draw(G: nx.Graph, path: str | os.PathLike, title: str | None = None) -> None:
    """Picture of ``G`` for docs: roles coloured, link width by log bandwidth; written with Agg (no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    pos, layer = _layout(G)
    n = G.number_of_nodes()
    fig = Figure(
        figsize=(
            min(24, 4 + 0.18 * n**0.9),
            min(14, 3 + 0.06 * n**0.8 + 1.2 * (max(layer.values(), default=1))),
        )
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    bws = [d["bandwidth_Bps"] for _, _, d in G.edges(data=True)]
    lo, hi = (math.log(min(bws)), math.log(max(bws))) if bws else (0.0, 0.0)

    def width(bw: float) -> float:
        return 0.6 + (2.4 * (math.log(bw) - lo) / (hi - lo) if hi > lo else 1.0)

    straight, widths = [], []
    for u, v, d in G.edges(data=True):
        (x1, y1), (x2, y2) = pos[u], pos[v]
        same_row = layer and layer.get(u) == layer.get(v) and layer.get(u, 0) > 0
        wrap = not layer and math.hypot(x2 - x1, y2 - y1) > 1.5  # torus wraparound
        if same_row or wrap:  # arc, so it does not hide the links it would run along
            bulge = (0.15 + 0.5 * abs(x2 - x1)) if same_row else 0.6
            mid = (
                (x1 + x2) / 2 + (bulge if wrap and x1 == x2 else 0),
                (y1 + y2) / 2 + (bulge if y1 == y2 else 0),
            )
            verts = [(x1, y1), mid, (x2, y2)]
            ax.add_patch(
                PathPatch(
                    MplPath(verts, [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3]),
                    fill=False,
                    lw=width(d["bandwidth_Bps"]),
                    ec="#888888",
                    alpha=0.6,
                    zorder=1,
                )
            )
        else:
            straight.append([(x1, y1), (x2, y2)])
            widths.append(width(d["bandwidth_Bps"]))
    ax.add_collection(LineCollection(straight, linewidths=widths, colors="#888888", alpha=0.7, zorder=1))
    size = max(12.0, 260.0 / max(1.0, n / 12) ** 0.7)
    present = []
    for role, color in _ROLE_COLORS.items():
        members = [u for u, r in G.nodes(data="role") if r == role]
        if members:
            present.append(role)
            ax.scatter(
                [pos[u][0] for u in members],
                [pos[u][1] for u in members],
                s=size,
                c=color,
                edgecolors="white",
                linewidths=0.8,
                zorder=2,
            )
    if n <= 48:
        for u, (x, y) in pos.items():
            ax.annotate(
                str(u),
                (x, y),
                xytext=(0, -11 if G.nodes[u].get("role") in ("host", "gpu") else 9),
                textcoords="offset points",
                ha="center",
                va="center",
                fontsize=7,
                zorder=3,
            )
    handles = [Line2D([], [], marker="o", ls="", color=_ROLE_COLORS[r], label=r) for r in present]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    ax.set_title(title or str(G.graph.get("name", "")), fontsize=10)
    ax.autoscale_view()
    ax.margins(0.08)
    fig.savefig(path, dpi=130, bbox_inches="tight")
