"""Run a server in a background thread of this process: for tests, benchmarks and embedding."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from medchat.engine.backends.base import Backend
from medchat.server.httpd import ChatServer, ServerConfig


@contextlib.contextmanager
def serve_in_thread(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
) -> Iterator[ChatServer]:
    """Serve ``backend`` on ``host:port`` (0 = a free port) until the block ends; yields the server
    (``server.base_url`` is the URL clients use)."""
    from medchat.serve import make_server

    server = make_server(backend, host, port, config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.cancel_all()
        server.wait_idle(5.0)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
