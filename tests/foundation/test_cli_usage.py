"""Usage mistakes get click's usage text, the option or argument at fault, and exit code 2, for every
command: never an 'unexpected ...' crash line. Runs the real entry point (``edgetune.cli.main``) in
process; nothing a command does is reached (parsing fails first)."""

from __future__ import annotations

import pytest
import typer.main

from edgetune.cli import app, main

# one numeric option per command that has one (a bad value must name it)
NUMERIC = {"eval": "--runs", "train-builtin": "--iters", "demo": "--trials", "devices": "--timeout",
           "measure": "--warmup", "compare": "--runs", "search": "--trials", "deploy": "--trial",
           "export": "--trial", "agent serve": "--port", "agent local": "--n"}


def _commands():
    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    return dict(walk(typer.main.get_command(app), []))


COMMANDS = _commands()


def run(monkeypatch, capfd, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["edgetune", *argv])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capfd.readouterr()
    return exc.value.code, out + err


def test_the_table_covers_every_command():
    assert {"search", "space", "compress", "front", "deploy", "agent serve"} <= set(COMMANDS)
    assert set(NUMERIC) <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_option(command, monkeypatch, capfd):
    code, text = run(monkeypatch, capfd, *command.split(), "--no-such-option")
    assert code == 2, text
    assert "Usage: edgetune" in text and "No such option: --no-such-option" in text and "unexpected" not in text


@pytest.mark.parametrize("command", sorted(c for c, cmd in COMMANDS.items() if any(p.required for p in cmd.params)))
def test_missing_argument(command, monkeypatch, capfd):
    code, text = run(monkeypatch, capfd, *command.split())
    assert code == 2, text
    assert "Usage: edgetune" in text and "Missing" in text and "unexpected" not in text


@pytest.mark.parametrize(("command", "option"), sorted(NUMERIC.items()))
def test_bad_value_names_the_option(command, option, monkeypatch, capfd):
    code, text = run(monkeypatch, capfd, *command.split(), option, "abc")
    assert code == 2, text
    assert (f"Invalid value for '{option}'" in text or "Missing" in text) and "unexpected" not in text


def test_misspelt_command_suggests_the_right_one(monkeypatch, capfd):
    code, text = run(monkeypatch, capfd, "serch")
    assert code == 2 and "No such command 'serch'" in text and "search" in text


def test_no_command_shows_the_commands(monkeypatch, capfd):
    code, text = run(monkeypatch, capfd)
    assert code == 2 and "search" in text and "deploy" in text and "unexpected" not in text


def test_messages_print_square_brackets_as_written(monkeypatch, capfd, tmp_path):
    """Console markup never eats user-facing text (install hints say edgetune[agent], snippets boxes[keep])."""
    missing = tmp_path / "sweep[agent].yaml"
    code, text = run(monkeypatch, capfd, "space", "--config", str(missing))
    assert code == 2 and "error:" in text
    assert "sweep[agent].yaml" in text.replace("\n", "")


def test_a_read_only_command_on_a_missing_sweep_creates_nothing(monkeypatch, capfd, tmp_path):
    import shutil
    from pathlib import Path

    config = tmp_path / "demo.yaml"
    shutil.copyfile(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml", config)
    monkeypatch.chdir(tmp_path)
    code, text = run(monkeypatch, capfd, "front", "--config", str(config))
    assert code == 2 and "edgetune search" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.yaml"]  # no empty edgetune.db / mlflow.db


@pytest.mark.parametrize("command", ["space", "compress", "search", "front"])
def test_the_sweep_yaml_is_the_same_argument_everywhere(command, monkeypatch, capfd, tmp_path):
    """CONFIG positional or --config, in every command that reads a sweep (deploy's --sweep takes --config too)."""
    extra = ["--point", "fp32", "--out", str(tmp_path / "o")] if command == "compress" else []
    code, text = run(monkeypatch, capfd, command, *extra)
    assert code == 2 and "Missing the sweep YAML" in text
    missing = str(tmp_path / "nope.yaml")
    first = run(monkeypatch, capfd, command, missing, *extra)
    second = run(monkeypatch, capfd, command, "--config", missing, *extra)
    assert first == second and first[0] == 2 and "nope.yaml" in first[1] and "does not exist" in first[1]


def test_deploy_takes_device_and_config_like_the_other_commands(monkeypatch, capfd, tmp_path):
    missing = str(tmp_path / "nope.yaml")
    a = run(monkeypatch, capfd, "deploy", "--to", "local", "--sweep", missing, "--trial", "1")
    b = run(monkeypatch, capfd, "deploy", "--device", "local", "--config", missing, "--trial", "1")
    assert a == b and a[0] == 2 and "nope.yaml" in a[1]
