"""Resource limits: what a request would cost, estimated before anything is allocated, and a one-line refusal
that states the estimate and the limit.

Each check sits next to what it protects, so the Python API is guarded as well as the command lines: plan
building (``firesim.plans.registry``) and the engine (``firesim.engine``) count ops; topology generators and
the topology loader count nodes and links; ``firerun``'s launcher counts processes against cores. A caller
raises a limit deliberately (``max_ops=``, ``max_nodes=``; ``--max-ops``, ``--max-nodes`` on the command line).

The figures were measured on the project's 2-core, 24 GiB machine (see ``BYTES_PER_OP``, ``BYTES_PER_NODE``):
the defaults keep one request under ~4 GiB and well under a minute, since several people share a machine.
"""

from __future__ import annotations

from firesim.errors import UserError
from firesim.units import format_bytes, format_count

__all__ = ["BYTES_PER_NODE", "BYTES_PER_OP", "MAX_LINKS", "MAX_NODES", "MAX_OPS", "MAX_YAML_ITEMS", "VERIFY_MAX_OPS", "check_ops",
           "check_topology_size"]

# Peak memory per plan op through build + engine: `firesim simulate --ranks 1024 --size 64MiB --topology
# fat-tree:k=16` (4.19 M ops) peaks at 880 MB RSS, ~150 MB of which is the interpreter and its imports.
BYTES_PER_OP = 200
# A 2048-rank ring (16.8 M ops, ~3.4 GB, tens of seconds in the engine) is the largest default job.
MAX_OPS = 2**24
# The symbolic proof (firesim.plans.verify) holds a few int64 columns per op and a set per (rank, chunk):
# a 1024-rank ring (4.2 M ops) takes ~2 s and well under 1 GiB.
VERIFY_MAX_OPS = MAX_OPS
# networkx graph memory per node with its links: star(10**6) takes 800 MB and 5 s to generate.
BYTES_PER_NODE = 800
# 131,072 nodes: a k=64 fat tree (65,536 hosts, 5,120 switches) fits; ~100 MB and well under a second.
MAX_NODES = 2**17
MAX_LINKS = 2**19
# YAML parsing (libyaml) builds ~10,000 items a second on a loaded 2-core machine: 131,072 items (a
# ~30,000-host topology written one link a line) parse in seconds; a 1,000,000-host file would take minutes.
MAX_YAML_ITEMS = 2**17


def _bounded(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name}: must be an integer >= 1, got {value!r}")
    return value


def check_ops(ops: int, what: str, max_ops: int = MAX_OPS) -> int:
    """Refuse ``ops`` plan ops beyond ``max_ops`` in one line that gives the estimate and the limit."""
    max_ops = _bounded(max_ops, "max_ops")
    if ops > max_ops:
        raise UserError(f"{what}: ~{format_count(ops)} ops (~{format_bytes(ops * BYTES_PER_OP)} of memory) is "
                        f"more than the limit of {format_count(max_ops)} ops; raise it deliberately with "
                        "max_ops (--max-ops)")
    return int(ops)


def check_topology_size(nodes: int, links: int, what: str, max_nodes: int = MAX_NODES) -> None:
    """Refuse a topology of more than ``max_nodes`` nodes (or proportionally many links) before building it."""
    max_nodes = _bounded(max_nodes, "max_nodes")
    max_links = max_nodes * (MAX_LINKS // MAX_NODES)
    if nodes > max_nodes or links > max_links:
        raise UserError(f"{what}: {format_count(nodes)} nodes and {format_count(links)} links "
                        f"(~{format_bytes(nodes * BYTES_PER_NODE)} of memory) is more than the limit of "
                        f"{format_count(max_nodes)} nodes and {format_count(max_links)} links; raise it "
                        "deliberately with max_nodes (--max-nodes)")
