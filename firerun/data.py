"""Training data with no download, and the sampler that deals each step's global batch to the workers.

* ``digits``: scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes, shipped inside the
  package), split into train and held-out test sets, stratified and seeded. Images are standardised with the
  training set's statistics and repeated over the model's input channels; they stay 8x8, which the
  CIFAR-size zoo CNNs take as they are (they end in global average pooling).
* ``synthetic``: random images of the model's input shape labelled by a fixed random "teacher" on their 4x4
  average-pooled colours: costs nothing to make at any size, and a CNN learns it, for timing runs.

The sampler is a pure function of (seed, step): epoch ``e`` visits the training set in the order of a
permutation drawn from ``seed + e``; optimizer step ``s`` takes the next ``global_batch`` indices, and the
worker ``w``'s micro-batch ``m`` (gradient accumulation) is a contiguous slice of them. So the samples every
step sees do not depend on the number of workers or accumulation steps, only on the global batch, and a
resumed run picks up exactly where the interrupted one was.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from firesim.errors import UserError

DATASETS = ("digits", "synthetic")


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int

    @property
    def train_samples(self) -> int:
        return int(self.train_y.numel())


def load_dataset(name: str, input_shape: tuple[int, ...], classes: int, *, seed: int = 0,
                 test_fraction: float = 0.2, samples: int = 1024) -> Dataset:
    """``name`` in ``DATASETS``, as tensors shaped for a model taking ``input_shape`` with ``classes`` outputs."""
    if name == "digits":
        return digits(input_shape[0], classes, seed=seed, test_fraction=test_fraction)
    if name == "synthetic":
        return synthetic(input_shape, classes, samples=samples, seed=seed, test_fraction=test_fraction)
    raise UserError(f"data: unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < test_fraction < 1:
        raise UserError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits_table() -> np.ndarray:
    """The (1797, 65) table behind ``sklearn.datasets.load_digits`` (64 pixels 0..16, then the label), read
    straight from the file scikit-learn ships: importing scikit-learn itself takes seconds per rank."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise UserError("data digits: needs scikit-learn's data files (pip install 'firecaffe-sim[run]')")
    with gzip.open(path, "rt") as fh:
        return np.loadtxt(fh, delimiter=",", dtype=np.float32)


def digits(channels: int, classes: int, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits: held-out split stratified by class and seeded by ``seed``."""
    if classes < 10:
        raise UserError(f"data digits: has 10 classes but the model has {classes} outputs")
    table = digits_table()
    x = table[:, :64].reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    train, test = _stratified_split(y, test_fraction, seed)
    mean, std = x[train].mean(), x[train].std()
    x = np.repeat((x - mean) / std, channels, axis=1)
    return Dataset("digits", torch.from_numpy(x[train]).contiguous(), torch.from_numpy(y[train]),
                   torch.from_numpy(x[test]).contiguous(), torch.from_numpy(y[test]), classes)


def synthetic(shape: tuple[int, ...], classes: int, *, samples: int, seed: int = 0,
              test_fraction: float = 0.2) -> Dataset:
    """Random images labelled by a fixed random linear teacher on 4x4 average-pooled colours."""
    if samples < 2:
        raise UserError(f"samples: must be >= 2, got {samples}")
    gen = torch.Generator().manual_seed(seed + 12345)
    teacher = torch.randn(shape[0] * 16, classes, generator=gen)
    images = torch.randn((samples, *shape), generator=gen)
    labels = (nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) @ teacher).argmax(dim=1)
    n_test = max(1, int(round(samples * test_fraction)))
    return Dataset("synthetic", images[n_test:], labels[n_test:], images[:n_test], labels[:n_test], classes)


@dataclass(frozen=True)
class Sampler:
    """Which training samples each worker's micro-batch of each optimizer step uses (see module doc)."""

    samples: int
    global_batch: int
    workers: int
    accumulation: int
    seed: int

    def __post_init__(self):
        if self.workers < 1 or self.accumulation < 1:
            raise UserError("sampler: workers and accumulation steps must be >= 1")
        if self.global_batch % (self.workers * self.accumulation):
            raise UserError(f"batch: the global batch {self.global_batch} does not split into {self.workers} "
                            f"workers x {self.accumulation} accumulation steps")
        if self.global_batch > self.samples:
            raise UserError(f"batch: the global batch {self.global_batch} is larger than the {self.samples} "
                            f"training samples")

    @property
    def micro_batch(self) -> int:
        return self.global_batch // (self.workers * self.accumulation)

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per pass over the data (the rest of an epoch is dropped, as drop_last)."""
        return self.samples // self.global_batch

    def indices(self, step: int, worker: int, micro: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng(self.seed + 7919 * epoch).permutation(self.samples)
        lo = k * self.global_batch + (micro * self.workers + worker) * self.micro_batch
        return torch.from_numpy(order[lo:lo + self.micro_batch])
