"""Pictures and tables of topologies, for docs and notebooks."""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Iterable

import networkx as nx

from firesim.units import format_rate, format_seconds


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
