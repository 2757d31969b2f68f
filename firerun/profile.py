"""`firerun profile`: a workload profile for any PyTorch model, yours or the zoo's, for `firesim --model`.

Your model is named `package.module:factory`, where `factory` is a callable (a function or a class) that returns
an `nn.Module`; keyword arguments come from `--kwargs key=value`. It is built under `torch.device("meta")`, so
a 70-billion-parameter model costs no memory, and profiled by `models.profiling` (one training step on meta).
Anything that goes wrong in your code (import, factory, forward) is one line naming the module, where in your
code it failed and why; nothing is written then.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import operator
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from firesim.errors import UserError, one_line, validation_line
from firesim.io import check_writable, write_text_atomic
from firesim.units import parse_options
from firesim.workload import ModelProfile

__all__ = ["parse_kwargs", "parse_shape", "profile_command", "profile_user_model"]

IMAGENET_TRAIN_IMAGES = 1_281_167
_MESSAGE_CHARS = 300


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224): one sample's input shape, without the batch dimension."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise UserError(f"input: expected one sample's shape like 3x224x224, got {text!r}")
    return shape


def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """['depth=4', 'act=gelu'] -> {'depth': 4, 'act': 'gelu'}: Python literals where they parse, else strings."""
    options: dict[str, str] = {}
    for item in items:
        for key, value in parse_options(item, "kwargs").items():
            if key in options or not key.isidentifier():
                raise UserError(f"kwargs: {key!r} is " + ("given twice" if key in options else "not a Python name"))
            options[key] = value
    parsed: dict[str, Any] = {}
    for key, value in options.items():
        try:
            parsed[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return parsed


def _where(err: BaseException, module_name: str) -> str:
    """' (file.py:12)' for the deepest frame of the user's own code (the module's folder) in the traceback."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return ""
    root = Path(spec.origin).resolve().parent
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(root) and "site-packages" not in path.parts:
            return f" ({path.name}:{frame.lineno})"
    return ""


def _cause(err: BaseException) -> str:
    text = one_line(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS - 3] + "..."


def load_factory(spec: str) -> tuple[str, Callable[..., Any]]:
    """('package.module', factory) from 'package.module:factory' (the factory may be a dotted attribute)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise UserError(f"model: expected a zoo name or 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # the user's module may raise anything while importing
        raise UserError(f"model: cannot import {module_name!r}{_where(err, module_name)}: {_cause(err)}") from None
    try:
        factory = operator.attrgetter(attr)(module)
    except AttributeError:
        raise UserError(f"model: module {module_name!r} has no {attr!r}") from None
    if not callable(factory):
        raise UserError(f"model: {spec} is a {type(factory).__name__}, not a callable returning an nn.Module")
    return module_name, factory


def profile_user_model(spec: str, *, input_shape: tuple[int, ...] | None = None, seq_len: int | None = None,
                       kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Profile `package.module:factory(**kwargs)` on one sample of `input_shape` (float), or of `seq_len`
    token ids when no shape is given. Returns the profile without its dataset fields."""
    import torch
    from torch import nn

    from models import profiling

    if input_shape is None and seq_len is None:
        raise UserError("input: give --input (one sample's shape, e.g. 3x224x224) or --seq-len (token ids)")
    module_name, factory = load_factory(spec)
    try:
        with torch.device("meta"):
            model = factory(**(kwargs or {}))
    except Exception as err:
        raise UserError(f"model: {spec}(...) raised{_where(err, module_name)}: {_cause(err)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model: {spec}(...) returned a {type(model).__name__}, not a torch.nn.Module")
    tokens = input_shape is None
    shape = (seq_len,) if tokens else input_shape
    label = "x".join(map(str, shape)) + (" token ids" if tokens else "")
    try:
        return profiling.profile(model, shape, name=spec.partition(":")[2], tokens=tokens, seq_len=seq_len)
    except Exception as err:
        raise UserError(f"model: {spec} failed on input {label}{_where(err, module_name)}: {_cause(err)}") from None


def profile_command(model: str, output: Path, *, input_text: str | None = None, seq_len: int | None = None,
                    kwargs: Sequence[str] = (), train_samples: int | None = None, train_tokens: int | None = None,
                    dataset: str = "", name: str | None = None) -> ModelProfile:
    """`firerun profile`: profile a zoo model or the user's, validate, write `output` atomically; returns it."""
    from models import profiling, zoo

    check_writable(output, "output")
    if seq_len is not None and seq_len < 1:
        raise UserError(f"seq-len: must be >= 1, got {seq_len}")
    for flag, value in (("train-samples", train_samples), ("train-tokens", train_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: must be >= 1, got {value}")
    if ":" not in model:
        spec = zoo.get_spec(model)
        if input_text is not None or kwargs:
            raise UserError(f"model: {model!r} is a zoo model; --input and --kwargs are for your own "
                            "'package.module:factory'")
        if train_tokens is not None and spec.sample != "sequence":
            raise UserError(f"train-tokens: {model} takes images; give --train-samples")
        result = profiling.profile_model(spec.name, seq_len)
    else:
        if train_tokens is not None and seq_len is None:
            raise UserError("train-tokens: needs --seq-len (tokens per sample)")
        shape = parse_shape(input_text) if input_text is not None else None
        result = profile_user_model(model, input_shape=shape, seq_len=seq_len, kwargs=parse_kwargs(kwargs))
        outputs = [layer for layer in result["layers"] if layer["name"] != "loss"]
        classes = outputs[-1]["output_shape"][-1:] if outputs else []
        result.update(num_classes=classes[0] if classes else None, train_tokens=None, dataset="")
        if train_samples is None and train_tokens is None:
            if result["sample"] == "sequence":
                raise UserError("train-samples: give --train-samples or --train-tokens for a sequence model")
            train_samples, dataset = IMAGENET_TRAIN_IMAGES, dataset or "imagenet-1k size (default)"
    if train_tokens is not None:
        result["train_tokens"] = train_tokens
        train_samples = train_samples or train_tokens // result["seq_len"]
    result.update({key: value for key, value in (("name", name), ("train_samples", train_samples),
                                                 ("dataset", dataset)) if value})
    try:
        profile = ModelProfile.model_validate(result)
    except ValidationError as err:
        raise UserError(f"model: {model}: the profile is not valid ({validation_line(err)})") from None
    write_text_atomic(output, profile.to_json())
    return profile
