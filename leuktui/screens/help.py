"""The ? help screen: every key of every screen, from the action registry, as remapped."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Markdown

from leuktui.actions import bindings, help_markdown
from leuktui.widgets.keybar import KeyBar


class HelpScreen(Screen):
    BINDINGS = bindings("help")

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Markdown(help_markdown(self.app.keymap))
        yield KeyBar()
