"""Hardware catalog: GPUs, links, cluster presets and calibrated profiles, as validated data.

Every prediction starts from a few numbers: per link level the alpha-beta-gamma triple of the collective cost
model, and per GPU an achieved FLOP/s. This module turns the packaged catalog (``firesim/data/hardware.yaml``,
every figure with its source), user overrides and measured profiles into those numbers. Bad input of any kind
becomes one ``UserError`` line ``"<file>: <dotted.field>: <reason>"``, never a pydantic traceback.

Plain functions over frozen pydantic models; the only cache is the parsed packaged file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from firesim.analytic import CommParams
from firesim.config import read_yaml
from firesim.errors import UserError, error_reason, one_line
from firesim.io import write_text_atomic
from firesim.units import parse_bytes, parse_rate, parse_seconds

Dtype = Literal["fp64", "fp32", "tf32", "fp16", "bf16", "fp8"]
Level = Literal["intra", "inter"]
Topology = Literal["star", "switch", "fat-tree", "torus2d", "torus3d", "dragonfly", "ring"]

SECTIONS = ("gpus", "links", "clusters")
_LEVELS = ("intra", "inter")


# ---------------------------------------------------------------------------------------------- unit fields
def _unit_parser(parse: Callable[[Any, str], float]) -> Callable[[Any], Any]:
    """Wrap a firesim.units parser so its UserError becomes the bare reason pydantic attaches to the field."""

    def convert(value: Any) -> Any:
        try:
            return parse(value, "value")
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("value: ")) from None

    return convert


_FLOPS_RE = re.compile(r"^([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kmgtpe])?\s*(flops|flop/s|flop)?$", re.I)
_FLOPS_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}


def parse_flops(value: str | int | float, what: str = "flops") -> float:
    """'19.5 TFLOP/s' -> 1.95e13; '312TFLOPS' -> 3.12e14; a bare number is FLOP/s. Prefixes are decimal."""
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number or a string like '19.5 TFLOP/s', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UserError(f"{what}: must not be negative, got {value!r}")
        return float(value)
    m = _FLOPS_RE.match(str(value).strip())
    if not m:
        raise UserError(f"{what}: cannot parse {value!r} as FLOP/s (e.g. 19.5e12, 19.5 TFLOP/s, 312TFLOPS)")
    return float(m.group(1)) * _FLOPS_PREFIX[(m.group(2) or "").lower()]


def _parse_gib(value: Any, what: str) -> float:
    """A bare number is GiB (how GPU memory is quoted); a string with units is converted ('80GB' = 74.5 GiB)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_bytes(value, what) / 2**30


Rate = Annotated[float, BeforeValidator(_unit_parser(parse_rate)), Field(gt=0)]
Seconds = Annotated[float, BeforeValidator(_unit_parser(parse_seconds)), Field(ge=0)]
Flops = Annotated[float, BeforeValidator(_unit_parser(parse_flops)), Field(gt=0)]
GiB = Annotated[float, BeforeValidator(_unit_parser(_parse_gib)), Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------------- models
class GPU(_Model):
    """One GPU (one CUDA device: a K80 board is two). Peaks are dense, per device, by dtype.

    Achieved FLOP/s = peak_flops[dtype] * efficiency_max[dtype] * b / (b + batch_half) for per-GPU batch b:
    small batches under-fill the device, large ones approach efficiency_max. Both are estimates unless a
    calibrated profile replaces them.
    """

    FIGURES: ClassVar[tuple[str, ...]] = (
        "peak_flops", "memory_bandwidth_Bps", "memory_GiB", "price_per_hour_usd", "efficiency_max", "batch_half")

    name: str
    description: str = ""
    peak_flops: dict[Dtype, Flops] = Field(min_length=1)
    memory_bandwidth_Bps: Rate
    memory_GiB: GiB | None = None
    price_per_hour_usd: NonNegative | None = None
    efficiency_max: dict[Dtype, Fraction]
    batch_half: NonNegative
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _broadcast_efficiency(cls, data: Any) -> Any:
        """A single efficiency_max number applies to every dtype in peak_flops."""
        if isinstance(data, dict):
            emax, peaks = data.get("efficiency_max"), data.get("peak_flops")
            if isinstance(emax, (int, float)) and not isinstance(emax, bool) and isinstance(peaks, dict):
                data = {**data, "efficiency_max": {dtype: emax for dtype in peaks}}
        return data

    @model_validator(mode="after")
    def _efficiency_per_dtype(self) -> GPU:
        missing = [d for d in self.peak_flops if d not in self.efficiency_max]
        orphan = [d for d in self.efficiency_max if d not in self.peak_flops]
        if missing:
            raise ValueError(f"efficiency_max: no value for {', '.join(missing)} "
                             "(give one per peak_flops dtype, or a single number)")
        if orphan:
            raise ValueError(f"efficiency_max: {', '.join(orphan)} has no peak_flops entry")
        return self


class Link(_Model):
    """A link class: per-direction bandwidth, one-way latency, and the fraction of bandwidth software reaches."""

    FIGURES: ClassVar[tuple[str, ...]] = ("bandwidth_Bps", "latency_s", "efficiency")

    name: str
    description: str = ""
    bandwidth_Bps: Rate
    latency_s: Seconds
    efficiency: Fraction
    sources: dict[str, str] = Field(default_factory=dict)


class LevelOverride(_Model):
    """Measured alpha/beta for one link level (intra- or inter-node) of a profile."""

    alpha_s: Seconds | None = None
    beta_s_per_byte: Positive | None = None


class HardwareProfile(_Model):
    """Measured cost-model numbers written by ``firerun calibrate``; read back through ``resolve_cluster``.

    alpha_s/beta_s_per_byte apply to both levels unless ``overrides`` gives a level its own values;
    compute_flops is achieved FLOP/s (efficiency included), so it does not depend on batch size.
    """

    kind: Literal["profile"] = "profile"
    name: str
    alpha_s: Seconds
    beta_s_per_byte: Positive
    gamma_s_per_byte: Positive
    compute_flops: Flops
    dtype: Dtype = "fp32"
    gpus_per_node: int = Field(default=1, ge=1)
    nics_per_node: int = Field(default=1, ge=1)
    topology: Topology = "star"
    overrides: dict[Level, LevelOverride] = Field(default_factory=dict)
    memory_GiB: GiB | None = None
    price_per_gpu_hour_usd: NonNegative | None = None
    source: str = ""
    measured_on: str = ""
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @model_validator(mode="after")
    def _intra_needs_several_gpus(self) -> HardwareProfile:
        if "intra" in self.overrides and self.gpus_per_node == 1:
            raise ValueError("overrides: 'intra' given but gpus_per_node is 1 (no intra-node level)")
        return self


class Cluster(_Model):
    """A cluster preset: GPU model, GPUs per node, the link inside a node and the one between nodes.

    ``nics_per_node`` inter-node links leave each node (DGX: one per GPU). ``profile`` is set when the cluster
    came from a calibrated profile; its measured numbers then win over the catalog figures.
    """

    FIGURES: ClassVar[tuple[str, ...]] = (
        "gpus_per_node", "nics_per_node", "topology", "software_latency_s", "price_per_gpu_hour_usd",
        "gamma_s_per_byte")

    kind: Literal["cluster"] = "cluster"
    name: str
    description: str = ""
    gpu: GPU
    gpus_per_node: int = Field(ge=1)
    intra_node_link: Link | None = None
    inter_node_link: Link
    nics_per_node: int = Field(default=1, ge=1)
    topology: Topology
    software_latency_s: Seconds = 0.0
    price_per_gpu_hour_usd: NonNegative | None = None
    gamma_s_per_byte: Positive | None = None
    profile: HardwareProfile | None = None
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _intra_link_iff_several_gpus(self) -> Cluster:
        if self.gpus_per_node > 1 and self.intra_node_link is None:
            raise ValueError(f"intra_node_link: required with gpus_per_node = {self.gpus_per_node}")
        if self.gpus_per_node == 1 and self.intra_node_link is not None:
            raise ValueError("intra_node_link: must be null with gpus_per_node = 1")
        return self


class Catalog(_Model):
    """All known GPUs, links and cluster presets, by name. Cluster entries hold resolved GPU/Link objects."""

    gpus: dict[str, GPU] = Field(default_factory=dict)
    links: dict[str, Link] = Field(default_factory=dict)
    clusters: dict[str, Cluster] = Field(default_factory=dict)


# ------------------------------------------------------------------------------------------ error reporting
def _validation_message(exc: ValidationError, label_for: Callable[[tuple], str]) -> str:
    """The first error as '<file>: <dotted.field>: <reason>' (plus how many more there were)."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = tuple(part for part in err["loc"] if part != "[key]")
    field = ".".join(str(part) for part in loc) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"{label_for(loc)}: {field}: {error_reason(err)}{more}")


def _validate(model: type[_Model], data: Any, label_for: Callable[[tuple], str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(_validation_message(exc, label_for)) from None


# ------------------------------------------------------------------------------------------ catalog loading
def _packaged_path() -> Path:
    return Path(str(resources.files("firesim") / "data" / "hardware.yaml"))


def _catalog_sections(data: Any, label: str) -> dict[str, dict[str, dict]]:
    """Check the shape of a catalog file (mappings all the way down to entries); sections are optional."""
    if not isinstance(data, dict):  # an empty file too: giving one is a mistake, not "no changes"
        raise UserError(f"{label}: expected a mapping with sections {', '.join(SECTIONS)}")
    data = dict(data)
    kind = data.pop("kind", "catalog")
    if kind != "catalog":
        raise UserError(f"{label}: kind: a catalog file has kind 'catalog' (or none), got {kind!r}")
    out: dict[str, dict[str, dict]] = {}
    for section, entries in data.items():
        if section not in SECTIONS:
            raise UserError(f"{label}: {section}: unknown section (expected one of {', '.join(SECTIONS)})")
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise UserError(f"{label}: {section}: expected a mapping of name -> entry")
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                raise UserError(f"{label}: {section}.{name}: expected a mapping of fields, got {entry!r}")
        out[section] = {str(name): entry for name, entry in entries.items()}
    return out


def _merge(base: dict, update: Mapping) -> dict:
    """Field-by-field override: nested mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _named(entry: Any, name: str, where: str) -> Any:
    """Give an entry its key as name; a conflicting explicit name is an error."""
    if not isinstance(entry, dict):
        return entry
    if "name" in entry and entry["name"] != name:
        raise UserError(f"{where}.name: {entry['name']!r} differs from its key {name!r}")
    return {**entry, "name": name}


def _inline_refs(cluster: dict, gpus: Mapping[str, Any], links: Mapping[str, Any], label: str,
                 where: str) -> dict:
    """Replace GPU/link names in a cluster entry by their definitions; inline definitions get a default name."""
    out = dict(cluster)
    cname = out.get("name", "cluster")
    for field, table, what in (("gpu", gpus, "GPU"), ("intra_node_link", links, "link"),
                               ("inter_node_link", links, "link")):
        ref = out.get(field)
        if isinstance(ref, str):
            if ref not in table:
                raise UserError(f"{label}: {where}{field}: unknown {what} {ref!r} (known: {', '.join(table)})")
            out[field] = table[ref]
        elif isinstance(ref, dict) and "name" not in ref:
            out[field] = {**ref, "name": f"{cname}.{field}"}
    return out


@lru_cache(maxsize=1)
def _packaged() -> tuple[dict, Catalog]:
    """The packaged file, parsed and validated once per process (raw form kept for merging user files)."""
    path = _packaged_path()
    raw = _catalog_sections(read_yaml(path), str(path))
    return raw, _build_catalog(raw, {}, str(path))


def _build_catalog(raw: dict[str, dict[str, dict]], origin: Mapping[tuple[str, str], str],
                   default_label: str) -> Catalog:
    def label_of(section: str, name: str) -> str:
        return origin.get((section, name), default_label)

    def label_for(loc: tuple) -> str:
        return label_of(str(loc[0]), str(loc[1])) if len(loc) >= 2 else default_label

    # GPUs and links first, so that a bad one is reported once, not again inside every cluster using it.
    gpus = {n: _named(e, n, f"{label_of('gpus', n)}: gpus.{n}") for n, e in raw.get("gpus", {}).items()}
    links = {n: _named(e, n, f"{label_of('links', n)}: links.{n}") for n, e in raw.get("links", {}).items()}
    parts = _validate(Catalog, {"gpus": gpus, "links": links}, label_for)
    clusters = {}
    for n, e in raw.get("clusters", {}).items():
        entry = _named(e, n, f"{label_of('clusters', n)}: clusters.{n}")
        clusters[n] = _inline_refs(entry, parts.gpus, parts.links, label_of("clusters", n), f"clusters.{n}.")
    return _validate(Catalog, {"gpus": parts.gpus, "links": parts.links, "clusters": clusters}, label_for)


def load_catalog(*extra_yaml_paths: str | os.PathLike) -> Catalog:
    """The packaged catalog, then each user file in order: entries merge by name, field by field.

    A user file may hold any subset of the sections ``gpus``, ``links``, ``clusters``; a new entry must be
    complete, an existing one needs only the fields it changes.
    """
    raw, catalog = _packaged()
    if not extra_yaml_paths:
        return catalog
    merged = copy.deepcopy(raw)
    origin: dict[tuple[str, str], str] = {}
    for path in extra_yaml_paths:
        label = str(path)
        for section, entries in _catalog_sections(read_yaml(Path(path)), label).items():
            table = merged.setdefault(section, {})
            for name, entry in entries.items():
                table[name] = _merge(table.get(name, {}), entry)
                origin[(section, name)] = label
    return _build_catalog(merged, origin, str(extra_yaml_paths[-1]))


# ------------------------------------------------------------------------------------- clusters & profiles
def resolve_cluster(spec: str | os.PathLike, catalog: Catalog | None = None) -> Cluster:
    """A preset name from the catalog, or a YAML file holding a cluster definition or a calibrated profile."""
    catalog = catalog if catalog is not None else load_catalog()
    if isinstance(spec, str) and spec in catalog.clusters:
        return catalog.clusters[spec]
    text = os.fspath(spec)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in text or path.exists():
        return _load_cluster_file(path, catalog)
    raise UserError(f"hardware: unknown cluster preset {text!r} (known: {', '.join(catalog.clusters)}; "
                    "or give a path to a cluster or profile YAML file)")


def _load_cluster_file(path: Path, catalog: Catalog) -> Cluster:
    label = str(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping (a cluster with 'gpu', or kind: profile)")
    kind = data.get("kind", "cluster")
    if kind == "profile":
        return profile_to_cluster(_validate(HardwareProfile, data, lambda loc: label))
    if kind != "cluster":
        raise UserError(f"{label}: kind: expected 'cluster' or 'profile', got {kind!r}")
    if "gpu" not in data and any(section in data for section in SECTIONS):
        raise UserError(f"{label}: this is a catalog file (gpus/links/clusters); load it as a catalog and "
                        "name one of its presets")
    entry = {**data, "name": data.get("name", path.stem)}
    entry = _inline_refs(entry, catalog.gpus, catalog.links, label, "")
    return _validate(Cluster, entry, lambda loc: label)


def load_profile(path: str | os.PathLike) -> HardwareProfile:
    """Read a profile written by ``save_profile``."""
    label = str(path)
    data = read_yaml(Path(path))
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping with kind: profile")
    return _validate(HardwareProfile, data, lambda loc: label)


def save_profile(profile: HardwareProfile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as YAML atomically."""
    text = ("# firesim calibrated hardware profile; use it as --hardware " + Path(path).name + "\n"
            + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False))
    return write_text_atomic(path, text)


def profile_level(profile: HardwareProfile, level: Level) -> CommParams:
    """A profile's measured alpha/beta/gamma for one level (the level's override, else the common value)."""
    if level not in _LEVELS:
        raise UserError(f"level: must be 'intra' or 'inter', got {level!r}")
    if level == "intra" and profile.gpus_per_node == 1:
        raise UserError(f"{profile.name}: gpus_per_node is 1, so there is no intra-node level")
    override = profile.overrides.get(level, LevelOverride())
    return CommParams(
        alpha_s=profile.alpha_s if override.alpha_s is None else override.alpha_s,
        beta_s_per_byte=profile.beta_s_per_byte if override.beta_s_per_byte is None else override.beta_s_per_byte,
        gamma_s_per_byte=profile.gamma_s_per_byte,
    )


def profile_to_cluster(profile: HardwareProfile) -> Cluster:
    """A Cluster that behaves like the profile: comm_params and compute_flops return the measured numbers."""

    def link(level: Level) -> Link:
        p = profile_level(profile, level)
        return Link(name=f"{profile.name}.{level}", description=f"calibrated ({level}-node)",
                    bandwidth_Bps=1.0 / p.beta_s_per_byte, latency_s=p.alpha_s, efficiency=1.0)

    gpu = GPU(name=f"{profile.name}.gpu", description=f"calibrated: {profile.measured_on}".strip(),
              peak_flops={profile.dtype: profile.compute_flops}, efficiency_max={profile.dtype: 1.0},
              batch_half=0.0, memory_bandwidth_Bps=3.0 / profile.gamma_s_per_byte,
              memory_GiB=profile.memory_GiB, price_per_hour_usd=profile.price_per_gpu_hour_usd)
    return Cluster(
        name=profile.name, description=f"calibrated profile: {profile.source}".strip(), gpu=gpu,
        gpus_per_node=profile.gpus_per_node,
        intra_node_link=link("intra") if profile.gpus_per_node > 1 else None,
        inter_node_link=link("inter"), nics_per_node=profile.nics_per_node, topology=profile.topology,
        software_latency_s=0.0, price_per_gpu_hour_usd=profile.price_per_gpu_hour_usd,
        gamma_s_per_byte=profile.gamma_s_per_byte, profile=profile,
        sources={"profile": f"{profile.source} (measured on {profile.measured_on}, {profile.created.isoformat()})"},
    )


# -------------------------------------------------------------------------------------------- cost numbers
def comm_params(cluster: Cluster, level: Level = "inter") -> CommParams:
    """alpha = software + link latency; beta = 1 / (bandwidth * efficiency); gamma = 3 / memory bandwidth.

    gamma: a receiver's reduce reads two operands and writes one, so it moves 3 bytes of GPU memory per
    byte reduced. A cluster's or profile's gamma_s_per_byte overrides it; a profile's alpha/beta win too.
    """
    if level not in _LEVELS:
        raise UserError(f"level: must be 'intra' or 'inter', got {level!r}")
    if cluster.profile is not None:
        return profile_level(cluster.profile, level)
    link = cluster.inter_node_link if level == "inter" else cluster.intra_node_link
    if link is None:
        raise UserError(f"{cluster.name}: gpus_per_node is 1, so there is no intra-node level")
    gamma = cluster.gamma_s_per_byte
    return CommParams(
        alpha_s=cluster.software_latency_s + link.latency_s,
        beta_s_per_byte=1.0 / (link.bandwidth_Bps * link.efficiency),
        gamma_s_per_byte=3.0 / cluster.gpu.memory_bandwidth_Bps if gamma is None else gamma,
    )


def compute_efficiency(gpu: GPU, dtype: str = "fp32", batch_per_gpu: Any = None) -> Any:
    """eff(b) = efficiency_max * b / (b + batch_half); b=None means the large-batch limit. Arrays broadcast."""
    if dtype not in gpu.efficiency_max:
        raise UserError(f"dtype: {gpu.name} has no {dtype!r} figures (has: {', '.join(gpu.peak_flops)})")
    emax = gpu.efficiency_max[dtype]
    if batch_per_gpu is None:
        return emax
    batch = np.asarray(batch_per_gpu, dtype=float)
    if np.any(~(batch > 0)):
        raise UserError(f"batch_per_gpu: must be > 0, got {batch_per_gpu!r}")
    eff = emax * batch / (batch + gpu.batch_half)
    return float(eff) if eff.ndim == 0 else eff


def compute_flops(cluster: Cluster, dtype: str = "fp32", batch_per_gpu: Any = None) -> Any:
    """Achieved FLOP/s of one GPU at per-GPU batch ``batch_per_gpu`` (None: large-batch limit)."""
    if cluster.profile is not None and dtype != cluster.profile.dtype:
        raise UserError(f"dtype: profile {cluster.name!r} was measured in {cluster.profile.dtype}, not {dtype!r}")
    return cluster.gpu.peak_flops.get(dtype, 0.0) * compute_efficiency(cluster.gpu, dtype, batch_per_gpu)


def price_per_gpu_hour(cluster: Cluster) -> float | None:
    """USD per GPU-hour: the cluster's own price if set, else the GPU's cloud on-demand price (None: unknown)."""
    if cluster.price_per_gpu_hour_usd is not None:
        return cluster.price_per_gpu_hour_usd
    return cluster.gpu.price_per_hour_usd


def list_presets(catalog: Catalog | None = None) -> list[Cluster]:
    """Every cluster preset, in catalog order (packaged first, then user additions), for ``firesim hardware list``."""
    catalog = catalog if catalog is not None else load_catalog()
    return list(catalog.clusters.values())
