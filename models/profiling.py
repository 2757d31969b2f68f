"""Per-layer parameter and FLOP profiles of a model, computed without real weights.

The simulator needs, per layer and in execution order, how many parameters (gradient bytes to
exchange) and how much arithmetic (compute time) it has. `profile` runs one forward pass of a single
sample with every parameter and buffer swapped for a `meta` tensor (shapes only, no storage, no
arithmetic), so even VGG-19 profiles in milliseconds, and records each leaf module through forward hooks.

Counting rules, per sample (batch of one):

- Conv2d: MACs = output elements x (in_channels / groups) x kernel area; Linear: MACs = output elements x
  in_features. FLOPs = 2 x MACs. Bias adds are not counted (the usual convention of the MAC figures
  quoted in the literature).
- Elementwise layers count FLOPs and no MACs: ReLU 1 per output element; BatchNorm 2 per element (one
  scale and one shift once mean and variance are folded in; the batch statistics of training are
  ignored); max/avg pooling one op (compare or add) per window element per output element, adaptive
  pooling one per input element; LocalResponseNorm `size + 5` per element (square, window sum, scale,
  offset, power, divide); `zoo.Residual` 1 per output element.
- Dropout, Flatten and Identity do no arithmetic worth counting and are left out. Arithmetic written
  inline in a container's `forward` is invisible to hooks, which is why the zoo wraps residual adds in
  `zoo.Residual`; concatenation is data movement and not counted.
- A leaf type with no rule above raises NotImplementedError instead of silently counting zero.

Run `python -m models.profiling --write` to regenerate `firesim/data/profiles/<name>.json` for every registered
model, `--check` to verify they are up to date.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from firesim.io import write_text_atomic
from firesim.workload import ModelProfile
from models import zoo

PROFILES_DIR = Path(__file__).resolve().parent.parent / "firesim" / "data" / "profiles"

_NO_ARITHMETIC = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Flatten, nn.Unflatten,
                  nn.Identity)

__all__ = ["PROFILES_DIR", "profile", "profile_model", "profile_json", "write_profiles", "stale_profiles"]


def _layer_cost(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> tuple[int, int] | None:
    """(MACs, FLOPs) of one call on one sample, or None for a layer that does no arithmetic."""
    out_elems = output[0].numel()
    if isinstance(module, nn.Conv2d):
        macs = out_elems * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return macs, 2 * macs
    if isinstance(module, nn.Linear):
        macs = out_elems * module.in_features
        return macs, 2 * macs
    if isinstance(module, (nn.ReLU, zoo.Residual)):
        return 0, out_elems
    if isinstance(module, nn.BatchNorm2d):
        return 0, 2 * out_elems
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kernel = module.kernel_size
        window = kernel * kernel if isinstance(kernel, int) else math.prod(kernel)
        return 0, window * out_elems
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return 0, inputs[0][0].numel()
    if isinstance(module, nn.LocalResponseNorm):
        return 0, (module.size + 5) * out_elems
    if isinstance(module, _NO_ARITHMETIC):
        return None
    raise NotImplementedError(f"profile: no FLOP rule for layer type {type(module).__name__}")


def profile(model: nn.Module, input_shape: Sequence[int], name: str = "model") -> dict[str, Any]:
    """Per-layer `params`, `fwd_macs`, `fwd_flops` and `output_shape` of one sample, in execution order.

    `input_shape` is one sample's shape, e.g. (3, 224, 224). The model may hold real or meta weights; it
    is run on meta copies (no arithmetic, no side effects) in training mode, so layers that only run
    when training (GoogLeNet's auxiliary heads) are included; its own mode is left unchanged.

    Returns `{"name", "input_shape", "params", "fwd_macs", "fwd_flops", "layers": [{"name", "type",
    "params", "fwd_macs", "fwd_flops", "output_shape"}, ...]}`; `params` is the model's total number
    of parameters, and a leaf called more than once appears once per call, its parameters counted on
    the first call only.
    """
    layers: list[dict[str, Any]] = []
    calls: dict[str, int] = {}

    def record(layer_name: str):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            cost = _layer_cost(module, inputs, output)
            if cost is None:
                return
            calls[layer_name] = calls.get(layer_name, 0) + 1
            first_call = calls[layer_name] == 1
            layers.append({
                "name": layer_name if first_call else f"{layer_name}:call{calls[layer_name]}",
                "type": type(module).__name__,
                "params": sum(p.numel() for p in module.parameters(recurse=False)) if first_call else 0,
                "fwd_macs": cost[0],
                "fwd_flops": cost[1],
                "output_shape": list(output.shape[1:]),
            })
        return hook

    meta_state = {key: torch.empty_like(t, device="meta")
                  for key, t in (*model.named_parameters(), *model.named_buffers())}
    was_training = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(record(layer_name)) for layer_name, m in model.named_modules()
               if next(m.children(), None) is None]
    try:
        model.train()
        with torch.no_grad():
            functional_call(model, meta_state, (torch.empty((1, *input_shape), device="meta"),))
    finally:
        for handle in handles:
            handle.remove()
        for m, training in was_training.items():
            m.training = training

    return {
        "name": name,
        "input_shape": [int(d) for d in input_shape],
        "params": sum(p.numel() for p in model.parameters()),
        "fwd_macs": sum(layer["fwd_macs"] for layer in layers),
        "fwd_flops": sum(layer["fwd_flops"] for layer in layers),
        "layers": layers,
    }


def profile_model(name: str) -> dict[str, Any]:
    """The full profile of a registered model (what `firesim/data/profiles/<name>.json` holds)."""
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        model = spec.builder()
    result = profile(model, spec.input_shape, name=spec.name)
    result.update(num_classes=spec.num_classes, dataset=spec.dataset, train_samples=spec.train_images)
    return result


def profile_json(name: str) -> str:
    """`profile_model(name)` validated as a `firesim.workload.ModelProfile`: the exact text written to disk."""
    return ModelProfile.model_validate(profile_model(name)).to_json()


def write_profiles(directory: Path = PROFILES_DIR) -> list[Path]:
    """Write `<name>.json` for every registered model; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in zoo.list_models():
        path = directory / f"{name}.json"
        write_text_atomic(path, profile_json(name))
        paths.append(path)
    return paths


def stale_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of registered models whose saved profile is missing or differs from a fresh one."""
    stale = []
    for name in zoo.list_models():
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text() != profile_json(name):
            stale.append(name)
    return stale


def _summary() -> str:
    rows = [f"{'model':<20} {'params (M)':>11} {'fwd GMACs':>10} {'layers':>7}"]
    for name in zoo.list_models():
        p = profile_model(name)
        rows.append(f"{name:<20} {p['params'] / 1e6:>11.3f} {p['fwd_macs'] / 1e9:>10.3f} {len(p['layers']):>7}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print a summary table, or `--write` / `--check` the saved profiles."""
    parser = argparse.ArgumentParser(prog="python -m models.profiling", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="regenerate firesim/data/profiles/*.json")
    action.add_argument("--check", action="store_true", help="exit 1 if any saved profile is stale")
    parser.add_argument("--dir", type=Path, default=PROFILES_DIR, help="profiles directory")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_profiles(args.dir):
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = stale_profiles(args.dir)
        if stale:
            print(f"stale profiles: {', '.join(stale)}; run `python -m models.profiling --write`")
            return 1
        print("profiles up to date")
        return 0
    print(_summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
