"""FireCaffe (Iandola et al., CVPR 2016) reproduced from the model profiles and the ``titan`` preset.

Two parts, as in the paper:

(a) **communication per iteration** of a parameter server against a reduction tree, for NiN, AlexNet,
    GoogLeNet and VGG-19 on 1..256 GPUs: the registry's closed forms on Titan's Gemini figures (the
    paper's one-server PS, a sharded PS as an extra line), beside the paper's own back-of-envelope formulas
    (PS: 32|W|p/B, tree: 2 x 32|W| log2 p / B bits, with B the link's usable bandwidth);
(b) **time to train and speedup** of GoogLeNet and NiN on 1, 32 and 128 GPUs at batch 256 and 1024, with
    the epochs and the single-GPU baselines of REFERENCE.md, against the paper's published speedups.

Nothing here is fitted to the paper: the speedups are what ``firesim.training.predict`` gives with the
catalog's figures. Every assumption is a named field of ``PaperSetup`` (defaults below, each with its
source) or a catalog figure with its ``sources`` entry, and ``assumptions()`` lists them all with the
result. A YAML file with the same fields (``firesim paper --setup my.yaml``) changes any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firesim.cluster import allreduce_seconds
from firesim.config import read_yaml
from firesim.errors import UserError, validated
from firesim.hardware import Catalog, Cluster, Link, comm_params, load_catalog, resolve_cluster
from firesim.plans import resolve, split_specs
from firesim.training import predict
from firesim.whatif import WhatIf
from firesim.workload import ModelProfile, load_workload

__all__ = ["PUBLISHED", "PaperResult", "PaperSetup", "TrainingSetup", "assumptions", "communication",
           "reproduce_paper", "training"]

# The paper's headline results: what the model must predict, never what it is fitted to.
PUBLISHED = {
    ("googlenet", 128): 47.0,
    ("nin", 128): 39.0,
}
PUBLISHED_SOURCE = ("Iandola, Ashraf, Moskewicz, Keutzer, FireCaffe, CVPR 2016 (arXiv 1511.00175), abstract: "
                    "47x (GoogLeNet) and 39x (NiN) on 128 GPUs of Titan, reduction tree, large batch")
PUBLISHED_BATCH = 1024  # the paper's 128-GPU runs use its large batch


class TrainingSetup(BaseModel):
    """How one model was trained in the paper: the single-GPU baseline and the epochs at each batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline_batch: int = Field(ge=1)
    baseline_iterations: float | None = Field(None, gt=0)
    baseline_epochs: float | None = Field(None, gt=0)
    epochs: dict[int, float] = Field(min_length=1, description="epochs to train at each global batch")
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_baseline_length(self) -> TrainingSetup:
        if (self.baseline_iterations is None) == (self.baseline_epochs is None):
            raise ValueError("give exactly one of baseline_iterations and baseline_epochs")
        if any(not e > 0 for e in self.epochs.values()) or any(b < 1 for b in self.epochs):
            raise ValueError("epochs: batches must be >= 1 and epochs > 0")
        return self

    def baseline_epochs_for(self, profile: ModelProfile) -> float:
        if self.baseline_epochs is not None:
            return self.baseline_epochs
        return self.baseline_iterations * self.baseline_batch / profile.train_samples


DEFAULT_TRAINING = {
    "googlenet": TrainingSetup(
        baseline_batch=32, baseline_iterations=2_400_000, epochs={256: 72, 1024: 72},
        sources={
            "baseline": "BVLC GoogLeNet quick solver: batch 32, 2.4 M iterations (~60 epochs of ImageNet-1k), "
                        "FireCaffe's single-GPU baseline (REFERENCE.md)",
            "epochs 1024": "72 epochs at batch 1024, the authors' public scripts (REFERENCE.md)",
            "epochs 256": "assumption: REFERENCE.md gives epochs for batch 1024 only; batch 256 taken alike",
        }),
    "nin": TrainingSetup(
        baseline_batch=256, baseline_epochs=90, epochs={256: 90, 1024: 90},
        sources={
            "baseline": "batch 256: NiN's LR rule 0.01 x batch/256 (REFERENCE.md) is anchored at batch 256",
            "epochs": "assumption: REFERENCE.md gives no NiN epoch count; 90 = BVLC CaffeNet's 450k iterations "
                      "at batch 256. The same at every batch (LR scaled linearly), so the speedup does not "
                      "depend on it; time to train does",
        }),
}


class PaperSetup(BaseModel):
    """Every choice of the reproduction that is not a catalog figure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hardware: str = Field("titan", description="cluster preset or YAML: Titan, K20X + Cray Gemini 3D torus")
    comm_models: tuple[str, ...] = ("nin", "alexnet", "googlenet", "vgg19")
    comm_gpus: tuple[int, ...] = tuple(2**k for k in range(9))
    comm_algos: tuple[str, ...] = Field(("ps", "tree", "ps:servers=16"),
                                        description="ps = the paper's one server; sharded PS where p >= servers")
    gradient_nbytes_per_param: int = Field(4, ge=1, description="fp32 gradients, as Caffe in 2015")
    training: dict[str, TrainingSetup] = Field(default_factory=lambda: dict(DEFAULT_TRAINING))
    gpus: tuple[int, ...] = (1, 32, 128)
    batches: tuple[int, ...] = (256, 1024)
    algos: tuple[str, ...] = Field(("tree", "ps"), description="tree = FireCaffe's reduction tree")
    overlap: bool = Field(False, description="FireCaffe exchanges the whole gradient after backward")
    staging_link: str | None = Field(
        "pcie2-x16", description="Titan has no GPUDirect RDMA: a message crosses this catalog link GPU->host at the "
                                 "sender and host->GPU at the receiver. The model overlaps those copies with the "
                                 "network; the *_serial_staging columns are the bound where they are not")
    engine: str = Field("analytic", description="analytic: closed forms; des: the iteration on the 3D torus")

    @model_validator(mode="after")
    def _valid(self) -> PaperSetup:
        if any(g < 1 for g in (*self.comm_gpus, *self.gpus)) or any(b < 1 for b in self.batches):
            raise ValueError("gpus and batches must be >= 1")
        if self.engine not in ("analytic", "des"):
            raise ValueError(f"engine: must be 'analytic' or 'des', got {self.engine!r}")
        missing = [b for m in self.training.values() for b in self.batches if b not in m.epochs]
        if missing:
            raise ValueError(f"training: no epochs given for batch {missing[0]}")
        return self


def load_setup(path: str | Path | None = None, **overrides) -> PaperSetup:
    """The default setup, or the fields of a YAML file over it, then keyword overrides (command-line flags)."""
    data = {} if path is None else read_yaml(path, "paper setup file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of PaperSetup fields")
    if "training" in data and isinstance(data["training"], dict):
        data["training"] = {**DEFAULT_TRAINING, **data["training"]}
    return validated(PaperSetup, {**data, **{k: v for k, v in overrides.items() if v is not None}},
                     str(path or "paper setup"))


# ----------------------------------------------------------------------------------------------- (a)
def paper_formula_s(algo: str, gpus: int, gradient_nbytes: float, bandwidth_Bps: float) -> float | None:
    """The paper's estimates: PS (one server) 32|W| p / B, reduction tree 2 x 32|W| log2 p / B, in bits."""
    bits, name = 8 * gradient_nbytes, resolve(algo)
    if name.spec == "ps":
        return bits * gpus / (8 * bandwidth_Bps) if gpus > 1 else 0.0
    if name.spec == "tree":
        return 2 * bits * math.log2(gpus) / (8 * bandwidth_Bps)
    return None


def communication(setup: PaperSetup, cluster: Cluster, profiles: dict[str, ModelProfile]) -> list[dict]:
    """Part (a): one record per model x GPU count x algorithm (sharded PS only where p >= its servers)."""
    inter = comm_params(cluster, "inter")
    records = []
    for model in setup.comm_models:
        nbytes = profiles[model].params * setup.gradient_nbytes_per_param
        for gpus in setup.comm_gpus:
            for algo in setup.comm_algos:
                choice = resolve(algo)
                try:
                    choice.check(gpus)
                except UserError:
                    continue
                records.append({"model": model, "gpus": gpus, "algo": choice.spec, "gradient_nbytes": nbytes,
                                "comm_s": float(allreduce_seconds(cluster, gpus, nbytes, choice)),
                                "paper_formula_s": paper_formula_s(algo, gpus, nbytes, 1 / inter.beta_s_per_byte)})
    return records


# ----------------------------------------------------------------------------------------------- (b)
def serially_staged(cluster: Cluster, copy: Link) -> Cluster:
    """``cluster`` where every inter-node message is also copied over ``copy`` twice (GPU to host at the sender,
    host to GPU at the receiver) one after the other: per byte, 1/network + 2/copy seconds."""
    inter = cluster.inter_node_link
    effective_Bps = 1 / (1 / (inter.bandwidth_Bps * inter.efficiency) + 2 / (copy.bandwidth_Bps * copy.efficiency))
    staged = inter.model_copy(update={"efficiency": effective_Bps / inter.bandwidth_Bps})
    return cluster.model_copy(update={"inter_node_link": staged})


def training(setup: PaperSetup, cluster: Cluster, profiles: dict[str, ModelProfile],
             whatif: WhatIf | None = None, catalog: Catalog | None = None) -> list[dict]:
    """Part (b): one record per model x batch x GPU count x algorithm (one 1-GPU row per batch, algo "none").

    speedup = time of the single-GPU baseline (its batch and length) / time of this run (its epochs);
    ``published_speedup`` is the paper's figure where it reports one; ``speedup_serial_staging`` the same run
    with the copies to and from host memory not overlapped (``PaperSetup.staging_link``).
    """
    staged = None
    if setup.staging_link is not None:
        links = (catalog or load_catalog()).links
        if setup.staging_link not in links:
            raise UserError(f"staging_link: unknown link {setup.staging_link!r} (known: {', '.join(links)})")
        staged = serially_staged(cluster, links[setup.staging_link])
    records = []
    for model, how in setup.training.items():
        profile = profiles[model]
        base_epochs = how.baseline_epochs_for(profile)
        base = predict(profile, cluster, 1, setup.algos[0], batch=how.baseline_batch, epochs=base_epochs,
                       overlap=setup.overlap)
        for batch in setup.batches:
            for gpus in setup.gpus:
                for algo in (setup.algos[:1] if gpus == 1 else setup.algos):
                    run = predict(profile, cluster, gpus, algo, batch=batch, epochs=how.epochs[batch],
                                  overlap=setup.overlap, engine=setup.engine, whatif=whatif).record()
                    published = PUBLISHED.get((model, gpus)) if batch == PUBLISHED_BATCH and \
                        resolve(algo).spec == "tree" else None
                    serial = run if staged is None else predict(
                        profile, staged, gpus, algo, batch=batch, epochs=how.epochs[batch], overlap=setup.overlap,
                        engine=setup.engine, whatif=whatif).record()
                    records.append({
                        "model": model, "gpus": gpus, "batch": batch, "algo": "none" if gpus == 1 else algo,
                        "batch_per_gpu": run["batch_per_gpu"], "epochs": how.epochs[batch],
                        "compute_s": run["compute_s"], "exposed_comm_s": run["exposed_comm_s"],
                        "iteration_s": run["iteration_s"], "time_to_train_s": run["time_to_train_s"],
                        "speedup": base.time_to_train_s / run["time_to_train_s"],
                        "achieved_flops": profile.train_flops * run["batch_per_gpu"] / run["compute_s"],
                        "baseline_batch": how.baseline_batch, "baseline_epochs": base_epochs,
                        "baseline_time_s": base.time_to_train_s,
                        "baseline_achieved_flops": profile.train_flops * how.baseline_batch / base.compute_s,
                        "published_speedup": published,
                        "time_to_train_serial_staging_s": serial["time_to_train_s"],
                        "speedup_serial_staging": base.time_to_train_s / serial["time_to_train_s"],
                        "memory_GiB": run["memory_GiB"], "fits": run["fits"],
                    })
    return records


# ------------------------------------------------------------------------------------------ assumptions
def _value_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _achieved(gpu: str, model: str, batch_per_gpu: float, flops: float) -> dict:
    return {"name": f"{gpu} achieved FLOP/s, {model} at {batch_per_gpu:g}/GPU", "value": f"{flops / 1e12:.3f} TFLOP/s",
            "source": "what the compute model gives with the figures above (the profile's training FLOPs / "
                      "predicted compute time); not an input"}


def assumptions(setup: PaperSetup, cluster: Cluster, profiles: dict[str, ModelProfile],
                train_records: Sequence[dict] = ()) -> list[dict]:
    """Every figure behind the result: name, value, where it comes from."""
    rows = [{"name": "hardware", "value": cluster.name, "source": cluster.description}]
    gpu, link = cluster.gpu, cluster.inter_node_link
    for key, source in gpu.sources.items():
        if hasattr(gpu, key):
            rows.append({"name": f"{gpu.name}.{key}", "value": _value_text(getattr(gpu, key)), "source": source})
    for rec in train_records:
        if rec["algo"] == "none" and rec["batch"] == min(setup.batches):
            rows.append(_achieved(gpu.name, rec["model"], rec["baseline_batch"], rec["baseline_achieved_flops"]))
        if rec["gpus"] == max(setup.gpus) and rec["algo"] == setup.algos[0]:
            rows.append(_achieved(gpu.name, rec["model"], rec["batch_per_gpu"], rec["achieved_flops"]))
    for key, source in link.sources.items():
        rows.append({"name": f"{link.name}.{key}", "value": _value_text(getattr(link, key)), "source": source})
    for key, source in cluster.sources.items():
        rows.append({"name": f"{cluster.name}.{key}", "value": _value_text(getattr(cluster, key)), "source": source})
    inter = comm_params(cluster, "inter")
    rows.append({"name": "alpha, beta, gamma (inter-node)",
                 "value": f"{inter.alpha_s * 1e6:.3g} us, {1 / inter.beta_s_per_byte / 1e9:.3g} GB/s, "
                          f"{inter.gamma_s_per_byte * 1e12:.3g} ps/B",
                 "source": "firesim.hardware.comm_params: software + link latency; bandwidth x efficiency; "
                           "3 bytes of GPU memory traffic per byte reduced"})
    for name, field in PaperSetup.model_fields.items():
        if field.description and name not in ("training", "hardware"):
            rows.append({"name": name, "value": _value_text(getattr(setup, name)), "source": field.description})
    for model, how in setup.training.items():
        base = f"batch {how.baseline_batch}, {how.baseline_epochs_for(profiles[model]):.1f} epochs"
        rows.append({"name": f"{model} single-GPU baseline", "value": base, "source": how.sources.get("baseline", "")})
        epochs = ", ".join(f"batch {b}: {e:g}" for b, e in how.epochs.items())
        rows.append({"name": f"{model} epochs", "value": epochs,
                     "source": "; ".join(v for k, v in how.sources.items() if k.startswith("epochs"))})
        p = profiles[model]
        rows.append({"name": f"{model} profile", "value": f"{p.params / 1e6:.2f} M params, "
                     f"{p.train_flops / 1e9:.2f} GFLOP/sample, {p.train_samples:,} samples/epoch",
                     "source": "firesim/data/profiles (models/ zoo, meta-device profiling)"})
    rows.append({"name": "published speedups", "value": "GoogLeNet 47x, NiN 39x (128 GPUs)", "source": PUBLISHED_SOURCE})
    return rows


@dataclass
class PaperResult:
    setup: PaperSetup
    communication: list[dict]
    training: list[dict]
    assumptions: list[dict]

    def to_dict(self) -> dict:
        return {"training": self.training, "communication": self.communication, "assumptions": self.assumptions,
                "setup": self.setup.model_dump(mode="json")}


def reproduce_paper(setup: PaperSetup | None = None, cluster: Cluster | str | None = None,
                    whatif: WhatIf | None = None, catalog: Catalog | None = None) -> PaperResult:
    """Both parts of the paper with ``setup`` (default: ``PaperSetup()``) on ``cluster`` (default: its hardware),
    links and presets from ``catalog`` (default: the packaged one)."""
    setup = setup or PaperSetup()
    if not isinstance(cluster, Cluster):
        cluster = resolve_cluster(cluster or setup.hardware, catalog)
    for algo in (*setup.comm_algos, *setup.algos):
        resolve(algo)
    names = set(setup.comm_models) | set(setup.training)
    profiles = {m: load_workload(m) for m in sorted(names)}
    comm = communication(setup, cluster, profiles)
    train = training(setup, cluster, profiles, whatif, catalog)
    return PaperResult(setup, comm, train, assumptions(setup, cluster, profiles, train))


def parse_algos(text: str | None) -> tuple[str, ...] | None:
    """'tree,ps' -> ('tree', 'ps'), each checked against the registry; None stays None."""
    if text is None:
        return None
    specs = tuple(split_specs(text))
    for spec in specs:
        resolve(spec)
    return specs
