"""Topology builders, routing and topology files: counts against closed forms, routes against BFS."""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firesim import topology as topo
from firesim.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "topologies"
EXAMPLES = ROOT / "examples" / "topologies"


def _switches(G):
    return [u for u, r in G.nodes(data="role") if r in ("switch", "router")]


def _check_contract(G):
    assert isinstance(G, nx.Graph) and not G.is_directed() and not G.is_multigraph()
    assert G.graph["name"] and G.graph["routing"] in ("shortest", "dimension_order")
    for _, role in G.nodes(data="role"):
        assert role in topo.ROLES
    for _, _, d in G.edges(data=True):
        assert isinstance(d["bandwidth_Bps"], float) and d["bandwidth_Bps"] > 0
        assert isinstance(d["latency_s"], float) and d["latency_s"] >= 0
        assert 0 < d["efficiency"] <= 1
    eps = G.graph["endpoints"]
    assert len(eps) == len(set(eps)) > 0
    assert all(G.nodes[e]["role"] in ("host", "gpu") for e in eps)
    assert nx.is_connected(G)


# ------------------------------------------------------------------------------------------ builders


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_fat_tree_counts(k):
    G = topo.fat_tree(k)
    _check_contract(G)
    assert len(G.graph["endpoints"]) == k**3 // 4
    assert len(_switches(G)) == 5 * k * k // 4
    assert G.number_of_edges() == 3 * k**3 // 4
    # every switch has k ports, cores included
    assert all(G.degree(s) == k for s in _switches(G))


def test_fat_tree_oversubscription_divides_uplinks():
    G = topo.fat_tree(4, bandwidth_Bps=100.0, oversubscription=4)
    assert G.edges["h0", "e0_0"]["bandwidth_Bps"] == 100.0
    assert G.edges["e0_0", "a0_0"]["bandwidth_Bps"] == 25.0
    assert G.edges["a0_0", "c0"]["bandwidth_Bps"] == 25.0
    with pytest.raises(UserError):
        topo.fat_tree(4, oversubscription=0.5)
    with pytest.raises(UserError, match="even"):
        topo.fat_tree(5)


def test_star_and_ring_counts():
    S = topo.star(7, bandwidth_Bps=1e9, latency_s=1e-6)
    _check_contract(S)
    assert (S.number_of_nodes(), S.number_of_edges(), len(_switches(S))) == (8, 7, 1)
    R = topo.ring(6)
    _check_contract(R)
    assert (R.number_of_nodes(), R.number_of_edges()) == (6, 6)
    assert all(R.degree(u) == 2 for u in R)
    assert topo.ring(2).number_of_edges() == 1
    assert topo.route(R, "h0", "h3") in (("h0", "h1", "h2", "h3"), ("h0", "h5", "h4", "h3"))


@pytest.mark.parametrize(
    "dims,hpr", [((4, 4), 2), ((3, 5), 1), ((4, 4, 4), 2), ((2, 3, 1), 2), ((8, 8, 8), 2)]
)
def test_torus_counts(dims, hpr):
    G = topo.torus(dims, hosts_per_router=hpr)
    _check_contract(G)
    n_routers = math.prod(dims)
    ring_links = sum(n_routers if d > 2 else n_routers // 2 if d == 2 else 0 for d in dims)
    assert len(G.graph["endpoints"]) == n_routers * hpr
    assert len(_switches(G)) == n_routers
    assert G.number_of_edges() == n_routers * hpr + ring_links
    assert G.graph["routing"] == "dimension_order" and G.graph["dims"] == dims


@pytest.mark.parametrize("g,a,p,h", [(9, 4, 2, 2), (5, 4, 1, 1), (3, 2, 2, None), (1, 3, 2, None)])
def test_dragonfly_counts(g, a, p, h):
    G = topo.dragonfly(g, a, p, h)
    _check_contract(G)
    routers = _switches(G)
    assert len(G.graph["endpoints"]) == g * a * p and len(routers) == g * a
    local = g * a * (a - 1) // 2
    global_ = sum(
        1 for u, v in G.edges() if u in routers and v in routers and u[: u.index("r")] != v[: v.index("r")]
    )
    assert G.number_of_edges() == g * a * p + local + global_
    # every pair of groups is joined, so hosts in different groups are at most local-global-local apart
    assert global_ >= g * (g - 1) // 2
    assert all(len(topo.route(G, "h0", e)) - 1 <= 5 for e in G.graph["endpoints"])
    if (g, a, h) == (9, 4, 2):  # balanced: one global link per pair of groups, 2 per router
        assert global_ == 36
        assert all(
            sum(
                1
                for v in G.adj[r]
                if not v.startswith(r[: r.index("r") + 1]) and G.nodes[v]["role"] == "router"
            )
            == 2
            for r in routers
        )
    with pytest.raises(UserError, match="global links"):
        topo.dragonfly(10, 2, 1, 2)


def test_nvlink_leaf_spine_counts_and_paths():
    n, gpn, leaves, spines = 4, 8, 8, 4
    G = topo.nvlink_leaf_spine(n, gpn, leaves=leaves, spines=spines)
    _check_contract(G)
    assert G.graph["endpoints"][:2] == ["n0/g0", "n0/g1"] and len(G.graph["endpoints"]) == n * gpn
    assert len(_switches(G)) == n * (1 + gpn) + leaves + spines
    assert G.number_of_edges() == 3 * n * gpn + leaves * spines
    assert topo.route(G, "n0/g0", "n0/g5") == ("n0/g0", "n0/nvswitch", "n0/g5")
    assert len(topo.route(G, "n0/g0", "n3/g0")) - 1 == 4  # same rail: one leaf
    assert len(topo.route(G, "n0/g0", "n3/g5")) - 1 == 6  # other rail: through a spine
    # non-blocking by default: a leaf's uplinks carry all its NIC ports
    up = sum(G.edges["leaf0", f"spine{s}"]["bandwidth_Bps"] for s in range(spines))
    down = sum(d["bandwidth_Bps"] for _, v, d in G.edges("leaf0", data=True) if not v.startswith("spine"))
    assert up == pytest.approx(down)


def test_nvlink_gpus_never_relay_even_when_leaves_are_shared():
    G = topo.nvlink_leaf_spine(3, 4, leaves=2, spines=1)
    R = topo.Routes(G)
    for s in G.graph["endpoints"]:
        for d in G.graph["endpoints"]:
            path = R.path(s, d)
            assert all(G.nodes[u]["role"] != "gpu" for u in path[1:-1])
            if s.split("/")[0] == d.split("/")[0] and s != d:
                assert len(path) == 3  # NVLink, never the fabric


# ------------------------------------------------------------------------------------------ routing


def test_fat_tree_hop_counts():
    G = topo.fat_tree(4)
    hops = lambda a, b: len(topo.route(G, a, b)) - 1  # noqa: E731
    assert hops("h0", "h0") == 0
    assert hops("h0", "h1") == 2  # same edge switch
    assert hops("h0", "h2") == 4  # same pod
    assert hops("h0", "h15") == 6  # across pods
    assert topo.route(G, "h0", "h1") == ("h0", "e0_0", "h1")


def test_route_links_are_directed_hops():
    G = topo.fat_tree(4)
    path = topo.route(G, "h15", "h0", flow_key=3)
    links = topo.route_links(G, path)
    assert links[0][0] == "h15" and links[-1][1] == "h0" and len(links) == 6
    assert all(G.has_edge(u, v) for u, v in links)
    assert topo.Routes(G).links("h15", "h0", 3) == links
    with pytest.raises(nx.NetworkXError):
        topo.route_links(G, ["h0", "h1"])
    with pytest.raises(nx.NodeNotFound):
        topo.route(G, "h0", "nowhere")


def _coord_steps(G, path):
    coords = [G.nodes[u]["coord"] for u in path if G.nodes[u]["role"] == "router"]
    return coords, [next(d for d in range(len(a)) if a[d] != b[d]) for a, b in zip(coords, coords[1:])]


def test_torus_dimension_order_and_wraparound():
    G = topo.torus((8, 8, 8), hosts_per_router=2)
    router = {c: u for u, c in G.nodes(data="coord") if c is not None}
    host_at = {G.nodes[h]["router"]: h for h in reversed(G.graph["endpoints"])}  # first host per router
    src, dst = host_at[router[(1, 2, 3)]], host_at[router[(7, 5, 3)]]
    path = topo.route(G, src, dst)
    coords, dims_used = _coord_steps(G, path)
    # x goes 1 -> 0 -> 7 (wraparound, 2 hops, not 6), then y 2 -> 3 -> 4 -> 5, z unchanged
    assert coords == [(1, 2, 3), (0, 2, 3), (7, 2, 3), (7, 3, 3), (7, 4, 3), (7, 5, 3)]
    assert dims_used == sorted(dims_used)
    assert path[0] == src and path[-1] == dst
    # exactly half way round: ties go toward +
    coords, _ = _coord_steps(G, topo.route(G, host_at[router[(0, 0, 0)]], host_at[router[(0, 0, 4)]]))
    assert [c[2] for c in coords] == [0, 1, 2, 3, 4]
    coords, _ = _coord_steps(G, topo.route(G, host_at[router[(6, 0, 0)]], host_at[router[(2, 0, 0)]]))
    assert [c[0] for c in coords] == [6, 7, 0, 1, 2]
    # two hosts on one router: host, router, host
    assert topo.route(G, "h0", "h1") == ("h0", router[(0, 0, 0)], "h1")
    # every pair on a small torus: x, then y, then z, and minimal
    T = topo.torus((4, 3), hosts_per_router=1)
    for s in T.graph["endpoints"]:
        for d in T.graph["endpoints"]:
            path = topo.route(T, s, d)
            _, used = _coord_steps(T, path)
            assert used == sorted(used)
            assert len(path) - 1 == nx.shortest_path_length(T, s, d)


def test_ecmp_spreads_over_core_paths_evenly_and_deterministically():
    k = 8
    G = topo.fat_tree(k)
    R = topo.Routes(G)
    n_flows = 32 * k * k // 4
    cores = [R.path("h0", "h127", f)[3] for f in range(n_flows)]
    counts = collections.Counter(cores)
    assert set(counts) == {f"c{i}" for i in range(k * k // 4)}
    expected = n_flows / (k * k // 4)
    assert all(0.6 * expected <= c <= 1.4 * expected for c in counts.values())
    # the same in a fresh router and through route()
    assert cores == [topo.Routes(G).path("h0", "h127", f)[3] for f in range(n_flows)]
    assert cores[:50] == [topo.route(G, "h0", "h127", f)[3] for f in range(50)]
    # different (src, dst) pairs with flow_key 0 also spread over the cores
    pairs = collections.Counter(R.path(f"h{i}", f"h{127 - i}")[3] for i in range(64))
    assert len(pairs) >= k * k // 4 - 2


def test_ecmp_is_stable_across_processes():
    code = (
        "from firesim import topology as t; G = t.fat_tree(8); R = t.Routes(G);"
        "print([R.path('h3', 'h100', f)[2:4] for f in range(20)])"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    R = topo.Routes(topo.fat_tree(8))
    assert out.strip() == str([R.path("h3", "h100", f)[2:4] for f in range(20)])


def test_routes_share_one_bfs_per_edge_switch():
    G = topo.fat_tree(8)
    R = topo.Routes(G)
    for d in G.graph["endpoints"]:
        R.path("h0", d)
    assert len(R._dist) == 8 * 4  # edge switches, not 128 hosts
    assert topo.routes(G) is topo.routes(G)


# small graphs of every kind for the property test
_GRAPHS = [
    topo.star(5),
    topo.ring(7),
    topo.ring(2),
    topo.fat_tree(2),
    topo.fat_tree(4),
    topo.fat_tree(6, oversubscription=3),
    topo.torus((4, 4), hosts_per_router=1),
    topo.torus((3, 2, 4), hosts_per_router=2),
    topo.dragonfly(5, 2, 2),
    topo.dragonfly(4, 3, 1, 3),
    topo.nvlink_leaf_spine(3, 4),
    topo.nvlink_leaf_spine(2, 4, leaves=3, spines=2),
    topo.load_topology(DATA / "gpus-2x4.yaml"),
    topo.load_topology(DATA / "mixed.yaml"),
    topo.load_topology(EXAMPLES / "two-level-4.yaml"),
]


def _min_hops(G, src, dst):
    """Minimum hops when GPUs other than the two ends relay nothing."""
    relays = [u for u, r in G.nodes(data="role") if r != "gpu"]
    return nx.shortest_path_length(G.subgraph([*relays, src, dst]), src, dst)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_route_is_a_minimal_simple_path(data):
    G = data.draw(st.sampled_from(_GRAPHS))
    nodes = st.sampled_from(G.graph["endpoints"]) | st.sampled_from(list(G))
    src, dst = data.draw(nodes), data.draw(nodes)
    flow_key = data.draw(st.integers(0, 2**40) | st.text(max_size=4))
    try:
        best = _min_hops(G, src, dst)
    except nx.NetworkXNoPath:  # e.g. an NVSwitch seen from another node: only its GPUs reach it
        with pytest.raises(nx.NetworkXNoPath):
            topo.route(G, src, dst, flow_key)
        return
    path = topo.route(G, src, dst, flow_key)
    assert path[0] == src and path[-1] == dst
    assert len(set(path)) == len(path)
    assert all(G.has_edge(u, v) for u, v in zip(path, path[1:]))
    assert all(G.nodes[u]["role"] != "gpu" for u in path[1:-1])
    assert len(path) - 1 == best
    assert topo.route(G, src, dst, flow_key) == path


# ------------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    "spec,n_endpoints,name,n_eps",
    [
        ("star:n=64", None, "star-64", 64),
        ("fat-tree:k=8", None, "fat-tree-k8", 128),
        ("fat-tree:k=8,oversubscription=2", None, "fat-tree-k8-os2", 128),
        ("torus:dims=8x8x8", None, "torus-8x8x8", 1024),
        ("torus:dims=4x4,hosts=1", None, "torus-4x4", 16),
        ("dragonfly:groups=9,routers=4,hosts=2", None, "dragonfly-g9a4p2h2", 72),
        ("ring:n=16", None, "ring-16", 16),
        ("nvlink:nodes=4,gpus=8", None, "nvlink-4x8-leaf8-spine4", 32),
        ("star", 12, "star-12", 12),
        ("ring", 5, "ring-5", 5),
        ("fat-tree", 100, "fat-tree-k8", 100),
        ("torus", 128, "torus-4x4x4", 128),
        ("dragonfly", 20, "dragonfly-g3a4p2h1", 20),
        ("nvlink:gpus=4", 10, "nvlink-3x4-leaf4-spine2", 10),
        ("fat-tree:k=4", 8, "fat-tree-k4", 8),
        ("FAT_TREE: k = 4 , n=5", None, "fat-tree-k4", 5),
    ],
)
def test_from_spec(spec, n_endpoints, name, n_eps):
    G = topo.from_spec(spec, n_endpoints)
    assert G.graph["name"] == name
    assert len(G.graph["endpoints"]) == n_eps


def test_from_spec_units_and_link_defaults():
    G = topo.from_spec("star:n=4,bandwidth=1gbit,latency=50us,efficiency=0.9")
    d = G.edges["h0", "s0"]
    assert d["bandwidth_Bps"] == 1.25e8 and d["latency_s"] == pytest.approx(50e-6) and d["efficiency"] == 0.9
    # caller defaults apply, the spec wins, and a generic bandwidth reaches builders that name theirs
    G = topo.from_spec("fat-tree:k=4,latency=2us", bandwidth_Bps=1e9, latency_s=1e-6)
    assert G.edges["h0", "e0_0"]["bandwidth_Bps"] == 1e9 and G.edges["h0", "e0_0"]["latency_s"] == 2e-6
    T = topo.from_spec("torus:dims=2x2", bandwidth_Bps="10GB/s", nvlink_bandwidth_Bps=1.0)
    assert {d["bandwidth_Bps"] for *_, d in T.edges(data=True)} == {1e10}
    N = topo.from_spec("nvlink:nodes=2,gpus=2,nvlink=600GB/s", bandwidth_Bps=5e9)
    assert (
        N.edges["n0/g0", "n0/nvswitch"]["bandwidth_Bps"] == 6e11
        and N.edges["n0/g0", "n0/nic0"]["bandwidth_Bps"] == 5e9
    )
    Y = topo.from_spec(str(EXAMPLES / "star4-slow.yaml"), 4, latency_s=1e-4, bandwidth_Bps=1.0)
    assert Y.edges["h3", "s0"]["bandwidth_Bps"] == 25e6 and Y.edges["h3", "s0"]["latency_s"] == 1e-4


@pytest.mark.parametrize(
    "spec,n_endpoints,match",
    [
        ("mesh:n=4", None, "unknown kind 'mesh'"),
        ("fat-tree:k=8,colour=red", None, "unknown parameter 'colour'"),
        ("fat-tree:k=eight", None, "expected a number"),
        ("fat-tree:k=7", None, "even"),
        ("fat-tree:k", None, "key=value"),
        ("torus:dims=8by8", None, "dims like"),
        ("torus:dims=8x8x8x8", None, "2 or 3"),
        ("star:n=4,bandwidth=fast", None, "cannot parse 'fast'"),
        ("star:n=4", 8, "has 4 endpoints, 8 needed"),
        ("star", None, "number of endpoints"),
        ("star:n=0", None, "n_hosts"),
        ("star:n=4,efficiency=2", None, "efficiency"),
        ("", None, "expected a spec"),
        ("missing.yaml", None, "no such file"),
    ],
)
def test_from_spec_errors_are_one_line(spec, n_endpoints, match):
    with pytest.raises(UserError, match=match) as e:
        topo.from_spec(spec, n_endpoints)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown link default"):
        topo.from_spec("star:n=2", colour_Bps=1)


# ------------------------------------------------------------------------------------------ files


def _same_graph(A, B):
    assert A.graph["endpoints"] == B.graph["endpoints"]
    assert dict(A.nodes(data="role")) == dict(B.nodes(data="role"))
    assert {frozenset(e) for e in A.edges()} == {frozenset(e) for e in B.edges()}
    for u, v, d in A.edges(data=True):
        for key in ("bandwidth_Bps", "latency_s", "efficiency"):
            assert B.edges[u, v][key] == d[key], (u, v, key)


def test_examples_are_small_enough_to_emulate():
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {f.name for f in files} >= {"star4-1g.yaml", "star4-slow.yaml", "two-level-4.yaml"}
    for f in files:
        G = topo.load_topology(f)
        _check_contract(G)
        hosts = G.graph["endpoints"]
        assert len(hosts) <= 4
        host_links = [G.edges[h, v]["bandwidth_Bps"] for h in hosts for v in G.adj[h]]
        assert min(host_links) >= parse_rate("200mbit")
        assert sum(d["bandwidth_Bps"] for *_, d in G.edges(data=True)) <= parse_rate("4gbit")
    two = topo.load_topology(EXAMPLES / "two-level-4.yaml")
    path = topo.route(two, "h0", "h3")
    assert path == ("h0", "s0", "spine", "s1", "h3")
    assert min(two.edges[e]["bandwidth_Bps"] for e in topo.route_links(two, path)) == parse_rate("300mbit")


def test_link_bytes_follow_the_routes():
    """A ring on the two-level tree: each rank sends 2(p-1) chunks of n/p to the next; the two pairs that cross
    leaves load both uplinks, one per direction. Placing ranks elsewhere moves the bytes with them."""
    from firesim.plans import build

    G = topo.load_topology(EXAMPLES / "two-level-4.yaml")
    plan = build("ring", 4, 1 << 20)
    per_pair = 6 * (1 << 18)
    crossing = {("s0", "spine"), ("spine", "s1"), ("s1", "spine"), ("spine", "s0")}
    expected = {hop: per_pair for hop in crossing}
    for a, b in (("h0", "h1"), ("h1", "h2"), ("h2", "h3"), ("h3", "h0")):
        for hop in (topo.route_links(G, topo.route(G, a, b))):
            if hop not in crossing:
                expected[hop] = per_pair
    assert topo.link_bytes(plan, G) == expected
    same_leaf = topo.link_bytes(plan, G, placement=["h0", "h1", "h1", "h0"])
    assert set(same_leaf) == {("h0", "s0"), ("s0", "h1"), ("h1", "s0"), ("s0", "h0")}  # h1 -> h1 uses no link
    assert topo.route_capacity_Bps(G, "h0", "h3") == parse_rate("300mbit")
    assert topo.route_capacity_Bps(G, "h0", "h0") == math.inf
    with pytest.raises(UserError, match="placement"):
        topo.link_bytes(plan, G, placement=["h0"])


def parse_rate(text):
    from firesim.units import parse_rate as parse

    return parse(text)


def test_multi_gpu_hosts_expand_to_gpu_endpoints():
    G = topo.load_topology(DATA / "gpus-2x4.yaml")
    _check_contract(G)
    assert G.graph["endpoints"] == [f"h{i}/g{j}" for i in range(2) for j in range(4)]
    assert G.nodes["h0"]["gpus"] == 4 and G.nodes["h0/g2"]["role"] == "gpu"
    assert G.edges["h0", "h0/g1"]["bandwidth_Bps"] == 3e11 and G.edges["h0", "h0/g1"]["latency_s"] == 1e-6
    assert G.edges["h1", "s0"]["efficiency"] == 0.9
    assert topo.route(G, "h0/g0", "h0/g3") == ("h0/g0", "h0", "h0/g3")
    assert topo.route(G, "h0/g0", "h1/g3") == ("h0/g0", "h0", "s0", "h1", "h1/g3")
    M = topo.load_topology(DATA / "mixed.yaml")
    assert M.graph["endpoints"] == ["h0", "big/g0", "big/g1", "7"] and M.nodes["r0"]["role"] == "router"


@pytest.mark.parametrize(
    "graph",
    [
        *[
            pytest.param(lambda f=f: topo.load_topology(f), id=f.name)
            for f in sorted(EXAMPLES.glob("*.yaml"))
        ],
        pytest.param(lambda: topo.load_topology(DATA / "gpus-2x4.yaml"), id="gpus-2x4"),
        pytest.param(lambda: topo.load_topology(DATA / "mixed.yaml"), id="mixed"),
        pytest.param(lambda: topo.fat_tree(4, oversubscription=3), id="fat-tree"),
        pytest.param(lambda: topo.torus((3, 2, 2)), id="torus"),
        pytest.param(lambda: topo.dragonfly(5, 2, 2), id="dragonfly"),
        pytest.param(lambda: topo.nvlink_leaf_spine(2, 4), id="nvlink"),
        pytest.param(lambda: topo.from_spec("star:n=8,efficiency=0.5", 5), id="trimmed-endpoints"),
    ],
)
def test_yaml_round_trip(graph, tmp_path):
    G = graph()
    topo.dump_topology(G, tmp_path / "t.yaml")
    H = topo.load_topology(tmp_path / "t.yaml")
    _same_graph(G, H)
    assert H.graph["name"] == G.graph["name"]
    topo.dump_topology(H, tmp_path / "u.yaml")
    assert (tmp_path / "u.yaml").read_text() == (tmp_path / "t.yaml").read_text()


def test_dump_uses_short_gpu_form(tmp_path):
    topo.dump_topology(topo.load_topology(DATA / "gpus-2x4.yaml"), tmp_path / "g.yaml")
    text = (tmp_path / "g.yaml").read_text()
    assert "gpus: 4" in text and "gpu_link: 300GB/s" in text and "endpoints" not in text


@pytest.mark.parametrize(
    "name,match",
    [
        ("bad-unknown-node", r"links\[1\] h1-s9: unknown node 's9'"),
        ("bad-duplicate-name", "duplicate node name 'h1'"),
        ("bad-disconnected", "host 'h2' has no links"),
        ("bad-zero-rate", "positive rate"),
        ("bad-negative-rate", "must be a positive rate, got '-1gbit'"),
        ("bad-unparsable-rate", "cannot parse 'fast'"),
        ("bad-syntax", "malformed YAML at line 2"),
        ("bad-unknown-key", "unknown key 'switchs'"),
        ("bad-duplicate-link", "duplicate link"),
        ("bad-link-arity", r"links\[0\]: expected \[a, b, rate\]"),
        ("bad-gpus-no-link", "need gpu_link"),
        ("bad-not-mapping", "expected a mapping"),
    ],
)
def test_invalid_files_give_one_line_errors(name, match):
    path = DATA / f"{name}.yaml"
    with pytest.raises(UserError, match=match) as e:
        topo.load_topology(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))


def test_invalid_inline_cases(tmp_path):
    cases = {
        "hosts: [h0, h1]\nlinks: [[h0, h1, -5]]\n": "positive rate, got '-5'",
        "hosts: [h0, h1, h2]\nswitches: [s0, s1]\nlinks: [[h0, s0, 1gbit], [h1, s0, 1gbit], [h2, s1, 1gbit]]\n": "host 'h2' is not connected to 'h0'",
        "hosts: [h0, h1]\nlinks: [[h0, h0, 1gbit]]\n": "two different nodes",
        "hosts: [h0, h1]\nlinks: [{a: h0, b: h1, rate: 1gbit, efficiency: 1.5}]\n": "efficiency",
        "hosts: [h0, h1]\nlinks: [[h0, h1, 1gbit, soon]]\n": "cannot parse 'soon'",
        "hosts: []\nlinks: []\n": "at least one host or gpu",
        "hosts: [h0, h1]\nlinks: [[h0, h1, 1gbit]]\nendpoints: [h0, s3]\n": "endpoints",
        "": "expected a mapping",
    }
    for i, (text, match) in enumerate(cases.items()):
        path = tmp_path / f"case{i}.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=match) as e:
            topo.load_topology(path)
        assert "\n" not in str(e.value), text


# ------------------------------------------------------------------------------------------ docs


def test_describe_rows():
    rows = topo.describe(topo.load_topology(EXAMPLES / "star4-slow.yaml"))
    assert rows[-1] == {"a": "h3", "b": "s0", "rate": "200mbit", "latency": "0s"}
    assert [r["rate"] for r in topo.describe(topo.star(1, bandwidth_Bps=6.4e9, latency_s=50e-6))] == [
        "6.4GB/s"
    ]
    assert topo.describe(topo.star(1, latency_s=50e-6))[0]["latency"] == "50us"


@pytest.mark.parametrize("rate", [1.25e8, 2.5e7, 3e11, 6.4e9, 12.5e9, 1 / 3, 123456.789])
def test_format_rate_round_trips(rate):
    assert parse_rate(topo.format_rate(rate)) == rate
    assert topo.format_rate(1.25e8) == "1gbit" and topo.format_rate(3e11) == "300GB/s"


def test_draw_writes_png(tmp_path):
    for i, G in enumerate([topo.fat_tree(4), topo.torus((3, 3)), topo.ring(5), topo.nvlink_leaf_spine(2, 2)]):
        out = tmp_path / f"g{i}.png"
        topo.draw(G, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _oracle_path(G: nx.Graph, src, dst, flow_key) -> tuple:
    """Routes.path's rule written plainly: hop counts to the destination's anchor switch (only non-GPU
    nodes relay), next hops = neighbours one hop closer sorted by name, ECMP ties from the flow hash."""
    from firesim.topology.routing import _flow_hash

    if src == dst:
        return (src,)
    nbrs = list(G.adj[dst])
    anchor = nbrs[0] if len(nbrs) == 1 and G.nodes[nbrs[0]].get("role") != "gpu" and nbrs[0] != src else None
    target = dst if anchor is None else anchor
    dist, frontier = {target: 0}, [target]
    while frontier:
        nxt = []
        for w in frontier:
            if w != target and G.nodes[w].get("role") == "gpu":
                continue
            for u in G.adj[w]:
                if u not in dist:
                    dist[u] = dist[w] + 1
                    nxt.append(u)
        frontier = nxt
    path, u, h = [src], src, _flow_hash(src, dst, flow_key)
    while u != target:
        hops = sorted((w for w in G.adj[u] if dist.get(w) == dist[u] - 1
                       and (w == target or G.nodes[w].get("role") != "gpu")), key=str)
        if len(hops) > 1:
            h, i = divmod(h, len(hops))
        else:
            i = 0
        u = hops[i]
        path.append(u)
    return tuple(path) + (() if anchor is None else (dst,))


@pytest.mark.parametrize("G", [topo.fat_tree(4), topo.fat_tree(8, oversubscription=2.0),
                               topo.nvlink_leaf_spine(3, 4, leaves=2, spines=2), topo.dragonfly(4, 2, 2)],
                         ids=lambda G: G.graph["name"])
def test_routes_paths_follow_the_rule_for_every_pair(G):
    """``Routes.paths`` (the vectorised walk the engine uses for thousands of pairs) and ``path`` give,
    for every reachable pair of nodes, exactly the route the plain rule picks."""
    rng = np.random.default_rng(1)
    nodes = list(G)
    pairs = [(nodes[a], nodes[b]) for a, b in rng.integers(0, len(nodes), size=(1500, 2))]
    R = topo.Routes(G)
    reachable = []
    for a, b in pairs:
        try:
            expected = _oracle_path(G, a, b, 5)
        except KeyError:  # no route through relays
            with pytest.raises(nx.NetworkXNoPath):
                R.path(a, b, 5)
            continue
        assert R.path(a, b, 5) == expected
        reachable.append(((a, b), expected))
    assert R.paths([ab for ab, _ in reachable], 5) == [p for _, p in reachable]
