"""Every ``edgetune`` command the README shows exists with the options it shows, and a test runs it.

The README's commands are read from the file itself (code blocks and the CLI table), so a renamed option or
command fails here, not in a newcomer's shell. "Runs it": a test file invokes that command with that option
(as a subprocess or through the CLI entry point); the long ones run there with small settings (a 4-trial
sweep, a 2-step training)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from edgetune.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[tuple[str, object, list[str]]]:
    """(command path, click command, options used) of each ``edgetune ...`` in the README."""
    root = typer.main.get_command(app)
    text = (ROOT / "README.md").read_text().replace("\\|", "/")  # a table cell's escaped '|'
    found = []
    for m in re.finditer(r"edgetune ((?:agent )?[a-z][a-z-]+)([^`\n;&]*)", text):
        cmd, words = root, m.group(1).split()
        if not all((cmd := getattr(cmd, "commands", {}).get(w)) is not None for w in words):
            continue  # prose ("edgetune searches ..."), not a command
        found.append((" ".join(words), cmd, re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", m.group(2))))
    return found


COMMANDS = _readme_commands()
TESTS = {p: p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name}
TESTS.update({p: p.read_text() for p in (ROOT / "tests").rglob("*helpers.py")})


def test_the_readme_shows_the_commands_users_need():
    shown = {name for name, _, _ in COMMANDS}
    assert {"demo", "search", "front", "deploy", "export", "agent serve", "eval", "compare"} <= shown


def test_every_option_the_readme_shows_exists():
    for name, cmd, options in COMMANDS:
        known = {o for p in cmd.params for o in p.opts}
        assert set(options) <= known, (name, sorted(set(options) - known))


def test_every_command_and_option_the_readme_shows_is_run_by_a_test():
    def runs(name: str, option: str | None) -> bool:
        word = name.split()[-1]
        return any(re.search(rf"""["']{re.escape(word)}["']""", text) and
                   (option is None or re.search(rf"""["']{re.escape(option)}["']""", text))
                   for text in TESTS.values())

    missing = sorted({(name, option) for name, _, options in COMMANDS for option in [None, *options]
                      if not runs(name, option)}, key=str)
    assert not missing, f"README commands no test runs: {missing}"
