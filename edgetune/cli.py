"""The ``edgetune`` command line (typer + rich).

Errors print one clear line (``--debug`` shows the traceback). This module imports nothing heavy at
import time: ``edgetune agent serve`` must start on a Raspberry Pi without torch. Each package adds its
commands through a ``register(app)`` function in its ``_cli`` module.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from edgetune import __version__
from edgetune.errors import EdgetuneError

app = typer.Typer(name="edgetune", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Find the best compression of a vision model for an edge device, measured on the device.")
# markup off: user-facing text (messages, paths, install hints such as edgetune[agent], code snippets
# with boxes[keep]) prints as written; the few styled lines ask for markup and escape what they insert
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)
_STATE = {"debug": False}
# what `edgetune[controller]` adds to the agent's install (the modules, as imported)
CONTROLLER_PACKAGES = ("torch", "torch_pruning", "onnxscript", "optuna", "mlflow", "pandas", "matplotlib", "plotly",
                       "zstandard")

# Modules whose register(app) adds commands; a module that is missing (not written yet) is skipped.
COMMAND_MODULES = (
    "edgetune._cli_core",
    "edgetune.device_agents._cli",
    "edgetune.spaces._cli",
    "edgetune.compress._cli",
    "edgetune.search._cli",
    "edgetune.deploy._cli",
)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
) -> None:
    _STATE["debug"] = debug
    columns = os.environ.get("COLUMNS", "")
    for c in (console, err_console):  # the width of THIS invocation (the consoles outlive one in tests)
        c.width = int(columns) if columns.isdigit() else None
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logger = logging.getLogger("edgetune")
    logger.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err_console, show_path=False, markup=False))


def sweep_file(positional: Path | None, option: Path | None) -> Path:
    """The sweep YAML of a command, given as its CONFIG argument or as ``--config`` (one of the two)."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise typer.BadParameter(f"give the sweep YAML once: CONFIG {positional} or --config {option}",
                                 param_hint="CONFIG")
    path = positional if positional is not None else option
    if path is None:
        raise typer.BadParameter("Missing the sweep YAML: pass it as CONFIG (e.g. configs/demo.yaml) or --config",
                                 param_hint="CONFIG")
    return Path(path)


@app.command()
def version() -> None:
    """Print the edgetune version."""
    console.print(__version__)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:
    try:
        code = app(standalone_mode=False, prog_name="edgetune")  # an Exit raised by a command comes back here
        if isinstance(code, int) and code:
            sys.exit(code)
    except EdgetuneError as exc:
        if _STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except ModuleNotFoundError as exc:
        if _STATE["debug"] or (exc.name or "").split(".")[0] not in CONTROLLER_PACKAGES:
            raise
        err_console.print(f"[bold red]error:[/] this command runs on the controller and needs '{escape(exc.name)}', "
                          "which is not installed here (a device agent's install has only what a device needs). "
                          'Install the controller: pip install "edgetune[controller]" (a CPU torch first: pip '
                          "install torch==2.13.0).", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # usage errors (typer's and click's), then anything unexpected
        code = _usage_exit(exc)
        if code is not None:
            sys.exit(code)
        if _STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))} (run with --debug "
                          "for the traceback)", markup=True, highlight=False)
        sys.exit(1)


def _usage_exit(exc: Exception) -> int | None:
    """The exit code of a usage error (its usage text and message shown, as click does: exit 2), of an
    explicit exit or of an abort; None for any other exception. typer >= 0.20 raises its own copies of
    click's exceptions (all ``TyperException``), older typer raises click's."""
    import click
    from typer.exceptions import Abort, Exit, TyperException

    if isinstance(exc, (TyperException, click.ClickException)) and hasattr(exc, "show"):
        exc.show()
        return int(getattr(exc, "exit_code", 2))
    if isinstance(exc, (Exit, click.exceptions.Exit)):
        return int(exc.exit_code)
    if isinstance(exc, (Abort, click.exceptions.Abort)):
        err_console.print("aborted")
        return 1
    return None

if __name__ == "__main__":
    main()
