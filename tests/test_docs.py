"""The README's command table against the commands themselves: a user who reads the table
finds every command and every option its -h shows, and no option it does not take."""

from __future__ import annotations

import re
from pathlib import Path

import click
from zoo_cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _table() -> str:
    text = README.read_text()
    return text[text.index("\n## Commands\n") : text.index("\n## Families\n")]


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def _options(command: click.Command) -> list[str]:
    return [
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts
        if opt.startswith("--") and opt not in ("--help", "--json")
    ]


def test_the_readme_command_table_names_every_command_and_every_option():
    # Each row's first cell: the commands it shows, with their options.
    cells = [line.split(" | ")[0] for line in _table().splitlines() if line.startswith("| `zoo ")]
    missing = []
    for name, command in _commands(cli):
        row = next((c for c in cells if re.search(f"`zoo {name}(?![\\w-])", c)), None)
        if row is None:
            missing.append(f"zoo {name}")
            continue
        for opt in _options(command):
            alias = opt == "--drop-everything"  # the spelling operations.md gives beside it
            if not alias and not re.search(re.escape(opt) + r"(?![\w-])", row):
                missing.append(f"zoo {name} {opt}")
    assert missing == [], missing


def test_the_readme_command_table_names_no_option_a_command_lacks():
    taken = {opt for _, command in _commands(cli) for opt in _options(command)}
    named = set(re.findall(r"`[^`]*`", _table()))
    shown = {o for cell in named for o in re.findall(r"--[a-z][a-z-]*", cell)}
    assert shown - taken - {"--json", "--help"} == set()


def test_every_command_but_serve_and_lineage_takes_json_as_the_readme_says():
    without = sorted(
        name
        for name, command in _commands(cli)
        if not any("--json" in p.opts for p in command.params if isinstance(p, click.Option))
    )
    assert without == ["lineage", "serve"]
