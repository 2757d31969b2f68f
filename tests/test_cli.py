"""`firesim` as a user runs it: tables, JSON records, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from firesim.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_predict_json_has_the_documented_keys():
    result = run("predict", "--model", "googlenet", "--hardware", "titan", "--gpus", "1,32,128",
                 "--algo", "tree,ps,ring", "--batch", "1024", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 9
    for key in ("gpus", "algo", "compute_s", "comm_s", "iteration_s", "speedup", "efficiency", "time_to_train_s", "cost"):
        assert key in rows[0]
    assert [r["gpus"] for r in rows] == [1, 1, 1, 32, 32, 32, 128, 128, 128]


def test_predict_table_prints():
    result = run("predict", "--gpus", "1,8", "--algo", "ring")
    assert result.exit_code == 0 and "speedup" in result.stdout and "ring" in result.stdout


def test_collective_reports_nccl_tests_bandwidths():
    rows = json.loads(run("collective", "--algo", "ring", "--ranks", "8", "--size", "1GiB", "--json").stdout)
    (row,) = rows
    assert row["algbw_GBps"] == pytest.approx(2**30 / row["time_s"] / 1e9)
    assert row["busbw_GBps"] == pytest.approx(row["algbw_GBps"] * 2 * 7 / 8)


def test_sweep_writes_csv_and_json(tmp_path):
    assert run("sweep", "--out", str(tmp_path / "g.csv"), "--gpus", "1:8", "--model", "nin").exit_code == 0
    lines = (tmp_path / "g.csv").read_text().splitlines()
    assert lines[0].startswith("model,") and len(lines) == 1 + 4 * 3 * 2
    assert run("sweep", "--out", str(tmp_path / "g.json"), "--gpus", "2", "--batch", "64").exit_code == 0
    assert len(json.loads((tmp_path / "g.json").read_text())) == 2 * 3


def test_plans_show_and_verify():
    result = run("plans", "show", "ring", "--ranks", "4")
    assert result.exit_code == 0 and "rank 3:" in result.stdout and "verified" in result.stdout
    assert run("plans", "verify", "halving_doubling", "--ranks", "1:16").exit_code == 0


def test_lists():
    assert "dgx-a100" in run("hardware", "list").stdout
    assert "googlenet" in run("models", "list").stdout


@pytest.mark.parametrize("args", [
    ["predict", "--model", "nope"],
    ["predict", "--hardware", "nope"],
    ["predict", "--gpus", "0"],
    ["predict", "--algo", "gossip"],
    ["collective", "--size", "-5"],
    ["collective", "--size", "12furlongs"],
    ["collective", "--ranks", "0"],
    ["predict", "--hardware", "/nonexistent/cluster.yaml"],
])
def test_bad_input_exits_2_with_one_line(args, tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from firesim.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firesim: error:") and "Traceback" not in proc.stderr


def test_malformed_yaml_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: cluster\nname: [unclosed\n")
    proc = subprocess.run([sys.executable, "-c", "from firesim.cli import main; main()", "predict", "--hardware", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_firesim_never_imports_torch():
    code = ("import importlib, pkgutil, sys, firesim\n"
            "for m in pkgutil.walk_packages(firesim.__path__, 'firesim.'): importlib.import_module(m.name)\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_simulate_writes_trace_and_agrees_with_closed_form_on_a_star(tmp_path):
    from firesim.trace import Trace

    result = run("simulate", "--plan", "ring", "--ranks", "8", "--size", "16MiB", "--topology", "star",
                 "--trace", str(tmp_path / "t.json"), "--chrome", str(tmp_path / "c.json"), "--json")
    assert result.exit_code == 0
    (record,) = json.loads(result.stdout)
    trace = Trace.load(tmp_path / "t.json")
    assert trace.header.source == "simulated" and record["time_s"] == pytest.approx(trace.duration_s)
    assert json.loads((tmp_path / "c.json").read_text())["traceEvents"]


def test_predict_on_the_engine():
    rows = json.loads(run("predict", "--engine", "des", "--gpus", "16", "--algo", "ring,ps", "--hardware",
                          "ethernet-10g", "--json").stdout)
    analytic_rows = json.loads(run("predict", "--gpus", "16", "--algo", "ring,ps", "--hardware",
                                   "ethernet-10g", "--json").stdout)
    for des, closed in zip(rows, analytic_rows):
        assert des["iteration_s"] == pytest.approx(closed["iteration_s"], rel=0.05)
