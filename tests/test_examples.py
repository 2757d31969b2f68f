r"""Every example in the README and in every `--help` text runs as printed.

Examples are found, not listed: in README code blocks, lines that start with `$ firesim`/`$ firerun` (any block)
or with `firesim`/`firerun` (bash blocks; `NAME=value` prefixes and `\` continuations as a shell reads them);
the backticked commands in the first column of README tables; and backticked `firesim ...` / `firerun ...`
commands in the help of every command and option of both CLIs. The commands of one code block run in order in
one directory (a later one may read what an earlier one wrote), from a directory that has the repository's
`examples/`, as a reader in the repository would. `firesim` examples run in full. `firerun` examples that
start ranks run through every check `firerun run` makes before it starts a rank (the command parsed and
validated as printed, the rank count against the machine), and one short example runs for real; the few that
need root or minutes are named in SLOW with the reason.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import firerun.cli
import firesim.cli

ROOT = Path(__file__).resolve().parents[1]
_COMMAND = r"(?:[A-Z_]+=\S+ )*(?:sudo \.venv/bin/)?(?:firesim|firerun)(?: |$)"

# Examples that start ranks for minutes or need root: checked (parsed and validated in full, as `firerun run`
# does before starting anything) but not run here. The reason is part of the record.
SLOW = {
    "firerun run --nproc 4 bench --sizes 1KiB:64MiB --algo ring,tree,ps,builtin": "4 ranks x 17 sizes: minutes",
    "firerun run --nproc 4 --launcher mpiexec bench --backend mpi --sizes 16MiB,64MiB": "4 MPI ranks: ~1 min",
    "firerun run --nproc 5 check": "5 ranks x every algorithm x 3 dtypes: ~1 min",
    "firerun run --nproc 4 calibrate --output profile.yaml": "ping-pong sweep: ~1 min",
    "firerun run --nproc 4 train --model small_cnn --algo ring --steps 20": "20 SGD steps on 4 ranks: ~1 min",
    "firerun run --nproc 4 bench --sizes 16MiB": "4 ranks, 3 algorithms x 60 runs of 16 MiB",
    "firerun validate --topology examples/topologies/star4-slow.yaml --algo ring,tree,ps --size 1MiB,4MiB,16MiB "
    "--repeat 5 --plot slow.png": "needs root (network namespaces) and ~5 min; tests/test_emulate.py runs it",
    "firerun run --nproc 4 train --model resnet18_cifar_w16 --data digits --algo tree --steps 200 --batch 64 "
    "--lr 0.01 --base-batch 32 --warmup-steps 20 --decay poly --weight-decay 5e-4 --checkpoint-dir ckpt "
    "--checkpoint-every 50 --trace t.json --chrome t.chrome.json": "200 DDP steps on 4 ranks: minutes",
    "firerun run --nproc 4 train --steps 20": "20 DDP steps on 4 ranks: ~1 min",
    "firerun train --nproc 4 --steps 12": "a one-rank calibration, then 4 ranks: ~1 min",
    "firerun train --model resnet18_cifar_w16 --nproc 4 --algo ring,tree,ps --steps 12 --batch 4 --emulate "
    "examples/topologies/two-level-4.yaml --plot it.png": "needs root (network namespaces) and minutes",
}
RUN_FOR_REAL = "firerun run --nproc 4 exec --algo tree --size 16MiB --trace t.json --chrome c.json"


def readme_examples() -> list[list[str]]:
    """The README's examples, grouped: the commands of one code block together, each table cell alone."""
    groups, block, language, pending = [], None, "", ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            if block is None:
                block, language = [], line[3:].strip()
            else:
                groups += [block] if block else []
                block = None
            continue
        if block is not None:
            line = pending + line.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if re.match(r"\$ " + _COMMAND, line) or language in ("bash", "sh") and re.match(_COMMAND, line):
                block.append(" ".join(re.split(r"\s{2,}#", line)[0].removeprefix("$ ").split()))
        elif re.match(r"\| `" + _COMMAND, line):
            groups += [[" ".join(e.split())] for e in re.findall(rf"`({_COMMAND}[^`]*)`", line.split("|")[1])]
    return groups


def help_examples() -> list[str]:
    found = []
    for app in (firesim.cli.app, firerun.cli.app):
        stack = [typer.main.get_command(app)]
        while stack:
            cmd = stack.pop()
            stack += [c for c in getattr(cmd, "commands", {}).values() if not c.hidden]
            texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
            found += [m for t in texts for m in re.findall(r"`((?:firesim|firerun) [^`]*)`", " ".join(t.split()))]
    return sorted(set(found))


def test_examples_are_found():
    readme = [e for group in readme_examples() for e in group]
    assert len(readme) >= 15 and any(e.startswith("firerun slurm") for e in readme)
    assert "firesim hardware list" in readme and "firesim models list" in readme
    assert any(e.startswith("firerun run") for e in help_examples())


def _main(module, args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


GROUPS = readme_examples() + [[e] for e in help_examples()]


@pytest.mark.parametrize("group", GROUPS, ids=[" && ".join(g)[:70] for g in GROUPS])
def test_examples_run_as_printed(group, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    for example in group:
        _run_example(example, tmp_path, monkeypatch)


def _run_example(example: str, tmp_path: Path, monkeypatch) -> None:
    args = shlex.split(re.sub(r"^sudo \.venv/bin/", "", example))
    while "=" in args[0]:  # NAME=value prefixes, as the shell applies them
        name, _, value = args.pop(0).partition("=")
        monkeypatch.setenv(name, value)
        if name == "PYTHONPATH":
            monkeypatch.syspath_prepend(str(tmp_path / value))
    example = " ".join(args)
    if args[0] == "firesim":
        code, out, err = _main(firesim.cli, args[1:])
        assert code == 0, err
        return
    if example == RUN_FOR_REAL:
        proc = subprocess.run([sys.executable, "-m", "firerun", *args[1:]], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "t.json").exists() and (tmp_path / "c.json").exists()
        return
    started: list = []
    monkeypatch.setattr("firerun.launch.launch", lambda nproc, cmd, **kw: started.append((nproc, cmd)) or 0)
    if args[1] == "validate" or args[1] == "train" and "--nproc" in args:  # checked up to starting ranks
        assert example in SLOW, f"{example!r} starts ranks: list it in SLOW with the reason"
        monkeypatch.setattr("firerun.validate.validate", lambda *a, **kw: started.append(a) or _stop())
        monkeypatch.setattr("firerun.iteration.measure_and_predict", lambda *a, **kw: started.append(a) or _stop())
    elif args[1] == "run" and example not in SLOW:
        pytest.fail(f"{example!r} starts ranks: run it for real or list it in SLOW with the reason")
    try:
        code, out, err = _main(firerun.cli, args[1:])
    except _Stopped:
        code, err = 0, ""
    assert code == 0, err
    if args[1] == "slurm":
        output = args[args.index("-o") + 1] if "-o" in args else None
        assert output is None or (tmp_path / output).read_text().startswith("#!/bin/bash")
    elif args[1] in ("run", "validate") or "--nproc" in args:
        assert started, f"{example!r} did not get as far as starting its ranks"


class _Stopped(Exception):
    pass


def _stop():
    raise _Stopped


HELP_PAGES = sorted({(prog, " ".join(path)) for prog, app in (("firesim", firesim.cli.app), ("firerun", firerun.cli.app))
                     for path in [()] + [(name,) for name in typer.main.get_command(app).commands]
                     + [(name, sub) for name, cmd in typer.main.get_command(app).commands.items()
                        for sub in getattr(cmd, "commands", {})]})


@pytest.mark.parametrize("prog, command", HELP_PAGES, ids=[f"{p} {c}" for p, c in HELP_PAGES])
def test_every_help_page_shows_its_text_whole(prog, command, monkeypatch):
    """Help text is printed as written at 80 columns: nothing in brackets eaten as markup, nothing cut."""
    monkeypatch.setenv("COLUMNS", "80")
    module = firesim.cli if prog == "firesim" else firerun.cli
    code, out, err = _main(module, [*command.split(), "--help"])
    assert code == 0, err
    cmd = typer.main.get_command(module.app)
    for name in command.split():
        cmd = cmd.commands[name]
    flat = re.sub(r"[\s│╭╮╰╯─]", "", out)  # a long word may wrap inside its column
    for text in [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]:
        words = [w for w in re.findall(r"[A-Za-z$][\w$/.-]*", text.split("\n\n")[0])]
        missing = [w for w in words if w not in flat]
        assert not missing, f"{prog} {command} --help lost {missing} of {text!r}"
