"""The algorithm registry: one record per all-reduce algorithm, and the one place that knows them by name.

Everything that names an algorithm goes through here: building a plan from a spec string
(``"ps:servers=4,colocated=false"``), its closed-form time, the bytes each rank sends, how many ranks a job
needs (dedicated parameter servers), the ``firesim plans list`` table. A record holds

- ``name``, ``aliases``, a one-line ``summary`` and the ``cost`` formula as text;
- ``options``: a pydantic model with the typed, bounded options (validated once, here); bounds that depend on
  the number of workers (``0 <= root < p``) go in its ``check(workers)``. An option called
  ``ranks_per_node`` left unset takes the cluster's GPUs per node;
- ``build(workers, nbytes, options) -> Plan``;
- ``time(workers, nbytes, levels, options) -> seconds`` on a contention-free network
  (``firesim.analytic.Levels``), or ``None``: no closed form, ``firesim.cluster`` plays the plan on the
  engine instead;
- ``bytes_sent(workers, nbytes, options) -> bytes per rank`` (or ``None``) and ``servers(workers, options)``,
  the ranks a job needs beyond its workers;
- ``ops(workers, options) -> int``: how many ops the plan will have, so that a plan too big for the machine
  is refused before it is built (``firesim.limits``). Without it the count is extrapolated from builds for
  16 and 32 workers as a power law (a ring's p(p-1) comes out ~15 % high at 1,000 workers);
- ``examples``: specs whose options change the plan's structure, which ``firerun check`` runs besides the
  plain name.

A new algorithm is a builder function plus ``register(Algorithm(...))``, in this file or in your own module:
modules named in the ``FIRESIM_PLUGINS`` environment variable (comma-separated) or registered under the
``firesim.algorithms`` entry-point group are imported the first time the registry is read, in every process
(so ``firerun``'s ranks see the same algorithms as the command that started them).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from firesim import analytic
from firesim.analytic import Levels
from firesim.errors import UserError, validated
from firesim.limits import MAX_OPS, check_ops
from firesim.plans import builders
from firesim.plans.ir import Plan
from firesim.units import MAX_BYTES, parse_options

__all__ = ["Algorithm", "Choice", "Options", "algorithms", "allreduce_time", "build", "get", "register",
           "resolve", "split_specs"]

PLUGINS_ENV = "FIRESIM_PLUGINS"
ENTRY_POINT_GROUP = "firesim.algorithms"


class Options(BaseModel):
    """Base of every algorithm's options: typed, bounded, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, workers: int) -> None:
        """Bounds that depend on the number of workers; raise ``ValueError`` with the reason."""

    @classmethod
    def describe(cls) -> list[str]:
        """Each option as 'name=default (bounds or choices)', for `firesim plans list`."""
        lines = []
        for key, info in cls.model_fields.items():
            bounds = [f"{symbol} {getattr(m, attr)}" for m in info.metadata
                      for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(m, attr)]
            if get_origin(info.annotation) is Literal:
                bounds.append("|".join(map(str, get_args(info.annotation))))
            default = "required" if info.is_required() else _plain(info.default)
            lines.append(f"{key}={default}" + (f" ({', '.join(bounds)})" if bounds else ""))
        return lines

    def text(self) -> str:
        """The options that differ from their defaults, as ``key=value,...``."""
        fields = type(self).model_fields
        items = {**{k: getattr(self, k) for k in fields}, **(self.model_extra or {})}
        return ",".join(f"{k}={_plain(v)}" for k, v in items.items() if k not in fields or v != fields[k].default)


def _plain(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: how to build it, what it costs in closed form, what it sends (see the module doc)."""

    name: str
    summary: str
    build: Callable[[int, int, Any], Plan]
    options: type[Options] = Options
    time: Callable[[Any, Any, Levels, Any], Any] | None = None
    bytes_sent: Callable[[int, float, Any], np.ndarray] | None = None
    servers: Callable[[int, Any], int] = lambda workers, options: 0
    ops: Callable[[int, Any], int] | None = None
    cost: str = ""
    aliases: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()  # specs whose options change the plan's structure (firerun check runs them)


@dataclass(frozen=True)
class Choice:
    """An algorithm with validated options: what a spec string such as ``"tree:chunks=4"`` resolves to."""

    algorithm: Algorithm
    options: Options

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def spec(self) -> str:
        """Canonical spec text: the name and the options that differ from their defaults."""
        text = self.options.text()
        return f"{self.name}:{text}" if text else self.name

    def check(self, workers: int) -> Choice:
        """Raise a one-line UserError unless the options fit ``workers`` workers."""
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise UserError(f"workers: must be an integer >= 1, got {workers!r}")
        try:
            self.options.check(int(workers))
        except ValueError as err:
            raise UserError(f"algo {self.spec}: {err} (with {workers} workers)") from None
        return self

    def ranks(self, workers: int) -> int:
        """Ranks a job needs for ``workers`` workers (dedicated servers come on top)."""
        return int(workers) + int(self.algorithm.servers(int(workers), self.options))

    def workers(self, ranks: int) -> int:
        """Workers in a job of ``ranks`` ranks (the inverse of ``ranks``)."""
        workers = next((w for w in range(int(ranks), 0, -1) if self.ranks(w) == ranks), 0)
        if workers < 1:
            raise UserError(f"algo {self.spec}: {ranks} ranks leave no worker beside its servers")
        return workers

    def ops(self, workers: int) -> int:
        """The number of ops the plan for ``workers`` workers has (an estimate for records without ``ops``)."""
        self.check(workers)
        if self.algorithm.ops is not None:
            return int(self.algorithm.ops(int(workers), self.options))
        if workers <= 32:
            return self.algorithm.build(int(workers), 0, self.options).n_ops
        lo, hi = (max(self.algorithm.build(w, 0, self.options).n_ops, 1) for w in (16, 32))
        exponent = max(1.0, float(np.log2(hi / lo)))
        return int(np.ceil(hi * (workers / 32) ** exponent))

    def build(self, workers: int, nbytes: int, *, max_ops: int = MAX_OPS) -> Plan:
        """The plan for ``workers`` workers and ``nbytes`` bytes; refused in one line, before anything is
        allocated, if it would have more than ``max_ops`` ops (``firesim.limits``)."""
        self.check(workers)
        if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or not 0 <= nbytes <= MAX_BYTES:
            raise UserError(f"nbytes: must be an integer in 0..{MAX_BYTES}, got {nbytes!r}")
        check_ops(self.ops(workers), f"algo {self.spec} on {workers} workers", max_ops)
        return self.algorithm.build(int(workers), int(nbytes), self.options)

    @property
    def has_closed_form(self) -> bool:
        return self.algorithm.time is not None

    def time(self, workers, nbytes, levels: Levels):
        """Closed-form seconds (numpy broadcasting over workers and nbytes); UserError if there is none."""
        if self.algorithm.time is None:
            raise UserError(f"algo {self.name}: no closed form; simulate its plan (firesim.cluster does)")
        for w in np.unique(np.asarray(workers)):
            self.check(int(w))
        return self.algorithm.time(workers, nbytes, levels, self.options)

    def bytes_sent(self, workers: int, nbytes: float) -> np.ndarray:
        """Bytes each rank sends under the closed-form model; UserError if the record has none."""
        if self.algorithm.bytes_sent is None:
            raise UserError(f"bytes_sent: no closed form for {self.name}")
        return self.algorithm.bytes_sent(int(workers), nbytes, self.options)


# ---------------------------------------------------------------------------------------- the table
_REGISTRY: dict[str, Algorithm] = {}
_ALIASES: dict[str, str] = {}
_plugins_loaded = False


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(algorithm: Algorithm, *, replace: bool = False) -> Algorithm:
    """Add ``algorithm`` (and its aliases); a name already taken is an error unless ``replace``."""
    taken = {_key(n) for n in (algorithm.name, *algorithm.aliases)} & (set(_REGISTRY) | set(_ALIASES))
    if taken and not replace:
        raise UserError(f"register: name {sorted(taken)[0]!r} is already taken")
    _REGISTRY[_key(algorithm.name)] = algorithm
    for alias in algorithm.aliases:
        _ALIASES[_key(alias)] = _key(algorithm.name)
    return algorithm


def unregister(name: str) -> None:
    """Remove an algorithm and its aliases (tests register toy algorithms and take them away again)."""
    key = _ALIASES.get(_key(name), _key(name))
    _REGISTRY.pop(key, None)
    for alias in [a for a, target in _ALIASES.items() if target == key]:
        del _ALIASES[alias]


def _load_plugins() -> None:
    """Import the modules that register extra algorithms (see the module doc), once per process."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except Exception as err:  # a broken plugin is the user's input: one line, not a traceback
            raise UserError(f"{PLUGINS_ENV}: cannot import {module!r}: {type(err).__name__}: {err}") from None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:
            raise UserError(f"plugin {ep.name!r} ({ep.value}): {type(err).__name__}: {err}") from None


def algorithms() -> list[Algorithm]:
    """Every registered algorithm, in registration order."""
    _load_plugins()
    return list(_REGISTRY.values())


def get(name: str) -> Algorithm:
    """The record of ``name`` or one of its aliases; one-line UserError listing the known names."""
    _load_plugins()
    key = _key(str(name))
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UserError(f"algo: unknown algorithm {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def resolve(spec: str | Choice, *, workers: int | None = None, ranks_per_node: int | None = None,
            **options) -> Choice:
    """``"ps:servers=4"`` (plus keyword options, which win) -> a Choice with validated options.

    ``workers`` also checks the bounds that depend on it; ``ranks_per_node`` is the default of an option of
    that name (the cluster's GPUs per node).
    """
    if isinstance(spec, Choice):
        if options:
            spec = spec.spec
        else:
            return spec.check(workers) if workers is not None else spec
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"algo: expected a name such as ring or ps:servers=2, got {spec!r}")
    name, _, rest = spec.partition(":")
    algorithm = get(name)
    raw: dict[str, Any] = {**parse_options(rest, f"algo {spec}"), **options}
    if ranks_per_node is not None and "ranks_per_node" in algorithm.options.model_fields:
        raw.setdefault("ranks_per_node", ranks_per_node)
    options = validated(algorithm.options, raw, f"algo {spec}")
    choice = Choice(algorithm, options)
    return choice.check(workers) if workers is not None else choice


def split_specs(text: str) -> list[str]:
    """'ring,ps:servers=2,colocated=false,tree' -> ['ring', 'ps:servers=2,colocated=false', 'tree']: an
    item with '=' but no ':' continues the previous algorithm's options."""
    items: list[str] = []
    for part in (x.strip() for x in str(text).split(",")):
        if not part:
            raise UserError(f"algo: empty item in {text!r}")
        if "=" in part and ":" not in part and items:
            items[-1] += "," + part
        else:
            items.append(part)
    return items


def build(spec: str | Choice, workers: int, nbytes: int, *, max_ops: int = MAX_OPS, **options) -> Plan:
    """Build a plan by spec: build('ring', 8, 2**20); build('hierarchical', 16, n, ranks_per_node=4).
    Plans of more than ``max_ops`` ops are refused before they are built (``firesim.limits``)."""
    return resolve(spec, **options).build(workers, nbytes, max_ops=max_ops)


def allreduce_time(spec: str | Choice, workers, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, *,
                   intra: analytic.CommParams | None = None, ranks_per_node: int = 1, **options):
    """Closed-form seconds of one all-reduce (arrays broadcast, for sweeps). alpha/beta/gamma are the
    inter-node figures; ``intra`` those inside a node of ``ranks_per_node`` ranks, if it differs."""
    sizes = np.asarray(nbytes, np.float64)
    if not np.all(np.isfinite(sizes) & (sizes >= 0)):
        raise UserError("nbytes: must be finite and >= 0")
    levels = Levels(analytic.CommParams(alpha_s, beta_s_per_byte, gamma_s_per_byte), intra, ranks_per_node)
    choice = resolve(spec, ranks_per_node=ranks_per_node, **options)
    return choice.time(workers, nbytes, levels)


# ---------------------------------------------------------------------------------------- the records
def _flat(formula: Callable) -> Callable:
    """A one-level closed form ``formula(p, n, alpha, beta, gamma, **options)`` as a record's ``time``."""

    def time(workers, nbytes, levels: Levels, options: Options):
        return formula(workers, nbytes, *levels.flat(workers).astuple(), **options.model_dump())

    return time


def _bytes(formula: Callable) -> Callable:
    return lambda workers, nbytes, options: formula(workers, nbytes, **options.model_dump())


register(Algorithm(
    name="ring", summary="reduce-scatter then all-gather around a ring (bandwidth optimal)",
    build=lambda p, n, o: builders.ring(p, n), time=_flat(analytic.ring_time), ops=lambda p, o: 4 * p * (p - 1),
    bytes_sent=_bytes(analytic.ring_bytes_sent),
    cost="2(p-1)(alpha + n/p beta) + (p-1) n/p gamma"))


class TreeOptions(Options):
    chunks: int = Field(1, ge=1, le=1 << 20, description="pipeline the buffer in this many chunks")
    root: int = Field(0, ge=0, description="rank the reduce ends at")

    def check(self, workers: int) -> None:
        if self.root >= workers:
            raise ValueError(f"root: must be in 0..{workers - 1}, got {self.root}")


register(Algorithm(
    name="tree", summary="binomial reduce to a root, then binomial broadcast (FireCaffe's reduction tree)",
    options=TreeOptions, build=lambda p, n, o: builders.binomial_tree(p, n, chunks=o.chunks, root=o.root),
    time=lambda p, n, lv, o: analytic.tree_time(p, n, *lv.flat(p).astuple(), chunks=o.chunks),
    bytes_sent=lambda p, n, o: np.roll(analytic.tree_bytes_sent(p, n), o.root),
    ops=lambda p, o: 4 * (p - 1) * o.chunks,
    cost="~ ceil(lg p)(2 alpha + 2n beta + n gamma), exact recursion for any p",
    aliases=("binomial_tree", "binomial"), examples=("tree:chunks=3", "tree:root=1")))


class PSOptions(Options):
    servers: int = Field(1, ge=1, le=1 << 16, description="shards, one per server")
    colocated: bool = Field(True, description="servers are workers 0..servers-1 (else extra ranks)")
    chunks: int | None = Field(None, ge=1, le=1 << 20, description="chunks (>= servers); default servers")

    @model_validator(mode="after")
    def _chunks_cover_servers(self) -> PSOptions:
        if self.chunks is not None and self.chunks < self.servers:
            raise ValueError(f"chunks: must be >= servers ({self.servers}) so every server holds a shard")
        return self

    def check(self, workers: int) -> None:
        if self.colocated and self.servers > workers:
            raise ValueError(f"servers: co-located servers must be <= workers ({workers}), got {self.servers}")


register(Algorithm(
    name="ps", summary="parameter server: workers push shards to servers, which sum and send them back",
    options=PSOptions,
    build=lambda p, n, o: builders.parameter_server(p, n, servers=o.servers, colocated=o.colocated,
                                                    chunks=o.chunks),
    time=lambda p, n, lv, o: analytic.ps_time(p, n, *lv.flat(p).astuple(), servers=o.servers,
                                              colocated=o.colocated),
    bytes_sent=lambda p, n, o: analytic.ps_bytes_sent(p, n, servers=o.servers, colocated=o.colocated),
    servers=lambda p, o: 0 if o.colocated else o.servers,
    ops=lambda p, o: 4 * (p - 1 if o.colocated else p) * (o.chunks or o.servers),
    cost="alpha + (p-1) n/s beta + (p-1) n/s gamma + (p-1)(alpha + n/s beta)",
    aliases=("parameter_server",),
    examples=("ps:servers=2", "ps:servers=1,colocated=false", "ps:servers=2,colocated=false")))

def _halving_doubling_ops(p: int, options: Options) -> int:
    pow2 = 1 << (p.bit_length() - 1)
    return 4 * (p - pow2) + 4 * (pow2.bit_length() - 1) * pow2


register(Algorithm(
    name="halving_doubling", summary="Rabenseifner: recursive-halving reduce-scatter, recursive-doubling all-gather",
    build=lambda p, n, o: builders.halving_doubling(p, n), time=_flat(analytic.halving_doubling_time),
    bytes_sent=_bytes(analytic.halving_doubling_bytes_sent), ops=_halving_doubling_ops,
    cost="2 lg p' alpha + 2(p'-1)/p' n beta + (p'-1)/p' n gamma (+ pre/post step)",
    aliases=("rabenseifner", "hd")))


class DoubleBinaryTreeOptions(Options):
    chunks_per_tree: int = Field(1, ge=1, le=1 << 20, description="pipeline each tree's half in this many chunks")


register(Algorithm(
    name="double_binary_tree", summary="NCCL's two complementary binary trees, each on half the buffer",
    options=DoubleBinaryTreeOptions,
    build=lambda p, n, o: builders.double_binary_tree(p, n, chunks_per_tree=o.chunks_per_tree),
    time=_flat(analytic.double_binary_tree_time), bytes_sent=_bytes(builders.double_binary_tree_bytes_sent),
    ops=lambda p, o: 8 * (p - 1) * o.chunks_per_tree,
    cost="estimate: (3D-1) alpha + (4D-2) n/2 beta + (2D-1) n/2 gamma, D = ceil(lg p)",
    aliases=("dbt",), examples=("double_binary_tree:chunks_per_tree=2",)))


class HierarchicalOptions(Options):
    """Options of the leaders' algorithm (``inter``) may follow: hierarchical:inter=ps,servers=2."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ranks_per_node: int | None = Field(None, ge=1, description="ranks per node (default: the cluster's)")
    groups: tuple[tuple[int, ...], ...] | None = Field(None, description="explicit partition of the ranks")
    inter: str = Field("ring", description="all-reduce across the node leaders")
    intra: Literal["tree", "direct"] = Field("tree", description="reduce and broadcast inside a node")

    @field_validator("inter")
    @classmethod
    def _inter_is_flat(cls, value: str) -> str:
        name = get(value).name
        if name == "hierarchical":
            raise ValueError("cannot itself be 'hierarchical'")
        return name

    @model_validator(mode="after")
    def _inter_options(self) -> HierarchicalOptions:
        if self.ranks_per_node is None and self.groups is None:
            raise ValueError("ranks_per_node: required (e.g. hierarchical:ranks_per_node=8) unless groups are given")
        self.inter_choice()  # validates the leaders' options now
        return self

    def inter_choice(self) -> Choice:
        return resolve(self.inter, **(self.model_extra or {}))

    def groups_for(self, workers: int) -> list[list[int]]:
        if self.groups is not None:
            return [list(g) for g in self.groups]
        return builders.node_groups(workers, self.ranks_per_node)

    def nodes(self, workers: int) -> int:
        """How many groups (nodes) ``workers`` workers form, without listing them (p may be 2**31)."""
        return len(self.groups) if self.groups is not None else -(-workers // self.ranks_per_node)

    def check(self, workers: int) -> None:
        if self.groups is not None and sorted(r for g in self.groups for r in g) != list(range(workers)):
            raise ValueError(f"groups: must partition ranks 0..{workers - 1}")
        nodes = self.nodes(workers)
        inter = self.inter_choice()
        if inter.ranks(nodes) != nodes:
            raise ValueError(f"inter: {inter.spec} needs dedicated servers, which cannot sit between nodes")
        inter.check(nodes)


def _hierarchical_time(workers, nbytes, levels: Levels, o: HierarchicalOptions):
    if o.groups is not None:
        raise UserError("algo hierarchical: no closed form for explicit groups; simulate the plan")
    inter = o.inter_choice()
    top = Levels(levels.inter)
    return analytic.hierarchical_time(workers, nbytes, levels, ranks_per_node=o.ranks_per_node or 1,
                                      inter_time=lambda nodes, n: inter.time(nodes, n, top), intra=o.intra)


register(Algorithm(
    name="hierarchical", summary="reduce inside each node, all-reduce across node leaders, broadcast inside",
    options=HierarchicalOptions,
    build=lambda p, n, o: builders.hierarchical(o.groups_for(p), n, lambda leaders: o.inter_choice().build(leaders, n),
                                                intra=o.intra),
    time=_hierarchical_time,
    ops=lambda p, o: 4 * (p - o.nodes(p)) + o.inter_choice().ops(o.nodes(p)),
    cost="intra-node tree + inter-node algorithm on the leaders + intra-node broadcast",
    aliases=("hier",),
    examples=("hierarchical:ranks_per_node=2", "hierarchical:ranks_per_node=3,inter=halving_doubling")))
