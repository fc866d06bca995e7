"""Run a server in a background thread of this process: for tests, benchmarks and embedding."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from medchat.engine.backends.base import Backend
from medchat.server.run import ChatServer, make_server
from medchat.server.service import ServerConfig


@contextlib.contextmanager
def serve_in_thread(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    config: ServerConfig | None = None,
) -> Iterator[ChatServer]:
    """Serve ``backend`` on ``host:port`` (0 = a free port) until the block ends; yields the server
    (``server.base_url`` is the URL clients use)."""
    server = make_server(backend, host, port, config)
    thread = threading.Thread(target=server.serve_forever, name="medchat-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.cancel_all()
        server.wait_idle(5.0)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        server.close()
