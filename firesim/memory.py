"""GPU memory one data-parallel rank needs, and whether it fits the GPU.

Per parameter: weights (fp32; mixed precision adds the low-precision copy the kernels read: 2 + 4 bytes for
bf16), gradients (``grad_dtype``), optimizer state (fp32: momentum 1 tensor, Adam/AdamW/LAMB 2), and with more
than one GPU the gradient buckets DDP all-reduces (a second copy of the gradients unless
``gradient_as_bucket_view=True``, PyTorch's default being False). Per sample: the activations backward needs
(``saved_elements`` of every layer at the activation dtype; version-1 profiles carry none, so each layer's
output stands in). On top, an allowance: the CUDA context and library handles (``CUDA_CONTEXT_NBYTES``) and
the caching allocator's fragmentation and kernel workspaces (``ALLOCATOR_OVERHEAD`` of everything else).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from firesim.compute import MASTER_NBYTES, OPTIMIZERS, Precision
from firesim.workload import ModelProfile

__all__ = ["ALLOCATOR_OVERHEAD", "CUDA_CONTEXT_NBYTES", "MemoryEstimate", "memory_per_gpu", "saved_elements"]

# pytorch/pytorch issue #34323: a process that only initialises CUDA shows 781 MB in nvidia-smi (context,
# cuBLAS/cuDNN handles and kernels); grows with more libraries loaded. Estimate, not fitted.
CUDA_CONTEXT_NBYTES = int(0.8 * 2**30)
# Estimate: the caching allocator rounds blocks and splits segments (PyTorch "Memory management" notes), and
# cuDNN/cuBLAS take workspaces; 10 % of the tensors' bytes. Not fitted.
ALLOCATOR_OVERHEAD = 0.10


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU by kind; ``fits`` is None when the GPU's memory size is unknown."""

    weights_nbytes: int
    gradients_nbytes: int
    optimizer_nbytes: int
    buckets_nbytes: int
    activations_nbytes: int
    allowance_nbytes: int
    capacity_GiB: float | None

    @property
    def total_nbytes(self) -> int:
        return (self.weights_nbytes + self.gradients_nbytes + self.optimizer_nbytes + self.buckets_nbytes
                + self.activations_nbytes + self.allowance_nbytes)

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_GiB is None else self.total_nbytes <= self.capacity_GiB * 2**30

    def record(self) -> dict:
        return {**asdict(self), "total_nbytes": self.total_nbytes, "fits": self.fits}


def saved_elements(profile: ModelProfile) -> int:
    """Activation elements per sample kept for backward (version 1: every layer's output)."""
    if profile.saved_elements:
        return profile.saved_elements
    return sum(math.prod(layer.output_shape) for layer in profile.layers if layer.output_shape)


def memory_per_gpu(profile: ModelProfile, batch_per_gpu: float, prec: Precision, optimizer: str, gpus: int,
                   capacity_GiB: float | None) -> MemoryEstimate:
    """Memory one rank of plain data parallelism needs for a micro-batch of ``batch_per_gpu`` samples."""
    params = profile.params
    tensors = {
        "weights_nbytes": params * prec.weight_nbytes,
        "gradients_nbytes": params * prec.grad_nbytes,
        "optimizer_nbytes": params * MASTER_NBYTES * OPTIMIZERS[optimizer],
        "buckets_nbytes": params * prec.grad_nbytes if gpus > 1 else 0,
        "activations_nbytes": int(math.ceil(saved_elements(profile) * batch_per_gpu)) * prec.activation_nbytes,
    }
    allowance = CUDA_CONTEXT_NBYTES + int(ALLOCATOR_OVERHEAD * sum(tensors.values()))
    return MemoryEstimate(**tensors, allowance_nbytes=allowance, capacity_GiB=capacity_GiB)
