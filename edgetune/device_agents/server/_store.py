"""Content-addressed storage for uploads: ``<root>/<sha256><suffix>``.

An upload is streamed to a temp file while its sha256 and size are computed; it is renamed into place
(``os.replace``) only when the hash matches the name and the content check passes. Anything else
deletes the temp file: a failed upload stores nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from edgetune.device_agents.server._errors import ApiError

__all__ = ["ContentStore", "check_sha"]

_SHA = re.compile(r"^[0-9a-f]{64}$")


def check_sha(sha: str) -> str:
    if not _SHA.match(sha):
        raise ApiError(400, "BadRequest", f"'{sha}' is not a sha256 (64 lowercase hex characters).")
    return sha


class ContentStore:
    """Files of one kind (``artifact`` / ``dataset``) named by their sha256, at most ``max_bytes`` each.
    ``check(path)`` may reject content (returning an error message) before it is stored."""

    def __init__(self, root: Path, *, kind: str, suffix: str, max_bytes: int,
                 check: Callable[[Path], str | None] | None = None):
        self.root, self.kind, self.suffix, self.max_bytes, self.check = Path(root), kind, suffix, max_bytes, check
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".tmp").mkdir(exist_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / f"{check_sha(sha)}{self.suffix}"

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def too_large(self, declared: int | None) -> None:
        if declared is not None and declared > self.max_bytes:
            raise ApiError(413, "PayloadTooLarge", f"the {self.kind} is {declared} bytes but this agent accepts at most "
                           f"{self.max_bytes} bytes; start the agent with a larger --max-{self.kind}-mb.")

    async def put(self, sha: str, chunks: AsyncIterator[bytes], *, declared: int | None) -> tuple[int, bool]:
        """Store the streamed body under ``sha``; returns (bytes, created). Raises ApiError 413/400/415."""
        final = self.path(sha)
        self.too_large(declared)
        if final.is_file():
            return final.stat().st_size, False
        tmp = self.root / ".tmp" / f"{sha}.{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ApiError(413, "PayloadTooLarge", f"the {self.kind} upload exceeded {self.max_bytes} bytes; "
                                       f"start the agent with a larger --max-{self.kind}-mb.")
                    digest.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            actual = digest.hexdigest()
            if actual != sha:
                raise ApiError(400, "HashMismatch", f"the uploaded {self.kind} has sha256 {actual}, not {sha} as its "
                               "URL says (corrupted in transit, or the wrong file); nothing was stored. Upload again.")
            if declared is not None and size != declared:
                raise ApiError(400, "BadRequest", f"received {size} bytes but Content-Length said {declared}.")
            # in a worker thread: a check may take seconds on a large file, the event loop keeps serving
            problem = await asyncio.to_thread(self.check, tmp) if self.check is not None else None
            if problem:
                raise ApiError(415, "UnsupportedContent", f"refused this {self.kind}: {problem}. Nothing was stored.")
            os.replace(tmp, final)
            return size, True
        finally:
            tmp.unlink(missing_ok=True)
