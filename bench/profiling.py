"""Profiler speed on the meta device: seconds per zoo model, and the ratio to a plain training step on meta
measured side by side (the profiler runs two steps, batch 2 and 3, under FlopCounterMode and its own taps).
Targets: VGG-19 under 0.5 s, a 7-8 B model under 10 s."""

import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from models import profiling, zoo

MODELS = ("vgg19", "resnet50", "vit_b16", "gpt2", "bert_large", "gpt2_xl", "llama2_7b", "llama3_8b")
TARGET_S = {"vgg19": 0.5, "llama2_7b": 10.0, "llama3_8b": 10.0}


def _plain_step(name: str) -> float:
    """Seconds of one forward + cross-entropy + backward at batch 2 on meta, no counting."""
    spec = zoo.get_spec(name)
    shape, tokens = spec.input_for()
    with torch.device("meta"):
        model = spec.builder()
    x = (torch.zeros((2, *shape), dtype=torch.long) if tokens else torch.empty((2, *shape))).to("meta")
    start = time.perf_counter()
    logits = model(x)
    logits = (logits[0] if isinstance(logits, tuple) else logits).flatten(0, -2)
    F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device="meta")).backward()
    return time.perf_counter() - start


def _best(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    profiling.profile_model("small_cnn")  # warm the imports and the dispatcher caches
    table = Table(title="profiling on meta: a training step at batch 2 and 3, FlopCounterMode, per layer")
    for col in ("model", "layers", "profile s", "plain step s", "ratio", "target"):
        table.add_column(col, justify="right")
    for name in MODELS:
        layers = len(profiling.profile_model(name)["layers"])
        seconds = _best(lambda n=name: profiling.profile_model(n))
        plain = min(_plain_step(name) for _ in range(2))
        target = TARGET_S.get(name)
        verdict = "" if target is None else f"<= {target} s: {'ok' if seconds <= target else 'MISSED'}"
        table.add_row(name, str(layers), f"{seconds:.2f}", f"{plain:.2f}", f"{seconds / plain:.1f}x", verdict)
    Console().print(table)


if __name__ == "__main__":
    main()
