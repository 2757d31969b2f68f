"""`firerun calibrate --compute`: the roofline rates measured on this device, written into a profile that
`firesim predict --hardware` reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from firerun.calibrate import StepMeasurement, fit_compute
from firesim.compute import NO_OVERHEADS, Rates, layer_seconds, precision
from firesim.errors import UserError
from firesim.hardware import load_profile
from firesim.training import predict
from firesim.workload import load_workload


def test_fit_recovers_the_convolution_rate_that_produced_the_steps():
    rates = Rates(conv_flops=3e9, matmul_flops=8e9, memory_Bps=6e9, layer_overhead_s=2e-5)
    steps = []
    for model, batch in (("small_cnn", 8), ("resnet18_cifar_w16", 4)):
        fwd, bwd = layer_seconds(load_workload(model), rates, batch, precision("fp32"))
        steps.append(StepMeasurement(model, batch, float(fwd.sum()), float(bwd.sum())))
    fit = fit_compute(steps, 8e9, 6e9, 2e-5, "fp32")
    assert fit.conv_flops == pytest.approx(3e9, rel=1e-6)
    for m, (f, b) in zip(steps, fit.predicted):
        assert f == pytest.approx(m.forward_s, rel=1e-6) and b == pytest.approx(m.backward_s, rel=1e-6)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_calibrate_compute_on_one_rank_writes_a_profile_firesim_predicts_with(tmp_path):
    out = tmp_path / "cpu.yaml"
    done = _run("firerun", "calibrate", "--compute", "--models", "small_cnn", "--compute-batch", "2",
                "--name", "this-cpu", "--output", str(out))
    assert done.returncode == 0, done.stderr
    profile = load_profile(out)
    c = profile.compute
    assert profile.alpha_s is None and c is not None and c.dtype == "fp32"
    assert c.matmul_flops > 1e6 and c.conv_flops > 1e6 and c.memory_Bps > 1e6 and c.layer_overhead_s > 0
    (step,) = c.step_times
    assert step.model == "small_cnn" and step.batch == 2 and step.forward_s > 0 and step.backward_s > 0
    # the fit reproduces the one measured model's step (its total time), unless even infinitely fast
    # convolutions could not (the memory and kernel-overhead floor measured on a loaded machine binds)
    predicted, measured = step.predicted_forward_s + step.predicted_backward_s, step.forward_s + step.backward_s
    if c.conv_flops < 1e3 * c.matmul_flops * (1 - 1e-6):
        assert predicted == pytest.approx(measured, rel=1e-3)
    else:
        assert predicted > measured
    rows = predict(load_workload("small_cnn"), str(out), 1, "ring", batch=2, overheads=NO_OVERHEADS)
    assert rows.compute_s == pytest.approx(step.predicted_forward_s + step.predicted_backward_s, rel=1e-6)
    with pytest.raises(UserError, match="no network figures"):
        predict(load_workload("small_cnn"), str(out), 2, "ring", batch=2)


def test_calibrate_compute_bad_input_is_one_line(tmp_path):
    done = _run("firerun", "calibrate", "--compute", "--models", "no_such_model", "--output", str(tmp_path / "x.yaml"))
    assert done.returncode == 2 and "no_such_model" in done.stderr and not (tmp_path / "x.yaml").exists()
    alone = _run("firerun", "calibrate", "--models", "small_cnn", "--output", str(tmp_path / "y.yaml"))
    assert alone.returncode == 2 and "--compute" in alone.stderr
