"""Topology files: YAML in (validated with pydantic, every problem one line naming the file) and out.

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

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from firesim.config import read_yaml
from firesim.errors import UserError
from firesim.io import write_text_atomic
from firesim.limits import MAX_NODES, check_topology_size
from firesim.topology.generators import ROLES, _new_graph, _rate, _seconds, _set_endpoints
from firesim.units import format_rate, format_seconds


def _rename_value_error(msg: str) -> str:
    return msg.removeprefix("Value error, ")


class _Host(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    name: str = Field(min_length=1)
    gpus: int = Field(default=0, ge=0, le=MAX_NODES)


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


def load_topology(path: str | os.PathLike, latency_s: float = 0.0, *, max_nodes: int = MAX_NODES) -> nx.Graph:
    """Read and validate a YAML topology file (format in the module doc) into a graph.

    ``latency_s`` is given to links that state none. Every problem raises a one-line :class:`UserError`
    naming the file: malformed YAML, unknown keys, duplicate names, a link to an unknown node, a repeated
    or self link, a zero, negative or unparsable rate, a host not connected to the others. A file too big to
    parse quickly, or a network of more than ``max_nodes`` nodes, is refused (``firesim.limits``).
    """
    path = Path(path)
    data = read_yaml(path, "topology file", max_items=max_nodes)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with hosts: and links:, got {type(data).__name__}")
    try:
        spec = _TopologyFile.model_validate(data)
    except ValidationError as e:
        raise UserError(f"{path}: {_pydantic_line(e)}") from None

    def fail(msg: str) -> UserError:
        return UserError(f"{path}: {msg}")

    gpus = sum(h.gpus for h in spec.hosts)
    check_topology_size(len(spec.hosts) + gpus + len(spec.gpus) + len(spec.switches) + len(spec.routers),
                        len(spec.links) + gpus, f"topology file {str(path)!r}", max_nodes)

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
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))
