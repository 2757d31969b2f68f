"""What-if inputs for the engine, as a user writes them on the command line: seeded stragglers, per-rank
compute speeds and per-link overrides.

``firesim.training.simulate_iteration`` and ``firesim.engine.simulate`` take these as Python objects
(``Stragglers``, a ``rank_speed`` array, ``link_overrides={(u, v): {...}}``); this module parses the text
forms once, with pydantic, into one frozen ``WhatIf`` that ``predict``, ``simulate`` and ``recommend`` share:

- ``--stragglers probability=0.05,slowdown=1.5[,jitter=0.1]``: each rank is a straggler with that
  probability (its compute takes ``slowdown`` times longer), drawn from ``--seed``;
- ``--rank-speed 0=0.5,7=0.8``: rank 0 computes at half speed, rank 7 at 0.8; others at 1;
- ``--link 'h3-s0:bandwidth=1gbit,latency=5us,efficiency=0.9'`` (repeatable): one link of the cluster's
  topology (both directions) gets those figures. Node names are the topology's (``firesim simulate
  --topology ... --json`` or ``firesim.topology.describe``); a name may itself contain ``-``: the split
  that names two linked nodes wins.

They change what the engine plays, so they need ``--engine des`` wherever a closed form is the default.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import networkx as nx
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from firesim.errors import UserError, validated
from firesim.units import format_rate, format_seconds, parse_options, parse_rate, parse_seconds

__all__ = ["LinkChange", "WhatIf", "parse_link", "parse_rank_speeds", "parse_stragglers", "parse_whatif"]


def _units(parse):
    def convert(value):
        try:
            return parse(value, "value")
        except UserError as err:
            raise ValueError(str(err).removeprefix("value: ")) from None

    return convert


class _StragglerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    probability: float = Field(ge=0, le=1)
    slowdown: float = Field(2.0, ge=1, allow_inf_nan=False)
    jitter: float = Field(0.0, ge=0, allow_inf_nan=False)


class LinkChange(BaseModel):
    """New figures for one link (both directions); fields left out keep the topology's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bandwidth: Annotated[float, BeforeValidator(_units(parse_rate)), Field(gt=0, allow_inf_nan=False)] | None = None
    latency: Annotated[float, BeforeValidator(_units(parse_seconds)), Field(ge=0, allow_inf_nan=False)] | None = None
    efficiency: float | None = Field(None, gt=0, le=1)

    def text(self) -> str:
        """'bandwidth=1gbit,latency=5us': the figures given, in units."""
        shown = {"bandwidth": lambda v: format_rate(v, exact=False), "latency": lambda v: format_seconds(v, exact=False),
                 "efficiency": lambda v: f"{v:g}"}
        return ",".join(f"{k}={shown[k](v)}" for k, v in self.model_dump(exclude_none=True).items())

    def engine_attrs(self) -> dict[str, float]:
        """The engine's attribute names (``firesim.engine.simulate``'s ``link_overrides`` values)."""
        names = {"bandwidth": "bandwidth_Bps", "latency": "latency_s", "efficiency": "efficiency"}
        return {names[k]: v for k, v in self.model_dump().items() if v is not None}


def _validated(model, text: str, what: str):
    return validated(model, parse_options(text, what), what)


def parse_stragglers(text: str):
    """'probability=0.05,slowdown=1.5[,jitter=0.1]' -> ``firesim.training.Stragglers``."""
    from firesim.training import Stragglers

    options = _validated(_StragglerOptions, text, "stragglers")
    return Stragglers(probability=options.probability, slowdown=options.slowdown, jitter=options.jitter)


def parse_rank_speeds(text: str) -> tuple[tuple[int, float], ...]:
    """'0=0.5,7=0.8' -> ((0, 0.5), (7, 0.8)): compute speed factors of single ranks (1 = nominal)."""
    speeds = []
    for key, value in parse_options(text, "rank-speed").items():
        try:
            rank, factor = int(key), float(value)
        except ValueError:
            raise UserError(f"rank-speed: expected rank=factor (e.g. 0=0.5), got {key}={value}") from None
        if rank < 0 or not (0 < factor < float("inf")):
            raise UserError(f"rank-speed: rank must be >= 0 and factor > 0, got {key}={value}")
        speeds.append((rank, factor))
    if not speeds:
        raise UserError("rank-speed: empty, expected rank=factor pairs such as 0=0.5")
    return tuple(sorted(speeds))


def parse_link(text: str) -> tuple[str, LinkChange]:
    """'h3-s0:bandwidth=1gbit,latency=5us' -> ('h3-s0', LinkChange(...)); the node pair is resolved against a
    topology later (``WhatIf.link_overrides``)."""
    pair, colon, options = str(text).partition(":")
    pair = pair.strip()
    if not colon or "-" not in pair.strip("-"):
        raise UserError(f"link: expected NODE-NODE:key=value,... (e.g. h3-s0:bandwidth=1gbit), got {text!r}")
    change = _validated(LinkChange, options, f"link {pair}")
    if not change.engine_attrs():
        raise UserError(f"link {pair}: give at least one of bandwidth, latency, efficiency")
    return pair, change


def _split_pair(pair: str, G: nx.Graph) -> tuple[Hashable, Hashable] | None:
    """The (u, v) link of ``G`` that 'u-v' names, trying every '-' (node names may contain one)."""
    names = {str(n): n for n in G.nodes}
    for i, ch in enumerate(pair):
        if ch == "-":
            u, v = names.get(pair[:i]), names.get(pair[i + 1:])
            if u is not None and v is not None and G.has_edge(u, v):
                return u, v
    return None


@dataclass(frozen=True)
class WhatIf:
    """Perturbations the engine plays: stragglers (seeded), per-rank speeds, per-link figures."""

    stragglers: object | None = None  # firesim.training.Stragglers
    rank_speeds: tuple[tuple[int, float], ...] = ()
    links: tuple[tuple[str, LinkChange], ...] = field(default_factory=tuple)
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.stragglers is not None or bool(self.rank_speeds) or bool(self.links)

    def describe(self) -> str:
        """One line for titles and reports."""
        parts = []
        if self.stragglers is not None:
            s = self.stragglers
            parts.append(f"stragglers p={s.probability:g} x{s.slowdown:g}" + (f" jitter {s.jitter:g}" if s.jitter else "")
                         + f" (seed {self.seed})")
        if self.rank_speeds:
            parts.append("rank speed " + ",".join(f"{r}={f:g}" for r, f in self.rank_speeds))
        for pair, change in self.links:
            parts.append(f"link {pair} " + change.text())
        return "; ".join(parts)

    def rank_speed(self, ranks: int) -> np.ndarray | None:
        """Per-rank speed factors for ``ranks`` ranks (None when none is set); a rank out of range is an error."""
        if not self.rank_speeds:
            return None
        speed = np.ones(ranks)
        for rank, factor in self.rank_speeds:
            if rank >= ranks:
                raise UserError(f"rank-speed: rank {rank} does not exist with {ranks} GPUs")
            speed[rank] = factor
        return speed

    def link_overrides(self, G: nx.Graph) -> dict[tuple, dict[str, float]] | None:
        """``firesim.engine.simulate``'s ``link_overrides`` for topology ``G``; a link it lacks is an error."""
        if not self.links:
            return None
        out: dict[tuple, dict[str, float]] = {}
        for pair, change in self.links:
            uv = _split_pair(pair, G)
            if uv is None:
                raise UserError(f"link {pair}: no such link in topology {G.graph.get('name', '')!r}")
            out.setdefault(uv, {}).update(change.engine_attrs())
        return out


def parse_whatif(stragglers: str | None = None, rank_speed: str | None = None,
                 links: Sequence[str] | None = None, seed: int = 0) -> WhatIf:
    """The command-line options of ``predict``/``simulate``/``recommend`` as one ``WhatIf``."""
    return WhatIf(stragglers=None if stragglers is None else parse_stragglers(stragglers),
                  rank_speeds=() if rank_speed is None else parse_rank_speeds(rank_speed),
                  links=tuple(parse_link(text) for text in links or ()), seed=int(seed))


def iteration_kwargs(whatif: WhatIf | None, cluster, gpus: int, algo: str) -> dict:
    """Keyword arguments of ``firesim.training.simulate_iteration`` that play ``whatif`` on ``cluster``."""
    if whatif is None or not whatif.active:
        return {}
    from firesim.cluster import cluster_topology, resolve_for

    kwargs = {"rank_speed": whatif.rank_speed(gpus), "stragglers": whatif.stragglers, "seed": whatif.seed}
    if whatif.links:
        topology = cluster_topology(cluster, resolve_for(cluster, gpus, algo).ranks(gpus))
        kwargs.update(topology=topology, link_overrides=whatif.link_overrides(topology))
    return kwargs
