"""`medchat serve`: load the model once, then answer OpenAI-compatible requests until Ctrl+C.

The app (``app.py``) runs on uvicorn, over a socket bound here first, so a busy port fails at once
with one line, before a model loads.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import signal
import socket
import sys
import threading
from typing import Callable

import uvicorn

from medchat.config import Settings
from medchat.engine.backends.base import Backend
from medchat.errors import UsageError
from medchat.server.app import create_app
from medchat.server.connections import GuardedH11Protocol
from medchat.server.service import ChatService, ServerConfig

GRACEFUL_SHUTDOWN_S = 5  # after Ctrl+C, how long open responses get to end (generations are cancelled first)


class ChatServer(ChatService):
    """A :class:`ChatService` bound to ``address`` (port 0 = any free port) and served by uvicorn."""

    def __init__(self, address: tuple[str, int], backend: Backend, config: ServerConfig | None = None) -> None:
        super().__init__(backend, config)
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.socket.listen(128)  # clients that connect before uvicorn starts wait in the backlog
        except BaseException:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._uvicorn = _Uvicorn(self._uvicorn_config(), self)

    @property
    def base_url(self) -> str:
        host, port = self.server_address
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"

    @property
    def started(self) -> bool:
        return self._uvicorn.started

    def _uvicorn_config(self) -> uvicorn.Config:
        _quiet_uvicorn_loggers()
        config = self.config
        return uvicorn.Config(
            create_app(self),
            http=GuardedH11Protocol.configured(config.header_timeout_s, config.log),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",
            access_log=False,  # --log-requests writes its own line, with the duration
            proxy_headers=False,
            server_header=False,
            headers=[("server", "medchat")],
            limit_concurrency=config.max_connections or config.max_waiting + 64,
            timeout_keep_alive=config.keep_alive_s,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (from another thread) or, in the main thread, Ctrl+C or
        SIGTERM (then the signal is raised again once the server has stopped: KeyboardInterrupt
        for Ctrl+C)."""
        self._uvicorn.run(sockets=[self.socket])

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask a serving thread to stop (generations are cancelled), and wait until it has."""
        self._uvicorn.should_exit = True
        self._uvicorn.stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


class _Uvicorn(uvicorn.Server):
    """uvicorn's server, cancelling the generations first when it shuts down (so open streams end
    at once and their connections close within the grace period), and saying when it has stopped."""

    def __init__(self, config: uvicorn.Config, service: ChatService) -> None:
        super().__init__(config)
        self.service = service
        self.stopped = threading.Event()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            self.stopped.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.cancel_all()
        await super().shutdown(sockets)


def _quiet_uvicorn_loggers() -> None:
    """uvicorn's own messages (startup, malformed requests, shutdown) stay out of the terminal:
    `medchat serve` says what matters itself. They still propagate to logging set up by an embedder."""
    logger = logging.getLogger("uvicorn")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def make_server(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServerConfig | None = None,
) -> ChatServer:
    """Bind a server to ``host:port`` (port 0 = any free port); one clear error if that fails."""
    try:
        return ChatServer((host, port), backend, config)
    except OSError as exc:
        raise _bind_error(host, port, exc) from None


def check_port_free(host: str, port: int) -> None:
    """Fail at once with one line if ``host:port`` cannot be bound."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise _bind_error(host, port, exc) from None


def _bind_error(host: str, port: int, exc: OSError) -> UsageError:
    if exc.errno == errno.EADDRINUSE:
        return UsageError(f"cannot listen on {host}:{port}: the port is already in use (try --port)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UsageError(f"cannot listen on {host}:{port}: permission denied (use a port above 1023)")
    return UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def serve_backend(
    backend: Backend,
    host: str,
    port: int,
    config: ServerConfig,
    say: Callable[[str], None],
    ready: Callable[[ChatServer], None] | None = None,
) -> None:
    """Serve until Ctrl+C or SIGTERM, then stop every generation and return."""
    server = make_server(backend, host, port, config)
    if not _is_loopback(host) and not config.api_key:
        say(f"warning: listening on {host} without --api-key: anyone who can reach this machine can use it")
    say(
        f"serving {', '.join(server.models.ids)} at {server.base_url} "
        f"(OpenAI-compatible; Ctrl+C to stop)"
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (systemd, docker stop) ends the server like Ctrl+C does: uvicorn handles both
        # while it runs, then raises the signal again, which lands here as KeyboardInterrupt.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if ready:
            ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.cancel_all()
        server.server_close()
        server.wait_idle(10.0)
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    say("stopped serving")


def run_serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str = "",
    max_queue: int = 64,
    log_requests: bool = False,
) -> None:
    """The CLI's `serve`: load the local model (+ adapter) named by ``settings`` and serve it."""
    from medchat.engine.backends import open_backend

    def say(line: str) -> None:
        print(f"medchat: {line}", file=sys.stderr, flush=True)

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    check_port_free(host, port)  # before the model load, which can take minutes
    api_key = settings.api_key
    # `serve` always loads a local model: an endpoint from the config file or environment is for chatting.
    backend = open_backend(dataclasses.replace(settings, endpoint=""), say)
    try:
        config = ServerConfig(
            api_key=api_key,
            generation=settings.generation,
            max_waiting=max_queue,
            served_name=served_name,
            system_prompt=settings.system_prompt,
            log=say if log_requests else None,
        )
        serve_backend(backend, host, port, config, say)
    finally:
        backend.close()
