"""Several controllers on one study: a lock that serialises their bookkeeping, and trial ownership.

Optuna's RDB storage lets several processes ask and tell on one study (a WAITING trial is popped by one
of them only), but it cannot tell a trial another live controller is running from one a killed process
left RUNNING. So each controller writes its owner (host, pid, a random id) and a heartbeat into the
system attrs of the trials it runs; a RUNNING trial is *stale*, and re-run under its own number, when its
heartbeat is older than ``grace`` seconds, when its owner was a process of this host that is gone (or an
earlier sweep of this process), or when it has no owner and started more than ``grace`` seconds ago.

:class:`StudyLock` serialises the steps that must not interleave between controllers (creating the
schema and the study, enqueueing baselines and retries, checking the budget before ``ask``, taking over a
stale trial, telling a result and logging it to MLflow). It is an exclusive ``flock`` on a file beside a
SQLite database (controllers on one host or one shared filesystem); for a server database (PostgreSQL,
MySQL) it is a no-op, so there two controllers starting at once may each enqueue the baselines, and the
budget may be exceeded by a trial per extra controller.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from pathlib import Path

from edgetune._logging import get_logger
from edgetune._paths import FileLock, pid_alive

log = get_logger(__name__)

__all__ = ["StudyLock", "TrialOwners", "OWNER_ATTR", "sqlite_path"]

OWNER_ATTR = "edgetune:owner"
_LIVE: set[str] = set()  # owner ids of the sweeps running in this process


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None: another database, or in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


class StudyLock:
    """A re-entrant lock shared by every controller of the study stored at ``url`` (see the module doc)."""

    def __init__(self, url: str):
        db = sqlite_path(url)
        self._file = FileLock(db.with_name(db.name + ".lock") if db is not None else None, mode=0o644)
        self._local = threading.RLock()
        self._depth = 0

    def __enter__(self) -> StudyLock:
        self._local.acquire()
        if self._depth == 0:
            try:
                self._file.acquire()
            except BaseException:
                self._local.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._file.release()
        self._local.release()


class TrialOwners:
    """This controller's claim on the trials it runs: ``claim`` marks a trial as ours (and starts a thread
    that renews the heartbeat of every claimed trial each ``interval`` seconds), ``release`` after telling
    it, ``close`` when the sweep ends. ``state(frozen)`` says whose a RUNNING trial is."""

    def __init__(self, study, *, interval: float = 10.0, grace: float = 120.0):
        self.study, self.interval, self.grace = study, float(interval), float(grace)
        self.me = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _LIVE.add(self.me["id"])

    def _beat(self, trial_id: int) -> None:
        self.study._storage.set_trial_system_attr(trial_id, OWNER_ATTR, {**self.me, "beat": time.time()})

    def claim(self, trial_id: int) -> None:
        self._beat(trial_id)
        with self._lock:
            self._held.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edgetune-heartbeat", daemon=True)
                self._thread.start()

    def release(self, trial_id: int) -> None:
        with self._lock:
            self._held.discard(trial_id)

    def _run(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        while not self._stop.wait(self.interval):
            with self._lock:
                held = list(self._held)
            for trial_id in held:
                try:
                    self._beat(trial_id)
                except UpdateFinishedTrialError:
                    self.release(trial_id)
                except Exception as exc:  # a busy database: the next beat will do
                    log.debug("heartbeat of trial %d failed: %s", trial_id, exc)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop the heartbeat; trials still claimed become stale for the other controllers (and for a
        later sweep of this process) at once."""
        _LIVE.discard(self.me["id"])
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def state(self, frozen) -> str:
        """``mine`` | ``live`` (another controller runs it) | ``stale`` (nobody does: re-run it)."""
        owner = frozen.system_attrs.get(OWNER_ATTR)
        now = time.time()
        if not isinstance(owner, dict):  # asked, not claimed yet; or left by an edgetune without owners
            start = frozen.datetime_start.timestamp() if frozen.datetime_start else 0.0
            return "live" if now - start < self.grace else "stale"
        if owner.get("id") == self.me["id"]:
            return "mine"
        if owner.get("host") == self.me["host"]:
            pid = int(owner.get("pid") or 0)
            if pid == self.me["pid"]:
                return "live" if owner.get("id") in _LIVE else "stale"
            if not pid_alive(pid):
                return "stale"
        return "live" if now - float(owner.get("beat") or 0.0) < self.grace else "stale"
