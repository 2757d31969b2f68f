"""Data-parallel SGD whose gradient exchange is a plan: the measured counterpart of firesim.training.

Every worker holds a replica (same seed, so the same initial weights), computes gradients on its shard of a
synthetic data set, and the gradients, laid out in one flat buffer (``param.grad`` are views into it, so
backward writes there and nothing is copied), are summed by executing the plan and averaged. Dedicated
parameter-server ranks (``ps:...,colocated=false``) hold no model: they just run their part of the plan
each step. At the end the replicas are compared: data parallelism is only right if they never diverge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from firerun.bench import plan_for
from firerun.executor import Executor
from firesim.errors import UserError


@dataclass
class TrainResult:
    model: str
    algo: str
    workers: int
    params: int
    batch_per_worker: int
    steps: int
    step_s: list[float] = field(default_factory=list)  # slowest rank's wall time per step
    comm_s: list[float] = field(default_factory=list)  # slowest rank's gradient exchange per step
    loss: list[float] = field(default_factory=list)  # mean over workers
    replica_spread: float = 0.0  # max |difference| of parameters across workers at the end

    @property
    def images_per_s(self) -> float:
        measured = self.step_s[1:] or self.step_s  # the first step pays for warm-up
        return self.batch_per_worker * self.workers / float(np.median(measured))


def synthetic_data(shape, classes: int, samples: int, *, seed: int, shard: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images labelled by a fixed random "teacher" on their 4x4 average-pooled colours: a task every
    worker's shard shares and a CNN learns in a few steps, so a falling loss shows the exchange works."""
    teacher_gen = torch.Generator().manual_seed(seed + 12345)
    teacher = torch.randn(shape[0] * 16, classes, generator=teacher_gen)
    gen = torch.Generator().manual_seed(seed + 1 + shard)
    images = torch.randn((samples, *shape), generator=gen)
    pooled = nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
    return images, (pooled @ teacher).argmax(dim=1)


def _flat_grads(model: nn.Module) -> torch.Tensor:
    """One buffer for all gradients, with every ``param.grad`` a view into it (what the plan reduces)."""
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.zeros(sum(p.numel() for p in params))
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def train(ex: Executor, model_name: str = "small_cnn", algo: str = "ring", *, steps: int = 20,
          batch_per_worker: int = 32, lr: float = 0.05, momentum: float = 0.9, samples: int = 512,
          seed: int = 0) -> TrainResult:
    """Run ``steps`` synchronous SGD steps; every rank returns the same (gathered) result."""
    from models.zoo import build, get_spec

    if steps < 1 or batch_per_worker < 1:
        raise UserError("train: steps and batch must be >= 1")
    spec = get_spec(model_name)
    if spec.sample != "image":
        raise UserError(f"model: {model_name} takes token sequences; firerun train runs image models (small_cnn, "
                        "resnet18_cifar_w16, ...)")
    torch.manual_seed(seed)  # identical initial replicas
    model = build(model_name)
    flat = _flat_grads(model)
    plan = plan_for(algo, ex.size, flat.numel() * flat.element_size())
    worker = ex.rank < plan.workers
    result = TrainResult(model=model_name, algo=algo, workers=plan.workers, params=flat.numel(),
                         batch_per_worker=batch_per_worker, steps=steps)
    images, labels = synthetic_data(spec.input_shape, spec.num_classes, samples, seed=seed, shard=ex.rank)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps):
        t0 = time.perf_counter()
        loss_value = 0.0
        if worker:
            lo = (step * batch_per_worker) % samples
            idx = torch.arange(lo, lo + batch_per_worker) % samples
            flat.zero_()
            loss = loss_fn(model(images[idx]), labels[idx])
            loss.backward()
            loss_value = float(loss.detach())
        t1 = time.perf_counter()
        ex.run(plan, flat if worker else None, trace=False)
        t2 = time.perf_counter()
        if worker:
            flat.div_(plan.workers)
            opt.step()
        t3 = time.perf_counter()
        totals = ex.reduce_sum(np.array([loss_value]))
        result.loss.append(float(totals[0]) / plan.workers)
        result.comm_s.append(ex.reduce_max(t2 - t1))
        result.step_s.append(ex.reduce_max(t3 - t0))
    # replicas must agree: compare every worker's parameters with rank 0's
    with torch.no_grad():
        mine = torch.cat([p.detach().view(-1) for p in model.parameters()]).double().numpy()
    parts = ex.gather(mine if worker else np.zeros_like(mine), [mine.size] * ex.size, "replica check")
    spread = 0.0
    if parts is not None:
        spread = max((float(np.abs(parts[q] - parts[0]).max()) for q in range(1, plan.workers)), default=0.0)
    result.replica_spread = float(ex.broadcast(np.array([spread]), "replica check")[0])
    return result
