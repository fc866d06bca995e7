"""`medchat serve`: an OpenAI-compatible HTTP server over one loaded backend (FastAPI on uvicorn).

service.py runs generations (queue, threads); app.py is the HTTP API; connections.py bounds idle
connections; run.py binds, serves and stops; background.py serves from a thread (tests, benchmarks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medchat.server.run import ChatServer
    from medchat.server.service import ServerConfig

__all__ = ["ChatServer", "ServerConfig"]


def __getattr__(name: str) -> Any:  # imported on first use: `import medchat.server.gate` stays light
    if name == "ServerConfig":
        from medchat.server.service import ServerConfig

        return ServerConfig
    if name == "ChatServer":
        from medchat.server.run import ChatServer

        return ChatServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
