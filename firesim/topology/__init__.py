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

Layout: ``generators`` (star, ring, fat_tree, torus, dragonfly, nvlink_leaf_spine), ``routing`` (shortest
path with ECMP, dimension order; the bytes a plan puts on every link), ``files`` (YAML in and out), ``spec`` (spec strings), ``draw`` (pictures).
"""

from firesim.topology.draw import describe, draw
from firesim.topology.files import dump_topology, load_topology
from firesim.topology.generators import (
    ROLES,
    DEFAULT_BANDWIDTH_Bps,
    DEFAULT_LATENCY_s,
    GEMINI_HOP_s,
    GEMINI_LINK_Bps,
    NIC_Bps,
    NVLINK_Bps,
    dragonfly,
    fat_tree,
    nvlink_leaf_spine,
    ring,
    star,
    torus,
)
from firesim.topology.routing import Routes, link_bytes, route, route_capacity_Bps, route_links, routes
from firesim.topology.spec import from_spec
from firesim.units import format_rate, format_seconds

__all__ = [
    "DEFAULT_BANDWIDTH_Bps", "DEFAULT_LATENCY_s", "GEMINI_HOP_s", "GEMINI_LINK_Bps", "NIC_Bps", "NVLINK_Bps", "ROLES",
    "Routes", "describe", "draw", "dragonfly", "dump_topology", "fat_tree", "format_rate", "format_seconds",
    "from_spec", "link_bytes", "load_topology", "nvlink_leaf_spine", "ring", "route", "route_capacity_Bps",
    "route_links", "routes", "star", "torus",
]
