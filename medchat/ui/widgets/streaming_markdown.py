"""Markdown that grows while a reply streams, at a cost that does not grow with its length.

Reasoning can run to tens of thousands of tokens. One Markdown widget holding all of it gets slower
with every paragraph: each appended batch re-lays-out every block. So the text is kept in a column of
Markdown chunks. Only the last chunk streams (through ``Markdown.get_stream()``); when it passes
CHUNK_CHARS it is closed at the next paragraph break outside a code fence, rendered once in full with
``update()``, and a new chunk starts. Closed chunks never change, so their layout stays cached.
"""

from __future__ import annotations

from textual.containers import Vertical
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream

CHUNK_CHARS = 3000  # about 600 tokens of prose per chunk


def split_point(text: str, already: str) -> int:
    """Index just after the first paragraph break in ``text`` outside a code fence, given the chunk
    so far (``already``); -1 if there is none."""
    fenced = already.count("```") % 2 == 1
    i = 0
    while True:
        fence = text.find("```", i)
        brk = text.find("\n\n", i)
        if brk < 0:
            return -1
        if 0 <= fence < brk:
            fenced = not fenced
            i = fence + 3
            continue
        if not fenced:
            return brk + 2
        i = brk + 2


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """``text`` cut as streaming would have cut it (used to render a whole text at once)."""
    chunks, current = [], ""
    while text:
        if len(current) < size:
            take = size - len(current)
            current, text = current + text[:take], text[take:]
            continue
        cut = split_point(text, current)
        if cut < 0:
            current, text = current + text, ""
        else:
            chunks.append(current + text[:cut])
            current, text = "", text[cut:]
    if current or not chunks:
        chunks.append(current)
    return chunks


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; }
    StreamingMarkdown > Markdown { margin: 0; padding: 0; background: transparent; }
    """

    def __init__(self, *, classes: str | None = None, chunk_chars: int = CHUNK_CHARS) -> None:
        super().__init__(classes=classes)
        self.chunk_chars = chunk_chars
        self._texts: list[str] = [""]
        self._stream: MarkdownStream | None = None

    def compose(self):
        yield Markdown("")

    @property
    def source(self) -> str:
        return "".join(self._texts)

    @property
    def chunks(self) -> list[Markdown]:
        return list(self.query_children(Markdown))

    async def write(self, text: str) -> None:
        """Append streamed text."""
        while text:
            current = self._texts[-1]
            room = max(self.chunk_chars - len(current), 0)
            cut = -1 if len(text) <= room else split_point(text[room:], current + text[:room])
            if cut < 0:
                await self._write_current(text)
                return
            cut += room
            await self._write_current(text[:cut])
            await self._close_current()
            await self.mount(Markdown(""))
            self._texts.append("")
            text = text[cut:]

    async def _write_current(self, text: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self.chunks[-1])
        self._texts[-1] += text
        await self._stream.write(text)

    async def _close_current(self) -> None:
        """End the live chunk's stream and render it once in full."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        await self.chunks[-1].update(self._texts[-1])

    async def finish(self, text: str) -> None:
        """The stream ended and ``text`` is the whole document: one exact, full render."""
        if text == self.source:
            await self._close_current()
        else:
            await self.set_text(text)

    async def set_text(self, text: str) -> None:
        """Show ``text`` (no stream), replacing whatever was there."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        texts = split_chunks(text, self.chunk_chars)
        existing = self.chunks
        for widget in existing[len(texts):]:
            await widget.remove()
        for i, chunk in enumerate(texts):
            if i < len(existing):
                await existing[i].update(chunk)
            else:
                await self.mount(Markdown(chunk))
        self._texts = texts
