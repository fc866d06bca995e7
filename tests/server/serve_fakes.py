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


class EchoBackend(RepeatingFakeBackend):
    """Replies are built from the last user message, so every client can check it got its own answer."""

    def __init__(self, words: int = 12, **kw) -> None:
        super().__init__(**kw)
        self.words = words
        self.cancels: list = []  # the cancel event of every generation, in order

    def stream(self, messages, settings, cancel, continue_final=False):
        self.cancels.append(cancel)
        q = messages[-1].content
        self.replies.append(echo_reply(q, self.words))
        return super().stream(messages, settings, cancel, continue_final)


def echo_reply(question: str, words: int = 12) -> list[str]:
    return (
        ["<think>"] + [f"{question}-r{i} " for i in range(words)] + ["</think>"]
        + [f"{question}-a{i} " for i in range(words)]
    )


def echo_expected(question: str, words: int = 12) -> tuple[str, str]:
    reasoning = "".join(f"{question}-r{i} " for i in range(words))
    answer = "".join(f"{question}-a{i} " for i in range(words))
    return reasoning, answer
