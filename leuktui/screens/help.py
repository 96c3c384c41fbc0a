"""The ? help screen: every key of every screen, from the action registry, as remapped."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Markdown

from leuktui.actions import SCREENS, bindings, help_markdown
from leuktui.widgets.keybar import KeyBar


class HelpScreen(Screen):
    """Opens at the keys of ``section`` (a screen of the registry: the one ``?`` was pressed on)."""

    BINDINGS = bindings("help")

    def __init__(self, section: str | None = None) -> None:
        super().__init__()
        self.section = section

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Markdown(help_markdown(self.app.keymap))
        yield KeyBar()

    @on(Markdown.TableOfContentsUpdated)
    def _open_at_section(self, event: Markdown.TableOfContentsUpdated) -> None:
        title = SCREENS.get(self.section or "")
        heading = next((block_id for _level, text, block_id in event.table_of_contents if text == title and block_id), None)
        if heading is not None:
            self.call_after_refresh(lambda: self.query_one(f"#{heading}").scroll_visible(top=True, animate=False))
