"""Markdown that grows while a reply streams, at a cost that does not grow with its length.

Reasoning can run to tens of thousands of tokens. One Markdown widget holding all of it gets slower
with every paragraph: each appended batch re-lays-out every block. So the text is kept in a column of
Markdown chunks. Only the last chunk streams (through ``Markdown.get_stream()``); when it passes
CHUNK_CHARS it is closed at the next paragraph break outside a code fence and a new chunk starts.
Closed chunks never change while the reply streams: once laid out, each gets its height pinned (a
fixed ``height``), so the column's layout pass never measures their text again, and chunks far off
screen are not displayed (see `ChunkBox`). A change of width unpins them (their text wraps anew) and
pins them again after the next layout.

Drawing has a budget per update (`write(text, budget)`): a model faster than the screen can draw
gets only the newest text of each update drawn (about what the reasoning box shows); the older
text waits in one `PendingText` line and is drawn by the one full render when the reply ends
(`finish`), which renders every chunk exactly with ``Markdown.update()``.
"""

from __future__ import annotations

from textual.containers import ScrollableContainer, Vertical
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

CHUNK_CHARS = 3000  # about 600 tokens of prose per chunk
DRAW_CHARS = 2000  # most text drawn per update: about a screenful of the reasoning box


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
        self.text = text
        self.markdown = Markdown(text)
        self.exact = True  # shows ``text`` as rendered in full (not streamed)
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

    async def render_text(self, text: str) -> None:
        """Render ``text`` in full (exact: no streaming)."""
        self.unpin()
        if text != self.text or not self.exact:
            self.text = text
            await self.markdown.update(text)
        self.exact = True


class PendingText(Static):
    """Text that arrived faster than it could be drawn: one line until the reply's final render."""

    DEFAULT_CSS = "PendingText { height: 1; color: $text-muted; text-style: italic; }"

    def __init__(self) -> None:
        super().__init__("", markup=False)
        self.text = ""

    def add(self, text: str) -> None:
        self.text += text
        self.update(f"⋯ {len(self.text):,} more characters, drawn when the reply ends", layout=False)


class StreamingMarkdown(Vertical):
    DEFAULT_CSS = """
    StreamingMarkdown { height: auto; }
    StreamingMarkdown Markdown { margin: 0; padding: 0; background: transparent; }
    """

    def __init__(self, *, classes: str | None = None, chunk_chars: int = CHUNK_CHARS) -> None:
        super().__init__(classes=classes)
        self.chunk_chars = chunk_chars
        # Children in order: chunk boxes, and at most one PendingText. Kept here: querying the DOM
        # on every update costs more than the update.
        self._items: list[ChunkBox | PendingText] = [ChunkBox()]
        self._pending: PendingText | None = None
        self._stream: MarkdownStream | None = None
        self._pinned_width = 0

    def compose(self):
        yield from self._items

    def on_mount(self) -> None:
        # Scrolling any scroll box around this one changes which chunks are on screen.
        for ancestor in self.ancestors:
            if isinstance(ancestor, ScrollableContainer):
                self.watch(ancestor, "scroll_y", self._scrolled, init=False)

    @property
    def source(self) -> str:
        return "".join(item.text for item in self._items)

    @property
    def boxes(self) -> list[ChunkBox]:
        return [item for item in self._items if isinstance(item, ChunkBox)]

    @property
    def chunks(self) -> list[Markdown]:
        return [box.markdown for box in self.boxes]

    @property
    def pending(self) -> str:
        """Text not drawn yet (it is drawn by `finish`)."""
        return self._pending.text if self._pending is not None else ""

    @property
    def exact(self) -> bool:
        """Everything is drawn, each chunk rendered in full (no streamed or pending text)."""
        return self._pending is None and all(box.exact for box in self.boxes)

    async def write(self, text: str, budget: int | None = None) -> None:
        """Append streamed text; draw at most the last ``budget`` characters of it (None: all)."""
        if budget is not None and len(text) > budget:
            cut = len(text) - budget
            # Start the drawn part at a paragraph if one starts near the cut (outside a code fence).
            brk = split_point(text[cut:], text[:cut])
            if 0 <= brk < budget // 2:
                cut += brk
            await self._defer(text[:cut])
            text = text[cut:]
        while text:
            current = self._items[-1].text
            room = max(self.chunk_chars - len(current), 0)
            cut = -1 if len(text) <= room else split_point(text[room:], current + text[:room])
            if cut < 0:
                await self._write_current(text)
                return
            cut += room
            await self._write_current(text[:cut])
            await self.close()
            await self._add_box(ChunkBox())
            text = text[cut:]

    async def _add_box(self, box: ChunkBox) -> None:
        self._items.append(box)
        await self.mount(box)

    async def _defer(self, text: str) -> None:
        """Keep ``text`` undrawn for now, after everything drawn since the last deferral (that text,
        the live chunk's included, joins it: the pending line stays one line just above the newest
        text), and start a fresh live chunk."""
        await self.close()
        if self._pending is None:
            self._pending = PendingText()
            start = len(self._items) - 1
            await self.mount(self._pending, before=self._items[start])
            self._items.insert(start, self._pending)
        start = self._items.index(self._pending) + 1
        folded, self._items = self._items[start:], self._items[:start]
        self._pending.add("".join(box.text for box in folded) + text)
        await self.remove_children(folded)
        await self._add_box(ChunkBox())

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
                if box is live or box.pinned or not box.is_attached:
                    continue
                height = box.outer_size.height
                if height > 0 and box.outer_size.width == width:
                    box.pin(height)
                    self._pinned_width = width
        self._cull()

    def _cull(self) -> None:
        items = self._items
        if not any(isinstance(item, ChunkBox) and item.pinned for item in items):
            return  # nothing closed yet: every chunk stays displayed
        try:
            geometry = self.screen.find_widget(self)
        except Exception:  # noqa: BLE001 - not on screen (collapsed pane, other screen): hide all
            geometry = None
        if geometry is None or not geometry.clip.overlaps(geometry.region):
            for item in items:
                if isinstance(item, ChunkBox):
                    item.show(False)
            return
        # Keep a screen's height of margin shown on each side, so scrolling never reveals a gap.
        margin = self.screen.size.height
        top, bottom = geometry.clip.y - margin, geometry.clip.bottom + margin
        y = geometry.region.y + self.styles.gutter.top
        for item in items:
            if isinstance(item, ChunkBox):
                height = item.pinned or item.outer_size.height
                item.show(y + height > top and y < bottom)
            else:
                height = item.outer_size.height
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
        box = self._items[-1]
        assert isinstance(box, ChunkBox)
        if self._stream is None:
            box.unpin()  # streams again (a continued reply): it grows
            self._stream = Markdown.get_stream(box.markdown)
        box.text += text
        box.exact = False
        await self._stream.write(text)

    async def close(self) -> None:
        """End the live chunk's stream (its text stays as streamed until `finish`)."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
            self.call_after_refresh(self._settle)

    async def finish(self, text: str) -> None:
        """The stream ended and ``text`` is the whole document: one exact, full render."""
        await self.close()
        if text != self.source or not self.exact:
            await self.set_text(text)

    async def set_text(self, text: str) -> None:
        """Show ``text`` (no stream), replacing whatever was there, each chunk rendered in full."""
        await self.close()
        texts = split_chunks(text, self.chunk_chars)
        existing = self.boxes
        stale: list = existing[len(texts):]
        if self._pending is not None:
            stale.append(self._pending)
            self._pending = None
        if stale:
            await self.remove_children(stale)
        self._items = list(existing[: len(texts)])
        for i, chunk in enumerate(texts):
            if i < len(existing):
                await existing[i].render_text(chunk)
            else:
                await self._add_box(ChunkBox(chunk))
        self.call_after_refresh(self._settle)
