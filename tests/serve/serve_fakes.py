"""Scripted replies and a FakeBackend that never runs out of them, for the serve tests."""

from __future__ import annotations

from medchat.engine.backends.fake import FakeBackend

REPLY_CHUNKS = ["<think>", "Let me ", "think.", "</think>", "The answer", " is 42."]
REASONING = "Let me think."
ANSWER = "The answer is 42."


class RepeatingFakeBackend(FakeBackend):
    """A FakeBackend that gives ``default`` whenever no reply was queued (servers take many requests)."""

    def __init__(self, default=REPLY_CHUNKS, **kw) -> None:
        super().__init__(**kw)
        self.default = list(default)

    def stream(self, messages, settings, cancel, continue_final=False):
        if not self.replies:
            self.replies.append(list(self.default))
        return super().stream(messages, settings, cancel, continue_final)
