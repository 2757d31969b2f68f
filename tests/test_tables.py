"""Readable at 80 columns: no table of either CLI ever cuts or ellipsizes a number, and a column of
durations has one format (firesim.units.format_duration)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import typer.main
from rich.console import Console

import firesim.cli
from firesim.clikit import Column, print_table
from firesim.units import format_duration

TABLE_COMMANDS = sorted(" ".join(path) for path, cmd in (
    ((name,), c) if not getattr(c, "commands", None) else ((name, sub), s)
    for name, c in typer.main.get_command(firesim.cli.app).commands.items()
    for sub, s in (getattr(c, "commands", None) or {None: c}).items())
    if any(p.name == "wide" for p in cmd.params))
EXTRA = {"predict": ["--gpus", "1,32,128", "--algo", "tree,ps,ring,hierarchical:ranks_per_node=4,inter=halving_doubling",
                     "--model", "resnet50", "--hardware", "dgx-a100"],
         "collective": ["--algo", "ring,double_binary_tree", "--ranks", "1,2:1024", "--size", "1KiB,1GiB"],
         "simulate": ["--ranks", "16", "--size", "1MiB"]}


def _run(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            firesim.cli.main(args)
        except SystemExit as exit_:
            assert exit_.code in (0, None)
    return out.getvalue()


def test_table_commands_are_found():
    assert {"predict", "collective", "simulate", "hardware list", "models list", "plans list"} <= set(TABLE_COMMANDS)


@pytest.mark.parametrize("command", TABLE_COMMANDS)
def test_no_number_is_cut_at_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    args = command.split() + EXTRA.get(command, [])
    text = _run(args)
    assert "…" not in text and "..." not in text.replace("c0..", "")
    assert max(len(line) for line in text.splitlines()) <= 80
    records = json.loads(_run([*args, "--json"]))
    cells = set(text.split())
    for record in records:  # counts and durations show whole
        for key in {"gpus", "ranks", "gpus_per_node"} & set(record):
            assert str(record[key]) in cells, (key, record[key])
        for key in {"iteration_s", "time_s", "time_to_train_s"} & set(record):
            assert format_duration(record[key]) in cells, (key, record[key])


def test_wide_keeps_every_column_even_beyond_the_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    narrow, wide = _run(["predict", "--gpus", "8"]), _run(["predict", "--gpus", "8", "--wide"])
    assert "not shown" in narrow and "not shown" not in wide
    assert "exposed" in wide and "…" not in wide and "…" not in narrow


def test_print_table_widens_rather_than_cut_a_number():
    console = Console(width=30, file=io.StringIO(), color_system=None)
    records = [{"name": "a very long name [/x] with markup", "big": 123456789012345, "other": 98765.4321}]
    print_table(console, "title [bold]x", records, [Column("name", "name", text=True),
                                                    Column("big", "big", lambda x: f"{x:,}"),
                                                    Column("other", "other", lambda x: f"{x:.4f}", optional=1)])
    text = console.file.getvalue()
    assert "123,456,789,012,345" in text and "…" not in text and "[/x]" in text and "[bold]x" in text
    assert "not shown: other" in text


@pytest.mark.parametrize("seconds, text", [(0, "0"), (5e-7, "500ns"), (0.0009997, "1ms"), (0.775, "775ms"),
                                           (8.78, "8.78s"), (1450, "24.2min"), (3599.9, "60min"), (94000, "26.1h"),
                                           (86400 * 17.5, "17.5d"), (1e12, "11,574,074d"), (float("nan"), "-"),
                                           (float("inf"), "-"), (-0.5, "-500ms")])
def test_one_duration_format(seconds, text):
    assert format_duration(seconds) == text


def test_durations_never_use_an_exponent():
    for exponent in range(-10, 13):
        for mantissa in (1.0, 2.5, 9.995, 59.99, 999.7):
            assert "e" not in format_duration(mantissa * 10.0**exponent).replace("min", "").rstrip("d")
