"""Published training throughput: the single-GPU figures the catalog's efficiencies are fitted to, and the
held-out figures (multi-GPU, other modes) the model is checked against. Data: ``firesim/data/throughput.yaml``.

``fit_catalog`` refits every efficiency a calibration figure names, in file order, each by bisection so that
the roofline reproduces its figure; ``python -m bench compute --fit`` prints the values to copy into
``hardware.yaml``. Check rows are never fitted to.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firesim.compute import DEFAULT_OVERHEADS, DTYPE_NBYTES, Overheads, fit_efficiency, precision, step_time
from firesim.config import read_yaml
from firesim.errors import UserError, validated
from firesim.hardware import Catalog, Cluster, load_catalog
from firesim.training import iteration
from firesim.workload import load_workload

__all__ = ["PublishedFigure", "figure_cluster", "fit_catalog", "load_figures", "predicted_samples_per_s"]

FITTABLE = ("conv_efficiency", "matmul_efficiency")


class PublishedFigure(BaseModel):
    """One published throughput: a model trained (or run forward) on ``gpus`` GPUs of ``hardware``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model: str
    hardware: str  # a cluster preset, or for one GPU a GPU of the catalog
    gpus: int = Field(ge=1)
    dtype: Literal["fp32", "tf32", "fp16", "bf16", "fp8"]
    batch_per_gpu: int = Field(ge=1)
    accumulation: int = Field(default=1, ge=1)
    optimizer: str | None = None
    mode: Literal["training", "inference"] = "training"
    samples_per_s: float = Field(gt=0)
    role: Literal["calibrate", "check"]
    fits: tuple[str, ...] = ()
    source: str = Field(min_length=20)

    @model_validator(mode="after")
    def _calibration_is_single_gpu_training(self) -> PublishedFigure:
        if self.role == "calibrate":
            if self.gpus != 1 or self.mode != "training":
                raise ValueError("role: only single-GPU training figures may calibrate")
            if not self.fits:
                raise ValueError("fits: a calibration figure names the efficiencies it fits")
        elif self.fits:
            raise ValueError("fits: a check figure fits nothing")
        for target in self.fits:
            field, _, dtype = target.partition(".")
            if field not in FITTABLE or dtype not in DTYPE_NBYTES:
                raise ValueError(f"fits: {target!r} is not <{'|'.join(FITTABLE)}>.<dtype>")
        return self


@lru_cache(maxsize=1)
def load_figures() -> tuple[PublishedFigure, ...]:
    """The packaged figures, in file order."""
    path = Path(str(resources.files("firesim") / "data" / "throughput.yaml"))
    data = read_yaml(path)
    return tuple(validated(PublishedFigure, row, str(path)) for row in data["figures"])


def figure_cluster(figure: PublishedFigure, catalog: Catalog | None = None) -> Cluster:
    """The preset the figure names, or a one-GPU cluster of the GPU it names."""
    catalog = catalog or load_catalog()
    if figure.hardware in catalog.clusters:
        return catalog.clusters[figure.hardware]
    if figure.hardware not in catalog.gpus:
        raise UserError(f"{figure.name}: hardware {figure.hardware!r} is neither a preset nor a GPU")
    if figure.gpus != 1:
        raise UserError(f"{figure.name}: {figure.gpus} GPUs need a cluster preset, not a GPU")
    any_link = next(iter(catalog.links.values()))
    return Cluster(name=figure.hardware, gpu=catalog.gpus[figure.hardware], gpus_per_node=1,
                   inter_node_link=any_link, topology="star")


def predicted_samples_per_s(figure: PublishedFigure, cluster: Cluster | None = None, algo: str = "ring",
                            overheads: Overheads = DEFAULT_OVERHEADS) -> float:
    """What the model predicts for the figure's configuration (NCCL on one node runs a ring: ``algo``)."""
    profile = load_workload(figure.model)
    cluster = cluster or figure_cluster(figure)
    if figure.mode == "inference":
        step = step_time(profile, cluster, figure.batch_per_gpu, precision(figure.dtype), "sgd",
                         with_optimizer=False)
        return figure.gpus * figure.batch_per_gpu / step.forward_s
    it = iteration(profile, cluster, figure.gpus, figure.batch_per_gpu, algo, dtype=figure.dtype,
                   optimizer=figure.optimizer, overheads=overheads, accumulation=figure.accumulation)
    return it.samples_per_s


def fit_catalog(catalog: Catalog | None = None) -> dict[str, float]:
    """Refit every efficiency the calibration figures name: ``{"<gpu>.<field>.<dtype>": value}``, in order.

    Each figure's targets are tied to one number, found by bisection in (0, 1] so that the figure's predicted
    throughput equals the published one, with every earlier fit already applied.
    """
    catalog = catalog or load_catalog()
    gpus = dict(catalog.gpus)
    fitted: dict[str, float] = {}
    for figure in load_figures():
        if figure.role != "calibrate":
            continue
        base = figure_cluster(figure, catalog)
        gpu = gpus[base.gpu.name]

        def with_efficiency(value: float, gpu=gpu, figure=figure):
            update = {field: dict(getattr(gpu, field)) for field in FITTABLE}
            for target in figure.fits:
                field, _, dtype = target.partition(".")
                if dtype in gpu.peak_flops:
                    update[field][dtype] = value
            return gpu.model_copy(update=update)

        def throughput(value: float, base=base, figure=figure, with_efficiency=with_efficiency) -> float:
            return predicted_samples_per_s(figure, base.model_copy(update={"gpu": with_efficiency(value)}))

        value = fit_efficiency(throughput, figure.samples_per_s)
        gpus[gpu.name] = with_efficiency(value)
        for target in figure.fits:
            if target.partition(".")[2] in gpu.peak_flops:
                fitted[f"{gpu.name}.{target}"] = value
    return fitted
