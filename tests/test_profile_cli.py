"""Bring your own model: `firerun profile --model pkg.module:factory` writes a profile `firesim predict` reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from firerun.profile import parse_kwargs, parse_shape, profile_command
from firesim.errors import UserError
from firesim.workload import load_workload

# A user's model, as they would write it: a small vision transformer and a small language model, with no rule
# the profiler was ever told about (conv patches, SDPA, LayerNorm, GELU, a class token), plus broken factories.
USER_MODULE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Block(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.norm = nn.LayerNorm(width)
            self.qkv = nn.Linear(width, 3 * width)
            self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            self.heads = heads

        def forward(self, x, causal=False):
            b, s, d = x.shape
            q, k, v = self.qkv(self.norm(x)).view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            x = x + F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(b, s, d)
            return x + self.mlp(x)


    class TinyViT(nn.Module):
        def __init__(self, width=32, depth=2, classes=10):
            super().__init__()
            self.patches = nn.Conv2d(3, width, 8, stride=8)
            self.cls = nn.Parameter(torch.zeros(1, 1, width))
            self.blocks = nn.ModuleList(Block(width, 4) for _ in range(depth))
            self.head = nn.Linear(width, classes)

        def forward(self, images):
            x = self.patches(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1)
            for block in self.blocks:
                x = block(x)
            return self.head(x[:, 0])


    class TinyLM(nn.Module):
        def __init__(self, vocab=100, width=32):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.block = Block(width, 4)
            self.out = nn.Linear(width, vocab)

        def forward(self, idx):
            return self.out(self.block(self.embed(idx), causal=True))


    def build(width=32, depth=2):
        return TinyViT(width, depth)


    def broken():
        raise FileNotFoundError("checkpoint.pt")


    def not_a_module():
        return "TinyViT"


    def mismatched():
        model = TinyViT()
        model.head = nn.Linear(7, 10)
        return model
''')


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """The module above as `byo_<test>.py` in a fresh folder on the path (unique name: no stale import)."""
    name = f"byo_{os.getpid()}_{abs(hash(tmp_path)) % 10**8}"
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return name, folder


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_profile_then_predict_end_to_end(user_module: tuple[str, Path], tmp_path: Path) -> None:
    name, folder = user_module
    out = tmp_path / "my.json"
    proc = _run(["-m", "firerun", "profile", "--model", f"{name}:build", "--input", "3x32x32", "--kwargs",
                 "width=32,depth=2", "--train-samples", "50000", "--dataset", "cifar-10", "-o", str(out)], folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: build, ")

    profile = load_workload(str(out))
    module = __import__(name)
    with torch.device("meta"):
        model = module.build(32, 2)
    assert profile.params == sum(p.numel() for p in model.parameters())
    assert (profile.train_samples, profile.dataset, profile.num_classes) == (50000, "cifar-10", 10)
    assert (profile.input_shape, profile.sample) == ((3, 32, 32), "image")
    layers = {layer.name: layer for layer in profile.layers}
    tokens, width = 1 + (32 // 8) ** 2, 32
    assert layers["blocks.0"].fwd_matmul_flops == 4 * tokens * tokens * width  # SDPA, counted in the block's code
    assert layers["blocks.0.qkv"].fwd_matmul_flops == 2 * tokens * width * 3 * width
    assert layers["(root)"].params == width  # the class token
    assert json.loads(out.read_text())["format"] == "firesim.workload/2"

    # firesim reads the JSON and never imports torch
    code = ("import sys; from firesim.cli import main; sys.argv = ['firesim', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'firesim imported torch'")
    proc = _run(["-c", code, "predict", "--model", str(out), "--hardware", "dgx-a100", "--gpus", "1,8",
                 "--algo", "ring", "--json"], folder)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [row["gpus"] for row in rows] == [1, 8] and all(row["model"] == "build" for row in rows)


def test_a_sequence_model_from_token_ids(user_module: tuple[str, Path], tmp_path: Path) -> None:
    name, _ = user_module
    profile = profile_command(f"{name}:TinyLM", tmp_path / "lm.json", seq_len=64, kwargs=["vocab=100"],
                              train_tokens=64_000)
    assert (profile.sample, profile.seq_len, profile.input_shape) == ("sequence", 64, (64,))
    assert (profile.train_samples, profile.train_tokens, profile.num_classes) == (1000, 64_000, 100)
    assert load_workload(str(tmp_path / "lm.json")) == profile


@pytest.mark.parametrize(("factory", "extra", "expected"), [
    ("{m}:broken", [], r"model: {m}:broken\(\.\.\.\) raised \({m}\.py:\d+\): FileNotFoundError: checkpoint\.pt"),
    ("{m}:not_a_module", [], r"returned a str, not a torch\.nn\.Module"),
    ("{m}:mismatched", [], r"model: {m}:mismatched failed on input 3x32x32 \({m}\.py:\d+\): RuntimeError: "),
    ("{m}:build", ["--input", "3x32"], r"failed on input 3x32 \({m}\.py:\d+\): "),
    ("{m}:build", ["--kwargs", "colour=red"], r"raised: TypeError: .*colour"),
    ("{m}:nothing", [], r"module '{m}' has no 'nothing'"),
    ("{m}_missing:build", [], r"cannot import '{m}_missing': ModuleNotFoundError"),
])
def test_errors_in_the_users_code_are_one_line_naming_the_module(user_module, tmp_path, factory, extra,
                                                                 expected) -> None:
    name, _ = user_module
    args = {"input_text": "3x32x32", "kwargs": []}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args["input_text" if flag == "--input" else "kwargs"] = value if flag == "--input" else [value]
    out = tmp_path / "bad.json"
    with pytest.raises(UserError, match=expected.format(m=name)) as excinfo:
        profile_command(factory.format(m=name), out, **args)
    assert "\n" not in str(excinfo.value) and not out.exists()


def test_the_cli_exits_2_with_one_line_and_writes_nothing(user_module: tuple[str, Path], tmp_path: Path) -> None:
    name, folder = user_module
    out = tmp_path / "bad.json"
    proc = _run(["-m", "firerun", "profile", "--model", f"{name}:broken", "--input", "3x32x32", "-o", str(out)],
                folder)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "FileNotFoundError: checkpoint.pt" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]


def test_input_and_option_errors(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    for kwargs, expected in [
        ({"model": "no_colon_or_zoo_name"}, "unknown name"),
        ({"model": "gpt2", "input_text": "3x8x8"}, "zoo model"),
        ({"model": "gpt2", "seq_len": 4096}, "1 to 1024"),
        ({"model": "pkg:f"}, "give --input"),
        ({"model": "pkg:f", "input_text": "3x0"}, "3x224x224"),
        ({"model": "resnet50", "train_samples": 0}, "train-samples"),
        ({"model": "resnet50", "train_tokens": 10}, "takes images"),
        ({"model": "pkg:f", "input_text": "3x8", "train_tokens": 10}, "needs --seq-len"),
    ]:
        with pytest.raises(UserError, match=expected):
            profile_command(output=out, **kwargs)
    assert not out.exists()
    with pytest.raises(UserError, match="directory"):
        profile_command("gpt2", tmp_path)


def test_a_zoo_model_at_another_sequence_length(tmp_path: Path) -> None:
    profile = profile_command("bert_base", tmp_path / "bert512.json", seq_len=512)
    assert (profile.seq_len, profile.train_samples, profile.max_seq_len) == (512, 3_300_000_000 // 512, 512)
    assert profile_command("bert_base", tmp_path / "b.json", train_tokens=1280, dataset="mine").train_samples == 10
    assert load_workload(str(tmp_path / "bert512.json")).name == "bert_base"


def test_parsers() -> None:
    assert parse_shape("3x224X224") == (3, 224, 224)
    assert parse_kwargs(["depth=4,act=gelu", "drop=0.1", "bias=false", "dims=[1]"]) == {
        "depth": 4, "act": "gelu", "drop": 0.1, "bias": False, "dims": [1]}
    for bad in (["depth=1", "depth=2"], ["1x=3"], ["novalue"]):
        with pytest.raises(UserError):
            parse_kwargs(bad)
