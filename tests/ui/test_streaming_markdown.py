"""StreamingMarkdown's drawing budget: text that comes faster than it can be drawn waits in one line
and is drawn in full by the final render."""

from __future__ import annotations

import pytest
from textual.app import App

from medchat.ui.widgets.streaming_markdown import PendingText, StreamingMarkdown

pytestmark = pytest.mark.anyio


class Host(App):
    def compose(self):
        yield StreamingMarkdown(chunk_chars=400)


def paragraphs(first: int, count: int) -> str:
    return "".join(f"Paragraph {i}: " + "word " * 20 + "\n\n" for i in range(first, first + count))


async def test_only_the_newest_text_of_an_update_is_drawn_and_the_final_render_shows_all():
    app = Host()
    async with app.run_test() as pilot:
        md = app.query_one(StreamingMarkdown)
        await md.write(paragraphs(0, 3), budget=1000)  # within budget: all drawn, streaming
        assert md.pending == "" and md.source == paragraphs(0, 3)
        assert not md.exact  # streamed, not yet rendered in full

        big = paragraphs(3, 40)  # about 4,600 characters in one update
        await md.write(big, budget=1000)
        await pilot.pause()
        text = paragraphs(0, 43)
        assert md.source == text  # nothing lost: pending + drawn chunks hold every character
        pending = md.query_one(PendingText)
        assert md.pending and pending.text == md.pending
        shown = list(md.children)
        drawn = "".join(box.text for box in shown[shown.index(pending) + 1:])
        assert md.source == "".join(box.text for box in shown[: shown.index(pending)]) + md.pending + drawn
        assert len(drawn) <= 1000 and drawn.startswith("Paragraph")  # starts at a paragraph
        assert f"{len(md.pending):,} more characters" in str(pending.render())

        await md.write(paragraphs(43, 20), budget=1000)  # deferred again: still one pending line
        assert len(md.query(PendingText)) == 1 and md.source == paragraphs(0, 63)

        await md.finish(paragraphs(0, 63))  # the one full render at the end
        await pilot.pause()
        assert not md.query(PendingText) and md.pending == "" and md.exact
        assert md.source == paragraphs(0, 63)
        assert "".join(chunk.source for chunk in md.chunks) == md.source
        assert len(md.chunks) > 3


async def test_an_update_within_budget_draws_everything_and_closes_chunks_without_rendering_twice():
    app = Host()
    async with app.run_test() as pilot:
        md = app.query_one(StreamingMarkdown)
        for i in range(12):
            await md.write(paragraphs(i, 1), budget=1000)
        await pilot.pause()
        assert md.pending == "" and len(md.boxes) > 1
        assert not md.exact and all(not box.exact for box in md.boxes if box.text)  # streamed
        await md.finish(md.source)
        assert md.exact and md.source == paragraphs(0, 12)
