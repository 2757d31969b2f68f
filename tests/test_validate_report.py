"""The validation harness without a cluster: plans from the registry (nothing named), rankings, diagnosis of a
miss, the run-time estimate, and the report (docs/validation.md blocks, figures, strict JSON)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from firerun import validate_report
from firerun.validate import (
    Calibration,
    CaseResult,
    ValidationReport,
    _diagnose,
    _messages,
    _rankings,
    _shared_unequally_into,
    _swap_plan,
    _unequal_sharing,
    calibration_from_probes,
    case_plan,
    default_specs,
    engine_topology,
    estimate_seconds,
    predict_case,
)
from firesim.errors import UserError
from firesim.plans import Algorithm, Op, PlanBuilder, register, registry, verify
from firesim.topology import load_topology
from firesim.units import parse_rate
from tests.test_emulate import TOPOLOGIES


def test_plans_come_from_the_registry_with_servers_on_the_hosts():
    dedicated = case_plan("ps:servers=1,colocated=false", 4, 1 << 20)
    assert (dedicated.ranks, dedicated.workers) == (4, 3)
    assert (case_plan("ps:servers=2,colocated=false", 4, 1 << 20).workers, case_plan("ring", 4, 64).workers) == (2, 4)
    with pytest.raises(UserError, match="hierarchical"):
        case_plan("hierarchical", 4, 64)  # needs ranks_per_node


def test_default_specs_name_every_registered_algorithm_once():
    def pair(workers, nbytes, options):
        b = PlanBuilder("toy_pairs", workers, nbytes, chunks=1)
        b.transfer(np.arange(1, workers), 0, 0, reduce=True, step=0)
        b.transfer(0, np.arange(1, workers), 0, reduce=False, step=1)
        return b.build()

    register(Algorithm(name="toy_pairs", summary="everyone to rank 0 and back", build=pair))
    try:
        specs = default_specs(4)
    finally:
        registry.unregister("toy_pairs")
    assert specs[-1] == "toy_pairs" and "hierarchical:ranks_per_node=2" in specs and "ring" in specs
    assert len(specs) == len({s.partition(":")[0] for s in specs})


def test_engine_topology_and_prediction():
    G = load_topology(TOPOLOGIES / "star4-1g.yaml")
    H = engine_topology(G)
    assert all(d["efficiency"] == pytest.approx(1448 / 1514) and d["burst_nbytes"] == 128 << 10
               for *_, d in H.edges(data=True))
    assert all(d["efficiency"] == 1.0 and "burst_nbytes" not in d for *_, d in G.edges(data=True))  # left alone
    cal = Calibration(alpha_s=1e-4, gamma_s_per_byte=1e-10, buffered_bytes=1 << 20, message_one_way_s={},
                      message_overhead_s=0.0)
    n = 16 << 20
    ring_s = predict_case(case_plan("ring", 4, n), H, cal).duration_s
    goodput = parse_rate("1gbit") * 1448 / 1514
    assert ring_s == pytest.approx(6 * (1e-4 + n / 4 / goodput) + 3 * n / 4 * 1e-10, rel=0.02)


def test_estimate_counts_every_run():
    G = load_topology(TOPOLOGIES / "star4-1g.yaml")
    total, per_run = estimate_seconds(G, ["ring", "tree"], [1 << 20, 4 << 20], repeat=5, warmup=1)
    assert set(per_run) == {("ring", 1 << 20), ("ring", 4 << 20), ("tree", 1 << 20), ("tree", 4 << 20)}
    assert per_run[("tree", 4 << 20)] > per_run[("ring", 4 << 20)] > per_run[("ring", 1 << 20)] > 0
    assert total > 6 * sum(per_run.values())


def _case(spec, nbytes, measured_s, predicted_s, **kw) -> CaseResult:
    fields = dict(spec=spec, algorithm=spec.partition(":")[0], workers=4, ranks=4, nbytes=nbytes,
                  measured_s=measured_s, measured_min_s=measured_s * 0.99, measured_max_s=measured_s * 1.01,
                  repeats_s=[measured_s] * 5, predicted_s=predicted_s, error=(predicted_s - measured_s) / measured_s,
                  op_error_median=0.01, op_error_p95=0.02, rank_error_max=0.01, first_divergence=None,
                  link_bytes_error=0.001, stray_link_bytes=0, start_skew_s=0.0,
                  target=0.05 if nbytes >= 4 << 20 else 0.10)
    return CaseResult(**{**fields, **kw})


def test_rankings_allow_ties_and_flag_wrong_pairs():
    cases = [_case("ring", 4 << 20, 0.100, 0.101), _case("tree", 4 << 20, 0.101, 0.099),  # a tie: either order
             _case("ps", 4 << 20, 0.200, 0.090)]  # measured slowest, predicted fastest
    ranking, match = _rankings(cases)
    order = ranking[str(4 << 20)]
    assert not match and order["ties"] == [["ring", "tree"]] and order["wrong"] == [["ring", "ps"], ["tree", "ps"]]
    assert order["why"] == [{"outside_target": ["ps"], "apart": 1.0}, {"outside_target": ["ps"], "apart": (0.200 - 0.101) / 0.101}]
    assert [c.ranking_right for c in cases] == [False, False, False]
    near = [_case("ring", 4 << 20, 0.100, 0.102), _case("tree", 4 << 20, 0.103, 0.101)]  # both within 5 %
    order = _rankings(near)[0][str(4 << 20)]
    assert order["wrong"] == [["ring", "tree"]] and order["why"] == [{"outside_target": [], "apart": (0.103 - 0.100) / 0.100}]
    assert "ring/tree (both within target, 3.0% apart)" in validate_report._wrong_pairs(order)


def test_a_miss_names_what_the_measurements_show():
    case = _case("ring", 4 << 20, 0.100, 0.110, first_divergence={"rank": 3, "op": "reduce", "chunk": 2, "peer": 2,
                                                                  "error": 0.081})
    case.link_bytes_error = 0.12
    cal = Calibration(1e-4, 1e-10, 1 << 20, {}, 0.0)
    cause = _diagnose(case, 0.4, cal, case_plan("ring", 4, 4 << 20), "htb")
    assert "40% busy" in cause and "+12.0%" in cause and "rank 3 reduce chunk 2 from 2 (+8.1% of the run)" in cause
    assert _diagnose(_case("ring", 4 << 20, 0.100, 0.101), 0.0, cal, case_plan("ring", 4, 4 << 20), "htb") == ""


def test_a_miss_names_the_mechanism_the_swap_probe_shows():
    """MPI: 4 MiB halves of the swap probe are rendezvous and ran +100 % over the model: a plan whose ranks swap
    rendezvous-size messages (halving-doubling) names it, a ring (no pair both ways) does not; on tbf the ring
    names the ACKs behind data."""
    mpi = Calibration(1e-4, 1e-10, 0, {}, 2e-4, rendezvous_nbytes=float(4 << 20), swap_over_model=1.0)
    slow = dict(measured_s=0.4, predicted_s=0.2)
    hd, ring = case_plan("halving_doubling", 4, 16 << 20), case_plan("ring", 4, 16 << 20)
    assert "rendezvous swaps serialized (swap probe +100% over the model)" in _diagnose(
        _case("halving_doubling", 16 << 20, **slow), 0.0, mpi, hd, "htb")
    assert "rendezvous" not in _diagnose(_case("ring", 16 << 20, **slow), 0.0, mpi, ring, "htb")
    assert "rendezvous" not in _diagnose(_case("halving_doubling", 4 << 20, **slow), 0.0, mpi,
                                         case_plan("halving_doubling", 4, 4 << 20), "htb")  # 1 MiB halves: eager
    gloo_tbf = Calibration(1e-4, 1e-10, 1 << 20, {}, 0.0, swap_over_model=0.06)
    assert "tbf: ACKs queue behind data (swap probe +6% over the model)" in _diagnose(
        _case("ring", 16 << 20, **slow), 0.0, gloo_tbf, ring, "tbf")
    assert "tbf" not in _diagnose(_case("ring", 16 << 20, **slow), 0.0, gloo_tbf, ring, "htb")


def test_a_miss_names_what_the_predicted_trace_shows():
    """From the engine's own prediction: a binomial tree's root sends to two children at once (shared link in the
    model; named where the measured trace has them arrive apart); a ring has none."""
    cal = Calibration(1e-4, 1e-10, 1 << 20, {}, 0.0)
    star = engine_topology(load_topology(TOPOLOGIES / "star4-1g.yaml"))
    tree_plan = case_plan("tree", 4, 1 << 20)
    tree = predict_case(tree_plan, star, cal)
    first_written_first = dataclasses.replace(tree, t_end=tree.t_end.copy())
    to_2 = next(r for *_, s, r in _messages(tree_plan, tree) if tree_plan.peer[s] == 2 and tree_plan.op_rank()[s] == 0)
    first_written_first.t_end[to_2] -= 0.4 * tree.duration_s  # measured: the root's data to 2 arrives well before 1's
    assert _unequal_sharing(tree_plan, tree, first_written_first, "tbf") == (
        f"rank 0's messages to 2 and 1 share a link in the model (together), measured "
        f"{0.4 * tree.duration_s * 1e3:.1f} ms apart, 2 first (the tbf port is one FIFO: the message written first "
        "leaves first)")
    assert "connections through one port did not keep pace" in _unequal_sharing(tree_plan, tree, first_written_first, "htb")
    assert _unequal_sharing(tree_plan, tree, tree, "tbf") == ""  # measured as the model has it: nothing to name
    # a run slower than the model: only the other order counts (further apart may follow from the slowdown)
    assert _unequal_sharing(tree_plan, tree, first_written_first, "tbf", faster=False) == ""
    to_1 = next(r for *_, s, r in _messages(tree_plan, tree) if tree_plan.peer[s] == 1 and tree_plan.op_rank()[s] == 0)
    two_first, one_first = (dataclasses.replace(tree, t_end=tree.t_end.copy()) for _ in range(2))
    two_first.t_end[to_2] -= 0.1 * tree.duration_s
    one_first.t_end[to_1] -= 0.1 * tree.duration_s
    assert _unequal_sharing(tree_plan, two_first, one_first, "htb", faster=False) == (
        f"rank 0's messages to 2 and 1 share a link in the model ({0.1 * tree.duration_s * 1e3:.1f} ms apart, 2 first), "
        f"measured {0.1 * tree.duration_s * 1e3:.1f} ms apart, 1 first (connections through one port did not keep pace)")
    ring_plan = case_plan("ring", 4, 4 << 20)
    ring = predict_case(ring_plan, star, cal)
    assert _unequal_sharing(ring_plan, ring, ring, "tbf") == ""
    slow = _case("ring", 4 << 20, 0.4, 0.2)
    assert _diagnose(slow, 0.0, cal, ring_plan, "htb", ring, 4e9).startswith(
        "4 Gbit/s of shaped host links: the most this machine emulates")
    assert "emulates" not in _diagnose(slow, 0.0, cal, ring_plan, "htb", ring, 2e9)


def test_a_miss_names_a_port_shared_unequally_between_two_senders():
    """Halving-doubling on chain3-mixed: rank 1's 8 MiB to rank 3 is on the wire when rank 2's 4 MiB to rank 3
    starts (the model shares the port into 3 from then). A run faster than the model that delivered rank 1's
    well before the model names the flow that joined behind it; a slower run that delivered the two further apart,
    the later one late, names the unequal share; only where nothing else is named."""
    cal = Calibration(1e-4, 1e-10, 1 << 20, {}, 0.0)
    chain = engine_topology(load_topology(TOPOLOGIES / "chain3-mixed.yaml"))
    plan = case_plan("halving_doubling", 4, 16 << 20)
    predicted = predict_case(plan, chain, cal)
    rank = plan.op_rank()
    first, joining = (min(((s, r) for *_, s, r in _messages(plan, predicted) if (rank[s], plan.peer[s]) == pair),
                          key=lambda m: predicted.t_start[m[0]]) for pair in ((1, 3), (2, 3)))
    shift_s = 0.03 * predicted.duration_s
    early = dataclasses.replace(predicted, t_end=predicted.t_end.copy())
    early.t_end[first[1]] -= shift_s
    joined_ms = (predicted.t_start[joining[0]] - predicted.t_start[first[0]]) * 1e3
    expected = (f"rank 2's message to 3 joins rank 1's {joined_ms:.1f} ms after it started (the model shares their "
                f"ports from then), measured rank 1's arrived {shift_s * 1e3:.1f} ms before the model has it (the "
                "joining flow got less than an equal share)")
    assert _shared_unequally_into(plan, predicted, early, faster=True) == expected
    assert _shared_unequally_into(plan, predicted, predicted, faster=True) == ""
    fast, slow = _case("halving_doubling", 16 << 20, 1.0, 1.06), _case("halving_doubling", 16 << 20, 1.0, 0.94)
    assert _diagnose(fast, 0.0, cal, plan, "htb", predicted, 0.0, early).startswith(expected)
    assert "joins" not in _diagnose(slow, 0.0, cal, plan, "htb", predicted, 0.0, early)
    apart = dataclasses.replace(early, t_end=early.t_end.copy())
    apart.t_end[joining[1]] += shift_s  # and rank 2's arrived late: further apart than the model has them
    model_gap_ms = (predicted.t_end[joining[1]] - predicted.t_end[first[1]]) * 1e3
    assert _shared_unequally_into(plan, predicted, apart, faster=False) == (
        f"rank 1's and rank 2's messages to 3 share their ports in the model ({model_gap_ms:.1f} ms apart, 1 first), "
        f"measured {model_gap_ms + 2 * shift_s * 1e3:.1f} ms apart, 1 first, rank 2's {shift_s * 1e3:.1f} ms after "
        "the model has it (the port was not shared equally)")
    assert _shared_unequally_into(plan, predicted, predicted, faster=False) == ""
    swaps = Calibration(1e-4, 1e-10, 0, {}, 2e-4, rendezvous_nbytes=float(4 << 20), swap_over_model=1.0)
    assert "not shared equally" not in _diagnose(slow, 0.0, swaps, plan, "htb", predicted, 0.0, apart)


def test_the_swap_probe_pairs_every_rank():
    plan = _swap_plan(5, 8 << 20, recv_first=True)
    assert plan.ranks == 5
    verify(plan)  # every send matched; ranks 0 and 1 end with the sum (the others swap the same way)
    rank = np.repeat(np.arange(plan.ranks), np.diff(plan.offsets))
    sends = plan.op == Op.SEND
    assert sorted(zip(rank[sends].tolist(), plan.peer[sends].tolist())) == sorted(
        [(0, 1), (1, 0), (2, 3), (3, 2)] * 2)
    assert set(plan.op_nbytes()[sends].tolist()) == {4 << 20}


def _report(tmp_path, topology, shaper, backend, scale=1.0) -> ValidationReport:
    from firesim.plans import ring
    from firesim.trace import Trace

    plan = ring(4, 1 << 20)
    t_end = np.linspace(1e-3, 0.05, plan.n_ops)
    cases = []
    for spec, nbytes, m, pr in (("ring", 1 << 20, 0.05, 0.05 * scale), ("ring", 4 << 20, 0.2, 0.22 * scale)):
        c = _case(spec, nbytes, m, pr)
        for source, t in (("measured", t_end), ("predicted", t_end * scale)):
            path = tmp_path / f"{source}-{topology}-{shaper}-{backend}-{nbytes}.json"
            Trace.for_plan(plan, t - 5e-4, t, source="measured" if source == "measured" else "simulated").save(path)
            setattr(c, f"{source}_trace", str(path))
        cases.append(c)
    ranking, match = _rankings(cases)
    return ValidationReport(topology=topology, hosts=4, shaper=shaper, backend=backend, repeat=5,
                            calibration=Calibration(1e-4, 1e-10, 1 << 20, {"262144": 3e-3, "1048576": 9e-3}, 2e-5),
                            cases=cases, ranking=ranking, ranking_match=match, machine="test", date="2026-01-01")


def test_report_regenerates_its_blocks_and_keeps_the_rest(tmp_path):
    reports = [_report(tmp_path, t, s, b) for t in ("star4-1g", "two-level-4") for s in ("htb", "tbf")
               for b in ("torch", "mpi")]
    out = tmp_path / "docs"
    written = validate_report.write_report(reports, [], out, command="firerun validate --suite x", wall_s=60)
    doc = (out / "validation.md").read_text()
    for block in validate_report.BLOCKS:
        assert f"<!-- generated: {block} -->" in doc and f"<!-- end: {block} -->" in doc
    assert "| star4-1g | tbf | mpi |" in doc and "+10.0% ✗" in doc  # ring 4 MiB: 0.22 vs 0.2
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert {p.name for p in written} >= {"validation-overview.png", "validation-star4-1g.png", "validation.json"}
    data = json.loads((out / "validation.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert len(data["reports"]) == 8 and data["reports"][0]["records"][1]["ok"] is False
    assert ValidationReport.from_dict(data["reports"][0]) == reports[0]
    # hand-written text around the blocks survives a regeneration; the blocks change
    edited = doc.replace("<!-- generated: summary -->", "Hand-written analysis.\n\n<!-- generated: summary -->")
    (out / "validation.md").write_text(edited)
    better = [_report(tmp_path, "star4-1g", "htb", "torch", scale=0.99)]
    validate_report.write_report(better, ["x: rank 1 died"], out, command="c", wall_s=1)
    again = (out / "validation.md").read_text()
    assert "Hand-written analysis." in again and "| star4-1g | tbf | mpi |" not in again and "FAILED x" in again
    assert math.isclose(json.loads((out / "validation.json").read_text())["wall_s"], 1)


def test_report_folder_must_be_writable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write"):
        validate_report.check_writable(tmp_path / "file" / "docs")


def test_the_calibration_models_gloos_notice_behind_data_and_not_mpis():
    """The same probe results give the same transport but for the notice (gloo writes it behind its data)."""
    mib = 1 << 20
    results = {"alpha_s": 1e-4, "gamma_s_per_byte": 3e-11, "buffered_bytes": 2 * mib, "pingpong_round_trip_s": [2e-4],
               "message_one_way_s": {str(mib): 9e-3, str(4 * mib): 35e-3},
               "late_recv_s": {str(mib): 1e-3, str(4 * mib): 36e-3},
               "swap_s": {"swap": 0.3, "swap-recv-first": 0.29}}
    G = load_topology(TOPOLOGIES / "star4-1g.yaml")
    gloo, mpi = (calibration_from_probes(results, G, backend).transport() for backend in ("torch", "mpi"))
    assert gloo.notice_behind_data and not mpi.notice_behind_data
    assert dataclasses.replace(gloo, notice_behind_data=False) == mpi
