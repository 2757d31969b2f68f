"""Data-parallel training the way PyTorch users run it, with the gradient exchange of any registry plan.

The model is wrapped in ``DistributedDataParallel`` and a communication hook (``firerun.ddp``) exchanges
each gradient bucket with the chosen plan while backward goes on. Around that:

* the large-batch recipe (``firerun.recipe``): LR scaled with the global batch, warmup, decay, LARS;
* gradient accumulation: ``accumulation - 1`` micro-batches under ``ddp.no_sync()``, then one that syncs;
* data (``firerun.data``): real digits or synthetic images, dealt to workers by a sampler that depends only
  on (seed, step) and the global batch;
* replicas are compared every ``check_every`` steps: a 48-bit hash of every worker's parameters, which must
  be equal (bit-identical replicas; ``firesim.plans.determinism`` proves every registry plan sums in one
  order on all ranks); a difference stops the run (exit 1);
* checkpoints every ``checkpoint_every`` steps (``firerun.checkpoint``), and ``resume``;
* a measured trace: every rank's forward, backward, bucket ready, bucket exchange, waiting and optimizer
  step, in the shared Trace schema (``firesim.trace.Phase``), clocks aligned across ranks.

Before the first step one untimed forward/backward (its buffers, e.g. BatchNorm statistics, restored and its
gradients dropped) lets DDP rebuild its buckets in the order backward produces gradients: after it the
bucket layout is the same in every run and every resumed run, so the order of every sum, hence every bit,
is too.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from firerun import checkpoint
from firerun.data import Dataset, Sampler, load_dataset
from firerun.ddp import PlanHook, plan_hook
from firerun.executor import Executor
from firerun.recipe import Decay, Recipe, Scaling, set_lr
from firesim.errors import UserError, validated
from firesim.trace import Phase, Trace, TraceHeader, software_versions

MiB = 1 << 20


class TrainConfig(BaseModel):
    """Everything that decides what a training run computes (and, for checkpoints, must not change)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str = "small_cnn"
    data: Literal["digits", "synthetic"] = "synthetic"
    algo: str = "ring"
    steps: int = Field(20, ge=1, description="optimizer steps of the whole run")
    batch: int = Field(32, ge=1, description="micro-batch per worker")
    accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(0.05, gt=0, description="LR tuned for base_batch")
    base_batch: int | None = Field(None, ge=1, description="global batch lr was tuned for (default: this one)")
    scaling: Scaling = "linear"
    warmup_steps: int = Field(0, ge=0)
    decay: Decay = "constant"
    power: float = Field(0.5, gt=0)
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = Field(0.1, gt=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lars: bool = False
    bucket_nbytes: int = Field(25 * MiB, ge=4, description="DDP bucket_cap_mb, in bytes")
    first_bucket_nbytes: int = Field(MiB, ge=4, description="DDP's first bucket (torch default 1 MiB)")
    seed: int = Field(0, ge=0)
    samples: int = Field(1024, ge=2, description="synthetic data: images made")
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @classmethod
    def make(cls, **fields) -> TrainConfig:
        return validated(cls, fields, "train")

    def recipe(self, workers: int) -> Recipe:
        global_batch = self.batch * workers * self.accumulation
        return Recipe.make(base_lr=self.lr, base_batch=self.base_batch or global_batch, batch=global_batch,
                           total_steps=self.steps, scaling=self.scaling, warmup_steps=self.warmup_steps,
                           decay=self.decay, power=self.power, milestones=self.milestones, gamma=self.gamma,
                           momentum=self.momentum, weight_decay=self.weight_decay, lars=self.lars)


@dataclass
class EvalPoint:
    step: int  # optimizer steps done
    accuracy: float  # held-out split
    loss: float


@dataclass
class TrainResult:
    """What rank 0 reports (every rank gets the same numbers; the trace only on rank 0)."""

    config: dict
    ranks: int
    workers: int
    params: int
    global_batch: int
    start_step: int  # > 0 when resumed
    loss: list[float] = field(default_factory=list)  # per step, mean over workers
    lr: list[float] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)
    bucket_nbytes: list[int] = field(default_factory=list)  # DDP's buckets, in exchange order
    replica_checks: int = 0
    replicas_identical: bool = True
    checkpoints: list[str] = field(default_factory=list)
    trace: Trace | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("trace")
        return out


def fingerprint(model: nn.Module) -> float:
    """48 bits of a hash of every parameter's bytes, as a float64 (exact): equal iff the replicas are equal
    (up to a 2^-48 chance)."""
    h = hashlib.blake2b(digest_size=6)
    with torch.no_grad():
        for p in model.parameters():
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return float(int.from_bytes(h.digest(), "little"))


class _Recorder:
    """This rank's trace rows: (kind, step, bucket, nbytes, t_start, t_end), perf_counter seconds."""

    def __init__(self):
        self.rows: list[tuple[int, int, int, int, float, float]] = []

    def add(self, kind: Phase, step: int, t0: float, t1: float, bucket: int = -1, nbytes: int = 0) -> None:
        self.rows.append((int(kind), step, bucket, nbytes, t0, t1))

    def buckets(self, hook: PlanHook, step: int) -> float | None:
        """Move the hook's events of ``step`` into rows; return when the last bucket was ready."""
        last = None
        for e in hook.take_events():
            if e.step != step:
                continue
            self.add(Phase.READY, step, e.ready_s, e.ready_s, e.index, e.nbytes)
            self.add(Phase.EXCHANGE, step, e.start_s, e.end_s, e.index, e.nbytes)
            last = e.ready_s if last is None else max(last, e.ready_s)
        return last


def _worker_group(workers: int, size: int):
    """DDP's process group: the workers (dedicated parameter servers hold no model). Every rank calls this."""
    if workers == size:
        return dist.group.WORLD
    return dist.new_group(list(range(workers)))


def train(ex: Executor, cfg: TrainConfig, *, check_every: int = 1, eval_every: int = 0,
          checkpoint_dir: str | None = None, checkpoint_every: int = 0, resume: bool = False,
          step_barrier: bool = False, record: bool = True, threads: int | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``cfg.steps`` optimizer steps (from the last checkpoint with ``resume``) on this job.

    ``step_barrier`` starts every step at a barrier, so each is timed as firesim models it (all ranks start
    forward together). ``record`` gathers the iteration trace to rank 0. ``on_step(steps_done)`` after each
    step (a progress bar).
    """
    from models.zoo import build, get_spec

    if ex.backend != "torch":
        raise UserError("train: needs --backend torch (DDP runs on a torch.distributed process group)")
    if check_every < 0 or eval_every < 0 or checkpoint_every < 0:
        raise UserError("train: check_every, eval_every and checkpoint_every must be >= 0")
    if checkpoint_every and checkpoint_dir is None:
        raise UserError("train: checkpoint_every needs a checkpoint directory")
    if resume and checkpoint_dir is None:
        raise UserError("train: resume needs a checkpoint directory")
    if threads is not None:
        torch.set_num_threads(threads)
    hook = PlanHook(ex, cfg.algo)
    workers, worker = hook.workers, hook.is_worker
    spec = get_spec(cfg.model)
    recipe = cfg.recipe(workers)
    data = load_dataset(cfg.data, spec.input_shape, spec.num_classes, seed=cfg.seed,
                        test_fraction=cfg.test_fraction, samples=cfg.samples)
    sampler = Sampler(data.train_samples, recipe.batch, workers, cfg.accumulation, cfg.seed)
    settings = {**cfg.model_dump(mode="json"), "workers": workers}
    group = _worker_group(workers, ex.size)
    ex.clock_offsets()

    torch.manual_seed(cfg.seed)  # identical initial replicas (DDP also broadcasts rank 0's)
    model = build(cfg.model).to(ex.device)
    n_params = sum(p.numel() for p in model.parameters())
    ddp = opt = None
    if worker:
        ddp = nn.parallel.DistributedDataParallel(
            model, process_group=group, device_ids=[ex.device.index] if ex.device.type == "cuda" else None,
            bucket_cap_mb_list=[cfg.first_bucket_nbytes / MiB, cfg.bucket_nbytes / MiB],
            gradient_as_bucket_view=True)
        ddp.register_comm_hook(hook, plan_hook)
        opt = recipe.optimizer(ddp.parameters())
    start = 0
    if resume:
        path = checkpoint.latest(checkpoint_dir)
        if path is not None:
            state = checkpoint.load(path, settings)
            start = int(state["step"])
            if worker:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
    result = TrainResult(config=settings, ranks=ex.size, workers=workers, params=n_params,
                         global_batch=recipe.batch, start_step=start)
    rec = _Recorder()
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []

    def run_step(step: int, warmup: bool = False) -> float:
        """One optimizer step's forward/backward passes (with their exchanges); returns the loss."""
        try:
            return passes(step, warmup)
        except RuntimeError:  # DDP wraps a failed exchange in its own error: raise the executor's one line
            if hook.error is not None:
                raise hook.error from None
            raise

    def passes(step: int, warmup: bool) -> float:
        hook.step = step
        if not worker:
            hook.serve_step()
            return 0.0
        total = 0.0
        for micro in range(cfg.accumulation):
            idx = sampler.indices(step, ex.rank, micro)
            x, y = data.train_x[idx].to(ex.device), data.train_y[idx].to(ex.device)
            sync = micro == cfg.accumulation - 1
            with contextlib.nullcontext() if sync else ddp.no_sync():
                f0 = time.perf_counter()
                loss = loss_fn(ddp(x), y) / cfg.accumulation
                f1 = time.perf_counter()
                loss.backward()
                b1 = time.perf_counter()
            total += float(loss.detach())
            if warmup:
                continue
            rec.add(Phase.FORWARD, step, f0, f1)
            last_ready = rec.buckets(hook, step) if sync else None
            compute_end = b1 if last_ready is None else min(max(last_ready, f1), b1)
            rec.add(Phase.BACKWARD, step, f1, compute_end)
            if sync:
                rec.add(Phase.WAIT, step, compute_end, b1)
        return total

    # -- untimed warm-up step: DDP rebuilds its buckets in backward order; nothing of it is kept
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    run_step(start, warmup=True)
    if worker:
        hook.take_events()
        model.load_state_dict(saved)
        opt.zero_grad(set_to_none=False)
    hook.end_step()

    zero = time.perf_counter()
    for step in range(start, cfg.steps):
        _seed(cfg.seed * 1_000_003 + step, ex.device)  # dropout etc.: a function of the step, resumable
        if step_barrier:
            ex.barrier("step barrier")
        loss_value = run_step(step)
        if worker:
            o0 = time.perf_counter()
            lr = recipe.lr_at(step)
            set_lr(opt, lr)
            opt.step()
            opt.zero_grad(set_to_none=False)
            rec.add(Phase.OPTIMIZER, step, o0, time.perf_counter())
            result.lr.append(lr)
        hook.end_step()
        losses.append(loss_value)
        done = step + 1
        last = done == cfg.steps
        save = checkpoint_every and (done % checkpoint_every == 0 or last)
        if save or check_every and (done % check_every == 0 or last):  # never save diverged replicas
            _check_replicas(ex, model if worker else None, workers, done, result)
        if save and ex.rank == 0:
            result.checkpoints.append(str(checkpoint.save(checkpoint_dir, done, model, opt, settings)))
        if eval_every and done % eval_every == 0 or last:
            result.evals.append(evaluate(ex, model if worker else None, data, workers, done))
        if on_step is not None:
            on_step(done)
    if worker:
        result.bucket_nbytes = _bucket_sizes(rec.rows, cfg.steps - 1)
    result.loss = [float(x) / workers for x in ex.reduce_sum(np.array(losses))] if losses else []
    if record:
        result.trace = _gather_trace(ex, rec, zero, cfg, workers)
    hook.close()
    return result


def _seed(seed: int, device: torch.device) -> None:
    """torch.manual_seed without its ~1 ms of stack formatting for lazily initialised devices."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _bucket_sizes(rows, step: int) -> list[int]:
    """The bucket sizes of ``step`` in bucket order (from the trace rows)."""
    sizes = {r[2]: r[3] for r in rows if r[0] == Phase.EXCHANGE and r[1] == step}
    return [sizes[k] for k in sorted(sizes)]


def _check_replicas(ex: Executor, model: nn.Module | None, workers: int, step: int, result: TrainResult) -> None:
    """Every worker's parameter hash must equal rank 0's; raises (exit 1) on the first difference."""
    mine = fingerprint(model) if model is not None else -1.0
    parts = ex.gather(np.array([mine]), [1] * ex.size, "replica check")
    differ = -1.0
    if parts is not None:
        bad = [q for q in range(1, workers) if parts[q][0] != parts[0][0]]
        differ = float(bad[0]) if bad else -1.0
    differ = float(ex.broadcast(np.array([differ]), "replica check")[0])
    result.replica_checks += 1
    if differ >= 0:
        result.replicas_identical = False
        raise ReplicaMismatch(f"train: after step {step} the parameters of rank {int(differ)} differ from rank "
                              f"0's (replicas must stay bit-identical)")


class ReplicaMismatch(RuntimeError):
    """The replicas diverged: a wrong result (exit 1)."""


@torch.no_grad()
def evaluate(ex: Executor, model: nn.Module | None, data: Dataset, workers: int, step: int) -> EvalPoint:
    """Held-out accuracy and loss; each worker takes every ``workers``-th test sample."""
    correct = loss_sum = 0.0
    if model is not None:
        model.eval()
        x, y = data.test_x[ex.rank::workers].to(ex.device), data.test_y[ex.rank::workers].to(ex.device)
        if y.numel():
            out = model(x)
            correct = float((out.argmax(1) == y).sum())
            loss_sum = float(nn.functional.cross_entropy(out, y, reduction="sum"))
        model.train()
    totals = ex.reduce_sum(np.array([correct, loss_sum]))
    n = data.test_y.numel()
    return EvalPoint(step=step, accuracy=float(totals[0]) / n, loss=float(totals[1]) / n)


def _gather_trace(ex: Executor, rec: _Recorder, zero: float, cfg: TrainConfig, workers: int) -> Trace | None:
    """Every rank's rows to rank 0, on rank 0's clock, from the first step's start."""
    local = np.asarray(rec.rows, np.float64).reshape(-1, 6)
    counts = ex.gather(np.array([local.size]), [1] * ex.size, "trace sizes")
    sizes = [int(c[0]) for c in counts] if counts is not None else [0] * ex.size
    parts = ex.gather(local.reshape(-1), sizes, "trace gather")
    zero_0 = ex.broadcast(np.array([zero]), "trace zero")[0] if ex.size > 1 else zero
    if parts is None:
        return None
    offsets = ex._offsets_s if ex._offsets_s is not None else np.zeros(ex.size)
    cols = []
    for q, part in enumerate(parts):
        rows = part.reshape(-1, 6).copy()
        rows[:, 4:] -= offsets[q] + zero_0
        cols.append(np.column_stack([np.full(len(rows), q), rows]))
    table = np.concatenate(cols) if cols else np.zeros((0, 7))
    table = table[np.lexsort((table[:, 5], table[:, 2], table[:, 0]))]
    header = TraceHeader(plan=f"{cfg.model}-train-{cfg.algo}", ranks=ex.size, nbytes=0, chunks=0,
                         source="measured", backend=ex.transport.name, versions=software_versions("torch"),
                         extra={"kind": "iteration", "workers": workers, "batch_per_worker": cfg.batch,
                                "accumulation": cfg.accumulation, "model": cfg.model, "algo": cfg.algo,
                                "bucket_nbytes": cfg.bucket_nbytes, "first_bucket_nbytes": cfg.first_bucket_nbytes,
                                "threads": torch.get_num_threads()})
    return Trace(header=header, rank=table[:, 0].astype(np.int32), op=table[:, 1].astype(np.int8),
                 chunk=table[:, 3].astype(np.int32), peer=np.full(len(table), -1, np.int32),
                 nbytes=table[:, 4].astype(np.int64), t_start=table[:, 5], t_end=table[:, 6],
                 step=table[:, 2].astype(np.int32))
