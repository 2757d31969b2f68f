"""The model zoo matches the published sizes, and the saved profiles match the code."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from firesim.errors import UserError
from firesim.workload import ModelProfile, list_workloads, load_workload
from models import profiling, zoo

# (params low, params high, fwd MACs low, fwd MACs high) per 224x224 image, from REFERENCE.md's table;
# params within 1 % of the quoted figure (GoogLeNet: the quoted 6.6-7.0 M range).
REFERENCE = {
    "nin": (7.60e6 * 0.99, 7.60e6 * 1.01, 1.10e9 * 0.99, 1.10e9 * 1.01),
    "alexnet": (61.1e6 * 0.99, 61.1e6 * 1.01, 0.715e9 * 0.99, 0.715e9 * 1.01),
    "googlenet": (6.6e6, 7.0e6, 1.5e9, 1.6e9),
    "vgg16": (138.4e6 * 0.99, 138.4e6 * 1.01, 15.5e9 * 0.99, 15.5e9 * 1.01),
    "vgg19": (143.7e6 * 0.99, 143.7e6 * 1.01, 19.6e9 * 0.99, 19.6e9 * 1.01),
    "resnet50": (25.6e6 * 0.99, 25.6e6 * 1.01, 3.9e9, 4.1e9),
}
CIFAR_NETS = ["small_cnn", "cifar_nin", "resnet18_cifar", "resnet18_cifar_w16"]


def _meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return zoo.build(name, **kwargs)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_params_and_macs_match_reference(name: str) -> None:
    params_lo, params_hi, macs_lo, macs_hi = REFERENCE[name]
    result = profiling.profile_model(name)
    assert params_lo <= _num_params(_meta_model(name)) == result["params"] <= params_hi
    assert macs_lo <= result["fwd_macs"] <= macs_hi
    assert result["fwd_flops"] >= 2 * result["fwd_macs"]


def test_googlenet_aux_heads_add_about_6_4m_params_and_run_in_training() -> None:
    model = _meta_model("googlenet", aux_logits=True)
    assert 13.3e6 <= _num_params(model) <= 13.5e6  # REFERENCE.md: 13.4 M with aux heads
    result = profiling.profile(model, (3, 224, 224))
    assert sum(layer["params"] for layer in result["layers"]) == result["params"] == _num_params(model)
    model.train()
    assert len(model(torch.empty(2, 3, 224, 224, device="meta"))) == 3
    model.eval()
    assert model(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


@pytest.mark.parametrize("name", zoo.list_models())
def test_saved_profile_is_fresh_and_consistent(name: str) -> None:
    fresh = profiling.profile_model(name)
    saved_text = (profiling.PROFILES_DIR / f"{name}.json").read_text()
    assert saved_text == profiling.profile_json(name), "run `python -m models.profiling --write`"

    layers = fresh["layers"]
    assert sum(layer["params"] for layer in layers) == fresh["params"] == _num_params(_meta_model(name))
    assert sum(layer["fwd_flops"] for layer in layers) == fresh["fwd_flops"]
    assert sum(layer["fwd_macs"] for layer in layers) == fresh["fwd_macs"]
    assert len({layer["name"] for layer in layers}) == len(layers)

    spec = zoo.MODELS[name]
    loaded = load_workload(name)
    assert loaded == ModelProfile.model_validate(fresh)
    assert (loaded.input_shape, loaded.num_classes, loaded.train_samples) == (
        spec.input_shape, spec.num_classes, spec.train_images)
    assert math.prod(loaded.layers[-1].output_shape) == spec.num_classes


def test_catalog_lists_exactly_the_registered_models() -> None:
    assert list_workloads() == sorted(zoo.list_models())


def test_profile_has_no_side_effects_on_a_real_model() -> None:
    model = zoo.build("resnet18_cifar_w16").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = profiling.profile(model, (3, 32, 32), name="r18")
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    registered = profiling.profile_model("resnet18_cifar_w16")
    assert result["name"] == "r18"
    assert {k: result[k] for k in ("params", "fwd_macs", "fwd_flops", "layers")} == {
        k: registered[k] for k in ("params", "fwd_macs", "fwd_flops", "layers")}


def test_profile_counts_follow_the_documented_rules() -> None:
    layers = {layer["name"]: layer for layer in profiling.profile_model("small_cnn")["layers"]}
    conv1 = layers["features.conv1"]  # 3->32, 3x3, 32x32 output
    assert conv1["fwd_macs"] == 32 * 32 * 32 * 3 * 9
    assert conv1["fwd_flops"] == 2 * conv1["fwd_macs"]
    assert conv1["params"] == 32 * 3 * 9 + 32
    assert layers["features.relu1"]["fwd_flops"] == 32 * 32 * 32
    assert layers["features.pool1"]["fwd_flops"] == 32 * 16 * 16 * 4
    assert layers["fc"]["fwd_macs"] == 128 * 10
    assert list(layers) == ["features.conv1", "features.relu1", "features.pool1", "features.conv2",
                            "features.relu2", "features.pool2", "features.conv3", "features.relu3",
                            "avgpool", "fc"]


@pytest.mark.parametrize("name", CIFAR_NETS)
def test_cifar_nets_run_a_real_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name)
    spec = zoo.MODELS[name]
    logits = model(torch.randn(2, *spec.input_shape))
    assert logits.shape == (2, spec.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_cnn_is_about_0_1m_params_and_widths_scale_resnet18() -> None:
    assert 50_000 <= _num_params(_meta_model("small_cnn")) <= 150_000
    assert 11.1e6 <= _num_params(_meta_model("resnet18_cifar")) <= 11.2e6
    assert _num_params(_meta_model("resnet18_cifar", width=16)) < 1e6
    with pytest.raises(UserError):
        zoo.build("resnet18_cifar", width=0)


def test_catalog_does_not_import_torch() -> None:
    code = ("import sys, firesim.workload as w; p = w.load_workload('googlenet'); "
            "assert p.params > 0 and w.list_workloads(); "
            "assert 'torch' not in sys.modules, 'firesim.workload imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_a_one_line_user_error_listing_known_names() -> None:
    for lookup in (zoo.build, zoo.get_spec, load_workload):
        with pytest.raises(UserError) as excinfo:
            lookup("lenet")
        message = str(excinfo.value)
        assert "\n" not in message and "'lenet'" in message and "googlenet" in message and "vgg19" in message
    assert issubclass(UserError, ValueError)


def test_unsupported_layer_type_is_reported_not_counted_as_zero() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())
    with pytest.raises(NotImplementedError, match="GELU"):
        profiling.profile(model, (3, 8, 8))


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        zoo.MODELS["x"] = zoo.MODELS["nin"]  # type: ignore[index]
