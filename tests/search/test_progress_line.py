"""The sweep's progress line at 80 columns keeps the trial count, elapsed time, ETA and the last result; the
per-trial line says what was measured."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.progress import Progress

from edgetune.search._cli import fit_status, measured_line, progress_columns

KEYS = ["map50_95@local", "latency_p50_ms@local", "size_bytes"]
VALUES = {"map50_95@local": 0.74131, "latency_p50_ms@local": 2.2049, "size_bytes": 730112.0}


def _line(width: int, status: str) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    with Progress(*progress_columns(), console=console, transient=False, auto_refresh=False) as progress:
        task = progress.add_task("sweep", total=40, status=fit_status(status, width))
        progress.update(task, completed=12, advance=0)
        progress.refresh()
    return buf.getvalue().split("\r")[-1].replace("\x1b[2K", "").split("\n")[0]


@pytest.mark.parametrize("width", [80, 100])
def test_at_80_columns_the_line_keeps_count_elapsed_eta_and_the_last_result(width):
    line = _line(width, measured_line(VALUES, KEYS, compact=True))
    assert len(line) <= width
    assert "12/40" in line and "0:00:0" in line and "ETA" in line and "-:--:--" in line
    assert "mAP50-95 0.741, 2.20 ms, 713 KiB" in line
    long = _line(width, "waiting for device local (down since 12:00:01), up to 600 s (`search.outage_wait_s`)")
    assert len(long) <= width and "12/40" in long and "ETA" in long and long.endswith("…")


def test_each_trial_line_says_what_was_measured():
    assert measured_line(VALUES, KEYS) == "mAP50-95 0.7413, p50 2.20 ms, 713 KiB"
    assert measured_line({}, KEYS) == ""  # a failed trial: its error says why
