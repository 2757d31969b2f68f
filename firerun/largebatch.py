"""The large-batch recipe demonstrated on real data: ``firerun large-batch``.

FireCaffe trained with batch 1024 instead of 32-256 and kept accuracy by changing the hyperparameters with
the batch. This reproduces the effect where it can be checked in seconds: scikit-learn's handwritten digits
(real images, held-out split), ``small_cnn``, the same number of epochs for every run, seeded:

* **small**: global batch 32, LR 0.01, momentum 0.9, weight decay 5e-4, poly decay (power 0.5);
* **large + recipe**: batch 256 (8x), LR scaled linearly to 0.08 with a 5-epoch gradual warmup from 0.01,
  then the same poly decay;
* **large, small-batch LR**: batch 256 with LR 0.01: 8x fewer updates of the same size, so it is far
  from done when the epochs are.

The claim (Goyal et al. 2017, and FireCaffe's batch-1024 runs) is that the second matches the first and the
third does not. Every run is the ordinary ``firerun.train`` loop (DDP, the plan hook, the replica check), so
``firerun run --nproc 2 large-batch`` gives the same curves split over two workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from firerun.executor import Executor
from firerun.train import TrainConfig, train

SMALL_BATCH = 32
FACTOR = 8
BASE_LR = 0.01
EPOCHS = 30
WARMUP_EPOCHS = 5
MODEL = "small_cnn"
COMMON = {"model": MODEL, "data": "digits", "momentum": 0.9, "weight_decay": 5e-4, "decay": "poly", "power": 0.5}


@dataclass
class Curve:
    label: str
    global_batch: int
    peak_lr: float
    steps: int
    epochs: list[float] = field(default_factory=list)  # at each evaluation: samples seen / training set
    accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # per step

    @property
    def final(self) -> float:
        return self.accuracy[-1]


def train_samples(seed: int = 0) -> int:
    from firerun.data import digits

    return digits(1, 10, seed=seed).train_samples


def runs(workers: int, seed: int = 0, epochs: int = EPOCHS) -> list[tuple[str, TrainConfig]]:
    """The three configurations, for ``workers`` data-parallel workers (global batches fixed)."""
    small, large = SMALL_BATCH, SMALL_BATCH * FACTOR
    samples = train_samples(seed)
    if small % workers:
        raise ValueError(f"large-batch: batch {small} does not split over {workers} workers")
    steps_small, steps_large = epochs * samples // small, epochs * samples // large
    warmup = WARMUP_EPOCHS * samples // large
    return [
        (f"batch {small}, LR {BASE_LR:g}", TrainConfig.make(
            **COMMON, batch=small // workers, steps=steps_small, lr=BASE_LR, seed=seed)),
        (f"batch {large}, LR x{FACTOR} + {WARMUP_EPOCHS}-epoch warmup", TrainConfig.make(
            **COMMON, batch=large // workers, steps=steps_large, lr=BASE_LR, base_batch=small, scaling="linear",
            warmup_steps=warmup, seed=seed)),
        (f"batch {large}, LR {BASE_LR:g} (small-batch LR)", TrainConfig.make(
            **COMMON, batch=large // workers, steps=steps_large, lr=BASE_LR, seed=seed)),
    ]


def demonstrate(ex: Executor, seed: int = 0, epochs: int = EPOCHS, evals_per_epoch: int = 1,
                on_run=None) -> list[Curve]:
    """Train the three configurations (see module doc) and return their learning curves."""
    from firerun.bench import BUILTIN

    curves = []
    workers = ex.size
    samples = train_samples(seed)
    for label, cfg in runs(workers, seed, epochs):
        cfg = cfg.model_copy(update={"algo": BUILTIN if workers == 1 else "ring"})
        steps_per_epoch = samples // (cfg.batch * workers)
        every = max(1, steps_per_epoch // evals_per_epoch)
        r = train(ex, cfg, check_every=every, eval_every=every, record=False)
        curve = Curve(label=label, global_batch=r.global_batch, peak_lr=max(r.lr) if r.lr else cfg.lr,
                      steps=cfg.steps, epochs=[e.step * r.global_batch / samples for e in r.evals],
                      accuracy=[e.accuracy for e in r.evals], test_loss=[e.loss for e in r.evals],
                      train_loss=r.loss)
        curves.append(curve)
        if on_run is not None:
            on_run(curve)
    return curves


def to_dict(curves: list[Curve], seed: int) -> dict:
    return {"kind": "firerun.large-batch/1", "seed": seed, "model": MODEL, "data": "digits",
            "curves": [asdict(c) for c in curves]}


def plot(curves_by_seed: dict[int, list[Curve]], path) -> None:
    """Held-out accuracy and training loss against epochs, one line per configuration (and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ["tab:blue", "tab:green", "tab:red"]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    runs_by_config = list(zip(*curves_by_seed.values()))
    means = [sum(c.final for c in runs) / len(runs) for runs in runs_by_config]
    for n, (_, curves) in enumerate(sorted(curves_by_seed.items())):
        for c, color, mean in zip(curves, colors, means):
            label = f"{c.label}: {mean:.1%}" if n == 0 else None
            ax_acc.plot(c.epochs, [100 * a for a in c.accuracy], color=color, alpha=1.0 if n == 0 else 0.4,
                        label=label)
            epochs_per_step = c.epochs[-1] / c.steps
            ax_loss.plot([(i + 1) * epochs_per_step for i in range(len(c.train_loss))], c.train_loss, color=color,
                         alpha=1.0 if n == 0 else 0.4, linewidth=0.8)
    from firerun.data import digits

    seeds = sorted(curves_by_seed)
    held_out = digits(1, 10, seed=seeds[0]).test_y.numel()
    ax_acc.set(xlabel="epoch", ylabel="held-out accuracy (%)", ylim=(0, 100),
               title=f"digits ({held_out} held out), {MODEL}, seed{'s' if len(seeds) > 1 else ''} "
                     f"{', '.join(map(str, seeds))}")
    ax_acc.legend(loc="lower right", fontsize=8, title="final held-out accuracy (mean over seeds)",
                  title_fontsize=8)
    ax_acc.grid(alpha=0.3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="training loss per step")
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
