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

from firesim.errors import UserError
from firesim.hardware import Cluster
from firesim.search.executor import map_chunked
from firesim.training import DDP_BUCKET_NBYTES, predict
from firesim.whatif import WhatIf
from firesim.workload import ModelProfile

__all__ = ["Case", "Setting", "evaluate", "grid", "sweep", "REASONS"]

# Why a configuration cannot run (``status == "invalid"``), in the order they are checked.
BATCH = "batch per GPU < 1"
PRECISION = "precision not supported"
ALGORITHM = "algorithm does not apply"
MEMORY = "does not fit memory"
INPUT = "invalid"
REASONS = (BATCH, PRECISION, ALGORITHM, MEMORY, INPUT)


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
                         baseline_batch=setting.baseline_batch, dtype=case.dtype, overlap=setting.overlap,
                         bucket_nbytes=setting.bucket_nbytes, engine=setting.engine, whatif=setting.whatif).record()
    except UserError as err:
        return invalid(_kind(str(err)), str(err))
    record = {**record, "model": case.model, "hardware": case.hardware, "algo": case.algo, "dtype": case.dtype,
              "epochs": epochs, "status": "ok", "reason": None, "detail": None}
    if record.get("fits") is False:
        need, have = record.get("memory_GiB"), cluster.gpu.memory_GiB
        detail = f"{need:.1f} GiB per GPU" + (f" > {have:g} GiB" if have else "") if need is not None else ""
        record.update(status="invalid", reason=MEMORY, detail=detail)
    return record


def sweep(setting: Setting, cases: Sequence[Case], *, executor: Executor | None = None,
          progress: Callable[[int], None] | None = None) -> list[dict]:
    """``evaluate`` every case (in order), on ``executor`` (None: this process)."""
    for case in cases:
        if case.model not in setting.profiles or case.hardware not in setting.clusters:
            raise UserError(f"sweep: case {case} names a model or hardware the setting lacks")
    return map_chunked(evaluate, setting, cases, executor=executor, progress=progress)
