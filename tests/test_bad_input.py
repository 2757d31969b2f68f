"""Bad input, everywhere: every option of both CLIs and every file loader refuse bad values the same way.

The property: exit code 2, exactly one line on stderr, no traceback, nothing written (the temporary tree
and the working directory are unchanged), and nothing started (no job joined, no rank launched, no emulated
cluster built: those entry points are replaced by tripwires). Commands and options are discovered by
walking the typer apps, so an option added later is covered without touching this file; a number option
must declare its bounds (``typer.Option(min=, max=)``) and a required one needs a valid value in REQUIRED.

Bad values are generated from each parameter's declared type: numbers outside their bounds, NaN and
infinities; strings that no option accepts (empty, markup, control characters, shell syntax, negative or
non-finite quantities); input paths that are missing, directories, not UTF-8, truncated or non-strict
JSON, malformed YAML; output paths that are directories, under /proc or below a file.
"""

from __future__ import annotations

import contextlib
import io
import json
import string
from pathlib import Path

import numpy as np
import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import firerun.cli
import firesim.cli
from firesim.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
STAR4 = str(ROOT / "examples" / "topologies" / "star4-1g.yaml")
# A valid value for each required parameter, so that only the generated value is bad.
REQUIRED = {
    ("sweep", "out"): "grid.csv",
    ("plans", "show", "algo"): "ring",
    ("plans", "verify", "algo"): "ring",
    ("validate", "topology"): STAR4,
    ("emulate", "up", "topology"): STAR4,
    ("emulate", "down", "target"): "fr0000",
    ("profile", "model"): "small_cnn",
    ("recommend", "model"): "googlenet",
    ("profile", "output"): "small.json",
}
# Commands that pass the rest of the line to a firerun command: a harmless one to start.
TRAILING = {("run",): ["env"], ("slurm",): ["env"]}


def _walk(cmd, path=()):
    """Every user-facing command (hidden ones are plumbing between firerun processes)."""
    subcommands = getattr(cmd, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            if not sub.hidden:
                yield from _walk(sub, (*path, name))
    else:
        yield path, cmd


CLIS = {"firesim": firesim.cli, "firerun": firerun.cli}
COMMANDS = [(prog, path, cmd) for prog, module in CLIS.items()
            for path, cmd in _walk(typer.main.get_command(module.app))]
PARAMS = [(prog, path, cmd, p) for prog, path, cmd in COMMANDS for p in cmd.params
          if p.expose_value and not getattr(p, "is_flag", False)]


def _kind(param) -> str:
    annotation = param.type_descriptor.annotation
    if param.type_descriptor.is_choice:
        return "choice"
    if annotation in (int, float):
        return annotation.__name__
    if annotation is Path:
        parser = param.type_descriptor.parameter_info.parser
        if getattr(parser, "output", False):
            return "output dir" if parser.__name__ == "output_dir" else "output"
        return "input dir" if param.name.endswith("_dir") else "input file"
    return "text"


def test_every_number_option_is_bounded():
    unbounded = [f"{prog} {' '.join(path)} {p.opts[0]}" for prog, path, _, p in PARAMS
                 if _kind(p) in ("int", "float") and (p.min is None or p.max is None)]
    assert not unbounded, f"declare typer.Option(min=..., max=...) on: {unbounded}"


def test_every_required_parameter_has_a_valid_value():
    missing = [(prog, path, p.name) for prog, path, _, p in PARAMS if p.required and (*path, p.name) not in REQUIRED]
    assert not missing, f"add a valid value to REQUIRED for {missing}"


def test_the_walk_finds_both_clis():
    names = {(prog, " ".join(path)) for prog, path, _ in COMMANDS}
    assert {("firesim", "predict"), ("firesim", "plans show"), ("firerun", "bench"), ("firerun", "run"),
            ("firerun", "slurm"), ("firerun", "emulate up")} <= names
    assert len(PARAMS) > 60


# --------------------------------------------------------------------------------------------- bad values
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Bad input files (and a directory), made once, outside the trees the tests watch."""
    d = tmp_path_factory.mktemp("bad-inputs")
    files = {"not-utf8.yaml": b"hosts: [\xff\xfe]\n", "not-utf8.json": b'{"name": "\xff"}',
             "truncated.json": b'{"format": "firesim.plan/1", "ranks": [1,', "list.json": b"[1, 2, 3]",
             "nan.json": b'{"x": NaN}', "deep.json": b"[" * 100_000, "unclosed.yaml": b"a: [unclosed\n",
             "empty.yaml": b"", "scalar.yaml": b"42\n", "binary.bin": bytes(range(256)) * 4}
    for name, data in files.items():
        (d / name).write_bytes(data)
    (d / "a-directory").mkdir()
    paths = {name: str(d / name) for name in files}
    paths["directory"] = str(d / "a-directory")
    paths["missing"] = str(d / "missing" / "file.yaml")
    return paths


POISON = ["[/x]", "[bold]", "\n", ";rm -rf /", "\x1b[31m", "$(id)", "\u202e", "]"]
TEXT_BAD = ["", " ", "-1", "[/x]", "a\nb", "x;rm -rf /", "%s%n", "\u202e\u202e"]
QUANTITY_BAD = ["nan", "inf", "-inf", "1e400", "-5", "1e400GiB", "0x10"]


def _numbers(param) -> st.SearchStrategy:
    low, high = param.min, param.max
    if param.type_descriptor.annotation is int:
        out = st.integers(max_value=int(low) - 1, min_value=-(10**30)) | st.integers(min_value=int(high) + 1,
                                                                                      max_value=10**40)
        return out.map(str) | st.sampled_from(["1.5", "1e3", "nan", "", "abc", "[/x]"])
    out = (st.floats(max_value=low, exclude_max=True, allow_nan=False, allow_infinity=False) |
           st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False))
    return out.map(repr) | st.sampled_from(["nan", "inf", "-inf", "1e400", "", "abc", "[/x]"])


def _text(param, inputs) -> st.SearchStrategy:
    poisoned = st.builds(lambda a, p, b: a + p + b, st.text(string.ascii_letters, min_size=1, max_size=6),
                         st.sampled_from(POISON), st.text(string.printable, min_size=1, max_size=6))
    fixed = TEXT_BAD + [inputs[k] for k in ("not-utf8.yaml", "not-utf8.json", "directory", "truncated.json")]
    default = param.default if isinstance(param.default, str) else ""
    if any(ch.isdigit() for ch in default):  # a quantity: sizes, counts, lists of them
        fixed += QUANTITY_BAD
    return st.sampled_from(fixed) | poisoned


def bad_values(param, inputs) -> st.SearchStrategy:
    kind = _kind(param)
    if kind in ("int", "float"):
        return _numbers(param)
    if kind == "choice":
        choices = {str(c).lower() for c in param.type_descriptor.choices}
        return st.sampled_from(["", "garbage", "[/x]", "-1"]) | st.text(string.ascii_letters, min_size=1).filter(
            lambda s: s.lower() not in choices)
    if kind == "output":
        return st.sampled_from([inputs["directory"], "/proc/x.json", "/proc/x.csv", "/proc/x.yaml",
                                str(Path(inputs["list.json"]) / "below-a-file.json"), ""])
    if kind == "output dir":
        return st.sampled_from([inputs["list.json"], "/proc/x", str(Path(inputs["list.json"]) / "below-a-file")])
    if kind == "input dir":
        return st.sampled_from([inputs["missing"], inputs["list.json"], inputs["binary.bin"]])
    if kind == "input file":
        return st.sampled_from([v for k, v in inputs.items()])
    return _text(param, inputs)


# ------------------------------------------------------------------------------------------------ running
class Started(AssertionError):
    """A command went past its checks with a bad value: it joined a job, launched ranks or built a cluster."""


def _tripwire(what):
    def trip(*args, **kwargs):
        raise Started(f"bad input was accepted: {what} was started")
    return trip


@pytest.fixture
def guarded(monkeypatch, tmp_path):
    """Tripwires on everything that starts work, a fresh working directory, and firerun's heavy imports
    done once up front (so no example pays them)."""
    import firerun.bench  # noqa: F401
    import firerun.check  # noqa: F401
    import models.zoo  # noqa: F401

    monkeypatch.setattr("firerun.worker.session", _tripwire("a job (firerun.worker.session)"))
    monkeypatch.setattr("firerun.launch.launch", _tripwire("ranks (firerun.launch.launch)"))
    monkeypatch.setattr("firerun.emulate.EmulatedCluster.up", _tripwire("an emulated cluster"))
    monkeypatch.setenv("COLUMNS", "80")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _snapshot(*roots: Path) -> set:
    return {(str(p), p.stat().st_size) for root in roots for p in root.rglob("*")}


def run_cli(prog: str, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            CLIS[prog].main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_refused(prog: str, args: list[str], roots: tuple[Path, ...]) -> None:
    before = _snapshot(*roots)
    code, out, err = run_cli(prog, args)
    shown = f"{prog} {' '.join(map(repr, args))}"
    assert code == 2, f"{shown}: exit {code}, stderr {err!r}, stdout {out[:300]!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), f"{shown}: stderr {err!r}"
    assert "Traceback" not in err
    assert _snapshot(*roots) == before, f"{shown} wrote files"


def command_line(prog, path, cmd, param, value) -> list[str]:
    """``path`` with ``value`` for ``param``, valid values for the other required parameters."""
    args = list(path)
    positional = []
    for p in cmd.params:
        given_value = value if p is param else REQUIRED.get((*path, p.name)) if p.required else None
        if given_value is None:
            continue
        if type(p).__name__ == "TyperArgument":
            positional.append(given_value)
        else:
            args += [p.opts[0], given_value]
    return args + positional + TRAILING.get(tuple(path), [])


@pytest.mark.parametrize("prog, path, cmd, param", PARAMS,
                         ids=[f"{prog} {' '.join(path)} {p.name}" for prog, path, _, p in PARAMS])
def test_bad_values_are_refused(prog, path, cmd, param, inputs, guarded):
    @settings(max_examples=6, deadline=10_000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(value=bad_values(param, inputs))
    def check(value):
        assert_refused(prog, command_line(prog, path, cmd, param, value), (guarded, Path.cwd()))

    check()


# -------------------------------------------------------------------------------------------- file loaders
def _loaders():
    """Every loader of a user file (the generic readers under them, ``firesim.io.read_json`` and
    ``firesim.config.read_yaml``, accept any well-formed document and are covered through these)."""
    from firesim.hardware import load_catalog, load_profile, resolve_cluster
    from firesim.plans import Plan
    from firesim.topology import from_spec, load_topology
    from firesim.trace import Trace
    from firesim.workload import load_workload

    return {"load_topology": load_topology, "from_spec": from_spec, "load_catalog": load_catalog,
            "resolve_cluster": resolve_cluster, "load_profile": load_profile, "load_workload": load_workload,
            "Plan.load": Plan.load, "Trace.load": Trace.load}


LOADERS = _loaders()
_json_values = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) |
                            st.floats(allow_nan=False) | st.text(max_size=8),
                            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=4),
                            max_leaves=12)


@st.composite
def bad_documents(draw) -> bytes:
    """Bytes that are no valid input of any loader: random bytes, random JSON/YAML values, plans and traces
    with a field replaced by a random value, NaN constants, bad base64."""
    from firesim.plans import build
    from firesim.trace import Trace

    kind = draw(st.sampled_from(["bytes", "json", "plan", "trace", "constant"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "constant":
        return draw(st.sampled_from([b'{"a": NaN}', b"[Infinity]", b'{"format": "firesim.plan/1", "ranks": -Infinity}']))
    plan = build("ring", 3, 96)
    if kind == "plan":
        doc = plan.to_dict()
    else:
        doc = Trace.for_plan(plan, np.zeros(plan.n_ops), np.ones(plan.n_ops), source="simulated").to_dict()
    target = doc if kind == "plan" else draw(st.sampled_from([doc, doc["header"], doc["columns"]]))
    key = draw(st.sampled_from(sorted(target)))
    target[key] = draw(_json_values | st.sampled_from([{"dtype": "<f8", "b64": "!!notbase64"},
                                                       {"dtype": "O", "b64": ""}, 2**70, [float("nan")]]))
    return json.dumps(doc).encode()


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_file_loaders_refuse_bad_files_in_one_line(loader, tmp_path):
    load = LOADERS[loader]
    suffix = ".json" if loader in ("Plan.load", "Trace.load", "load_workload") else ".yaml"

    @settings(max_examples=25, deadline=10_000, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=bad_documents())
    def check(data):
        path = tmp_path / f"input{suffix}"
        path.write_bytes(data)
        try:
            load(str(path))
        except UserError as err:
            assert "\n" not in str(err) and str(err)
        # a few random documents are valid inputs of the lenient loaders (read_yaml of "3"): no error is fine

    check()


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("case", ["not-utf8.yaml", "not-utf8.json", "truncated.json", "nan.json", "deep.json",
                                  "unclosed.yaml", "directory", "missing", "binary.bin", "list.json"])
def test_file_loaders_refuse_each_kind_of_bad_file(loader, case, inputs):
    with pytest.raises(UserError) as err:
        LOADERS[loader](inputs[case])
    assert "\n" not in str(err.value)


def test_plan_files_with_bad_fields_are_refused(tmp_path):
    from firesim.plans import Plan, build

    good = build("ring", 3, 96).to_dict()
    for field, value, reason in [("nbytes", 2**70, "nbytes"), ("op", {"dtype": "|i1", "b64": "@@@"}, "column op"),
                                 ("seconds", [float("nan")] * 24, "seconds"), ("ranks", "3", "ranks")]:
        path = tmp_path / f"{field}.json"
        path.write_text(json.dumps({**good, field: value}).replace("NaN", "1e999"))
        with pytest.raises(UserError, match=reason):
            Plan.load(path)
    path = tmp_path / "list.json"
    path.write_text("[]")
    with pytest.raises(UserError, match="expected a JSON object"):
        Plan.load(path)


# ------------------------------------------------------------------------------- the cases of issue 8, named
@pytest.mark.parametrize("args", [
    ["firesim", "predict", "--model", "[/x]"],                      # markup in the error text
    ["firesim", "predict", "--hardware", "[bold]x[/bold]"],
    ["firesim", "predict", "--algo", "tree:root=2", "--gpus", "1"],  # root outside the workers
    ["firesim", "collective", "--size", "1e400"],                   # not finite
    ["firesim", "predict", "--algo", "ps:servers=abc"],
    ["firesim", "collective", "--algo", "ps:servers=-3"],           # was a negative time
    ["firesim", "collective", "--algo", "ps:servers=0"],            # was Infinity
    ["firesim", "predict", "--gpus", "1,,2"],                       # was taken as 1,2
    ["firesim", "simulate", "--ranks", "10000000"],                 # allocated for 20 s, then died
    ["firesim", "simulate", "--ranks", "20000", "--topology", "star"],
    ["firesim", "simulate", "--ranks", "64", "--topology", "star:n=10000000"],
    ["firesim", "sweep", "--out", "/proc/x.csv"],
    ["firesim", "simulate", "--ranks", "4", "--trace", "."],
    ["firerun", "bench", "--timeout-s", "0"],
    ["firerun", "bench", "--json", "/proc/x.json"],                 # was refused only after the whole run
    ["firerun", "run", "--nproc", "1000", "bench"],                 # forked hundreds of ranks
    ["firerun", "run", "--nproc", "2", "bench", "--sizes", "garbage"],
    ["firerun", "run", "--nproc", "2", "exec", "--algo", "ring", "--backend", "mpi"],  # MPI ranks need mpiexec
    ["firerun", "run", "--nproc", "2", "run", "--nproc", "2", "env"],                # not a job
    ["firerun", "slurm", "--partition", "a;rm -rf /", "bench"],     # was written into the script
    ["firerun", "slurm", "--time", "garbage", "bench"],
    ["firerun", "slurm", "--account", "$(id)", "bench"],
])
def test_the_reported_cases_are_refused_in_one_line(args, guarded):
    assert_refused(args[0], args[1:], (guarded, Path.cwd()))


def test_a_non_utf8_file_is_one_line_everywhere(inputs, guarded):
    bad = inputs["not-utf8.yaml"]
    for args in (["firesim", "simulate", "--ranks", "2", "--topology", bad], ["firesim", "predict", "--hardware", bad],
                 ["firesim", "hardware", "list", "--hardware-catalog", bad], ["firesim", "predict", "--model", bad],
                 ["firerun", "exec", "--plan", bad], ["firerun", "validate", "--topology", bad]):
        assert_refused(args[0], args[1:], (guarded, Path.cwd()))


def test_hierarchical_within_one_node_is_a_tree_inside_it():
    """ranks_per_node=4 on 3 ranks: one node, so the plan is a binomial reduce and broadcast in the node."""
    from firesim.plans import build, verify

    plan = build("hierarchical:ranks_per_node=4", 3, 1 << 20)
    verify(plan)
    assert plan.n_ops == build("tree", 3, 1 << 20).n_ops
    code, out, err = run_cli("firesim", ["collective", "--algo", "hierarchical:ranks_per_node=4", "--ranks", "3",
                                         "--json"])
    assert code == 0, err
    assert json.loads(out)[0]["time_s"] > 0


def test_every_json_the_clis_print_is_strict():
    """`collective --ranks 1` has an infinite algbw: it is written as null, never as Infinity."""
    code, out, err = run_cli("firesim", ["collective", "--ranks", "1", "--json"])
    assert code == 0, err
    (record,) = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))
    assert record["algbw_GBps"] is None and record["time_s"] == 0


def test_alpha_beta_gamma_must_be_finite_and_not_negative():
    from firesim.analytic import CommParams, Levels
    from firesim.plans import allreduce_time, resolve

    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="alpha_s"):
            allreduce_time("ring", 8, 1e6, bad, 1e-9, 0.0)
        with pytest.raises(UserError, match="gamma"):
            resolve("tree").time(8, 1e6, Levels(CommParams(1e-6, 1e-9, bad)))
    with pytest.raises(UserError, match="nbytes"):
        allreduce_time("ring", 8, float("nan"), 1e-6, 1e-9, 0.0)
    assert allreduce_time("ring", 8, 1e6, 1e-6, 1e-9, 0.0) > 0


def test_traces_with_nan_or_negative_values_are_refused(tmp_path):
    from firesim.plans import build
    from firesim.plans.ir import encode_array
    from firesim.trace import Trace

    plan = build("ring", 3, 96)
    good = Trace.for_plan(plan, np.zeros(plan.n_ops), np.ones(plan.n_ops), source="simulated").to_dict()
    for column, values, reason in [("t_end", np.full(plan.n_ops, np.nan), "finite"),
                                   ("t_end", np.full(plan.n_ops, -1.0), "ends before it starts"),
                                   ("nbytes", np.full(plan.n_ops, -5), "nbytes"),
                                   ("rank", np.full(plan.n_ops, 7, np.int32), "rank")]:
        doc = json.loads(json.dumps(good))
        doc["columns"][column] = encode_array(values)
        path = tmp_path / "t.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(UserError, match=reason):
            Trace.load(path)


def test_nothing_is_started_when_an_output_cannot_be_written(guarded, monkeypatch):
    """--json /proc/x.json used to fail after the whole run; now the run never starts (the tripwires)."""
    assert_refused("firerun", ["run", "--nproc", "2", "bench", "--json", "/proc/x.json"], (guarded, Path.cwd()))
    assert_refused("firerun", ["exec", "--algo", "ring", "--trace", str(guarded)], (guarded, Path.cwd()))
    monkeypatch.setattr("firesim.engine.simulate", _tripwire("the engine"))
    assert_refused("firesim", ["simulate", "--ranks", "4", "--chrome", "/proc/c.json"], (guarded, Path.cwd()))
