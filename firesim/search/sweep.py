"""A grid of training configurations (model x hardware x GPUs x algorithm x batch x precision), each predicted
by ``firesim.training.predict``, fanned out over an executor (``firesim.search.executor``).

``evaluate(setting, case)`` is the unit of work: the prediction record of one configuration, or, when it
cannot run, the reason in words (``batch per GPU < 1``, a precision the GPU lacks, an algorithm that does not
apply, memory). It is deterministic, so any executor returns the same records.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass

from firesim.compute import precision, resolve_optimizer
from firesim.errors import UserError
from firesim.hardware import Catalog, Cluster, list_presets, resolve_cluster
from firesim.plans import algorithms, resolve
from firesim.search.executor import map_chunked
from firesim.training import DDP_BUCKET_NBYTES, predict
from firesim.whatif import WhatIf
from firesim.workload import ModelProfile, load_workload

__all__ = ["Case", "Setting", "evaluate", "grid", "search_space", "sweep", "REASONS"]

# Why a configuration cannot run (``status == "invalid"``), in the order they are checked.
BATCH = "batch per GPU < 1"
PRECISION = "precision not supported"
ALGORITHM = "algorithm does not apply"
MEMORY = "does not fit memory"
INPUT = "invalid"
REASONS = (BATCH, PRECISION, ALGORITHM, MEMORY, INPUT)

# What a search may cost, checked before it starts: records take ~3 KB each; the simulator takes seconds per
# configuration at 64 GPUs and minutes at 256 (a 256-GPU ring iteration on dgx-a100: ~2 min on 2 cores).
MAX_CASES = 200_000
MAX_CASES_DES = 200
MAX_GPUS_DES = 64


@dataclass(frozen=True)
class Case:
    """One configuration of the grid."""

    model: str
    hardware: str
    gpus: int
    algo: str
    batch: int  # global batch, split over the GPUs
    dtype: str = "fp32"


@dataclass(frozen=True)
class Setting:
    """What every configuration of a search shares; pickled once per chunk of cases."""

    profiles: Mapping[str, ModelProfile]
    clusters: Mapping[str, Cluster]
    epochs: float = 90.0
    steps: float | None = None  # iterations; when set it replaces epochs (epochs = steps x batch / samples)
    baseline_batch: int = 32
    grad_dtype: str | None = None  # None: fp32 gradients (mixed precision keeps them), or bf16/fp16
    optimizer: str | None = None  # None: the model's usual (firesim.compute.resolve_optimizer)
    overlap: bool = True
    bucket_nbytes: int = DDP_BUCKET_NBYTES
    engine: str = "analytic"
    whatif: WhatIf | None = None

    def __post_init__(self) -> None:
        """Inputs shared by every case are checked once here, so that a bad one is one error, not N verdicts."""
        if self.engine not in ("analytic", "des"):
            raise UserError(f"engine: must be 'analytic' or 'des', got {self.engine!r}")
        if self.steps is None and not self.epochs > 0:
            raise UserError(f"epochs: must be > 0, got {self.epochs!r}")
        if self.steps is not None and not self.steps > 0:
            raise UserError(f"steps: must be > 0, got {self.steps!r}")
        if self.baseline_batch < 1 or self.bucket_nbytes < 1:
            raise UserError("baseline batch and bucket size: must be >= 1")
        if self.whatif is not None and self.whatif.active and self.engine != "des":
            raise UserError("stragglers, rank speeds and link overrides are played by the simulator: use --engine des")


def grid(models: Sequence[str], hardware: Sequence[str], gpus: Sequence[int], algos: Sequence[str],
         batches: Sequence[int], dtypes: Sequence[str] = ("fp32",)) -> list[Case]:
    """Every combination, in this nesting order (model outermost, dtype innermost)."""
    return [Case(*combo) for combo in itertools.product(models, hardware, gpus, algos, batches, dtypes)]


def search_space(models: Sequence[str], hardware: Sequence[str] | None = None,
                 gpus: Sequence[int] = tuple(2**k for k in range(11)), algos: Sequence[str] | None = None,
                 batches: Sequence[int] = tuple(2**k for k in range(8, 14)), dtypes: Sequence[str] = ("fp32",), *,
                 catalog: Catalog | None = None, samples: int | None = None, **setting) -> tuple[Setting, list[Case]]:
    """The ``Setting`` and the grid of a search, every input checked once, up front.

    models: zoo names or profile JSON files; hardware: presets or cluster YAML files (None: every preset of
    ``catalog``); algos: specs (None: every registered algorithm with a closed form); samples: training
    samples per epoch instead of the profile's dataset; ``setting``: the other ``Setting`` fields.
    """
    if samples is not None and not samples >= 1:
        raise UserError(f"samples: must be >= 1, got {samples!r}")
    hardware = [c.name for c in list_presets(catalog)] if hardware is None else list(hardware)
    clusters = {h: resolve_cluster(h, catalog) for h in hardware}
    profiles = {m: load_workload(m) for m in models}
    if samples is not None:
        profiles = {m: p.model_copy(update={"train_samples": int(samples)}) for m, p in profiles.items()}
    algos = [a.name for a in algorithms() if a.time is not None] if algos is None else list(algos)
    for algo in algos:
        resolve(algo, ranks_per_node=1)  # syntax and options; node-aware defaults come per cluster
    for name, values in (("gpus", gpus), ("batch", batches)):
        if not values or any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
            raise UserError(f"{name}: need integers >= 1, got {list(values)!r}")
    if not dtypes:
        raise UserError("dtype: give at least one")
    for dtype in dtypes:
        precision(dtype, setting.get("grad_dtype"))
    for profile in profiles.values():
        resolve_optimizer(setting.get("optimizer"), profile)
    return Setting(profiles=profiles, clusters=clusters, **setting), grid(models, hardware, gpus, algos, batches, dtypes)


def _kind(message: str) -> str:
    """A UserError from the training model as one of ``REASONS``."""
    head = message.split(":", 1)[0].strip().lower()
    if head == "dtype":
        return PRECISION
    if head.startswith("algo"):
        return ALGORITHM
    if head == "batch":
        return BATCH
    return INPUT


def evaluate(setting: Setting, case: Case) -> dict:
    """The prediction record of ``case`` with ``status`` "ok", or its fields with ``status`` "invalid", a
    ``reason`` (one of ``REASONS``) and the model's own words in ``detail``."""
    head = asdict(case)
    profile, cluster = setting.profiles[case.model], setting.clusters[case.hardware]

    def invalid(reason: str, detail: str) -> dict:
        return {**head, "status": "invalid", "reason": reason, "detail": detail}

    if case.batch < case.gpus:
        return invalid(BATCH, f"{case.batch} samples over {case.gpus} GPUs")
    epochs = setting.epochs if setting.steps is None else setting.steps * case.batch / profile.train_samples
    try:
        record = predict(profile, cluster, case.gpus, case.algo, batch=case.batch, epochs=epochs,
                         baseline_batch=setting.baseline_batch, dtype=case.dtype, grad_dtype=setting.grad_dtype,
                         optimizer=setting.optimizer, overlap=setting.overlap, bucket_nbytes=setting.bucket_nbytes,
                         engine=setting.engine, whatif=setting.whatif).record()
    except UserError as err:
        return invalid(_kind(str(err)), str(err))
    record = {**record, "hardware": case.hardware, "algo": case.algo, "epochs": epochs, "status": "ok",
              "reason": None, "detail": None}
    if record["fits"] is False:
        record.update(status="invalid", reason=MEMORY,
                      detail=f"{record['memory_GiB']:.1f} GiB per GPU > {record['memory_capacity_GiB']:g} GiB")
    return record


def check_cost(setting: Setting, cases: Sequence[Case]) -> None:
    """Refuse, up front, a search that would exhaust the machine (see ``MAX_CASES``)."""
    limit = MAX_CASES_DES if setting.engine == "des" else MAX_CASES
    if len(cases) > limit:
        raise UserError(f"search: {len(cases):,} configurations exceed the limit of {limit:,} for engine "
                        f"{setting.engine}; narrow the models, hardware, GPU counts, algorithms, batches or dtypes")
    if setting.engine == "des" and max((c.gpus for c in cases), default=0) > MAX_GPUS_DES:
        raise UserError(f"search: the simulator takes minutes per configuration above {MAX_GPUS_DES} GPUs; "
                        f"use engine analytic or at most {MAX_GPUS_DES} GPUs")


def sweep(setting: Setting, cases: Sequence[Case], *, executor: Executor | None = None,
          progress: Callable[[int], None] | None = None) -> list[dict]:
    """``evaluate`` every case (in order), on ``executor`` (None: this process)."""
    check_cost(setting, cases)
    for case in cases:
        if case.model not in setting.profiles or case.hardware not in setting.clusters:
            raise UserError(f"sweep: case {case} names a model or hardware the setting lacks")
    return map_chunked(evaluate, setting, cases, executor=executor, progress=progress)
