"""Hardware catalog: GPUs, links, cluster presets and calibrated profiles, as validated data.

Every prediction starts from a few numbers: per link level the alpha-beta-gamma triple of the collective cost
model, and per GPU and dtype the achieved rates of the per-layer roofline (``firesim.compute``): convolution
and matmul FLOP/s, memory bandwidth and a per-kernel overhead. This module turns the packaged catalog
(``firesim/data/hardware.yaml``, every figure with its source), user overrides and measured profiles into those
numbers. Bad input of any kind becomes one ``UserError`` line ``"<file>: <dotted.field>: <reason>"``, never a
pydantic traceback.

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
def _per_dtype(data: Any, fields: tuple[str, ...]) -> Any:
    """A single number for a per-dtype field applies to every dtype in peak_flops."""
    if isinstance(data, dict) and isinstance(data.get("peak_flops"), dict):
        for field in fields:
            value = data.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                data = {**data, field: {dtype: value for dtype in data["peak_flops"]}}
    return data


class GPU(_Model):
    """One GPU (one CUDA device: a K80 board is two). Peaks are dense, per device, by dtype.

    The roofline (``firesim.compute``) runs a layer's FLOPs at ``peak_flops[dtype]`` times
    ``conv_efficiency[dtype]`` (convolutions) or ``matmul_efficiency[dtype]`` (everything else that does
    arithmetic: linear layers, attention, batched matmuls) and its bytes at ``memory_bandwidth_Bps`` times
    ``memory_efficiency``, plus ``layer_overhead_s`` per kernel. The efficiencies are calibrated from single-GPU
    throughput (each entry's sources say from which figure, or by which transfer rule).
    """

    FIGURES: ClassVar[tuple[str, ...]] = (
        "peak_flops", "memory_bandwidth_Bps", "memory_GiB", "price_per_hour_usd", "conv_efficiency",
        "matmul_efficiency", "memory_efficiency", "layer_overhead_s")

    name: str
    description: str = ""
    peak_flops: dict[Dtype, Flops] = Field(min_length=1)
    memory_bandwidth_Bps: Rate
    memory_GiB: GiB | None = None
    price_per_hour_usd: NonNegative | None = None
    conv_efficiency: dict[Dtype, Fraction]
    matmul_efficiency: dict[Dtype, Fraction]
    memory_efficiency: Fraction
    layer_overhead_s: Seconds
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _broadcast_efficiency(cls, data: Any) -> Any:
        return _per_dtype(data, ("conv_efficiency", "matmul_efficiency"))

    @model_validator(mode="after")
    def _efficiency_per_dtype(self) -> GPU:
        for field in ("conv_efficiency", "matmul_efficiency"):
            table = getattr(self, field)
            missing = [d for d in self.peak_flops if d not in table]
            orphan = [d for d in table if d not in self.peak_flops]
            if missing:
                raise ValueError(f"{field}: no value for {', '.join(missing)} "
                                 "(give one per peak_flops dtype, or a single number)")
            if orphan:
                raise ValueError(f"{field}: {', '.join(orphan)} has no peak_flops entry")
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


class StepTime(_Model):
    """One measured training step of a zoo model: forward and backward seconds at a batch, and what the fitted
    roofline predicts for them (the fit's residual)."""

    model: str
    batch: int = Field(ge=1)
    forward_s: Positive
    backward_s: Positive
    predicted_forward_s: NonNegative | None = None
    predicted_backward_s: NonNegative | None = None


class ComputeProfile(_Model):
    """Achieved roofline rates measured on one device (``firerun calibrate --compute``), in ``dtype``.

    matmul_flops: a large square matmul; memory_Bps: a large copy (bytes read + written per second);
    layer_overhead_s: one tiny kernel, launched back to back; conv_flops: fitted so the roofline reproduces the
    measured step times of the convolutional models in ``step_times`` (matmul_flops where none was measured).
    """

    dtype: Dtype = "fp32"
    conv_flops: Flops
    matmul_flops: Flops
    memory_Bps: Rate
    layer_overhead_s: Seconds
    step_times: list[StepTime] = Field(default_factory=list)


class HardwareProfile(_Model):
    """Measured cost-model numbers written by ``firerun calibrate``; read back through ``resolve_cluster``.

    alpha_s/beta_s_per_byte apply to both levels unless ``overrides`` gives a level its own values; they are
    absent from a profile calibrated on one rank (compute only), which then predicts one GPU only.
    ``compute`` holds the measured roofline rates (``--compute``); without it compute_flops (a matmul's
    achieved FLOP/s) runs every layer's FLOPs, memory traffic moves at the reduce bandwidth 3 / gamma and
    kernels cost nothing extra.
    """

    kind: Literal["profile"] = "profile"
    name: str
    alpha_s: Seconds | None = None
    beta_s_per_byte: Positive | None = None
    gamma_s_per_byte: Positive | None = None
    compute_flops: Flops | None = None
    compute: ComputeProfile | None = None
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
    def _consistent(self) -> HardwareProfile:
        if "intra" in self.overrides and self.gpus_per_node == 1:
            raise ValueError("overrides: 'intra' given but gpus_per_node is 1 (no intra-node level)")
        network = (self.alpha_s, self.beta_s_per_byte, self.gamma_s_per_byte)
        if any(x is None for x in network) and any(x is not None for x in network):
            raise ValueError("alpha_s, beta_s_per_byte, gamma_s_per_byte: give all three or none")
        if self.alpha_s is None and self.compute is None:
            raise ValueError("compute: a profile without network figures must hold compute figures")
        if self.compute_flops is None and self.compute is None:
            raise ValueError("compute_flops: required unless the profile has a compute section")
        if self.compute is not None and self.compute.dtype != self.dtype:
            raise ValueError(f"compute.dtype: {self.compute.dtype} differs from the profile's dtype {self.dtype}")
        return self

    @property
    def has_network(self) -> bool:
        return self.alpha_s is not None


class Cluster(_Model):
    """A cluster preset: GPU model, GPUs per node, the link inside a node and the one between nodes.

    ``nics_per_node`` inter-node links leave each node (DGX: one per GPU). ``input_samples_per_s_per_node`` is
    the most image samples per second the node's data loading delivers (None: not limiting). ``profile`` is set
    when the cluster came from a calibrated profile; its measured numbers then win over the catalog figures.
    """

    FIGURES: ClassVar[tuple[str, ...]] = (
        "gpus_per_node", "nics_per_node", "topology", "software_latency_s", "price_per_gpu_hour_usd",
        "gamma_s_per_byte", "input_samples_per_s_per_node")

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
    input_samples_per_s_per_node: Positive | None = None
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
    if not profile.has_network:
        raise UserError(f"{profile.name}: calibrated on one rank (compute only), so it has no network figures; "
                        "predict 1 GPU, or calibrate with `firerun run --nproc 2 calibrate`")
    override = profile.overrides.get(level, LevelOverride())
    return CommParams(
        alpha_s=profile.alpha_s if override.alpha_s is None else override.alpha_s,
        beta_s_per_byte=profile.beta_s_per_byte if override.beta_s_per_byte is None else override.beta_s_per_byte,
        gamma_s_per_byte=profile.gamma_s_per_byte,
    )


def profile_to_cluster(profile: HardwareProfile) -> Cluster:
    """A Cluster that behaves like the profile: comm_params and ``firesim.compute.achieved_rates`` return the
    measured numbers (the GPU entry only carries them for display and memory size)."""

    def link(level: Level) -> Link:
        if not profile.has_network:
            return Link(name=f"{profile.name}.{level}", description="not measured (compute-only profile)",
                        bandwidth_Bps=1.0, latency_s=0.0, efficiency=1.0)
        p = profile_level(profile, level)
        return Link(name=f"{profile.name}.{level}", description=f"calibrated ({level}-node)",
                    bandwidth_Bps=1.0 / p.beta_s_per_byte, latency_s=p.alpha_s, efficiency=1.0)

    compute = profile.compute
    conv, matmul = (compute.conv_flops, compute.matmul_flops) if compute else (profile.compute_flops,) * 2
    peak = max(conv, matmul)
    gpu = GPU(name=f"{profile.name}.gpu", description=f"calibrated: {profile.measured_on}".strip(),
              peak_flops={profile.dtype: peak}, conv_efficiency=conv / peak, matmul_efficiency=matmul / peak,
              memory_bandwidth_Bps=compute.memory_Bps if compute else 3.0 / profile.gamma_s_per_byte,
              memory_efficiency=1.0, layer_overhead_s=compute.layer_overhead_s if compute else 0.0,
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


def price_per_gpu_hour(cluster: Cluster) -> float | None:
    """USD per GPU-hour: the cluster's own price if set, else the GPU's cloud on-demand price (None: unknown)."""
    if cluster.price_per_gpu_hour_usd is not None:
        return cluster.price_per_gpu_hour_usd
    return cluster.gpu.price_per_hour_usd


def list_presets(catalog: Catalog | None = None) -> list[Cluster]:
    """Every cluster preset, in catalog order (packaged first, then user additions), for ``firesim hardware list``."""
    catalog = catalog if catalog is not None else load_catalog()
    return list(catalog.clusters.values())
