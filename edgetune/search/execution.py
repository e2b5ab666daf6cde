"""Running a sweep's trials in this process: one after the other, with the next compression overlapped
with the current measurement (``search.overlap``), or several at once for a pool of devices."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from edgetune.search.runner import SweepHooks, TrialPlan, TrialResult, run_one

if TYPE_CHECKING:
    from edgetune.compress import Artifact

__all__ = ["execute_trials"]


def execute_trials(plans: Callable[[], TrialPlan | None], hooks: SweepHooks, *, overlap: bool,
                   on_result: Callable[[TrialPlan, TrialResult], None], workers: int = 1) -> None:
    """Run plans until ``plans()`` returns None. With ``overlap``, the next trial's compression (and the
    screen's evidence on it) runs in a worker thread while the current one is measured (the next trial is asked before the current one is
    told, as with any parallel sampler). ``workers`` > 1 (a pool of devices): that many trials at once, each
    compressed in turn (one compression at a time in this process) and measured on a free member."""
    if workers > 1:
        _execute_parallel(plans, hooks, on_result, workers)
        return
    if not overlap:
        while (plan := plans()) is not None:
            on_result(plan, run_one(plan, hooks))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetune-compress") as pool:
        current = plans()
        fut = pool.submit(_prepared, hooks, current) if current else None
        while current is not None:
            nxt = plans()
            wait([fut])  # current compressed (or failed): start the next compression, then measure
            nfut = pool.submit(_prepared, hooks, nxt) if nxt is not None else None
            on_result(current, run_one(current, hooks, fut))
            current, fut = nxt, nfut


def _prepared(hooks: SweepHooks, plan: TrialPlan) -> Artifact:
    """The plan compressed, with the screen's evidence on it computed too (``hooks.evidence`` keeps it by
    artifact), so that overlap hides both behind the current measurement. An evidence error is left for the
    trial's own screen step, which reports it."""
    artifact = hooks.compress(plan)
    with contextlib.suppress(Exception):  # reported by run_one's screen step, which asks again
        hooks.evidence(artifact)
    return artifact


class _InTurn:
    """A plan's compression run when the trial asks for its artifact (``run_one``'s future), one at a time
    across the parallel trials (they share this process's cores); waiting for the turn counts as getting the
    artifact."""

    def __init__(self, hooks: SweepHooks, plan: TrialPlan, lock: threading.Lock):
        self.hooks, self.plan, self.lock = hooks, plan, lock

    def result(self) -> Artifact:
        with self.lock:
            return self.hooks.compress(self.plan)


def _execute_parallel(plans, hooks: SweepHooks, on_result, workers: int) -> None:
    asking, compressing = threading.Lock(), threading.Lock()  # one ask (the sampler sees the others running)
    stop = threading.Event()  # a worker that raised, or an interrupt: the others finish their trial and stop

    def loop() -> None:
        try:
            while not stop.is_set():
                with asking:
                    plan = plans() if not stop.is_set() else None
                if plan is None:
                    return
                on_result(plan, run_one(plan, hooks, _InTurn(hooks, plan, compressing)))
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgetune-trial") as pool:
        futures = [pool.submit(loop) for _ in range(workers)]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            stop.set()
        for f in futures:
            f.result()


