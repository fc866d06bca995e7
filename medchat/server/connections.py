"""uvicorn's h11 connection, with limits for connections that do nothing.

uvicorn closes a keep-alive connection that stays quiet after a response (``timeout_keep_alive``),
and answers 503 past ``limit_concurrency`` connections. It does not time out a connection that
never completes its first request head, so enough idle sockets would fill that limit and keep every
real client out. Here such a connection closes after ``header_timeout`` seconds, and when a new
connection arrives at the limit, the connection idle the longest is closed to make room: clients
that connect and send nothing cannot stop the server from answering others.

Malformed requests also get the OpenAI error shape (JSON) instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from medchat.server.protocol import error_body


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 10.0  # seconds from connecting, or from the last response, to a request head
    log: Callable[[str], None] | None = None

    @classmethod
    def configured(cls, header_timeout: float, log: Callable[[str], None] | None) -> type[GuardedH11Protocol]:
        """A subclass bound to one server's settings (uvicorn builds the protocol from a class)."""
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "log": staticmethod(log) if log else None})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        super().connection_made(transport)
        self._now_idle()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    # -- idle connections ---------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No request under way: waiting for (the rest of) a request head."""
        return self.cycle is None or self.cycle.response_complete

    def _now_idle(self) -> None:
        self._idle_since = self.loop.time()
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.idle:
            self.close_idle()

    def close_idle(self) -> None:
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    def _make_room(self) -> None:
        """At ``limit_concurrency`` open connections, close the ones idle longest (never this one)."""
        limit = self.limit_concurrency
        if limit is None:
            return
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(open_) - limit + 1
        if excess <= 0:
            return
        idle = sorted(
            (c for c in open_ if c is not self and isinstance(c, GuardedH11Protocol) and c.idle),
            key=lambda c: c._idle_since,
        )
        for connection in idle[:excess]:
            connection.close_idle()

    # -- uvicorn hooks ------------------------------------------------------------------------
    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head arrived: no longer idle
            self._stop_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.idle:
            self._now_idle()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body("malformed HTTP request", "invalid_request_error", None, "bad_request")).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))  # type: ignore[arg-type]
        self.transport.close()
        if self.log:
            client = self.client[0] if self.client else "-"
            self.log(f'{client} "(malformed request)" 400')
