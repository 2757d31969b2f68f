"""The Trace both interpreters write: JSON round trip, Chrome export, compare."""

import json

import numpy as np
import pytest

from firesim.errors import UserError
from firesim.plans import Op, binomial_tree, ring
from firesim.trace import Trace, compare, software_versions


def _trace(plan, scale=1.0, source="simulated"):
    t_end = np.arange(1, plan.n_ops + 1, dtype=float) * 1e-3 * scale
    return Trace.for_plan(plan, t_end - 5e-4 * scale, t_end, source=source, versions=software_versions())


def test_one_record_per_op_in_plan_order():
    plan = ring(4, 4096)
    trace = _trace(plan)
    assert len(trace) == plan.n_ops
    assert trace.rank.tolist() == plan.op_rank().tolist()
    assert trace.nbytes.sum() == plan.op_nbytes().sum()
    rec = trace.records()[0]
    assert set(rec) == {"rank", "op", "chunk", "peer", "nbytes", "t_start", "t_end"} and rec["op"] == "send"


def test_json_round_trip_is_exact(tmp_path):
    trace = _trace(binomial_tree(5, 1000))
    trace.save(tmp_path / "t.json")
    back = Trace.load(tmp_path / "t.json")
    assert back.header == trace.header
    for col in ("rank", "op", "chunk", "peer", "nbytes", "t_start", "t_end"):
        assert np.array_equal(getattr(back, col), getattr(trace, col))


def test_chrome_trace_has_one_slice_per_op_in_microseconds(tmp_path):
    plan = ring(3, 300)
    trace = _trace(plan)
    chrome = trace.to_chrome(tmp_path / "c.json")
    slices = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == plan.n_ops
    assert slices[0]["ts"] == pytest.approx(trace.t_start[0] * 1e6) and slices[0]["dur"] == pytest.approx(500)
    assert json.loads((tmp_path / "c.json").read_text())["otherData"]["plan"] == "ring"


def test_compare_reports_signed_relative_error():
    plan = ring(4, 4096)
    measured = _trace(plan, 1.0, "measured")
    predicted = _trace(plan, 1.1)
    result = compare(predicted, measured)
    assert result.error == pytest.approx(0.1)
    assert result.measured_s == pytest.approx(measured.duration_s)
    assert compare(measured, measured).op_end_error_p95 == 0


def test_compare_reports_per_rank_and_per_op_errors():
    """One rank finishes 20 % late in the prediction: its rank error is +0.2, the others 0, and the first op that
    diverges is that rank's first op that ends late."""
    plan = ring(4, 4096)
    measured = _trace(plan, 1.0, "measured")
    late = plan.op_rank() == 2
    t_end = measured.t_end.copy()
    t_end[late] += np.linspace(0, 0.2, late.sum()) * measured.duration_s
    predicted = Trace.for_plan(plan, measured.t_start, t_end, source="simulated")
    result = compare(predicted, measured)
    assert result.rank_end_error[2] > 0.0 and result.rank_end_error_max == pytest.approx(result.rank_end_error[2])
    assert result.rank_end_error[:2] == (0.0, 0.0) and result.rank_end_error[3] == 0.0
    assert result.worst_op["rank"] == 2 and result.worst_op["error"] == pytest.approx(result.op_end_error_max)
    first = result.first_divergence
    assert first["rank"] == 2 and first["error"] > 0.05
    assert first["measured_end_s"] == min(measured.t_end[late & (np.abs(t_end - measured.t_end) > 0.05 *
                                                                  measured.duration_s)])
    assert compare(measured, measured).first_divergence is None
    assert json.loads(json.dumps(result.to_dict()))["worst_op"]["op"] in ("send", "reduce", "recv")


def test_compare_refuses_traces_of_different_plans():
    with pytest.raises(UserError, match="different plans"):
        compare(_trace(ring(4, 64)), _trace(binomial_tree(4, 64)))


def test_duration_and_rank_end():
    plan = ring(2, 8)
    trace = _trace(plan)
    assert trace.duration_s == pytest.approx(trace.t_end.max())
    ends = trace.rank_end_s()
    assert ends[1] == pytest.approx(trace.t_end[plan.op_rank() == 1].max())
    assert (trace.op == Op.SEND).sum() == (plan.op == Op.SEND).sum()


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        Trace.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not JSON"):
        Trace.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something/1"}')
    with pytest.raises(UserError, match="format"):
        Trace.load(tmp_path / "other.json")
