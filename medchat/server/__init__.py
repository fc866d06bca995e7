"""`medchat serve`: an OpenAI-compatible HTTP server over one loaded backend (standard library only)."""

from medchat.server.httpd import ChatServer, ServerConfig

__all__ = ["ChatServer", "ServerConfig"]
