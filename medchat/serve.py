"""`medchat serve`: load the model once, then answer OpenAI-compatible requests until Ctrl+C."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import signal
import socket
import sys
import threading
from typing import Callable

from medchat.config import Settings
from medchat.engine.backends.base import Backend
from medchat.errors import UsageError
from medchat.server import ChatServer, ServerConfig


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
        # SIGTERM (systemd, docker stop) ends the server like Ctrl+C does.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if ready:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.cancel_all()
        server.server_close()
        server.wait_idle(10.0)
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
