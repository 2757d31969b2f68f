"""What a model costs to train: the profile schema, read from JSON (``firesim`` never imports torch).

A profile lists, per layer in forward execution order, the parameters (gradient elements to exchange), the
forward and backward FLOPs, and the elements the layer reads, writes and keeps for backward (for a per-layer
roofline and the activation memory of a batch). ``models.profiling`` writes these files from PyTorch code (the
zoo, or ``firerun profile`` on a user's own ``nn.Module``); this module only reads them. The zoo's profiles are
packaged in ``firesim/data/profiles/`` beside the hardware catalog.

Units. Every count is an element count, never bytes: multiply by the bytes per element of the dtype the
cluster runs in. Fields marked *per sample* scale with the batch (one image, or one sequence of ``seq_len``
tokens); fields marked *per call* do not (weights read, weight gradients written, kernels launched). The
profiler separates the two exactly by running the model at batch 1 and batch 2.

A "layer" is one call of one module, holding the aten ops that module's own ``forward`` ran (not its
children's): a leaf module (``Linear``, ``LayerNorm``), or the code of a container (an attention block's
``scaled_dot_product_attention``, a residual add). Its backward is every autograd node its forward created.
Element counts sum over the layer's aten ops, views excluded: what unfused eager kernels move.

Format versions: ``firesim.workload/2`` (this one). Files written before versioning (no ``format`` key) are
version 1: they load, with backward FLOPs taken as 2 x forward and no element counts.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firesim.errors import UserError, validated
from firesim.io import dumps, read_json

__all__ = ["WORKLOAD_FORMAT", "LayerProfile", "ModelProfile", "list_workloads", "load_workload", "profiles_dir"]

WORKLOAD_FORMAT = "firesim.workload/2"
_V1 = "firesim.workload/1"
# Bounds that keep every derived quantity finite and every gradient a size (firesim.units.MAX_BYTES at fp64):
# 2**46 parameters is ~70 T, far beyond any model; FLOPs per sample up to ~1e21.
MAX_PARAMS = 2**46
MAX_FLOPS = 2**70


class LayerProfile(BaseModel):
    """One layer: FLOPs and activation elements per sample, weight elements and kernels per call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="module path; ':callN' for the N-th call of a module; 'loss' for the loss")
    type: str = Field(description="the module's class name")
    params: int = Field(ge=0, le=MAX_PARAMS, description="parameters first used by this layer (tied weights "
                        "counted once)")
    fwd_flops: int = Field(ge=0, le=MAX_FLOPS, description="per sample: forward FLOPs (FlopCounterMode + "
                           "elementwise)")
    bwd_flops: int | None = Field(default=None, ge=0, le=MAX_FLOPS,
                                  description="per sample; None (version 1): 2 x fwd_flops")
    fwd_matmul_flops: int = Field(default=0, ge=0, description="per sample: the part of fwd_flops in matmuls, "
                                  "convolutions and attention (tensor-core work); the rest is elementwise")
    bwd_matmul_flops: int = Field(default=0, ge=0, description="per sample: the same part of bwd_flops")
    fwd_macs: int = Field(default=0, ge=0, description="version 1 files only")
    input_elements: int = Field(default=0, ge=0, description="per sample: activation elements the forward reads")
    output_elements: int = Field(default=0, ge=0, description="per sample: activation elements the forward writes")
    weight_elements: int = Field(default=0, ge=0, description="per call: batch-independent elements the forward "
                                 "reads (weights at each use, buffers, masks)")
    saved_elements: int = Field(default=0, ge=0, description="per sample: activation elements kept for backward "
                                "(each storage counted once, by the first layer that saves it)")
    bwd_input_elements: int = Field(default=0, ge=0, description="per sample: elements the backward reads")
    bwd_output_elements: int = Field(default=0, ge=0, description="per sample: elements the backward writes")
    bwd_weight_elements: int = Field(default=0, ge=0, description="per call: batch-independent elements the "
                                     "backward reads or writes (weights, weight gradients)")
    fwd_ops: int = Field(default=0, ge=0, description="per call: aten kernels the forward launches (no views)")
    bwd_ops: int = Field(default=0, ge=0, description="per call: aten kernels the backward launches (no views)")
    output_shape: tuple[int, ...] = Field(default=(), description="one sample's output (batch dimension dropped)")

    @property
    def backward_flops(self) -> int:
        return 2 * self.fwd_flops if self.bwd_flops is None else self.bwd_flops


class ModelProfile(BaseModel):
    """A model's per-sample costs plus what time-to-train needs (samples per epoch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    format: Literal["firesim.workload/1", "firesim.workload/2"] = WORKLOAD_FORMAT
    name: str = Field(min_length=1)
    input_shape: tuple[int, ...] = Field(description="one sample's input: (C, H, W), or (seq_len,) token ids")
    sample: Literal["image", "sequence"] = "image"
    seq_len: int | None = Field(default=None, gt=0, description="tokens per sample (ViT: patches + class token)")
    max_seq_len: int | None = Field(default=None, gt=0, description="longest sequence the model accepts")
    num_classes: int | None = Field(default=None, gt=0, description="classes, or vocabulary of a language model")
    dataset: str = ""
    train_samples: int = Field(gt=0, alias="train_images", description="samples per epoch")
    train_tokens: int | None = Field(default=None, gt=0, description="sequence models: tokens per epoch")
    params: int = Field(ge=0, le=MAX_PARAMS)
    fwd_flops: int = Field(ge=0, le=MAX_FLOPS, description="per sample: the sum over layers")
    fwd_macs: int = Field(default=0, ge=0, description="version 1 files only")
    layers: tuple[LayerProfile, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelProfile:
        if sum(layer.params for layer in self.layers) != self.params:
            raise ValueError(f"params: {self.params} differs from the sum over layers "
                             f"{sum(layer.params for layer in self.layers)}")
        if self.format != _V1 and sum(layer.fwd_flops for layer in self.layers) != self.fwd_flops:
            raise ValueError(f"fwd_flops: {self.fwd_flops} differs from the sum over layers "
                             f"{sum(layer.fwd_flops for layer in self.layers)}")
        return self

    @property
    def bwd_flops(self) -> int:
        return sum(layer.backward_flops for layer in self.layers)

    @property
    def train_flops(self) -> int:
        """Forward + backward FLOPs of one sample."""
        return self.fwd_flops + self.bwd_flops

    @property
    def saved_elements(self) -> int:
        """Activation elements one sample keeps from forward to backward (the activation memory)."""
        return sum(layer.saved_elements for layer in self.layers)

    @property
    def tokens_per_sample(self) -> int:
        """Tokens in one sample: ``seq_len`` for sequence models, else 1."""
        return self.seq_len if self.sample == "sequence" and self.seq_len else 1

    def gradient_nbytes(self, bytes_per_param: int = 4) -> int:
        """Bytes of gradient exchanged per iteration (fp32 by default)."""
        return self.params * bytes_per_param

    def to_json(self) -> str:
        """The text a profile file holds: strict JSON, indented, keys in schema order, newline-ended (the
        version-1 field ``fwd_macs`` only in version-1 profiles)."""
        data = self.model_dump(mode="json", by_alias=False)
        if self.format != _V1:
            for record in (data, *data["layers"]):
                del record["fwd_macs"]
        return dumps(data, indent=2) + "\n"


def profiles_dir() -> Path:
    """Where the zoo's profiles are packaged."""
    return Path(str(resources.files("firesim") / "data" / "profiles"))


def list_workloads() -> list[str]:
    """Names of the packaged profiles, sorted."""
    return sorted(p.stem for p in profiles_dir().glob("*.json"))


def _parse(data, label: str) -> ModelProfile:
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a JSON object (a model profile), got {type(data).__name__}")
    data = dict(data)
    fmt = data.setdefault("format", _V1)
    if fmt not in (_V1, WORKLOAD_FORMAT):
        raise UserError(f"{label}: format {fmt!r} is not one this version reads ({_V1}, {WORKLOAD_FORMAT}); "
                        "regenerate it with `firerun profile`")
    return validated(ModelProfile, data, label)


def load_workload(spec: str | os.PathLike, seq_len: int | None = None) -> ModelProfile:
    """A packaged profile by name (``googlenet``), or a profile JSON file by path (``my.json``).

    ``seq_len`` (a front end's ``--seq-len``) must be the profile's own: per-layer costs are measured at one
    sequence length (attention is quadratic in it), and re-measuring needs torch, so another length is a
    one-line error that says which ``firerun profile`` command writes that profile.
    """
    profile = _load(spec)
    if seq_len is not None and seq_len != profile.seq_len:
        if profile.sample != "sequence":
            raise UserError(f"seq-len: {profile.name} takes images ({'x'.join(map(str, profile.input_shape))}); "
                            "its sequence length is set by the image size")
        raise UserError(f"seq-len: the {profile.name} profile is for {profile.seq_len} tokens; for {seq_len}, run "
                        f"`firerun profile --model {profile.name} --seq-len {seq_len} -o {profile.name}-{seq_len}.json` "
                        f"and pass --model {profile.name}-{seq_len}.json")
    return profile


def _load(spec: str | os.PathLike) -> ModelProfile:
    text = os.fspath(spec)
    path = Path(text)
    if not text.endswith(".json") and os.sep not in text:
        known = list_workloads()
        if text not in known:
            raise UserError(f"model: unknown name {text!r}; known: {', '.join(known)} (or a profile .json file)")
        path = profiles_dir() / f"{text}.json"
    if not path.exists():
        raise UserError(f"model: no such profile file {text!r}")
    data = read_json(path, "model profile")
    return _parse(data, text)
