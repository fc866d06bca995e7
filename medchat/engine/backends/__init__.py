"""Generation backends. Each streams raw text (or pre-split deltas) for a list of chat messages.

`open_backend` picks one from settings; heavy imports happen inside the chosen module only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from medchat.config import Settings
    from medchat.engine.backends.base import Backend


def open_backend(settings: "Settings", progress: Callable[[str], None] | None = None) -> "Backend":
    """Load the backend the settings ask for. ``progress`` receives one-line status messages."""
    say = progress or (lambda _msg: None)
    if settings.endpoint:
        from medchat.engine.backends.endpoint import EndpointBackend

        backend = EndpointBackend(settings.endpoint, api_key=settings.api_key, model=settings.model)
        if settings.adapter:  # a LoRA module the server serves under its own model name
            backend.set_adapter(settings.adapter)
        return backend
    from medchat.engine.backends.local import open_local

    return open_local(settings, say)
