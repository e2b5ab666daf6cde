"""The agent's HTTP/1.1 connections: uvicorn's h11 protocol with the limits a shared network needs.

uvicorn closes an idle keep-alive connection, but not one that never finishes its request line and
headers, nor one whose client stops reading the response: ~1,100 such sockets exhaust the usual 1,024
open files, and then nobody, ``/health`` included, can connect. :func:`guarded_h11` returns uvicorn's
``H11Protocol`` (given to ``uvicorn.Config(http=...)``) with

- a header deadline: the request line and headers must arrive within ``header_timeout_s`` of the
  connection opening (or of the first byte of the next request on a keep-alive connection);
- a write deadline: a response the client does not read for ``stall_timeout_s`` aborts the connection;
- a connection cap: with ``max_connections`` open, a new connection closes the one that has waited on
  its client longest (headers unfinished, idle keep-alive, response unread); when every connection is
  busy in the agent instead, the new one is closed. Half-open sockets cost an attacker a socket each and
  the agent nothing it cannot take back, so ``/health`` keeps answering while hundreds are held.

Request bodies are bounded by the gate middleware (``_app``): over the limit 413, stalled 408.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from edgetune._logging import get_logger

__all__ = ["guarded_h11", "default_max_connections", "MAX_HEADER_BYTES", "ACCEPT_BACKLOG"]

log = get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # h11's buffer for an unfinished request line + headers, per connection
# connections asyncio accepts in one go (and the listen queue). Each holds a file until its protocol
# sees it, and an evicted one until the loop closes it: asyncio makes the transport one loop iteration
# after the accept, calls connection_made the next, closes an aborted socket the one after, and accepts
# a new batch in every one of them. Under a flood the agent holds up to 3 batches beyond the cap
# (measured: 48 beyond with batches of 16, 100 with 64, 32 client threads).
ACCEPT_BACKLOG = 32
_MAX_CONNECTIONS = 256  # a controller uses a few; the rest would be a crowd, or an attack
_RESERVED_FILES = 64 + 3 * ACCEPT_BACKLOG  # uploads, the checking process, measurement processes, logs; bursts
_WARN_EVERY_S = 60.0


def default_max_connections() -> int:
    """256, or fewer when the open-file limit leaves less (160 files kept for everything else)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return _MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return _MAX_CONNECTIONS
    return max(8, min(_MAX_CONNECTIONS, soft - _RESERVED_FILES))


class _GuardedH11(H11Protocol):
    header_timeout_s: float = 10.0
    stall_timeout_s: float = 60.0
    max_connections: int = _MAX_CONNECTIONS
    _last_warning = 0.0  # shared by all connections of the class: one log line a minute under a flood

    def connection_made(self, transport) -> None:
        self._header_timer = self._write_timer = None
        self._waiting_since = time.monotonic()
        full = sum(1 for c in self.connections if not c.transport.is_closing()) >= self.max_connections
        refused = full and not self._evict_one()
        super().connection_made(transport)
        if refused:  # every connection is busy in the agent (uploads, measurements): refuse this one
            transport.abort()
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        for timer in (self._header_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._between_requests():
            self._arm_header_timer()  # a request has begun (or the client sends junk): it has a deadline
        elif self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def on_response_complete(self) -> None:
        self._waiting_since = time.monotonic()
        super().on_response_complete()
        if self._between_requests() and self.conn.trailing_data[0]:
            self._arm_header_timer()  # part of a pipelined request came with the last one

    def pause_writing(self) -> None:
        super().pause_writing()
        self._waiting_since = time.monotonic()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.stall_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _waiting_on_client(self) -> bool:
        """Headers unfinished, idle between requests, or a response the client does not read."""
        return self._between_requests() or (self.flow is not None and self.flow.write_paused)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.abort()

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self.flow.write_paused and not self.transport.is_closing():
            self.transport.abort()

    def _evict_one(self) -> bool:
        waiting = [c for c in self.connections if isinstance(c, _GuardedH11) and not c.transport.is_closing()
                   and c._waiting_on_client()]
        now = time.monotonic()
        if now - _GuardedH11._last_warning > _WARN_EVERY_S:
            _GuardedH11._last_warning = now
            log.warning("%d connections open, the agent's limit: closing those that wait longest on their client "
                        "(a crowd of slow or half-open clients?)", self.max_connections)
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since).transport.abort()
        return True


def guarded_h11(*, header_timeout_s: float, stall_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with these limits (see the module docstring)."""
    return type("GuardedH11", (_GuardedH11,), {"header_timeout_s": float(header_timeout_s),
                                               "stall_timeout_s": float(stall_timeout_s),
                                               "max_connections": int(max_connections)})
