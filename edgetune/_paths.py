"""Where edgetune keeps caches (datasets, exported models, artifacts)."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path


def cache_dir() -> Path:
    """``$EDGETUNE_CACHE`` or ``~/.cache/edgetune``; created on first use."""
    root = os.environ.get("EDGETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgetune"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file + ``os.replace`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # writers may race
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL when that file does not exist (None otherwise, and for every other
    kind of URL): read-only commands check it first, since opening such a URL creates an empty database."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return None
    path = Path(uri[len(prefix):])
    return None if path.exists() else path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed child its parent has not reaped yet is
    gone for every purpose here); True when it exists but belongs to someone else."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class FileLock:
    """An exclusive ``flock`` on ``path`` (created with its folder), held from ``acquire`` to ``release``; a
    no-op for ``path`` None or where ``fcntl`` does not exist (not POSIX). Closing the descriptor releases it."""

    def __init__(self, path: Path | None, mode: int = 0o600):
        self.path, self.mode = path, mode
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        try:
            import fcntl
        except ImportError:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, self.mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
