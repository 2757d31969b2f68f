"""Topology generators: pure functions returning ``networkx`` graphs (the contract is in ``firesim.topology``).

A new topology is one function here (and, to be reachable from ``--topology`` spec strings, a row in
``firesim.topology.spec``); nothing else changes. Each counts its nodes and links first and refuses, before
building anything, a graph beyond ``max_nodes`` (``firesim.limits``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import networkx as nx

from firesim.errors import UserError
from firesim.limits import MAX_NODES, check_topology_size
from firesim.units import parse_rate, parse_seconds, plain_number

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


def _set_endpoints(G: nx.Graph, endpoints: Iterable[Hashable]) -> nx.Graph:
    G.graph["endpoints"] = list(endpoints)
    return G



def star(
    n_hosts: int, bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps, latency_s: float = DEFAULT_LATENCY_s, *,
    max_nodes: int = MAX_NODES,
) -> nx.Graph:
    """``n_hosts`` hosts on one non-blocking switch ``s0``: the only contention is at the host links."""
    n_hosts = _count(n_hosts, "star: n_hosts")
    check_topology_size(n_hosts + 1, n_hosts, f"star of {n_hosts} hosts", max_nodes)
    bw, lat = _rate(bandwidth_Bps, "star: bandwidth_Bps"), _seconds(latency_s, "star: latency_s")
    G = _new_graph(f"star-{n_hosts}")
    hosts = [f"h{i}" for i in range(n_hosts)]
    G.add_nodes_from(hosts, role="host", layer=0)
    G.add_node("s0", role="switch", layer=1)
    for h in hosts:
        _link(G, h, "s0", bw, lat)
    return _set_endpoints(G, hosts)


def ring(
    n_hosts: int, bandwidth_Bps: float = DEFAULT_BANDWIDTH_Bps, latency_s: float = DEFAULT_LATENCY_s, *,
    max_nodes: int = MAX_NODES,
) -> nx.Graph:
    """Hosts cabled in a cycle with no switch; hosts relay for each other (two hosts share one link)."""
    n_hosts = _count(n_hosts, "ring: n_hosts")
    check_topology_size(n_hosts, n_hosts, f"ring of {n_hosts} hosts", max_nodes)
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
    *,
    max_nodes: int = MAX_NODES,
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
    check_topology_size(k**3 // 4 + 5 * k * k // 4, 3 * k**3 // 4, f"fat-tree k={k}", max_nodes)
    bw, lat = _rate(bandwidth_Bps, "fat-tree: bandwidth_Bps"), _seconds(latency_s, "fat-tree: latency_s")
    if (
        isinstance(oversubscription, bool)
        or not isinstance(oversubscription, (int, float))
        or not oversubscription >= 1
    ):
        raise UserError(f"fat-tree: oversubscription must be a number >= 1, got {oversubscription!r}")
    up_bw = bw / float(oversubscription)
    half = k // 2
    G = _new_graph(f"fat-tree-k{k}" + (f"-os{plain_number(oversubscription)}" if oversubscription != 1 else ""))
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
    *,
    max_nodes: int = MAX_NODES,
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
    routers = math.prod(dims)
    check_topology_size(routers * (1 + hpr), routers * (hpr + len(dims)), "torus " + "x".join(map(str, dims)),
                        max_nodes)
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
    max_nodes: int = MAX_NODES,
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
    check_topology_size(g * a * (1 + p), g * a * p + g * a * (a - 1) // 2 + g * a * h // 2,
                        f"dragonfly of {g} groups", max_nodes)
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
    max_nodes: int = MAX_NODES,
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
    check_topology_size(n * (2 * gpn + 1) + n_leaves + n_spines, 3 * n * gpn + n_leaves * n_spines,
                        f"nvlink leaf-spine of {n} nodes x {gpn} GPUs", max_nodes)
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
