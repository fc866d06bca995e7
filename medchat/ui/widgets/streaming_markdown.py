"""Markdown that grows while a reply streams, at a cost that does not grow with its length.

Reasoning can run to tens of thousands of tokens. One Markdown widget holding all of it gets slower
with every paragraph: each appended batch re-lays-out every block. So the text is kept in a column of
Markdown chunks. Only the last chunk streams (through ``Markdown.get_stream()``); when it passes
CHUNK_CHARS it is closed at the next paragraph break outside a code fence, rendered once in full with
``update()``, and a new chunk starts. Closed chunks never change: once laid out, each gets its
height pinned (a fixed ``height``), so the column's layout pass never measures their text again, and
chunks far off screen are not displayed (see `ChunkBox`): the cost of a batch depends on the live
chunk and the screen, not on the length of the text. A change of width unpins them (their text
wraps anew) and pins them again after the next layout.
"""

from __future__ import annotations

from textual.containers import ScrollableContainer, Vertical
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


class ChunkBox(Vertical):
    """Holds one chunk. Once its chunk is closed and laid out, the box's height is pinned, and while
    the box is far outside the visible part of the screen its Markdown is not displayed at all: Textual
    re-lays-out and re-composes every displayed widget on each layout pass, so hiding the paragraphs
    of off-screen chunks keeps that pass as cheap at 20,000 tokens as at 1,000."""

    DEFAULT_CSS = "ChunkBox { height: auto; }"

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.markdown = Markdown(text)
        self.pinned = 0  # pinned height, 0 while free

    def compose(self):
        yield self.markdown

    def pin(self, height: int) -> None:
        self.pinned = height
        self.styles.height = height

    def unpin(self) -> None:
        self.pinned = 0
        self.styles.height = "auto"
        self.markdown.display = True

    def show(self, visible: bool) -> None:
        if self.pinned and self.markdown.display != visible:
            self.markdown.display = visible


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; }
    StreamingMarkdown Markdown { margin: 0; padding: 0; background: transparent; }
    """

    def __init__(self, *, classes: str | None = None, chunk_chars: int = CHUNK_CHARS) -> None:
        super().__init__(classes=classes)
        self.chunk_chars = chunk_chars
        self._texts: list[str] = [""]
        self._stream: MarkdownStream | None = None
        self._pinned_width = 0

    def compose(self):
        yield ChunkBox()

    def on_mount(self) -> None:
        # Scrolling any scroll box around this one changes which chunks are on screen.
        for ancestor in self.ancestors:
            if isinstance(ancestor, ScrollableContainer):
                self.watch(ancestor, "scroll_y", self._scrolled, init=False)

    @property
    def source(self) -> str:
        return "".join(self._texts)

    @property
    def boxes(self) -> list[ChunkBox]:
        return list(self.query_children(ChunkBox))

    @property
    def chunks(self) -> list[Markdown]:
        return [box.markdown for box in self.boxes]

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
            await self.mount(ChunkBox())
            self._texts.append("")
            text = text[cut:]

    # -- pinning and culling ----------------------------------------------------------------------
    def _settle(self) -> None:
        """After a layout: pin the closed chunks laid out at this width, then hide far-away ones."""
        if not self.is_attached:
            return
        width = self.size.width
        boxes = self.boxes
        live = boxes[-1] if self._stream is not None else None
        if width > 0:
            for box in boxes:
                if box is live or box.pinned:
                    continue
                height = box.outer_size.height
                if height > 0 and box.outer_size.width == width:
                    box.pin(height)
                    self._pinned_width = width
        self._cull(boxes)

    def _cull(self, boxes: list[ChunkBox] | None = None) -> None:
        boxes = self.boxes if boxes is None else boxes
        if not any(box.pinned for box in boxes):
            return  # nothing closed yet: every chunk stays displayed
        try:
            geometry = self.screen.find_widget(self)
        except Exception:  # noqa: BLE001 - not on screen (collapsed pane, other screen): hide all
            geometry = None
        if geometry is None or not geometry.clip.overlaps(geometry.region):
            for box in boxes:
                box.show(False)
            return
        # Keep a screen's height of margin shown on each side, so scrolling never reveals a gap.
        margin = self.screen.size.height
        top, bottom = geometry.clip.y - margin, geometry.clip.bottom + margin
        y = geometry.region.y + self.styles.gutter.top
        for box in boxes:
            height = box.pinned or box.outer_size.height
            box.show(y + height > top and y < bottom)
            y += height

    def _scrolled(self) -> None:
        self.call_after_refresh(self._cull)

    def on_resize(self) -> None:
        if self.size.width != self._pinned_width:
            for box in self.boxes:  # the text wraps anew at this width: measure it once more
                if box.pinned:
                    box.unpin()
        self.call_after_refresh(self._settle)

    # -- streaming --------------------------------------------------------------------------------
    async def _write_current(self, text: str) -> None:
        if self._stream is None:
            box = self.boxes[-1]
            box.unpin()  # streams again (a continued reply): it grows
            self._stream = Markdown.get_stream(box.markdown)
        self._texts[-1] += text
        await self._stream.write(text)

    async def _close_current(self) -> None:
        """End the live chunk's stream and render it once in full."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        box = self.boxes[-1]
        box.unpin()
        await box.markdown.update(self._texts[-1])
        self.call_after_refresh(self._settle)

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
        existing = self.boxes
        for box in existing[len(texts):]:
            await box.remove()
        for i, chunk in enumerate(texts):
            if i < len(existing):
                existing[i].unpin()
                await existing[i].markdown.update(chunk)
            else:
                await self.mount(ChunkBox(chunk))
        self._texts = texts
        self.call_after_refresh(self._settle)
