"""Profile any `nn.Module` without its weights: FLOPs, elements moved and activations saved, per layer.

The model runs one training step (forward, a loss, backward) on the `meta` device: every tensor has a shape
and no storage, so no arithmetic is done and a 7-billion-parameter model costs no memory. What is counted:

- **FLOPs** come from `torch.utils.flop_counter.FlopCounterMode` at the aten level: matmuls, convolutions
  and scaled-dot-product attention, forward and backward, by FlopCounterMode's own formulas (a fused
  attention backward counts 5 matmuls, the recomputed scores included; causal masking is not discounted;
  bias adds are not counted). Every other aten op that computes is charged one FLOP per element of the
  largest tensor it reads or writes: about right for pointwise ops, norms, softmax and reductions, none of
  which are worth more than a few percent of a model and all of which are bound by memory anyway. There is
  no table of layer types: a layer costs what its aten ops cost.
- **Elements read and written** sum over the layer's aten ops (distinct elements of each tensor: a
  broadcast dimension counts once): what unfused eager kernels move. Views (an op whose outputs all alias
  its inputs' storage) and allocations (`empty*`) move nothing and launch no kernel.
- **Saved elements** are the storages autograd keeps for backward (`saved_tensors_hooks`), each storage
  counted once, by the layer that saves it first.
- **Per sample vs per call**: the step runs at batch 2 and at batch 3; the difference is per sample, the
  rest (weights, weight gradients, position tables) per call. FLOPs that do not scale with the batch
  (running-statistics updates, accumulating a tied weight's gradient) are left out.

Two functions take a different path on the meta (and CPU) device than on a GPU, so the profiler runs them as
the fused kernel a GPU runs: `scaled_dot_product_attention` on 4-D inputs (flash attention, or
memory-efficient attention when there is a mask; meta would take the math path, which materialises the
seq x seq score matrix a GPU never stores) and `dropout` (one `native_dropout` kernel and a bool mask).

A layer is one call of one module and holds the ops that module's own `forward` ran (not its children's).
Layers are in the order their first op ran; a module called twice gives `name` and `name:call2`; the code of
the root module is `(root)`; the loss (cross-entropy over the last dimension of each floating output, or the
output itself if it is a scalar) is `loss`. Backward ops are charged to the layer whose forward created the
autograd node running them (a pre-hook on every node).

`python -m models.profiling --write` regenerates `firesim/data/profiles/<name>.json` for every zoo model,
`--check` verifies they are up to date, and no argument prints a summary.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from firesim.workload import WORKLOAD_FORMAT, ModelProfile
from models import zoo

PROFILES_DIR = Path(__file__).resolve().parent.parent / "firesim" / "data" / "profiles"

__all__ = ["PROFILES_DIR", "profile", "profile_json", "profile_model", "stale_profiles", "write_profiles"]

aten = torch.ops.aten
_ALLOCATIONS = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided}
ROOT, LOSS = "(root)", "loss"


@dataclass
class _Traffic:
    """What one direction (forward or backward) of one layer costs in one pass."""

    flops: int = 0
    counted_flops: int = 0  # the part FlopCounterMode counts (matmul, conv, attention)
    read: int = 0
    written: int = 0
    ops: int = 0


@dataclass
class _Layer:
    name: str
    type: str
    params: int = 0
    fwd: _Traffic = field(default_factory=_Traffic)
    bwd: _Traffic = field(default_factory=_Traffic)
    saved: int = 0
    output_shape: tuple[int, ...] = ()

    def empty(self) -> bool:
        return not (self.params or self.saved or self.fwd.ops or self.bwd.ops)


@dataclass
class _Frame:
    """One module call in progress; its layer is created at its first op."""

    path: str
    module: nn.Module | None
    layer: _Layer | None = None


def _storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _distinct_elements(t: torch.Tensor) -> int:
    """Elements a kernel touches: broadcast (stride-0) dimensions count once."""
    return math.prod(n for n, stride in zip(t.shape, t.stride(), strict=True) if stride != 0)


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _op_tensors(values: Any) -> list[torch.Tensor]:
    """The tensors among an aten op's arguments or results (flat, or in lists: faster than a pytree walk)."""
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, torch.Tensor))
    return out


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """`F.scaled_dot_product_attention` as the fused GPU kernel: flash attention, or memory-efficient
    attention when a mask is given (which takes no grouped-query heads, so those are repeated first)."""
    if attn_mask is None:
        return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                        scale=scale)[0]
    if key.shape[1] != query.shape[1]:
        key, value = (t.repeat_interleave(query.shape[1] // t.shape[1], dim=1) for t in (key, value))
    if attn_mask.dtype == torch.bool:
        attn_mask = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            attn_mask.logical_not(), float("-inf"))
    needs_grad = any(t.requires_grad for t in (query, key, value))
    return aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask.expand(
        query.shape[0], query.shape[1], query.shape[2], key.shape[2]), needs_grad, dropout_p, is_causal,
        scale=scale)[0]


def _fused_dropout(input, p=0.5, training=True, inplace=False):
    """`F.dropout` as the one fused kernel a GPU runs (`native_dropout`: output and a bool mask), not the
    three kernels (bernoulli, scale, multiply) and float mask that the CPU and meta devices use."""
    if not training or p == 0.0:
        return input
    out = torch.native_dropout(input, p, True)[0]
    return input.copy_(out) if inplace else out


class _Session:
    """One pass: a training step at one batch size, charging every aten op to a layer."""

    def __init__(self, model: nn.Module, flop_registry: dict) -> None:
        self.flop_registry = flop_registry
        self.layers: list[_Layer] = []
        self.stack: list[_Frame] = []
        self.calls: Counter[str] = Counter()
        self.paths = {module: path for path, module in model.named_modules()}
        # parameters by module, as (id, numel) of the original objects: tied weights are counted once
        self.own_params = {m: [(id(p), p.numel()) for p in m._parameters.values() if p is not None]
                           for m in self.paths}
        self.counted: set[int] = set()
        self.backward = False
        self.bwd_layer: _Layer | None = None
        self.node_frames: dict[Any, _Frame] = {}
        self.saved_storages: dict[int, Any] = {}

    # -- layers --------------------------------------------------------------------------------------
    def push(self, path: str, module: nn.Module | None) -> None:
        self.stack.append(_Frame(path, module))

    def pop(self, output: Any = None) -> None:
        frame = self.stack.pop()
        if frame.module is not None and frame.layer is None and self._new_params(frame.module):
            self.layer_of(frame)  # a module with parameters and no op of its own still gets a layer
        if frame.layer is not None and output is not None:
            outputs = _tensors(output)
            frame.layer.output_shape = tuple(outputs[0].shape) if outputs else ()

    def _new_params(self, module: nn.Module) -> int:
        return sum(n for pid, n in self.own_params.get(module, ()) if pid not in self.counted)

    def layer_of(self, frame: _Frame) -> _Layer:
        if frame.layer is None:
            module = frame.module
            if module is None:
                name, kind, params = frame.path, "CrossEntropyLoss", 0
            else:
                self.calls[frame.path] += 1
                call = self.calls[frame.path]
                name = frame.path or ROOT
                name, kind = (name if call == 1 else f"{name}:call{call}"), type(module).__name__
                params = self._new_params(module) if call == 1 else 0
                self.counted.update(pid for pid, _ in self.own_params.get(module, ()))
            frame.layer = _Layer(name, kind, params)
            self.layers.append(frame.layer)
        return frame.layer

    def current(self) -> _Layer | None:
        """The layer an op runs for (None: outside the model's call, e.g. `functional_call` at work)."""
        if self.backward:
            return self.bwd_layer
        return self.layer_of(self.stack[-1]) if self.stack else None

    def unused_parameters(self) -> list[_Layer]:
        """Layers for modules whose parameters no call used (their gradients are still exchanged)."""
        out = []
        for module, path in self.paths.items():
            if params := self._new_params(module):
                self.counted.update(pid for pid, _ in self.own_params[module])
                out.append(_Layer(path or ROOT, type(module).__name__, params))
        return out

    # -- ops -----------------------------------------------------------------------------------------
    def charge(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        outputs = _op_tensors(out if isinstance(out, (tuple, list)) else (out,))
        if not outputs or func._overloadpacket in _ALLOCATIONS:
            return
        inputs = list({id(t): t for t in _op_tensors((*args, *kwargs.values()))}.values())
        input_storages = {_storage_id(t) for t in inputs}
        if not func._schema.is_mutable and all(_storage_id(t) in input_storages for t in outputs):
            return  # a view
        layer = self.current()
        if layer is None:
            return
        read = sum(_distinct_elements(t) for t in inputs)
        written = sum(_distinct_elements(t) for t in outputs)
        count = self.flop_registry.get(func._overloadpacket)
        counted = int(count(*args, **kwargs, out_val=out)) if count is not None else 0
        traffic = layer.bwd if self.backward else layer.fwd
        traffic.counted_flops += counted
        traffic.flops += counted if count is not None else max(_distinct_elements(t) for t in inputs + outputs)
        traffic.read += read
        traffic.written += written
        traffic.ops += 1

    def save(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        layer = self.current()
        if not self.backward and layer is not None and storage._cdata not in self.saved_storages:
            self.saved_storages[storage._cdata] = storage  # held, so the id is not reused
            layer.saved += storage.nbytes() // t.element_size()
        return t

    def tap(self, output: Any) -> None:
        """Remember which frame created each autograd node, for charging its backward; a frame whose ops
        are all views still gets its layer here, in forward order (dropped later if it stays empty)."""
        if self.backward or not self.stack:
            return
        frame = self.stack[-1]
        for t in _tensors(output):
            if t.grad_fn is not None:
                self.layer_of(frame)
                self.node_frames.setdefault(t.grad_fn, frame)

    def hook_backward(self, loss: torch.Tensor, loss_frame: _Frame) -> list:
        """A pre-hook on every autograd node of the step that makes its layer current. Nodes created inside
        one composite call (no tap saw them) belong with the next node the tap saw (that call's output)."""
        nodes, seen, todo = [], set(), [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            todo.extend(next_node for next_node, _ in node.next_functions)
            if type(node).__name__ != "AccumulateGrad":
                nodes.append(node)
        known = sorted(((node._sequence_nr(), self.layer_of(frame)) for node, frame in self.node_frames.items()
                        if node in seen), key=lambda pair: pair[0])
        known_seq = [seq for seq, _ in known]
        handles = []
        for node in nodes:
            i = bisect.bisect_left(known_seq, node._sequence_nr())
            layer = known[i][1] if i < len(known) else self.layer_of(loss_frame)
            handles.append(node.register_prehook(lambda _grads, layer=layer: self._enter(layer)))
        self.bwd_layer = self.layer_of(loss_frame)
        return handles

    def _enter(self, layer: _Layer) -> None:
        self.bwd_layer = layer


class _DispatchTap(TorchDispatchMode):
    """Entered inside FlopCounterMode, so it sees each aten op as dispatched (one kernel), before any
    decomposition FlopCounterMode makes of its own; the FLOPs it charges are checked against FlopCounterMode's."""

    def __init__(self, session: _Session) -> None:
        super().__init__()
        self.session = session

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.session.charge(func, args, kwargs, out)
        return out


class _FunctionTap(TorchFunctionMode):
    """Sees each torch call of the model's code: runs SDPA as the fused kernel, maps autograd nodes to layers."""

    def __init__(self, session: _Session) -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and args[0].dim() == 4:
            out = _fused_attention(*args, **kwargs)
        elif func is F.dropout:
            out = _fused_dropout(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        self.session.tap(out)
        return out


def _loss(outputs: Any) -> torch.Tensor:
    """Cross-entropy over the last dimension of every floating output that needs a gradient (targets: class
    0, values do not matter on meta); a scalar output is taken as the loss itself."""
    terms = []
    for t in _tensors(outputs):
        if not (t.is_floating_point() and t.requires_grad):
            continue
        if t.dim() >= 2:
            logits = t.flatten(0, -2)
            terms.append(F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=t.device)))
        else:
            terms.append(t.sum())
    if not terms:
        raise ValueError("the output has no floating tensor that depends on the parameters")
    return torch.stack(terms).sum() if len(terms) > 1 else terms[0]


def _meta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Meta stand-ins for the model's parameters and buffers (fresh ones: no gradient from an earlier step)."""
    state = {key: torch.empty_like(t, device="meta").requires_grad_(t.requires_grad)
             for key, t in model.named_parameters()}
    state.update({key: torch.empty_like(t, device="meta") for key, t in model.named_buffers()})
    return state


def _step(model: nn.Module, sample_shape: Sequence[int], tokens: bool,
          batch: int) -> tuple[list[_Layer], FlopCounterMode]:
    """One training step at `batch` on meta; returns the layers and the FlopCounterMode that counted it."""
    counter = FlopCounterMode(display=False)
    session = _Session(model, counter.flop_registry)
    shape = (batch, *sample_shape)
    x = (torch.zeros(shape, dtype=torch.long, device="meta") if tokens
         else torch.empty(shape, dtype=torch.float32, device="meta"))
    state = _meta_state(model)
    handles = []
    for module, path in session.paths.items():
        handles.append(module.register_forward_pre_hook(lambda _m, _a, path=path, m=module: session.push(path, m)))
        handles.append(module.register_forward_hook(lambda _m, _a, out: session.pop(out), always_call=True))
    try:
        with (torch.enable_grad(), counter, _DispatchTap(session), _FunctionTap(session),
              torch.autograd.graph.saved_tensors_hooks(session.save, lambda t: t)):
            outputs = functional_call(model, state, (x,))
            loss_frame = _Frame(LOSS, None)
            session.layers.extend(session.unused_parameters())
            session.stack.append(loss_frame)
            loss = _loss(outputs)
            session.stack.pop()
            handles += session.hook_backward(loss, loss_frame)
            session.backward = True
            loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return session.layers, counter


_BATCHES = (2, 3)  # batch 1 is degenerate: broadcasting over the batch (and its backward sum) costs nothing


def _per_sample(one: int, two: int, what: str) -> tuple[int, int]:
    """(per sample, per call) from the counts at the two batch sizes."""
    per_sample = two - one
    per_call = one - _BATCHES[0] * per_sample
    if per_sample < 0 or per_call < 0:
        raise ValueError(f"{what} is not linear in the batch size ({one} at batch {_BATCHES[0]}, {two} at batch "
                         f"{_BATCHES[1]})")
    return per_sample, per_call


def _combine(one: _Layer, two: _Layer) -> dict[str, Any]:
    """A schema layer from the same layer measured at the two batch sizes."""
    if (one.name, one.type) != (two.name, two.type) or one.fwd.ops != two.fwd.ops or one.bwd.ops != two.bwd.ops:
        raise ValueError(f"layer {one.name}: runs different code at batch {_BATCHES[0]} and {_BATCHES[1]}")
    where = f"layer {one.name}"
    fwd_read, fwd_weight_read = _per_sample(one.fwd.read, two.fwd.read, f"{where}: elements read")
    fwd_written, fwd_weight_written = _per_sample(one.fwd.written, two.fwd.written, f"{where}: elements written")
    bwd_read, bwd_weight_read = _per_sample(one.bwd.read, two.bwd.read, f"{where}: backward elements read")
    bwd_written, bwd_weight_written = _per_sample(one.bwd.written, two.bwd.written,
                                                  f"{where}: backward elements written")
    if len(one.output_shape) == len(two.output_shape):  # drop the batch dimension (the one that doubled)
        shape = [a for a, b in zip(one.output_shape, two.output_shape, strict=True) if a == b]
    else:
        shape = list(one.output_shape)
    return {
        "name": one.name,
        "type": one.type,
        "params": one.params,
        "fwd_flops": _per_sample(one.fwd.flops, two.fwd.flops, f"{where}: FLOPs")[0],
        "bwd_flops": _per_sample(one.bwd.flops, two.bwd.flops, f"{where}: backward FLOPs")[0],
        "fwd_matmul_flops": _per_sample(one.fwd.counted_flops, two.fwd.counted_flops, f"{where}: FLOPs")[0],
        "bwd_matmul_flops": _per_sample(one.bwd.counted_flops, two.bwd.counted_flops, f"{where}: FLOPs")[0],
        "input_elements": fwd_read,
        "output_elements": fwd_written,
        "weight_elements": fwd_weight_read + fwd_weight_written,
        "saved_elements": _per_sample(one.saved, two.saved, f"{where}: saved elements")[0],
        "bwd_input_elements": bwd_read,
        "bwd_output_elements": bwd_written,
        "bwd_weight_elements": bwd_weight_read + bwd_weight_written,
        "fwd_ops": one.fwd.ops,
        "bwd_ops": one.bwd.ops,
        "output_shape": shape,
    }


def profile(model: nn.Module, input_shape: Sequence[int], name: str = "model", *, tokens: bool = False,
            seq_len: int | None = None) -> dict[str, Any]:
    """The per-layer costs of one training sample of `model` (a `firesim.workload` profile, as a dict).

    `input_shape` is one sample's shape: (3, 224, 224) for an image, (seq_len,) for token ids (`tokens=True`,
    int64; otherwise float32). `seq_len` records the tokens per sample (default: `input_shape[0]` when
    `tokens`); with a float input of fewer than 3 dimensions (say 512x768 embeddings) it also marks the profile
    a sequence model's. The model may hold real or meta weights: it runs on meta copies, in training mode (layers
    that only run in training, like GoogLeNet's auxiliary heads, are included); its own mode and weights are
    left unchanged. The caller adds the dataset fields (`train_samples`, ...).
    """
    was_training = {m: m.training for m in model.modules()}
    model.train()
    try:
        (one, counter_one), (two, counter_two) = (_step(model, input_shape, tokens, b) for b in _BATCHES)
    finally:
        for m, training in was_training.items():
            m.training = training
    for layers, counter in ((one, counter_one), (two, counter_two)):  # every FLOP counted is in one layer
        charged = sum(layer.fwd.counted_flops + layer.bwd.counted_flops for layer in layers)
        total = counter.get_total_flops()
        assert charged == total, f"profile: {charged} FLOPs charged to layers, FlopCounterMode counted {total}"
    one_kept = [layer for layer in one if not layer.empty()]
    two_kept = [layer for layer in two if not layer.empty()]
    if len(one_kept) != len(two_kept):
        raise ValueError(f"the model runs different layers at batch {_BATCHES[0]} and {_BATCHES[1]}")
    layers = [_combine(a, b) for a, b in zip(one_kept, two_kept, strict=True)]
    if tokens and seq_len is None:
        seq_len = int(input_shape[0])
    return {
        "format": WORKLOAD_FORMAT,
        "name": name,
        "input_shape": [int(d) for d in input_shape],
        "sample": "sequence" if tokens or (seq_len and len(input_shape) < 3) else "image",
        "seq_len": seq_len,
        "params": sum(p.numel() for p in model.parameters()),
        "fwd_flops": sum(layer["fwd_flops"] for layer in layers),
        "layers": layers,
    }


def profile_model(name: str, seq_len: int | None = None) -> dict[str, Any]:
    """The full profile of a zoo model (what `firesim/data/profiles/<name>.json` holds at the default length)."""
    spec = zoo.get_spec(name)
    shape, tokens = spec.input_for(seq_len)
    with torch.device("meta"):
        model = spec.builder()
    result = profile(model, shape, name=spec.name, tokens=tokens, seq_len=shape[0] if tokens else spec.seq_len)
    if spec.sample == "image":
        result["sample"] = "image"
    result.update(max_seq_len=spec.max_seq_len, num_classes=spec.num_classes, dataset=spec.dataset,
                  train_samples=spec.samples_per_epoch(result["seq_len"] if tokens else None),
                  train_tokens=spec.train_tokens)
    return result


def profile_json(name: str) -> str:
    """`profile_model(name)` validated as a `firesim.workload.ModelProfile`: the exact text written to disk."""
    return ModelProfile.model_validate(profile_model(name)).to_json()


def write_profiles(directory: Path = PROFILES_DIR, names: Sequence[str] | None = None) -> list[Path]:
    """Write `<name>.json` for every zoo model (or `names`); returns the paths written."""
    from firesim.io import write_text_atomic

    return [write_text_atomic(directory / f"{name}.json", profile_json(name)) for name in names or zoo.list_models()]


def stale_profiles(directory: Path = PROFILES_DIR) -> list[str]:
    """Names of zoo models whose saved profile is missing or differs from a fresh one."""
    stale = []
    for name in zoo.list_models():
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text() != profile_json(name):
            stale.append(name)
    return stale


def _summary(names: Sequence[str]) -> str:
    rows = [f"{'model':<20} {'params':>10} {'fwd GFLOP':>10} {'train GFLOP':>12} {'per token / 6N':>15} "
            f"{'layers':>7} {'seconds':>8}"]
    for name in names:
        start = time.perf_counter()
        p = ModelProfile.model_validate(profile_model(name))
        seconds = time.perf_counter() - start
        ratio = p.train_flops / p.tokens_per_sample / (6 * p.params)
        rows.append(f"{name:<20} {p.params / 1e6:>9.1f}M {p.fwd_flops / 1e9:>10.2f} {p.train_flops / 1e9:>12.2f} "
                    f"{ratio:>15.3f} {len(p.layers):>7} {seconds:>8.2f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print a summary table, or `--write` / `--check` the saved profiles."""
    parser = argparse.ArgumentParser(prog="python -m models.profiling", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="regenerate firesim/data/profiles/*.json")
    action.add_argument("--check", action="store_true", help="exit 1 if any saved profile is stale")
    parser.add_argument("--dir", type=Path, default=PROFILES_DIR, help="profiles directory")
    parser.add_argument("names", nargs="*", help="zoo models (default: all)")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_profiles(args.dir, args.names):
            print(f"wrote {path}")
        return 0
    if args.check:
        stale = stale_profiles(args.dir)
        if stale:
            print(f"stale profiles: {', '.join(stale)}; run `python -m models.profiling --write`")
            return 1
        print("profiles up to date")
        return 0
    print(_summary(args.names or zoo.list_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
