"""What a model costs to train: the profile schema, read from JSON (``firesim`` never imports torch).

A profile lists, per layer in forward execution order and per sample, the parameters (gradient elements to
exchange), the forward and backward FLOPs, and the elements the layer reads, writes and keeps for backward
(for a memory roofline and the activation memory of a batch). ``models.profiling`` writes these files from
PyTorch code (the zoo, or ``firerun profile`` on a user's own ``nn.Module``); this module only reads them.
The zoo's profiles are packaged in ``firesim/data/profiles/`` beside the hardware catalog.

Format versions: ``firesim.workload/2`` (this one). Files written before versioning (no ``format`` key) are
version 1: they load, with backward FLOPs taken as 2 x forward and no byte counts.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firesim.errors import UserError, validation_line
from firesim.io import dumps, read_json

__all__ = ["WORKLOAD_FORMAT", "LayerProfile", "ModelProfile", "list_workloads", "load_workload", "profiles_dir"]

WORKLOAD_FORMAT = "firesim.workload/2"
_V1 = "firesim.workload/1"
# Bounds that keep every derived quantity finite and every gradient a size (firesim.units.MAX_BYTES at fp64):
# 2**46 parameters is ~70 T, far beyond any model; FLOPs per sample up to ~1e21.
MAX_PARAMS = 2**46
MAX_FLOPS = 2**70


class LayerProfile(BaseModel):
    """One layer's cost for one sample (one image, or one sequence of ``seq_len`` tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    params: int = Field(ge=0, le=MAX_PARAMS)
    fwd_flops: int = Field(ge=0, le=MAX_FLOPS)
    bwd_flops: int | None = Field(default=None, ge=0, description="None (version 1): 2 x fwd_flops")
    fwd_macs: int = Field(default=0, ge=0, description="version 1 files only")
    input_elements: int = Field(default=0, ge=0, description="activation elements read (weights excluded)")
    output_elements: int = Field(default=0, ge=0, description="activation elements written")
    saved_elements: int = Field(default=0, ge=0, description="activation elements kept for backward")
    output_shape: tuple[int, ...] = ()

    @property
    def backward_flops(self) -> int:
        return 2 * self.fwd_flops if self.bwd_flops is None else self.bwd_flops


class ModelProfile(BaseModel):
    """A model's per-sample costs plus what time-to-train needs (samples per epoch)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    format: Literal["firesim.workload/1", "firesim.workload/2"] = WORKLOAD_FORMAT
    name: str = Field(min_length=1)
    input_shape: tuple[int, ...]
    sample: Literal["image", "sequence"] = "image"
    seq_len: int | None = Field(default=None, gt=0)
    num_classes: int | None = Field(default=None, gt=0)
    dataset: str = ""
    train_samples: int = Field(gt=0, alias="train_images", description="samples per epoch")
    params: int = Field(ge=0, le=MAX_PARAMS)
    fwd_flops: int = Field(ge=0, le=MAX_FLOPS)
    fwd_macs: int = Field(default=0, ge=0, description="version 1 files only")
    layers: tuple[LayerProfile, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ModelProfile:
        if sum(layer.params for layer in self.layers) != self.params:
            raise ValueError(f"params: {self.params} differs from the sum over layers "
                             f"{sum(layer.params for layer in self.layers)}")
        return self

    @property
    def bwd_flops(self) -> int:
        return sum(layer.backward_flops for layer in self.layers)

    @property
    def train_flops(self) -> int:
        """Forward + backward FLOPs of one sample."""
        return self.fwd_flops + self.bwd_flops

    def gradient_nbytes(self, bytes_per_param: int = 4) -> int:
        """Bytes of gradient exchanged per iteration (fp32 by default)."""
        return self.params * bytes_per_param

    def to_json(self) -> str:
        """The text a profile file holds: indented, keys in schema order, newline-ended."""
        return dumps(self.model_dump(mode="json", by_alias=False), indent=2) + "\n"


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
    try:
        return ModelProfile.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{label}: {validation_line(err)}") from None


def load_workload(spec: str | os.PathLike) -> ModelProfile:
    """A packaged profile by name (``googlenet``), or a profile JSON file by path (``my.json``)."""
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
