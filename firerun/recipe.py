"""The large-batch recipe: how the learning rate follows the global batch and the step, and LARS.

FireCaffe's third pillar is that a larger batch (1024 instead of 32-256) keeps accuracy when the
hyperparameters follow it. What is known to work, each as one named option:

* **scaling** of the peak LR with the global batch B against the batch ``base_batch`` the LR was tuned for:
  ``linear`` (Goyal et al. 2017: lr x B / base_batch), ``sqrt`` (Krizhevsky 2014, Hoffer et al. 2017:
  lr x sqrt(B / base_batch)) or ``none``;
* **gradual warmup** (Goyal et al.): over ``warmup_steps`` the LR rises linearly from the unscaled
  ``base_lr`` to the scaled peak, so the first steps, where large updates diverge, are small;
* **decay** after warmup, over the remaining steps (t = fraction of them done): ``poly``
  (peak x (1 - t)^power, Caffe's "poly", power 0.5 in FireCaffe's solvers), ``cosine``
  (final + (peak - final)(1 + cos pi t) / 2), ``step`` (x ``gamma`` at each fraction in ``milestones``)
  or ``constant``;
* **LARS** (You et al. 2017) for very large batches: each layer's step is scaled by
  ``trust_coefficient x ||w|| / (||g|| + weight_decay ||w||)`` so no layer's update outgrows its weights.

The LR is a pure function of the optimizer step (``Recipe.lr_at``): nothing to checkpoint, and a resumed
run gets exactly the same schedule.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from firesim.errors import UserError, validated

Scaling = Literal["none", "linear", "sqrt"]
Decay = Literal["constant", "poly", "step", "cosine"]


class Recipe(BaseModel):
    """Learning-rate schedule and optimizer settings for synchronous SGD at global batch ``batch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_lr: float = Field(gt=0, description="LR tuned for base_batch")
    base_batch: int = Field(ge=1, description="global batch base_lr was tuned for")
    batch: int = Field(ge=1, description="global batch of this run (all workers, all accumulation steps)")
    total_steps: int = Field(ge=1, description="optimizer steps of the whole run")
    scaling: Scaling = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    decay: Decay = "constant"
    power: float = Field(default=0.5, gt=0, description="poly decay exponent (FireCaffe: 0.5)")
    milestones: tuple[float, ...] = Field(default=(0.5, 0.75), description="step decay: fractions of decay")
    gamma: float = Field(default=0.1, gt=0, le=1, description="step decay factor")
    final_lr: float = Field(default=0.0, ge=0, description="cosine floor")
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    lars: bool = False
    trust_coefficient: float = Field(default=0.001, gt=0, description="LARS eta")

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if self.warmup_steps >= self.total_steps and self.decay != "constant":
            raise ValueError(f"warmup_steps ({self.warmup_steps}) leaves no step to decay over "
                             f"({self.total_steps} steps)")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError("milestones must be increasing fractions of the decay phase, each in (0, 1)")
        return self

    @classmethod
    def make(cls, **fields) -> Recipe:
        """Validate with one-line errors (``UserError``) instead of pydantic's report."""
        return validated(cls, fields, "recipe")

    @property
    def peak_lr(self) -> float:
        ratio = self.batch / self.base_batch
        factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[self.scaling]
        return self.base_lr * factor

    def lr_at(self, step: int) -> float:
        """The LR of optimizer step ``step`` (0-based)."""
        peak = self.peak_lr
        if step < self.warmup_steps:
            return self.base_lr + (peak - self.base_lr) * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        if self.decay == "poly":
            return peak * (1.0 - t) ** self.power
        if self.decay == "cosine":
            return self.final_lr + (peak - self.final_lr) * (1.0 + math.cos(math.pi * t)) / 2.0
        if self.decay == "step":
            return peak * self.gamma ** sum(t >= m for m in self.milestones)
        return peak

    def optimizer(self, params) -> torch.optim.Optimizer:
        """SGD with momentum and weight decay, or LARS with the same settings (LR set per step)."""
        params = list(params)
        if self.lars:
            return LARS(params, lr=self.lr_at(0), momentum=self.momentum, weight_decay=self.weight_decay,
                        trust_coefficient=self.trust_coefficient)
        return torch.optim.SGD(params, lr=self.lr_at(0), momentum=self.momentum, weight_decay=self.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight tensor is scaled by its trust ratio (You et al. 2017).

    For a tensor w with gradient g: ``local = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w||)``,
    ``d = local * (g + weight_decay * w)``, ``v = momentum * v + d``, ``w -= lr * v``. One-dimensional tensors
    (biases, BatchNorm scales and shifts) get plain SGD with momentum and no weight decay, as in the common
    implementations, and so does a tensor whose weight or gradient norm is zero.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or trust_coefficient <= 0:
            raise UserError("LARS: needs lr >= 0, 0 <= momentum < 1, weight_decay >= 0, trust_coefficient > 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, momentum, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["trust_coefficient"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    if w_norm > 0 and g_norm > 0:
                        local = eta * w_norm / (g_norm + wd * w_norm)
                        d = (d + wd * p) * local
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d.detach().clone()
                else:
                    buf.mul_(momentum).add_(d)
                p.add_(buf, alpha=-lr)
        return loss
