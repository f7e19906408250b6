"""Every flag a message suggests exists: on the command the message names (`clipwise prepare ... --label-column`),
and somewhere in the CLI for every other message; the user's settings may come anywhere on the command line, and
a mistyped key suggests the key meant."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from clipwise.cli import build_parser

SRC = Path(__file__).resolve().parents[1] / "src" / "clipwise"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
NAMED = re.compile(r"clipwise ([a-z-]+)([^`\n]*)")  # a command line a message shows: the command and its rest


def command_flags() -> dict[str, set[str]]:
    """Each command's option strings."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def _message_strings() -> list[tuple[str, int, str]]:
    """(file, line, text) of every string literal in src that is not an argparse option or help text."""
    out = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
                skip.update(id(v) for v in node.values)
                out.append((path.name, node.lineno, text))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                out.append((path.name, node.lineno, node.value))
    return out


def test_every_flag_a_message_names_exists_on_the_command_it_names():
    flags = command_flags()
    every = set().union(*flags.values())
    unknown, misplaced = [], []
    for name, line, text in _message_strings():
        unknown += [f"{name}:{line} {f}" for f in FLAG.findall(text) if f not in every]
        for command, rest in NAMED.findall(text):
            misplaced += [f"{name}:{line} `clipwise {command}` has no {flag}" for flag in FLAG.findall(rest)
                          if command in flags and flag not in flags[command]]
    assert not unknown, f"messages name flags no command has: {unknown}"
    assert not misplaced, f"messages name flags their command lacks: {misplaced}"


def test_the_checker_finds_a_flag_the_command_lacks():
    text = "pass it with `clipwise train --data X --label-column NAME`"
    ((command, rest),) = NAMED.findall(text)
    assert command == "train" and FLAG.findall(rest) == ["--data", "--label-column"]
    assert "--label-column" not in command_flags()["train"] and "--data" in command_flags()["train"]


def test_settings_may_come_after_options(cli, tmp_path):
    r = cli("train", "--data", tmp_path / "none.csv", "data.batch_size=8", "--epochs", "1", "train.progress=false")
    assert "unrecognized arguments" not in r.err and "none.csv" in r.err  # parsed; the missing file is the error
    with pytest.raises(SystemExit) as stop:  # argparse's own refusal
        cli("train", "--data", tmp_path / "none.csv", "--bogus")
    assert stop.value.code == 2


@pytest.mark.parametrize(("typed", "meant"), [("optim.lr_rate", "optim.lr"), ("optim.lrr", "optim.lr"),
                                              ("trian.epochs", "train"), ("data.batchsize", "data.batch_size")])
def test_a_mistyped_key_suggests_the_key_meant(typed, meant):
    from clipwise.config import load_config
    from clipwise.errors import ConfigError

    with pytest.raises(ConfigError, match=f"Did you mean '{re.escape(meant)}'"):
        load_config(overrides=[f"{typed}=1"])
