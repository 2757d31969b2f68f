"""Spec strings (``fat-tree:k=8,oversubscription=2``, ``torus:dims=8x8x8``, a YAML path) to graphs."""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import networkx as nx

from firesim.errors import UserError
from firesim.limits import MAX_NODES
from firesim.topology.files import load_topology
from firesim.topology.generators import _count, dragonfly, fat_tree, nvlink_leaf_spine, ring, star, torus
from firesim.units import parse_options, parse_rate, parse_seconds


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
} - {"max_nodes"}


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


def from_spec(spec: str, n_endpoints: int | None = None, *, max_nodes: int = MAX_NODES, **link_defaults: Any) -> nx.Graph:
    """Build a topology from a short spec or a YAML file path.

    Specs: ``star:n=64``, ``ring:n=16``, ``fat-tree:k=8,oversubscription=2``, ``torus:dims=8x8x8,hosts=2``,
    ``dragonfly:groups=9,routers=4,hosts=2[,global=2]``, ``nvlink:nodes=4,gpus=8[,leaves=8,spines=4]``;
    any builder keyword also works as a key (rates and times with units: ``bandwidth=100gbit,latency=1us``).
    ``link_defaults`` are builder keywords given by the caller; the spec's own values win over them, and a
    generic ``bandwidth_Bps`` sets all network links of builders that name theirs separately. Without a
    size the shape is the smallest that holds ``n_endpoints`` (tori: the most cubic factorisation). When
    ``n_endpoints`` is given, ``endpoints`` is cut to that many (the rest stay as idle hosts) and a topology
    with fewer is an error. ``efficiency=x`` sets every link's efficiency. A network of more than ``max_nodes``
    nodes is refused before it is built (``firesim.limits``).
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
        G = load_topology(text, latency_s=link_defaults.get("latency_s", 0.0), max_nodes=max_nodes)
    else:
        if kind not in _KINDS:
            known = ", ".join(_KINDS)
            raise UserError(
                f"topology: unknown kind {kind_text.strip()!r} in {text!r} (known: {known}, or a .yaml file)"
            )
        builder, size_key, aliases = _KINDS[kind]
        accepted = set(inspect.signature(builder).parameters) - {"max_nodes"}
        params: dict[str, Any] = {}
        for key, value in link_defaults.items():
            # Defaults from a caller that does not know the kind: keep those this builder takes.
            if key in accepted or key == "bandwidth_Bps":
                params[key] = _parse_value(kind, key, value)
        n_spec = None
        for key, value in parse_options(param_text, f"topology {text!r}").items():
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
        G = builder(**params, max_nodes=max_nodes)
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
