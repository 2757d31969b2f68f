"""firesim.search: the paper, sweeps and recommendations, on any executor; what-if options; figures."""

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from firesim.cli import app
from firesim.cluster import allreduce_seconds
from firesim.errors import UserError
from firesim.hardware import comm_params, load_catalog, resolve_cluster
from firesim.search import Case, Setting, evaluate, grid, make_executor, map_chunked, sweep
from firesim.search.executor import MAX_CHUNK, MIN_CHUNK, chunk_size
from firesim.search.paper import (
    PUBLISHED,
    PaperSetup,
    load_setup,
    paper_formula_s,
    reproduce_paper,
    serially_staged,
)
from firesim.search.recommend import analyse, choose, pareto_front
from firesim.training import predict
from firesim.whatif import parse_link, parse_rank_speeds, parse_stragglers, parse_whatif
from firesim.workload import load_workload

runner = CliRunner()
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as a strict parser does."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "firesim", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def setting():
    return Setting(profiles={m: load_workload(m) for m in ("resnet50", "nin")},
                   clusters={h: resolve_cluster(h) for h in ("titan", "dgx-a100", "ethernet-10g")})


@pytest.fixture(scope="module")
def cases():
    return grid(["resnet50", "nin"], ["titan", "dgx-a100", "ethernet-10g"], [1, 4, 32, 512],
                ["ring", "tree", "ps", "hierarchical"], [256, 4096], ["fp32", "bf16"])


# ------------------------------------------------------------------------------------------- evaluate
def test_evaluate_is_predict_or_a_reason(setting):
    ok = evaluate(setting, Case("resnet50", "dgx-a100", 32, "ring", 4096, "bf16"))
    expected = predict(setting.profiles["resnet50"], setting.clusters["dgx-a100"], 32, "ring", batch=4096,
                       epochs=90, dtype="bf16").record()
    assert ok["status"] == "ok" and ok["dtype"] == "bf16"
    assert {k: ok[k] for k in expected} == expected
    assert evaluate(setting, Case("nin", "titan", 512, "ring", 256))["reason"] == "batch per GPU < 1"
    bf16 = evaluate(setting, Case("nin", "titan", 4, "ring", 256, "bf16"))
    assert bf16["status"] == "invalid" and bf16["reason"] == "precision not supported" and "k20x" in bf16["detail"]


def test_steps_replace_epochs(setting):
    profile = setting.profiles["resnet50"]
    stepped = Setting(profiles=setting.profiles, clusters=setting.clusters, steps=1000)
    rec = evaluate(stepped, Case("resnet50", "dgx-a100", 8, "ring", 2048))
    assert rec["iterations"] == pytest.approx(1000)
    assert rec["epochs"] == pytest.approx(1000 * 2048 / profile.train_samples)
    assert rec["time_to_train_s"] == pytest.approx(1000 * rec["iteration_s"])


def test_setting_refuses_bad_shared_inputs(setting):
    for bad in ({"engine": "magic"}, {"epochs": 0}, {"steps": -1}):
        with pytest.raises(UserError):
            Setting(profiles=setting.profiles, clusters=setting.clusters, **bad)
    with pytest.raises(UserError, match="engine des"):
        Setting(profiles=setting.profiles, clusters=setting.clusters, whatif=parse_whatif(rank_speed="0=0.5"))


# ------------------------------------------------------------------------------------------- executors
def test_chunks_keep_the_order_and_amortise(setting, cases):
    assert chunk_size(10, 2) == 10 and chunk_size(10**6, 2) == MAX_CHUNK and chunk_size(1000, 64) == MIN_CHUNK
    seen = []
    out = map_chunked(pow, 2, list(range(300)), chunksize=7, progress=seen.append)
    assert out == [2**i for i in range(300)] and sum(seen) == 300 and len(seen) == math.ceil(300 / 7)


def test_same_records_in_process_on_processes_and_on_any_executor(setting, cases):
    inline = sweep(setting, cases)
    assert len(inline) == len(cases) and {r["status"] for r in inline} == {"ok", "invalid"}
    with make_executor("local", 2) as pool:
        assert sweep(setting, cases, executor=pool) == inline
    with ThreadPoolExecutor(3) as pool:  # stands for any concurrent.futures executor (a Dask client's, ...)
        assert sweep(setting, cases, executor=pool) == inline


def test_executor_inputs_are_checked():
    with pytest.raises(UserError, match="executor"):
        with make_executor("slurm"):
            pass
    with pytest.raises(UserError, match="workers"):
        with make_executor("local", 0):
            pass


@pytest.mark.multiproc
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside this Python (pip install mpich)")
def test_sweep_under_mpiexec_gives_the_local_records(tmp_path):
    args = ["sweep", "--model", "googlenet,resnet50", "--hardware", "titan,dgx-a100", "--gpus", "1:256",
            "--algo", "ring,tree,ps", "--batch", "256,4096", "--dtype", "fp32,bf16"]  # 432 configurations
    local = cli(*args, "--out", str(tmp_path / "local.json"), "--workers", "2")
    assert local.returncode == 0, local.stderr
    proc = subprocess.run([str(MPIEXEC), "-n", "3", sys.executable, "-m", "mpi4py.futures", "-m", "firesim", *args,
                           "--out", str(tmp_path / "mpi.json"), "--executor", "mpi"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mpi.json").read_bytes() == (tmp_path / "local.json").read_bytes()
    assert len(strict_json((tmp_path / "mpi.json").read_text())) > 100


@pytest.mark.multiproc
@pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside this Python (pip install mpich)")
def test_mpi_executor_refuses_a_launch_where_every_rank_runs_the_command(tmp_path):
    proc = subprocess.run([str(MPIEXEC), "-n", "2", sys.executable, "-m", "firesim", "sweep", "--out",
                           str(tmp_path / "x.json"), "--gpus", "1:4", "--executor", "mpi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "python -m mpi4py.futures" in proc.stderr
    assert not (tmp_path / "x.json").exists()


# ------------------------------------------------------------------------------------------- recommend
def _rec(time_s, cost, **extra):
    return {"status": "ok", "time_to_train_s": time_s, "cost": cost, "hardware": "h", "dtype": "fp32", "gpus": 1,
            "batch": 1, "algo": "ring", **extra}


def test_pareto_front_by_hand():
    recs = [_rec(10, 5), _rec(5, 10), _rec(7, 7), _rec(8, 8), _rec(5, 12), _rec(20, 5), _rec(3, 30)]
    assert [(r["time_to_train_s"], r["cost"]) for r in pareto_front(recs)] == [(3, 30), (5, 10), (7, 7), (10, 5)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=40))
def test_pareto_front_is_exactly_the_undominated(points):
    recs = [_rec(t, c) for t, c in points]
    front = pareto_front(recs)
    keys = {(r["time_to_train_s"], r["cost"]) for r in front}
    undominated = {(t, c) for t, c in points
                   if not any((t2 <= t and c2 <= c) and (t2, c2) != (t, c) for t2, c2 in points)}
    assert keys == undominated and len(front) == len(keys)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=1, max_size=30),
       st.integers(1, 50), st.integers(1, 50))
def test_picks_are_the_brute_force_optima(points, deadline, budget):
    recs = [_rec(t, c) for t, c in points]
    result = analyse(recs, deadline_s=deadline, budget_usd=budget)
    within_budget = [(t, c) for t, c in points if c <= budget]
    within_deadline = [(t, c) for t, c in points if t <= deadline]
    fastest = min(within_budget, default=None)
    cheapest = min(within_deadline, key=lambda tc: (tc[1], tc[0]), default=None)
    assert (None if result.fastest is None else (result.fastest["time_to_train_s"], result.fastest["cost"])) == fastest
    assert (None if result.cheapest is None else (result.cheapest["time_to_train_s"], result.cheapest["cost"])) == cheapest
    for r in recs:
        over = (r["cost"] > budget, r["time_to_train_s"] > deadline)
        assert (r["verdict"] is None) == (over == (False, False))


def test_recommend_reasons_cover_every_rejection(setting, cases):
    result = choose(setting, cases, deadline_s=24 * 3600, budget_usd=5000)
    reasons = {r["verdict"] for r in result.records}
    assert {"no price", "batch per GPU < 1", "precision not supported"} <= reasons
    assert sum(region["configurations"] for region in result.regions) == sum(r["verdict"] is not None for r in result.records)
    titan = {region["reason"] for region in result.regions if region["hardware"] == "titan"}
    assert "no price" in titan  # Titan has no price: never recommended
    assert result.fastest is not None and result.fastest["cost"] <= 5000
    assert result.cheapest["time_to_train_s"] <= 24 * 3600
    with pytest.raises(UserError, match="deadline, a budget"):
        choose(setting, cases)


def test_recommend_cli_json_and_plot(tmp_path):
    out = run("recommend", "--model", "resnet50", "--epochs", "90", "--deadline", "24h", "--budget", "$20,000",
              "--hardware", "dgx-a100,ethernet-10g,titan", "--gpus", "1:256", "--batch", "256,4096",
              "--algo", "ring,tree,ps", "--dtype", "fp32,bf16", "--plot", str(tmp_path / "p.png"), "--json")
    assert out.exit_code == 0
    data = strict_json(out.stdout)
    assert data["budget_usd"] == 20000 and data["deadline_s"] == 86400
    assert data["fastest_within_budget"]["cost"] <= 20000
    assert data["cheapest_within_deadline"]["time_to_train_s"] <= 86400
    costs = [r["cost"] for r in data["pareto"]]
    assert costs == sorted(costs, reverse=True) and data["rejected_regions"]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from firesim import recommend as from_python  # the public API answers the same

    same = from_python("resnet50", deadline_s=86400, budget_usd=20000, hardware=["dgx-a100", "ethernet-10g", "titan"],
                       gpus=[1, 2, 4, 8, 16, 32, 64, 128, 256], batches=[256, 4096], algos=["ring", "tree", "ps"],
                       dtypes=["fp32", "bf16"], epochs=90)
    assert strict_json(json.dumps(same.fastest)) == data["fastest_within_budget"]
    assert len(same.pareto) == len(data["pareto"])
    table = run("recommend", "--model", "resnet50", "--deadline", "2d", "--hardware", "dgx-a100", "--gpus", "8,64")
    assert table.exit_code == 0 and "Pareto front" in table.stdout and "cheapest within the deadline" in table.stdout


def test_recommend_takes_a_profile_file_and_transformers(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text(load_workload("resnet50").model_copy(update={"name": "mine"}).to_json())
    args = ["--deadline", "30d", "--hardware", "dgx-a100", "--gpus", "8,64", "--batch", "512", "--json"]
    from_file = strict_json(run("recommend", "--model", str(mine), *args).stdout)
    from_zoo = strict_json(run("recommend", "--model", "resnet50", *args).stdout)
    assert from_file["model"] == "mine"
    assert from_file["cheapest_within_deadline"]["cost"] == from_zoo["cheapest_within_deadline"]["cost"]
    gpt2 = strict_json(run("recommend", "--model", "gpt2", "--steps", "1000", *args).stdout)
    assert gpt2["cheapest_within_deadline"]["iterations"] == pytest.approx(1000)


@pytest.mark.parametrize("args", [
    ["recommend", "--model", "resnet50"],
    ["recommend", "--model", "resnet50", "--budget", "-5"],
    ["recommend", "--model", "resnet50", "--budget", "lots"],
    ["recommend", "--model", "resnet50", "--deadline", "soon"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--epochs", "5", "--steps", "10"],
    ["recommend", "--model", "nosuch", "--deadline", "1d"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--dtype", "fp32,,bf16"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--executor", "slurm"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--workers", "0"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--stragglers", "probability=0.1"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--engine", "des", "--gpus", "1:1024"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--plot", "/proc/x.png"],
    ["sweep", "--out", "/proc/x.csv"],
    ["sweep", "--out", "OUT/grid.json", "--engine", "magic"],
    ["sweep", "--out", "OUT/grid.json", "--dtype", "fp99"],
    ["sweep", "--out", "OUT/grid.json", "--grad-dtype", "fp99"],
    ["recommend", "--model", "resnet50", "--deadline", "1d", "--optimizer", "nosuch"],
    ["paper", "--plot", "/proc/paper.png"],
    ["paper", "--algo", "gossip"],
    ["paper", "--engine", "magic"],
    ["predict", "--stragglers", "probability=0.1"],
    ["predict", "--engine", "des", "--stragglers", "probability=2"],
    ["predict", "--engine", "des", "--rank-speed", "0=zero"],
    ["predict", "--engine", "des", "--gpus", "8", "--algo", "ring", "--rank-speed", "8=0.5"],
    ["predict", "--engine", "des", "--gpus", "8", "--algo", "ring", "--link", "nolink:bandwidth=1gbit"],
    ["predict", "--engine", "des", "--gpus", "8", "--algo", "ring", "--link", "h0-r9_9_9:bandwidth=1gbit"],
    ["simulate", "--ranks", "4", "--stragglers", "probability=0.5"],
    ["simulate", "--ranks", "4", "--trace", "/proc/t.json"],
    ["predict", "--gpus", "8", "--algo", "ring", "--timeline", "OUT/t.png"],
    ["sweep", "--out", "OUT/g.csv", "--engine", "des", "--gpus", "128"],
])
def test_bad_input_exits_2_one_line_nothing_written(args, tmp_path, monkeypatch, capsys):
    from firesim.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["firesim", *(a.replace("OUT", str(tmp_path)) for a in args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("firesim: error:") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_bad_input_from_a_shell(tmp_path):
    proc = cli("recommend", "--model", "resnet50", "--budget", "-5", "--plot", str(tmp_path / "p.png"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("firesim: error: budget")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- the paper
@pytest.fixture(scope="module")
def paper():
    return reproduce_paper()


def test_paper_communication_is_the_closed_form(paper):
    titan = resolve_cluster("titan")
    models = {r["model"] for r in paper.communication}
    assert models == {"nin", "alexnet", "googlenet", "vgg19"}
    assert {r["gpus"] for r in paper.communication} == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    for r in paper.communication:
        nbytes = load_workload(r["model"]).params * 4
        assert r["gradient_nbytes"] == nbytes
        assert r["comm_s"] == allreduce_seconds(titan, r["gpus"], nbytes, r["algo"])
    ps = {(r["model"], r["gpus"]): r["comm_s"] for r in paper.communication if r["algo"] == "ps"}
    tree = {(r["model"], r["gpus"]): r["comm_s"] for r in paper.communication if r["algo"] == "tree"}
    for model in models:  # the paper's point: the server's time grows with p, the tree's with log p
        assert ps[(model, 256)] > 10 * tree[(model, 256)]
        assert ps[(model, 2)] == pytest.approx(tree[(model, 2)])
    assert all(r["gpus"] >= 16 for r in paper.communication if r["algo"] == "ps:servers=16")


def test_paper_formulas():
    assert paper_formula_s("ps", 128, 1e6, 1e9) == pytest.approx(128 * 1e6 / 1e9)
    assert paper_formula_s("tree", 128, 1e6, 1e9) == pytest.approx(2 * 7 * 1e6 / 1e9)
    assert paper_formula_s("ring", 128, 1e6, 1e9) is None


def test_paper_training_is_predict_with_the_documented_setup(paper):
    titan, setup = resolve_cluster("titan"), PaperSetup()
    pcie = load_catalog().links["pcie2-x16"]
    assert comm_params(serially_staged(titan, pcie)).beta_s_per_byte == pytest.approx(
        comm_params(titan).beta_s_per_byte + 2 / (pcie.bandwidth_Bps * pcie.efficiency))
    assert {(r["model"], r["batch"], r["gpus"]) for r in paper.training} == {
        (m, b, g) for m in ("googlenet", "nin") for b in (256, 1024) for g in (1, 32, 128)}
    for r in paper.training:
        how = setup.training[r["model"]]
        profile = load_workload(r["model"])
        base = predict(profile, titan, 1, "tree", batch=how.baseline_batch, epochs=how.baseline_epochs_for(profile),
                       overlap=False)
        run_ = predict(profile, titan, r["gpus"], "tree" if r["algo"] == "none" else r["algo"], batch=r["batch"],
                       epochs=how.epochs[r["batch"]], overlap=False)
        assert r["time_to_train_s"] == run_.time_to_train_s
        assert r["speedup"] == base.time_to_train_s / run_.time_to_train_s
        expected = PUBLISHED.get((r["model"], r["gpus"])) if r["batch"] == 1024 and r["algo"] == "tree" else None
        assert r["published_speedup"] == expected
        staged = predict(profile, serially_staged(titan, pcie), r["gpus"], "tree" if r["algo"] == "none" else r["algo"],
                         batch=r["batch"], epochs=how.epochs[r["batch"]], overlap=False)
        assert r["speedup_serial_staging"] == base.time_to_train_s / staged.time_to_train_s
        assert r["speedup_serial_staging"] <= r["speedup"] and (r["gpus"] > 1 or r["speedup_serial_staging"] == r["speedup"])
    googlenet = setup.training["googlenet"]
    assert googlenet.baseline_batch == 32 and googlenet.epochs[1024] == 72
    assert googlenet.baseline_epochs_for(load_workload("googlenet")) == pytest.approx(2.4e6 * 32 / 1281167)
    names = " ".join(a["name"] for a in paper.assumptions)
    for needed in ("k20x.peak_flops", "achieved FLOP/s", "cray-gemini.efficiency", "single-GPU baseline", "overlap"):
        assert needed in names


def test_paper_cli_json_is_strict_and_has_the_records(tmp_path):
    out = run("paper", "--json", "--plot", str(tmp_path / "paper.png"))
    assert out.exit_code == 0
    data = strict_json(out.stdout)
    for rec in data["training"]:
        assert {"model", "gpus", "batch", "algo", "speedup", "time_to_train_s"} <= set(rec)
    assert data["assumptions"] and data["communication"]
    assert (tmp_path / "paper.png").stat().st_size > 10_000
    table = run("paper")
    assert table.exit_code == 0 and "published" in table.stdout and "assumptions" in table.stdout


def test_paper_setup_file(tmp_path):
    good = tmp_path / "setup.yaml"
    good.write_text("gpus: [1, 64]\ntraining:\n  nin: {baseline_batch: 256, baseline_epochs: 45, epochs: {256: 45, 1024: 45}}\n")
    setup = load_setup(good)
    assert setup.gpus == (1, 64) and setup.training["nin"].epochs[1024] == 45 and "googlenet" in setup.training
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [0]\n")
    with pytest.raises(UserError, match="gpus"):
        load_setup(bad)
    bad.write_text("training:\n  nin: {baseline_batch: 256, epochs: {256: 45}}\n")
    with pytest.raises(UserError, match="baseline"):
        load_setup(bad)


# ------------------------------------------------------------------------------------------- what-if
def test_whatif_parsing():
    s = parse_stragglers("probability=0.05,slowdown=1.5,jitter=0.1")
    assert (s.probability, s.slowdown, s.jitter) == (0.05, 1.5, 0.1)
    assert parse_rank_speeds("7=0.8, 0=0.5") == ((0, 0.5), (7, 0.8))
    pair, change = parse_link("n0/g0-n0/nvswitch:bandwidth=1gbit,latency=5us")
    assert pair == "n0/g0-n0/nvswitch" and change.engine_attrs() == {"bandwidth_Bps": 1.25e8, "latency_s": 5e-6}
    for bad in ("probability=1.5", "slowdown=2", "probability=0.1,slowdown=0.5", "probability=0.1,x=1"):
        with pytest.raises(UserError):
            parse_stragglers(bad)
    for bad in ("h0s0:bandwidth=1gbit", "h0-s0", "h0-s0:speed=3", "h0-s0:efficiency=1.5"):
        with pytest.raises(UserError):
            parse_link(bad)


def test_whatif_on_the_engine():
    kwargs = dict(batch=256, epochs=1, engine="des")
    base = predict("resnet50", "ethernet-10g", 8, "ring", **kwargs)
    slow = predict("resnet50", "ethernet-10g", 8, "ring", whatif=parse_whatif(rank_speed="3=0.5"), **kwargs)
    everyone = predict("resnet50", "ethernet-10g", 8, "ring",
                       whatif=parse_whatif(stragglers="probability=1,slowdown=2"), **kwargs)
    # one rank at half speed holds everyone back: the iteration is at least its doubled compute
    assert slow.iteration_s >= 2 * base.compute_s and slow.iteration_s > base.iteration_s
    assert 2 * base.compute_s <= everyone.iteration_s < slow.iteration_s + base.exposed_comm_s
    link = predict("resnet50", "ethernet-10g", 8, "ring", whatif=parse_whatif(links=["h3-s0:bandwidth=1gbit"]), **kwargs)
    assert link.exposed_comm_s > 5 * base.exposed_comm_s
    seeded = [predict("resnet50", "ethernet-10g", 8, "ring", whatif=parse_whatif(stragglers="probability=0.3,slowdown=1.5",
                                                                                 seed=s), **kwargs).iteration_s
              for s in (1, 1, 2)]
    assert seeded[0] == seeded[1]
    with pytest.raises(UserError, match="engine des"):
        predict("resnet50", "ethernet-10g", 8, "ring", batch=256, whatif=parse_whatif(rank_speed="0=0.5"))


def test_simulate_what_if_cli():
    from firesim.cluster import cluster_topology
    from firesim.engine import simulate
    from firesim.hardware import comm_params
    from firesim.plans import build

    args = ["simulate", "--plan", "ring", "--ranks", "8", "--size", "16MiB", "--hardware", "ethernet-10g", "--json"]
    base = strict_json(run(*args).stdout)[0]
    late = strict_json(run(*args, "--compute", "10ms", "--rank-speed", "2=0.5").stdout)[0]
    cluster = resolve_cluster("ethernet-10g")
    start_s = [0.010] * 8
    start_s[2] = 0.020  # rank 2 computes at half speed, so it arrives 10 ms after the others
    expected = simulate(build("ring", 8, 16 * 2**20), cluster_topology(cluster, 8), alpha_s=cluster.software_latency_s,
                        gamma_s_per_byte=comm_params(cluster).gamma_s_per_byte, start_s=start_s).duration_s - 0.010
    assert late["time_s"] == pytest.approx(expected, rel=1e-12)
    # a ring on a non-blocking star is pure dataflow: the late rank delays the end by its whole lateness
    assert late["time_s"] - base["time_s"] == pytest.approx(0.010, rel=1e-9)
    slow_link = strict_json(run(*args, "--link", "h0-s0:bandwidth=100mbit").stdout)[0]
    assert slow_link["time_s"] > 5 * base["time_s"]


# ------------------------------------------------------------------------------------------- figures
def test_timeline_and_pareto_figures(tmp_path, setting, cases):
    from firesim.plots import pareto_figure, save_figure, timeline_figure
    from firesim.training import simulate_iteration

    sim = simulate_iteration(load_workload("resnet50"), resolve_cluster("ethernet-10g"), 4, "ring", batch_per_gpu=32)
    save_figure(timeline_figure([sim]), tmp_path / "t.png")
    save_figure(pareto_figure(choose(setting, cases, budget_usd=1e4)), tmp_path / "p.png")
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in ("t.png", "p.png"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "t.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
    with pytest.raises(UserError):
        save_figure(timeline_figure([sim]), tmp_path)  # a directory
    out = run("predict", "--model", "resnet50", "--hardware", "ethernet-10g", "--gpus", "4", "--algo", "ring",
              "--engine", "des", "--rank-speed", "1=0.5", "--timeline", str(tmp_path / "what-if.png"))
    assert out.exit_code == 0 and (tmp_path / "what-if.png").read_bytes()[:4] == b"\x89PNG"

