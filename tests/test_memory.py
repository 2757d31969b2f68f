"""Memory per GPU: weights, gradients, optimizer state, DDP buckets, activations, allowance; does it fit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from firesim.cli import app
from firesim.compute import precision
from firesim.memory import ALLOCATOR_OVERHEAD, CUDA_CONTEXT_NBYTES, memory_per_gpu, saved_elements
from firesim.training import predict
from firesim.workload import LayerProfile, ModelProfile


def profile(params: int, saved: int, sample: str = "image") -> ModelProfile:
    layer = LayerProfile(name="block", type="Linear", params=params, fwd_flops=2 * params, input_elements=saved,
                         output_elements=saved, saved_elements=saved)
    return ModelProfile(name="toy", input_shape=(16,), sample=sample, train_samples=1000, params=params,
                        fwd_flops=2 * params, layers=(layer,))


def test_mixed_precision_adam_by_hand():
    est = memory_per_gpu(profile(1000, 500), 4, precision("bf16"), "adamw", gpus=8, capacity_GiB=1.0)
    assert est.weights_nbytes == 1000 * (4 + 2)  # fp32 master + bf16 copy
    assert est.gradients_nbytes == 1000 * 4  # fp32 gradients by default
    assert est.optimizer_nbytes == 1000 * 8  # two fp32 moments
    assert est.buckets_nbytes == 1000 * 4  # DDP's bucket copy of the gradients
    assert est.activations_nbytes == 500 * 4 * 2
    tensors = 6000 + 4000 + 8000 + 4000 + 4000
    assert est.allowance_nbytes == CUDA_CONTEXT_NBYTES + int(ALLOCATOR_OVERHEAD * tensors)
    assert est.total_nbytes == tensors + est.allowance_nbytes and est.fits is True


def test_fp32_sgd_one_gpu_and_bf16_gradients():
    one = memory_per_gpu(profile(1000, 500), 2, precision("fp32"), "sgd", gpus=1, capacity_GiB=None)
    assert (one.weights_nbytes, one.gradients_nbytes, one.optimizer_nbytes, one.buckets_nbytes) == (4000, 4000, 0, 0)
    assert one.activations_nbytes == 500 * 2 * 4 and one.fits is None
    half = memory_per_gpu(profile(1000, 500), 2, precision("bf16", "bf16"), "momentum", gpus=2, capacity_GiB=None)
    assert half.gradients_nbytes == half.buckets_nbytes == 2000 and half.optimizer_nbytes == 4000


def test_seven_billion_parameters_do_not_fit_an_80gb_gpu():
    """7B x (2 bf16 + 4 master + 8 Adam + 4 grads + 4 buckets) = 154 GB before activations."""
    llama_like = profile(6_738_415_616, 10**6, sample="sequence")
    row = predict(llama_like, "dgx-h100", 8, "ring", batch_per_gpu=1, dtype="bf16")
    assert row.optimizer == "adamw" and row.fits is False and row.memory_capacity_GiB == 80
    assert row.memory_GiB > 6_738_415_616 * 22 / 2**30
    small = predict(profile(10**6, 1000), "dgx-h100", 8, "ring", batch_per_gpu=32, dtype="bf16")
    assert small.fits is True and small.memory_GiB < 2


def test_legacy_profiles_use_layer_outputs_for_activations():
    legacy = ModelProfile(format="firesim.workload/1", name="old", input_shape=(3, 4, 4), train_samples=10, params=0,
                          fwd_flops=0, layers=(LayerProfile(name="a", type="ReLU", params=0, fwd_flops=0,
                                                            output_shape=(3, 4, 4)),))
    assert saved_elements(legacy) == 48


def test_cli_marks_configurations_that_do_not_fit(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(profile(6_738_415_616, 10**6, sample="sequence").to_json())
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--model", str(path), "--hardware", "dgx-h100", "--gpus", "8",
                                 "--algo", "ring", "--batch-per-gpu", "1", "--dtype", "bf16", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["fits"] is False and row["memory_GiB"] > 80
    table = runner.invoke(app, ["predict", "--model", str(path), "--hardware", "dgx-h100", "--gpus", "8",
                                "--algo", "ring", "--batch-per-gpu", "1", "--dtype", "bf16"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "does not fit" in table.stdout and ">80!" in table.stdout


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--dtype", "fp12", "dtype"), ("--grad-dtype", "fp8", "grad-dtype"), ("--optimizer", "rmsprop", "optimizer"),
    ("--overheads", "colour=red", "overheads"), ("--accumulation", "0", "accumulation"),
    ("--seq-len", "2048", "seq-len")])
def test_cli_bad_precision_options_are_one_line(option, value, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "firesim", "predict", "--gpus", "1", option, value],
                          capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
