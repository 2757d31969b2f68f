"""The zoo matches the published sizes, the profiler counts what its docstring says, the saved profiles are fresh."""

from __future__ import annotations

import functools
import resource
from collections import Counter

import pytest
import torch
from torch import nn

from firesim.errors import UserError
from firesim.workload import ModelProfile, list_workloads, load_workload
from models import profiling, zoo
from models.zoo import transformers

# Forward multiply-adds per 224x224 image (REFERENCE.md's table): within 1 % of the quoted figure, GoogLeNet and
# ResNet-50 within the quoted ranges. FlopCounterMode counts 2 FLOPs per multiply-add of convs and matmuls.
REFERENCE_MACS = {
    "nin": (1.10e9 * 0.99, 1.10e9 * 1.01),
    "alexnet": (0.715e9 * 0.99, 0.715e9 * 1.01),
    "googlenet": (1.5e9, 1.6e9),
    "vgg16": (15.5e9 * 0.99, 15.5e9 * 1.01),
    "vgg19": (19.6e9 * 0.99, 19.6e9 * 1.01),
    "resnet50": (3.9e9, 4.1e9),
}
# (layers, d_model) of each transformer, for the attention term of the FLOPs per token
SHAPES = {"gpt2": (12, 768), "gpt2_medium": (24, 1024), "gpt2_large": (36, 1280), "gpt2_xl": (48, 1600),
          "bert_base": (12, 768), "bert_large": (24, 1024), "vit_b16": (12, 768), "llama2_7b": (32, 4096),
          "llama3_8b": (32, 4096)}
DECODERS = ["gpt2", "gpt2_medium", "gpt2_large", "gpt2_xl", "llama2_7b", "llama3_8b"]


@functools.cache
def _profile(name: str) -> ModelProfile:
    """Each zoo model is profiled once for the whole module (the 7B models take seconds)."""
    return ModelProfile.model_validate(profiling.profile_model(name))


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return zoo.build(name, **kwargs)


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _matmul_params(model: nn.Module) -> int:
    """Weights that multiply every token: the Linear layers' (a tied head once; biases and norms excluded)."""
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)}
    return sum(weights.values())


def _matmul_flops(profile: ModelProfile) -> int:
    return sum(layer.fwd_matmul_flops + layer.bwd_matmul_flops for layer in profile.layers)


# --------------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name", sorted(zoo.PUBLISHED_PARAMS))
def test_params_within_1_percent_of_published(name: str) -> None:
    published, source = zoo.PUBLISHED_PARAMS[name]
    params = _num_params(_meta_model(name))
    assert params == _profile(name).params
    assert abs(params / published - 1) <= 0.01, f"{name}: {params} vs {published} ({source})"


def _transformer_layer(d: int) -> int:
    """Two LayerNorms, four d x d projections and a d -> 4d -> d MLP, all with biases."""
    return 12 * d * d + 13 * d


def test_transformer_params_are_exactly_those_of_the_published_configs() -> None:
    gpt2 = {"gpt2": (12, 768), "gpt2_medium": (24, 1024), "gpt2_large": (36, 1280), "gpt2_xl": (48, 1600)}
    for name, (layers, d) in gpt2.items():  # token + position embeddings (head tied), blocks, final norm
        assert _num_params(_meta_model(name)) == (50257 + 1024) * d + layers * _transformer_layer(d) + 2 * d
    for name, (layers, d) in {"bert_base": (12, 768), "bert_large": (24, 1024)}.items():
        embeddings = (30522 + 512 + 2) * d + 2 * d
        pooler, lm_head, nsp_head = d * d + d, d * d + d + 2 * d + 30522, 2 * d + 2
        assert _num_params(_meta_model(name)) == (embeddings + layers * _transformer_layer(d) + pooler + lm_head
                                                  + nsp_head)
    patch, tokens, d = 3 * 16 * 16 * 768 + 768, 197, 768
    assert _num_params(_meta_model("vit_b16")) == patch + (1 + tokens) * d + 12 * _transformer_layer(d) + 2 * d + (
        d * 1000 + 1000)
    for name, (vocab, kv_dim, hidden) in {"llama2_7b": (32000, 4096, 11008), "llama3_8b": (128256, 1024, 14336)}.items():
        d = 4096
        layer = 2 * d * d + 2 * d * kv_dim + 3 * d * hidden + 2 * d
        assert _num_params(_meta_model(name)) == 2 * vocab * d + 32 * layer + d
    assert _num_params(_meta_model("llama2_7b")) == 6_738_415_616  # the published safetensors totals
    assert _num_params(_meta_model("llama3_8b")) == 8_030_261_248


def test_googlenet_aux_heads_add_about_6_4m_params_and_run_in_training() -> None:
    assert 6.6e6 <= _profile("googlenet").params <= 7.0e6  # REFERENCE.md: 6.6-7.0 M
    model = _meta_model("googlenet", aux_logits=True)
    assert 13.3e6 <= _num_params(model) <= 13.5e6  # REFERENCE.md: 13.4 M with aux heads
    result = profiling.profile(model, (3, 224, 224))
    assert sum(layer["params"] for layer in result["layers"]) == result["params"] == _num_params(model)
    model.train()
    assert len(model(torch.empty(2, 3, 224, 224, device="meta"))) == 3
    model.eval()
    assert model(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


# -------------------------------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("name", sorted(REFERENCE_MACS))
def test_cnn_multiply_adds_match_reference(name: str) -> None:
    lo, hi = REFERENCE_MACS[name]
    profile = _profile(name)
    macs = sum(layer.fwd_matmul_flops for layer in profile.layers) / 2
    assert lo <= macs <= hi
    assert profile.fwd_flops > 2 * macs  # plus the elementwise ops


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_training_flops_per_token_are_exactly_6n_plus_attention(name: str) -> None:
    """What FlopCounterMode counts in a training step, per token: 6 per weight that multiplies the token (2 forward,
    2 for the input gradient, 2 for the weight gradient) plus 14 L d seq for attention: 4 L d seq forward (QK^T and
    AV over the full square: causal masking is not discounted) and 10 L d seq backward (flash attention's 5 matmuls,
    the recomputed scores included). Embedding lookups multiply nothing, so a decoder's N here excludes them (and
    biases and norms), but includes a tied head."""
    layers, d = SHAPES[name]
    profile = _profile(name)
    seq = profile.seq_len
    n_matmul = _matmul_params(_meta_model(name))
    assert _matmul_flops(profile) == seq * (6 * n_matmul + 14 * layers * d * seq)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_training_flops_per_token_close_to_6n_plus_attention(name: str) -> None:
    """Within 5 % of the usual 6 N + 12 L d seq (PaLM, appendix B; N = all parameters). The gaps are known and
    small: embeddings in N that multiply nothing (-5.2 % for Llama-3's 128k vocabulary), flash attention's
    recomputed scores (+2 L d seq), the [CLS]-only pooler and heads, and the elementwise ops (< 0.1 %)."""
    layers, d = SHAPES[name]
    profile = _profile(name)
    seq = profile.seq_len
    per_token = profile.train_flops / seq
    assert abs(per_token / (6 * profile.params + 12 * layers * d * seq) - 1) < 0.05
    assert 0 < profile.train_flops - _matmul_flops(profile) < 0.001 * profile.train_flops


def test_attention_is_counted_as_the_fused_kernel() -> None:
    """SDPA costs 4 s^2 d forward, 10 s^2 d backward, and keeps q, k, v, the output and the log-sum-exp: no s x s
    matrix (the math path meta would take saves the attention probabilities)."""
    d, heads, seq = 64, 4, 32
    with torch.device("meta"):
        model = transformers.GPT2(1, d, heads, vocab_size=100, max_positions=seq)
    layers = {layer["name"]: layer for layer in profiling.profile(model, (seq,), tokens=True)["layers"]}
    attn = layers["h.0.attn"]
    assert (attn["fwd_matmul_flops"], attn["bwd_matmul_flops"]) == (4 * seq * seq * d, 10 * seq * seq * d)
    assert attn["saved_elements"] == 3 * seq * d + seq * d + heads * seq  # qkv (one storage), out, log-sum-exp
    assert attn["fwd_ops"] == 1 and attn["weight_elements"] == 3  # one kernel; its random seed and offset


def test_layers_sum_to_totals_and_match_flopcountermode_per_module() -> None:
    """Each layer's matmul FLOPs (forward and backward), summed over module paths, equal FlopCounterMode's own
    per-module counts (its ModuleTracker follows backward by module too): the attribution is the same."""
    with torch.device("meta"):
        model = transformers.GPT2(2, 64, 4, vocab_size=100, max_positions=32)
    model.train()
    layers, counter = profiling._step(model, (32,), True, batch=2)
    mine: Counter[str] = Counter()
    for layer in layers:
        path = layer.name.split(":")[0]
        if path in (profiling.ROOT, profiling.LOSS):
            continue
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            mine["GPT2." + ".".join(parts[:i])] += layer.fwd.counted_flops + layer.bwd.counted_flops
    theirs = {path: sum(ops.values()) for path, ops in counter.get_flop_counts().items()
              if path not in ("Global", "GPT2")}
    assert theirs == {path: mine[path] for path in theirs} and len(theirs) == 15


def test_counts_follow_the_documented_rules() -> None:
    layers = {layer.name: layer for layer in _profile("small_cnn").layers}
    assert list(layers) == ["features.conv1", "features.relu1", "features.pool1", "features.conv2",
                            "features.relu2", "features.pool2", "features.conv3", "features.relu3",
                            "avgpool", "fc", "loss"]  # the views (flatten) launch nothing and are dropped
    conv1 = layers["features.conv1"]  # 3 -> 32, 3x3, 32x32: an image needs no input gradient
    assert conv1.fwd_flops == conv1.fwd_matmul_flops == 2 * 32 * 32 * 32 * 3 * 9 == conv1.bwd_flops
    assert conv1.params == conv1.weight_elements == 32 * 3 * 9 + 32
    assert (conv1.input_elements, conv1.output_elements, conv1.saved_elements) == (3 * 32 * 32, 32 * 32 * 32, 3072)
    relu = layers["features.relu1"]  # in place: one FLOP, read and write per element; keeps its output
    assert relu.fwd_flops == relu.input_elements == relu.output_elements == relu.saved_elements == 32 * 32 * 32
    pool = layers["features.pool1"]  # writes and keeps its indices (its input, relu1's output, is saved already)
    assert (pool.fwd_flops, pool.output_elements, pool.saved_elements) == (32 * 32 * 32, 2 * 32 * 16 * 16, 32 * 16 * 16)
    fc = layers["fc"]  # 128 -> 10; backward: input gradient, weight gradient, bias gradient (a sum over the batch)
    assert (fc.fwd_matmul_flops, fc.bwd_matmul_flops, fc.bwd_flops) == (2 * 128 * 10, 4 * 128 * 10, 4 * 1280 + 10)
    assert (fc.fwd_ops, fc.bwd_ops) == (1, 3)
    assert fc.bwd_weight_elements == 128 * 10 + (128 * 10 + 10)  # the weight read, its gradient and the bias's written
    assert fc.output_shape == (10,)


def test_per_call_costs_are_separated_from_per_sample_costs() -> None:
    """Rotary tables do not depend on the batch: all per call. A tied head reads the embedding again per call."""
    with torch.device("meta"):
        model = transformers.Llama(1, 64, 4, 2, 128, 100, 1e4)
    layers = {layer["name"]: layer for layer in profiling.profile(model, (16,), tokens=True)["layers"]}
    rope = layers["rotary_emb"]
    assert rope["fwd_flops"] == rope["input_elements"] == rope["output_elements"] == 0 < rope["weight_elements"]
    assert rope["fwd_ops"] > 0 and rope["params"] == 0
    q = layers["layers.0.self_attn.q_proj"]
    assert (q["input_elements"], q["output_elements"], q["weight_elements"]) == (16 * 64, 16 * 64, 64 * 64)
    with torch.device("meta"):
        model = transformers.GPT2(1, 32, 2, vocab_size=50, max_positions=8)
    gpt = profiling.profile(model, (8,), tokens=True)
    head = next(layer for layer in gpt["layers"] if layer["name"] == "lm_head")
    assert (head["params"], head["weight_elements"]) == (0, 50 * 32)  # tied: counted at wte, read again here


@pytest.mark.parametrize("name", zoo.list_models())
def test_saved_profile_is_fresh_and_consistent(name: str) -> None:
    profile = _profile(name)
    saved_text = (profiling.PROFILES_DIR / f"{name}.json").read_text()
    assert saved_text == profile.to_json(), "run `python -m models.profiling --write`"
    assert load_workload(name) == profile

    layers = profile.layers
    assert sum(layer.params for layer in layers) == profile.params == _num_params(_meta_model(name))
    assert sum(layer.fwd_flops for layer in layers) == profile.fwd_flops
    assert all(layer.fwd_matmul_flops <= layer.fwd_flops and layer.bwd_matmul_flops <= layer.backward_flops
               for layer in layers)
    assert len({layer.name for layer in layers}) == len(layers)
    assert layers[-1].name == "loss" and profile.saved_elements > 0

    spec = zoo.MODELS[name]
    assert (profile.sample, profile.num_classes, profile.train_samples) == (
        spec.sample, spec.num_classes, spec.samples_per_epoch())
    assert profile.input_shape == spec.input_shape and profile.seq_len == spec.seq_len


def test_sequence_models_take_a_sequence_length() -> None:
    short = ModelProfile.model_validate(profiling.profile_model("gpt2", seq_len=128))
    default = _profile("gpt2")
    assert (short.seq_len, short.input_shape, short.train_samples) == (128, (128,), 9_035_582_198 // 128)
    assert short.params == default.params
    assert _matmul_flops(short) / 128 < _matmul_flops(default) / 1024  # a shorter attention term per token
    with pytest.raises(UserError, match="1 to 1024"):
        profiling.profile_model("gpt2", seq_len=1025)
    with pytest.raises(UserError, match="image"):
        profiling.profile_model("resnet50", seq_len=100)


def test_a_7b_model_profiles_on_meta_without_memory() -> None:
    """Llama-2-7B is 27 GB in fp32: the profile allocates none of it."""
    _profile("llama2_7b")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < 8e9


def test_catalog_lists_exactly_the_zoo() -> None:
    assert list_workloads() == sorted(zoo.list_models())


# ------------------------------------------------------------------------------------------ any nn.Module
class _AnyLayers(nn.Module):
    """Layer types no rule was ever written for, a shared module called twice and a module never called."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.act = nn.Mish()
        self.shared = nn.Linear(8, 8)
        self.unused = nn.Linear(8, 3)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x))).mean((2, 3))
        return self.head(self.shared(torch.tanh(self.shared(x))))


def test_any_module_profiles_every_layer_and_every_parameter() -> None:
    model = _AnyLayers()
    result = profiling.profile(model, (3, 8, 8))
    layers = {layer["name"]: layer for layer in result["layers"]}
    assert list(layers) == ["conv", "norm", "act", "(root)", "shared", "shared:call2", "head", "unused", "loss"]
    assert all(layers[name]["fwd_flops"] > 0 for name in ("norm", "act", "(root)"))  # mean, tanh: the root's code
    assert (layers["shared"]["params"], layers["shared:call2"]["params"]) == (72, 0)
    assert layers["shared:call2"]["weight_elements"] == 72
    assert (layers["unused"]["params"], layers["unused"]["fwd_ops"]) == (27, 0)
    assert sum(layer["params"] for layer in result["layers"]) == result["params"] == _num_params(model)


def test_profile_has_no_side_effects_on_a_real_model() -> None:
    model = zoo.build("resnet18_cifar_w16").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = profiling.profile(model, (3, 32, 32), name="r18")
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result["name"] == "r18"
    assert ModelProfile.model_validate({**result, "train_samples": 1}).layers == _profile("resnet18_cifar_w16").layers


@pytest.mark.parametrize("name", ["small_cnn", "cifar_nin", "resnet18_cifar", "resnet18_cifar_w16"])
def test_cifar_nets_run_a_real_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name)
    spec = zoo.MODELS[name]
    logits = model(torch.randn(2, *spec.input_shape))
    assert logits.shape == (2, spec.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_small_transformer_runs_for_real() -> None:
    """The zoo's transformer code is real code: a tiny GPT-2 and Llama train on CPU (loss goes down)."""
    torch.manual_seed(0)
    for model in (transformers.GPT2(2, 32, 4, vocab_size=50, max_positions=16, dropout=0.0),
                  transformers.Llama(2, 32, 4, 2, 64, 50, 1e4)):
        idx = torch.randint(0, 50, (4, 16))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]


def test_small_cnn_is_about_0_1m_params_and_widths_scale_resnet18() -> None:
    assert 50_000 <= _num_params(_meta_model("small_cnn")) <= 150_000
    assert 11.1e6 <= _num_params(_meta_model("resnet18_cifar")) <= 11.2e6
    assert _num_params(_meta_model("resnet18_cifar", width=16)) < 1e6
    with pytest.raises(UserError):
        zoo.build("resnet18_cifar", width=0)


def test_unknown_name_is_a_one_line_user_error_listing_known_names() -> None:
    for lookup in (zoo.build, zoo.get_spec, load_workload):
        with pytest.raises(UserError) as excinfo:
            lookup("lenet")
        message = str(excinfo.value)
        assert "\n" not in message and "'lenet'" in message and "googlenet" in message and "llama2_7b" in message
    assert issubclass(UserError, ValueError)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        zoo.MODELS["x"] = zoo.MODELS["nin"]  # type: ignore[index]
