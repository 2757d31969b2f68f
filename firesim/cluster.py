"""A cluster as the collectives see it: its network as a graph, its cost levels, and what one all-reduce of
a given size costs on it (closed form where the algorithm has one, else the plan played on the engine).

``firesim.training`` asks this module for per-bucket exchange times; ``firesim collective`` for tables.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from firesim import topology as topo
from firesim.analytic import Levels
from firesim.engine import simulate
from firesim.errors import UserError
from firesim.hardware import Cluster, comm_params
from firesim.limits import MAX_OPS, check_topology_size
from firesim.plans import Choice, Plan, resolve

__all__ = ["allreduce_seconds", "bucket_plan", "cluster_levels", "cluster_topology", "resolve_for"]


def cluster_levels(cluster: Cluster) -> Levels:
    """The alpha-beta-gamma figures between nodes and, for multi-GPU nodes, inside one."""
    intra = comm_params(cluster, "intra") if cluster.gpus_per_node > 1 else None
    return Levels(comm_params(cluster, "inter"), intra, cluster.gpus_per_node)


def resolve_for(cluster: Cluster, gpus: int, algo: str | Choice) -> Choice:
    """``algo`` with its options validated for ``gpus`` workers; node-aware options default to the cluster's."""
    return resolve(algo, workers=gpus, ranks_per_node=cluster.gpus_per_node)


def bucket_plan(cluster: Cluster, gpus: int, algo: str | Choice, nbytes: int = 0, *, max_ops: int = MAX_OPS) -> Plan:
    """The plan one exchange runs on ``gpus`` GPUs of ``cluster`` (refused beyond ``max_ops`` ops)."""
    return resolve_for(cluster, gpus, algo).build(gpus, nbytes, max_ops=max_ops)


def allreduce_seconds(cluster: Cluster, gpus: int, nbytes, algo: str | Choice):
    """Seconds for one all-reduce of ``nbytes`` (a number or an array) over ``gpus`` GPUs of ``cluster``.

    The algorithm's closed form when it has one (one-level algorithms run at the intra-node figures while the
    GPUs fit one node, else the inter-node ones; hierarchical ones use both); otherwise its plan is simulated
    on ``cluster_topology`` once per distinct size.
    """
    choice = resolve_for(cluster, gpus, algo)
    sizes = np.asarray(nbytes, dtype=np.float64)
    if gpus == 1:
        return np.zeros_like(sizes)
    if choice.has_closed_form:
        return choice.time(gpus, sizes, cluster_levels(cluster))
    plan = choice.build(gpus, 0)
    graph = cluster_topology(cluster, plan.ranks)
    gamma = comm_params(cluster, "inter").gamma_s_per_byte
    unique, where = np.unique(sizes.astype(np.int64), return_inverse=True)
    times = np.array([simulate(plan.with_nbytes(int(n)), graph, alpha_s=cluster.software_latency_s,
                               gamma_s_per_byte=gamma).duration_s for n in unique])[where]
    return times.reshape(sizes.shape) if sizes.ndim else float(times[0])


def cluster_topology(cluster: Cluster, gpus: int) -> nx.Graph:
    """The cluster's network for ``gpus`` GPUs, for the engine.

    Links get their class's bandwidth and efficiency. A link class's latency is end to end (e.g. MPI
    latency), so half of it sits on each access link (host or NIC to the first switch) and switch-to-switch
    links get none: a message pays it once, as in ``comm_params``. One GPU per node: hosts on the cluster's
    fabric (star, fat tree, torus, dragonfly, ring). Several: an NVSwitch per node and, with one NIC per
    GPU, a rail-optimised leaf-spine fabric; otherwise the node's NICs bundled into one link to a switch.
    """
    if gpus < 1:
        raise UserError(f"gpus: must be >= 1, got {gpus}")
    inter, intra, gpn = cluster.inter_node_link, cluster.intra_node_link, cluster.gpus_per_node
    if gpn == 1:
        kind = cluster.topology
        if kind in ("star", "switch"):
            G = topo.star(gpus, inter.bandwidth_Bps, 0.0)
        elif kind == "ring":
            G = topo.ring(max(gpus, 1), inter.bandwidth_Bps, 0.0)
        elif kind == "torus2d":
            routers = max(1, math.ceil(gpus / 2))
            x = math.ceil(math.sqrt(routers))
            G = topo.from_spec(f"torus:dims={x}x{math.ceil(routers / x)}", gpus, bandwidth_Bps=inter.bandwidth_Bps)
        else:
            spec = {"fat-tree": "fat-tree", "torus3d": "torus", "dragonfly": "dragonfly"}[kind]
            G = topo.from_spec(spec, gpus, bandwidth_Bps=inter.bandwidth_Bps)
        hosts = set(G.graph["endpoints"]) | {u for u, r in G.nodes(data="role") if r == "host"}
        for u, v, d in G.edges(data=True):
            d["efficiency"] = inter.efficiency
            d["latency_s"] = inter.latency_s / 2 if (u in hosts) != (v in hosts) else 0.0
        G.graph["endpoints"] = G.graph["endpoints"][:gpus]
        return G
    nodes = math.ceil(gpus / gpn)
    if cluster.nics_per_node == gpn:
        G = topo.nvlink_leaf_spine(nodes, gpn, intra.bandwidth_Bps, inter.bandwidth_Bps, latency_s=0.0,
                                   nvlink_latency_s=0.0)
        for u, v, d in G.edges(data=True):
            kinds = {G.nodes[u].get("kind"), G.nodes[v].get("kind")}
            if "nvswitch" in kinds:
                d.update(efficiency=intra.efficiency, latency_s=intra.latency_s / 2)
            else:
                d.update(efficiency=inter.efficiency,
                         latency_s=inter.latency_s / 2 if "nic" in kinds and "gpu" not in
                         {G.nodes[u]["role"], G.nodes[v]["role"]} else 0.0)
    else:
        check_topology_size(nodes * (gpn + 1) + 1, nodes * (gpn + 1), f"{cluster.name}: {nodes} nodes x {gpn} GPUs")
        G = nx.Graph(name=f"{cluster.name}-{nodes}x{gpn}", routing="shortest", endpoints=[])
        G.add_node("fabric", role="switch")
        for i in range(nodes):
            G.add_node(f"n{i}", role="switch")
            G.add_edge(f"n{i}", "fabric", bandwidth_Bps=cluster.nics_per_node * inter.bandwidth_Bps,
                       efficiency=inter.efficiency, latency_s=inter.latency_s / 2)
            for j in range(gpn):
                G.add_node(f"n{i}/g{j}", role="gpu")
                G.add_edge(f"n{i}/g{j}", f"n{i}", bandwidth_Bps=intra.bandwidth_Bps, efficiency=intra.efficiency,
                           latency_s=intra.latency_s / 2)
                G.graph["endpoints"].append(f"n{i}/g{j}")
    G.graph["endpoints"] = G.graph["endpoints"][:gpus]
    return G


